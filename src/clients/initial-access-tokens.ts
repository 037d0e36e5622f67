/**
 * Initial access tokens (RFC 7591 section 3): an admin issues one, gives it to a developer, and
 * the developer's app registers itself with it, once. Stored only as a keyed hash.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { AuditTrail } from '../audit/index.ts';
import { hashClientSecret } from './client-secret.ts';
import type { Actor } from './registry.ts';

/** The longest an initial access token may stay usable: 30 days. */
export const MAX_INITIAL_TOKEN_TTL = 30 * 86400;

export interface InitialAccessTokens {
  /** A new single-use token, returned here only. */
  issue(opts: { expiresIn: number; note?: string | undefined }, by: Actor): Promise<{ token: string; id: string; expiresAt: Date }>;
  /**
   * Uses a token inside `trx` (the registration's transaction): true when it was valid and unused,
   * and is now used up. Two registrations racing with one token: only one gets it.
   */
  consume(token: string, clientId: string, trx: Knex.Transaction): Promise<{ id: string; createdBy: string } | undefined>;
}

export function createInitialAccessTokens(db: Knex, pepper: Buffer, audit: AuditTrail): InitialAccessTokens {
  return {
    async issue({ expiresIn, note }, by) {
      const token = randomBytes(32).toString('base64url');
      const expiresAt = new Date(Date.now() + expiresIn * 1000);
      const id = await db.transaction(async (trx) => {
        const [row] = await trx('initial_access_tokens')
          .insert({ token_hash: hashClientSecret(pepper, token), created_by: by.actor, note: note ?? null, expires_at: expiresAt })
          .returning(['id']);
        await audit.record(
          { type: 'client.initial_token_issued', outcome: 'success', actor: by.actor, ip: by.ip, details: { token_id: row.id, expires_in: expiresIn, note } },
          trx,
        );
        return row.id as string;
      });
      return { token, id, expiresAt };
    },
    async consume(token, clientId, trx) {
      if (token.length > 200) return undefined;
      const used: { id: string; created_by: string }[] = await trx('initial_access_tokens')
        .where({ token_hash: hashClientSecret(pepper, token) })
        .whereNull('used_at')
        .where('expires_at', '>', trx.fn.now())
        .update({ used_at: trx.fn.now(), used_by_client: clientId }, ['id', 'created_by']);
      const row = used[0];
      return row ? { id: row.id, createdBy: row.created_by } : undefined;
    },
  };
}
