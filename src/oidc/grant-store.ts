/**
 * What consent changes do to oidc-provider's grants, in the caller's transaction: revoke every
 * grant of an account for an app (with the codes and tokens issued under them), or narrow the
 * scopes they hold. Lives next to the adapter because it knows how grants are stored.
 */
import type { Knex } from 'knex';
import type { GrantPort } from '../consent/index.ts';

const TABLE = 'oidc_payloads';

interface GrantPayload {
  openid?: { scope?: string; claims?: string[] };
  resources?: Record<string, string>;
  [key: string]: unknown;
}

const keep = (scope: string | undefined, allowed: ReadonlySet<string>) =>
  (scope ?? '').split(' ').filter((s) => s && (s === 'openid' || allowed.has(s))).join(' ');

function grantsOf(trx: Knex.Transaction, accountId: string, clientId: string) {
  return trx(TABLE).where({ kind: 'Grant' }).whereRaw(`payload->>'accountId' = ?`, [accountId]).whereRaw(`payload->>'clientId' = ?`, [clientId]);
}

export const grantStore: GrantPort = {
  async revokeAll(trx, accountId, clientId) {
    const ids = (await grantsOf(trx, accountId, clientId).select('id')).map((r: { id: string }) => r.id);
    if (ids.length === 0) return 0;
    await trx(TABLE).whereIn('grant_id', ids).delete();
    await trx(TABLE).where({ kind: 'Grant' }).whereIn('id', ids).delete();
    return ids.length;
  },

  async narrowAll(trx, accountId, clientId, allowed) {
    const rows: { id: string; payload: GrantPayload | string }[] = await grantsOf(trx, accountId, clientId).forUpdate().select('id', 'payload');
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
