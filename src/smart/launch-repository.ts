/**
 * Storage of EHR launch values and of grant contexts.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { LaunchContext } from './launch-context.ts';

const hash = (launch: string) => createHash('sha256').update(launch).digest('base64url');

export interface LaunchRepository {
  /** Creates a single-use launch value for `clientId`, valid `ttlSeconds`. */
  create(input: { clientId: string; createdBy: string; context: LaunchContext; ttlSeconds: number }): Promise<string>;
  /**
   * Uses a launch value: succeeds once, for its own app, before it expires. Returns its context,
   * or undefined for an unknown, expired, reused or other app's value.
   */
  consume(launch: string, clientId: string): Promise<LaunchContext | undefined>;
  /** The context of a launch value this app already used (later steps of the same authorization). */
  peek(launch: string, clientId: string): Promise<LaunchContext | undefined>;
  attachToGrant(grantId: string, context: LaunchContext, ttlSeconds: number): Promise<void>;
  forGrant(grantId: string): Promise<LaunchContext | undefined>;
  deleteExpired(): Promise<number>;
}

export function createLaunchRepository(db: Knex): LaunchRepository {
  return {
    async create({ clientId, createdBy, context, ttlSeconds }) {
      const launch = randomBytes(24).toString('base64url');
      await db('launch_contexts').insert({
        launch_hash: hash(launch),
        client_id: clientId,
        created_by: createdBy,
        context,
        expires_at: db.raw('now() + make_interval(secs => ?)', [ttlSeconds]),
      });
      return launch;
    },
    async consume(launch, clientId) {
      const rows: Array<{ context: LaunchContext }> = await db('launch_contexts')
        .where({ launch_hash: hash(launch), client_id: clientId })
        .whereNull('consumed_at')
        .andWhere('expires_at', '>', db.fn.now())
        .update({ consumed_at: db.fn.now() }, ['context']);
      return rows[0]?.context;
    },
    async peek(launch, clientId) {
      const row = await db('launch_contexts')
        .select('context')
        .where({ launch_hash: hash(launch), client_id: clientId })
        .andWhere('expires_at', '>', db.raw(`now() - interval '1 hour'`))
        .first();
      return row?.context;
    },
    async attachToGrant(grantId, context, ttlSeconds) {
      await db('grant_contexts')
        .insert({ grant_id: grantId, context, expires_at: db.raw('now() + make_interval(secs => ?)', [ttlSeconds]) })
        .onConflict('grant_id')
        .merge(['context', 'expires_at']);
    },
    async forGrant(grantId) {
      const row = await db('grant_contexts').select('context').where({ grant_id: grantId }).andWhere('expires_at', '>', db.fn.now()).first();
      return row?.context;
    },
    async deleteExpired() {
      const a = await db('launch_contexts').where('expires_at', '<', db.raw(`now() - interval '1 hour'`)).delete(['launch_hash']);
      const b = await db('grant_contexts').where('expires_at', '<', db.fn.now()).delete(['grant_id']);
      return a.length + b.length;
    },
  };
}
