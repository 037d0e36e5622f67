// knex's PostgreSQL dialect has no declaration of its own (knex-pglite extends it the same way).
declare module 'knex/lib/dialects/postgres/index.js' {
  import type { Knex } from 'knex';
  const ClientPg: typeof Knex.Client;
  export default ClientPg;
}
