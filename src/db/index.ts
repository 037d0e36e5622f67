/**
 * Database access: a knex instance on real PostgreSQL (`pg`) when DATABASE_URL is set, or on the
 * embedded PGlite build of PostgreSQL persisted under DATA_DIR otherwise. Callers get the same
 * knex API and the same SQL dialect either way.
 */
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import { acquireDataDirLock, type DataDirLock } from './data-dir-lock.ts';
import { ClientPgUnavailable } from './pg-client.ts';

export type Db = Knex;
export { migrateLatest, migrateDown, migrationStatus } from './migrations.ts';
export { DatabaseBusyError } from './data-dir-lock.ts';
export { findUnstorableText, isStorableText } from './storable-text.ts';
export { DatabaseUnavailableError, isDatabaseUnavailable, unavailableMessage, UNAVAILABLE_RETRY_AFTER_SECONDS } from './unavailable.ts';

const locks = new WeakMap<Knex, DataDirLock>();

/**
 * Bounds on waiting for PostgreSQL, so a database that is down or stalled costs a request a
 * few seconds and a 503, not a hang. The server cancels a statement at `queryTimeout`; the
 * client gives up a second later, for when the server cannot even be told. Keep-alive lets the
 * operating system notice connections whose peer vanished.
 */
export function pgTimeouts(database: { connectTimeout: number; queryTimeout: number }) {
  return {
    connectionTimeoutMillis: database.connectTimeout * 1000,
    statement_timeout: database.queryTimeout * 1000,
    query_timeout: database.queryTimeout * 1000 + 1000,
    keepAlive: true,
  };
}

/**
 * Opens the configured database. Close it with {@link closeDatabase}. With `log`, knex's own
 * messages go there instead of to standard output. Its warnings (a pooled connection lost, a
 * connection that could not be opened) come with an error that the caller reports where it
 * surfaces, so they are only worth a debug line.
 */
export async function openDatabase(database: Config['database'], log?: Logger): Promise<Db> {
  if (database.kind === 'postgres') {
    return knexFactory({
      client: ClientPgUnavailable as unknown as typeof Knex.Client,
      connection: { connectionString: database.url, ...pgTimeouts(database) },
      pool: { min: 0, max: database.poolMax, idleTimeoutMillis: 30_000 },
      acquireConnectionTimeout: 10_000,
      // A failed statement's message shows the SQL with placeholders, not the bound values: those
      // include token ids and hashes, which must never reach a log.
      compileSqlOnError: false,
      ...(log
        ? {
            log: {
              warn: (message: unknown) => log.debug({ knex: String(message) }, 'database client warning'),
              error: (message: unknown) => log.error({ knex: String(message) }, 'database client error'),
              deprecate: (message: unknown) => log.warn({ knex: String(message) }, 'database client deprecation'),
              debug: (message: unknown) => log.debug({ knex: String(message) }, 'database client debug'),
            },
          }
        : {}),
    });
  }
  // PGlite is one process, one connection: refuse to open a data folder another process has open,
  // which would corrupt it, and say which process holds it.
  const lock = await acquireDataDirLock(database.dataDir);
  try {
    const db = knexFactory({
      client: ClientPgLite as unknown as typeof Knex.Client,
      dialect: 'postgres',
      connection: { filename: database.dataDir },
      compileSqlOnError: false,
    });
    await db.raw('select 1');
    locks.set(db, lock);
    return db;
  } catch (err) {
    lock.release();
    throw err;
  }
}

export async function closeDatabase(db: Db): Promise<void> {
  await db.destroy();
  locks.get(db)?.release();
  locks.delete(db);
}

/** True when the database answers a trivial query (readiness probe). */
export async function databaseReachable(db: Db): Promise<boolean> {
  try {
    await db.raw('select 1');
    return true;
  } catch {
    return false;
  }
}
