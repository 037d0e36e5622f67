/**
 * SMART launch contexts: EHR launch values (single-use, short-lived, bound to one app) and the
 * context each grant was issued with (patient, encounter...), which every token of the grant carries.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('launch_contexts', (t) => {
    // SHA-256 of the opaque launch value: the value itself is a bearer secret and is not stored.
    t.text('launch_hash').primary();
    t.text('client_id').notNullable().references('client_id').inTable('clients').onDelete('CASCADE');
    t.text('created_by').notNullable();
    t.jsonb('context').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('consumed_at', { useTz: true });
  });
  await knex.raw('create index launch_contexts_expires_at on launch_contexts (expires_at)');

  await knex.schema.createTable('grant_contexts', (t) => {
    t.text('grant_id').primary();
    t.jsonb('context').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('expires_at', { useTz: true }).notNullable();
  });
  await knex.raw('create index grant_contexts_expires_at on grant_contexts (expires_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('grant_contexts');
  await knex.schema.dropTable('launch_contexts');
}
