/**
 * Request rate-limit counters (rate-limiter-flexible's PostgreSQL layout), shared by every
 * instance on one database when Redis is not configured.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`create table rate_limits (key varchar(255) primary key, points integer not null default 0, expire bigint)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('rate_limits');
}
