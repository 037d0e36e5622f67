/**
 * knex's PostgreSQL client, with every failure to reach the database turned into one
 * {@link DatabaseUnavailableError} where knex hands out connections and runs queries. Overriding
 * the class (not the instance) covers transactions too: knex builds their clients from it.
 */
import ClientPg from 'knex/lib/dialects/postgres/index.js';
import { DatabaseUnavailableError, isDatabaseUnavailable } from './unavailable.ts';

const unavailable = (err: unknown) => {
  throw isDatabaseUnavailable(err) && !(err instanceof DatabaseUnavailableError) ? new DatabaseUnavailableError(err) : err;
};

export class ClientPgUnavailable extends ClientPg {
  override async acquireConnection() {
    return super.acquireConnection().catch(unavailable);
  }

  override async query(connection: unknown, obj: unknown) {
    return super.query(connection, obj).catch(unavailable);
  }
}
