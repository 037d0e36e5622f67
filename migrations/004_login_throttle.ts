/**
 * Counters for login throttling (rate-limiter-flexible's PostgreSQL store layout), so that
 * every instance on one database shares them.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`create table login_throttle (key varchar(255) primary key, points integer not null default 0, expire bigint)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('login_throttle');
}
