/**
 * oidc-provider's storage adapter on knex: one table for every model, keyed by (kind, id).
 * Clients are the exception: they live in the client registry and are read through it.
 */
import type { Knex } from 'knex';
import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import type { ClientRegistry } from '../clients/index.ts';
import { findUnstorableText, isStorableText } from '../db/index.ts';

const TABLE = 'oidc_payloads';

interface PayloadRow {
  payload: AdapterPayload;
  consumed_at: Date | null;
  expires_at: Date | null;
}

const epoch = (d: Date) => Math.floor(d.getTime() / 1000);

function fromRow(row: PayloadRow | undefined): AdapterPayload | undefined {
  if (!row) return undefined;
  if (row.expires_at && row.expires_at.getTime() <= Date.now()) return undefined;
  return row.consumed_at ? { ...row.payload, consumed: epoch(row.consumed_at) } : row.payload;
}

/**
 * Stores a new access token: runs `write` (the token's INSERT) together with its audit event, so
 * the event exists exactly when the token does.
 */
export type TokenSavedHook = (write: Knex.QueryBuilder, kind: 'AccessToken' | 'ClientCredentials', payload: AdapterPayload) => Promise<void>;

/** Models that are issued to a client and must not outlive its approval. */
const ISSUED_TO_CLIENT = new Set(['AccessToken', 'ClientCredentials', 'RefreshToken', 'AuthorizationCode', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PushedAuthorizationRequest']);

/** Most (kind, id) pairs one lookup query asks for; more wait for the next. */
const MAX_BATCH = 100;

/**
 * Reads by primary key, gathered: every `find` asked for in the same turn of the event loop
 * goes to the database in one query. oidc-provider looks a presented token up as an access
 * token, a client-credentials token and a refresh token at once (introspection, revocation,
 * userinfo), and concurrent requests look up their own tokens: one round trip serves them all.
 */
function batchedFinder(db: Knex) {
  let pending = new Map<string, { kind: string; id: string; waiters: ((row: PayloadRow | undefined) => void)[]; fail: ((err: unknown) => void)[] }>();
  let scheduled = false;

  async function run(batch: typeof pending) {
    const entries = [...batch.values()];
    try {
      const rows: (PayloadRow & { kind: string; id: string })[] = await db(TABLE)
        .select('kind', 'id', 'payload', 'consumed_at', 'expires_at')
        .whereIn(['kind', 'id'], entries.map((e) => [e.kind, e.id]));
      const found = new Map(rows.map((r) => [`${r.kind}\u0000${r.id}`, r]));
      for (const e of entries) {
        const row = found.get(`${e.kind}\u0000${e.id}`);
        // Concurrent lookups of one token each get their own copy of what was read.
        e.waiters.forEach((w, i) => w(i === 0 || !row ? row : structuredClone(row)));
      }
    } catch (err) {
      for (const e of entries) for (const f of e.fail) f(err);
    }
  }

  function flush() {
    scheduled = false;
    const all = pending;
    pending = new Map();
    const keys = [...all.keys()];
    for (let i = 0; i < keys.length; i += MAX_BATCH) {
      void run(new Map(keys.slice(i, i + MAX_BATCH).map((k) => [k, all.get(k)!])));
    }
  }

  return (kind: string, id: string) =>
    new Promise<PayloadRow | undefined>((resolve, reject) => {
      const key = `${kind}\u0000${id}`;
      let entry = pending.get(key);
      if (!entry) {
        entry = { kind, id, waiters: [], fail: [] };
        pending.set(key, entry);
      }
      entry.waiters.push(resolve);
      entry.fail.push(reject);
      if (!scheduled) {
        scheduled = true;
        // After the current callbacks and their promise chains: lookups started together meet here.
        setImmediate(flush);
      }
    });
}

/** Builds the adapter class oidc-provider instantiates once per model name. */
export function createKnexAdapter(db: Knex, clients: ClientRegistry, onTokenSaved?: TokenSavedHook) {
  const findRow = batchedFinder(db);
  return class KnexAdapter implements Adapter {
    readonly kind: string;

    constructor(name: string) {
      this.kind = name;
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void> {
      if (this.kind === 'Client') throw new Error('clients are written through the client registry');
      // Request parameters end up in payloads (state, nonce, claims...) and jsonb cannot hold NUL or
      // an unpaired surrogate: refuse such a request as the caller's mistake, before any write.
      if (findUnstorableText(payload) || !isStorableText(id)) throw new errors.InvalidRequest('the request contains a NUL character or an unpaired surrogate');
      const row = {
        kind: this.kind,
        id,
        payload,
        grant_id: payload.grantId ?? null,
        uid: payload.uid ?? null,
        user_code: payload.userCode ?? null,
        expires_at: expiresIn ? new Date(Date.now() + expiresIn * 1000) : null,
      };
      const kind = this.kind;
      if (kind === 'ReplayDetection') {
        // oidc-provider checks that a jti is new and then stores it: two requests presenting the
        // same client assertion at once both pass the check. Only the first store may succeed.
        // (A DPoP proof raced the same way is refused too, as invalid_client rather than
        // invalid_dpop_proof; a proof replayed later gets oidc-provider's own error.)
        const stored = await db(TABLE).insert(row).onConflict(['kind', 'id']).ignore().returning('id');
        if (stored.length !== 1) throw new errors.InvalidClientAuth('client assertion tokens must only be used once');
        return;
      }
      if (onTokenSaved && (kind === 'AccessToken' || kind === 'ClientCredentials')) {
        await onTokenSaved(db(TABLE).insert(row), kind, payload);
        return;
      }
      await db(TABLE).insert(row).onConflict(['kind', 'id']).merge(['payload', 'grant_id', 'uid', 'user_code', 'expires_at']);
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      if (this.kind === 'Client') return clients.findForProvider(id);
      // Nothing is ever stored under such an id, and PostgreSQL would refuse it as a parameter.
      if (!isStorableText(id)) return undefined;
      const payload = fromRow(await findRow(this.kind, id));
      // Whatever a client holds ends with the client: a token another instance issued while it
      // had not yet seen a suspension is refused everywhere once the client registry's short
      // cache (CLIENT_CACHE_MS) has moved on.
      if (payload?.clientId && ISSUED_TO_CLIENT.has(this.kind) && !(await clients.findForProvider(payload.clientId))) return undefined;
      return payload;
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      if (!isStorableText(uid)) return undefined;
      return fromRow(await db(TABLE).select('payload', 'consumed_at', 'expires_at').where({ kind: this.kind, uid }).first());
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      if (!isStorableText(userCode)) return undefined;
      return fromRow(
        await db(TABLE).select('payload', 'consumed_at', 'expires_at').where({ kind: this.kind, user_code: userCode }).first(),
      );
    }

    /**
     * Marks a code or refresh token used. oidc-provider checks `consumed` before calling this, but
     * two requests racing with the same value both pass that check; the conditional UPDATE lets
     * exactly one of them through and the other gets `invalid_grant` (RFC 6749 section 5.2).
     */
    async consume(id: string): Promise<void> {
      const updated = await db(TABLE)
        .where({ kind: this.kind, id })
        .whereNull('consumed_at')
        .update({ consumed_at: db.fn.now() }, ['id']);
      if (updated.length !== 1) throw new errors.InvalidGrant('grant request is invalid');
    }

    async destroy(id: string): Promise<void> {
      await db(TABLE).where({ kind: this.kind, id }).delete();
    }

    /**
     * Removes every artifact issued under a grant (codes, access and refresh tokens...), whatever
     * its model. The Grant record itself is left to oidc-provider's `revokeGrantPolicy`.
     */
    async revokeByGrantId(grantId: string): Promise<void> {
      await db(TABLE).where({ grant_id: grantId }).delete();
    }
  };
}

/** Deletes up to `batchSize` expired rows; returns how many went. Run in the background. */
export async function deleteExpiredPayloads(db: Knex, batchSize = 1000): Promise<number> {
  // `returning` rather than the affected-row count: the PGlite dialect reports DELETE counts
  // differently from pg, while returned rows are the same on both.
  const removed = await db(TABLE)
    .whereIn(['kind', 'id'], db(TABLE).select('kind', 'id').where('expires_at', '<', db.fn.now()).limit(batchSize))
    .delete(['kind']);
  return removed.length;
}

/**
 * Deletes every provider artifact issued to a client (grants, codes, access and refresh tokens,
 * PAR requests...), inside the caller's transaction; returns how many went. Run when a client is
 * suspended or retired, so nothing issued to it works afterwards.
 */
export async function deleteClientPayloads(trx: Knex, clientId: string): Promise<number> {
  const removed = await trx(TABLE).whereRaw(`payload->>'clientId' = ?`, [clientId]).delete(['kind']);
  return removed.length;
}

/**
 * Deletes an account's provider artifacts inside the caller's transaction: every session, grant
 * and token (`kinds` narrows it, e.g. to sessions only); returns how many went.
 */
export async function deleteAccountPayloads(trx: Knex, accountId: string, kinds?: readonly string[]): Promise<number> {
  const q = trx(TABLE).whereRaw(`payload->>'accountId' = ?`, [accountId]);
  if (kinds) q.whereIn('kind', [...kinds]);
  const removed = await q.delete(['kind']);
  return removed.length;
}
