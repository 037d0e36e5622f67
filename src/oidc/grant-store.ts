/**
 * What consent changes do to oidc-provider's grants, in the caller's transaction: revoke every
 * grant of an account for an app (with the codes and tokens issued under them), or every grant
 * an account holds for another patient's record, or narrow the scopes they hold. Lives next to the adapter because it knows how grants are stored.
 */
import type { Knex } from 'knex';
import type { ConsentedGrants, GrantPort } from '../consent/index.ts';

const TABLE = 'oidc_payloads';

interface GrantPayload {
  openid?: { scope?: string; claims?: string[] };
  resources?: Record<string, string>;
  [key: string]: unknown;
}

const keep = (scope: string | undefined, allowed: ReadonlySet<string>) =>
  (scope ?? '').split(' ').filter((s) => s && (s === 'openid' || allowed.has(s))).join(' ');

/** The grants a consent covers: the account's for the app, about the consent's patient. */
function grantsOf(trx: Knex.Transaction, g: ConsentedGrants) {
  const q = trx(`${TABLE} as p`)
    .leftJoin('grant_contexts as gc', 'gc.grant_id', 'p.id')
    .where('p.kind', 'Grant')
    .whereRaw(`p.payload->>'accountId' = ?`, [g.accountId])
    .whereRaw(`p.payload->>'clientId' = ?`, [g.clientId]);
  if (g.own) q.where((w) => w.whereRaw(`gc.context->>'patient' is null`).orWhereRaw(`gc.context->>'patient' = ?`, [g.patientFhirId ?? '']));
  else q.whereRaw(`gc.context->>'patient' = ?`, [g.patientFhirId ?? '']);
  return q;
}

/** Deletes the grants with every code and token issued under them; returns how many grants went. */
async function deleteGrants(trx: Knex.Transaction, grants: Knex.QueryBuilder): Promise<number> {
  const ids = (await grants.select('p.id')).map((r: { id: string }) => r.id);
  if (ids.length === 0) return 0;
  await trx(TABLE).whereIn('grant_id', ids).delete();
  await trx(TABLE).where({ kind: 'Grant' }).whereIn('id', ids).delete();
  return ids.length;
}

export const grantStore: GrantPort = {
  async revokeAll(trx, grants) {
    return deleteGrants(trx, grantsOf(trx, grants));
  },

  async revokeForPatient(trx, accountId, patientFhirId) {
    // Every app, consent or not (first-party clients have none): the context is what counts.
    const grants = trx(`${TABLE} as p`)
      .join('grant_contexts as gc', 'gc.grant_id', 'p.id')
      .where('p.kind', 'Grant')
      .whereRaw(`p.payload->>'accountId' = ?`, [accountId])
      .whereRaw(`gc.context->>'patient' = ?`, [patientFhirId]);
    return deleteGrants(trx, grants);
  },

  async narrowAll(trx, grants, allowed) {
    const rows: { id: string; payload: GrantPayload | string }[] = await grantsOf(trx, grants).forUpdate('p').select('p.id', 'p.payload');
    for (const row of rows) {
      const payload: GrantPayload = typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload;
      if (payload.openid) payload.openid = { ...payload.openid, scope: keep(payload.openid.scope, allowed) };
      if (payload.resources) {
        payload.resources = Object.fromEntries(
          Object.entries(payload.resources)
            .map(([resource, scope]) => [resource, keep(scope, allowed)] as const)
            .filter(([, scope]) => scope),
        );
      }
      await trx(TABLE).where({ kind: 'Grant', id: row.id }).update({ payload: JSON.stringify(payload) });
    }
  },
};
