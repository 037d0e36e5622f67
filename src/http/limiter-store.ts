/**
 * Where rate-limit counters live: Redis when REDIS_URL is set (shared by every instance, cheap per
 * request), else PostgreSQL when DATABASE_URL is set (shared too), else memory (the embedded
 * database serves one process anyway).
 */
import pg from 'pg';
import { pgTimeouts } from '../db/index.ts';
import { Redis } from 'ioredis';
import {
  RateLimiterMemory,
  RateLimiterPostgres,
  RateLimiterRedis,
  type IRateLimiterOptions,
  type RateLimiterAbstract,
} from 'rate-limiter-flexible';

/** Limiter options; the in-memory block spares the store the calls of a caller already refused. */
export type LimiterOptions = IRateLimiterOptions & { inMemoryBlockOnConsumed?: number; inMemoryBlockDuration?: number };

export interface LimiterStore {
  readonly kind: 'redis' | 'postgres' | 'memory';
  /** A limiter whose keys are namespaced by `name`, stored in `table` on PostgreSQL. */
  make(name: string, opts: LimiterOptions, table?: string): RateLimiterAbstract;
  close(): Promise<void>;
}

export function createLimiterStore(opts: {
  database: { kind: 'postgres'; url: string; connectTimeout: number; queryTimeout: number } | { kind: 'pglite' };
  redisUrl?: string | undefined;
  /** Namespaces every key (several deployments, or test runs, on one Redis). */
  keyPrefix: string;
}): LimiterStore {
  if (opts.redisUrl) {
    // Fail fast rather than queue commands while Redis is away: a request then errors, it does not hang.
    const redis = new Redis(opts.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false });
    redis.on('error', () => {
      /* reported through the failing limiter calls */
    });
    return {
      kind: 'redis',
      make: (name, o) => new RateLimiterRedis({ ...o, keyPrefix: `${opts.keyPrefix}:${name}`, storeClient: redis, rejectIfRedisNotReady: true }),
      async close() {
        redis.disconnect();
      },
    };
  }
  if (opts.database.kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: opts.database.url, max: 4, ...pgTimeouts(opts.database) });
    // An idle connection that breaks (the database restarted or went away) is reported here;
    // without a listener that 'error' event would end the process. The pool replaces the
    // connection, and the limiter calls that fail meanwhile are reported where they are made.
    pool.on('error', () => {});
    return {
      kind: 'postgres',
      make: (name, o, table = 'rate_limits') =>
        new RateLimiterPostgres({
          ...o,
          keyPrefix: `${opts.keyPrefix}:${name}`,
          storeClient: pool,
          storeType: 'pool',
          tableName: table,
          tableCreated: true,
          clearExpiredByTimeout: false,
        }),
      async close() {
        // pool.end() resolves before its connections have closed; wait for them, so the database
        // can be stopped or dropped right after.
        let open = pool.totalCount;
        const closed = new Promise<void>((resolve) => {
          if (open === 0) resolve();
          pool.on('remove', () => {
            open -= 1;
            if (open <= 0) resolve();
          });
        });
        await pool.end();
        await closed;
      },
    };
  }
  return {
    kind: 'memory',
    make: (name, { inMemoryBlockOnConsumed: _a, inMemoryBlockDuration: _b, ...o }) => new RateLimiterMemory({ ...o, keyPrefix: `${opts.keyPrefix}:${name}` }),
    async close() {},
  };
}
