/**
 * The client registry as admins manage it: category and verification, where a client came from,
 * the previous secret during a rotation's grace period, registration access tokens (RFC 7592),
 * admin-issued initial access tokens (RFC 7591 section 3), hourly token counts for the inventory,
 * and notices an account holder reads at their next sign-in (an admin reset their factor...).
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('clients', (t) => {
    t.text('category').notNullable().defaultTo('third-party');
    t.boolean('verified').notNullable().defaultTo(false);
    // admin (API, CLI, pages), dcr (dynamic registration) or system (Custos's own clients).
    t.text('origin').notNullable().defaultTo('admin');
    t.text('previous_secret_hash');
    t.timestamp('previous_secret_expires_at', { useTz: true });
    t.text('registration_token_hash');
    t.timestamp('status_changed_at', { useTz: true });
  });
  await knex.raw(`alter table clients add constraint clients_category_check check (category in ('internal', 'external', 'third-party'))`);
  await knex.raw(`alter table clients add constraint clients_origin_check check (origin in ('admin', 'dcr', 'system'))`);
  await knex.raw('create index clients_status_name on clients (status, name)');
  // Suspending a client deletes every artifact issued to it in one statement.
  await knex.raw(`create index oidc_payloads_client on oidc_payloads ((payload->>'clientId')) where payload->>'clientId' is not null`);
  await knex.raw(`create index oidc_payloads_account on oidc_payloads ((payload->>'accountId')) where payload->>'accountId' is not null`);

  // Tokens issued per client per hour: the inventory's "last day" and "last 30 days" figures.
  await knex.schema.createTable('client_usage_hourly', (t) => {
    t.text('client_id').notNullable().references('client_id').inTable('clients').onDelete('CASCADE');
    t.timestamp('hour', { useTz: true }).notNullable();
    t.integer('tokens').notNullable().defaultTo(0);
    t.primary(['client_id', 'hour']);
  });

  await knex.schema.createTable('initial_access_tokens', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.text('token_hash').notNullable().unique();
    t.text('created_by').notNullable();
    t.text('note');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('used_at', { useTz: true });
    t.text('used_by_client');
  });

  await knex.schema.createTable('account_notices', (t) => {
    t.bigIncrements('id').primary();
    t.uuid('account_id').notNullable().references('id').inTable('accounts').onDelete('CASCADE');
    t.text('message').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('seen_at', { useTz: true });
  });
  await knex.raw('create index account_notices_unseen on account_notices (account_id) where seen_at is null');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('account_notices');
  await knex.schema.dropTable('initial_access_tokens');
  await knex.schema.dropTable('client_usage_hourly');
  await knex.raw('drop index oidc_payloads_account');
  await knex.raw('drop index oidc_payloads_client');
  await knex.raw('drop index clients_status_name');
  await knex.raw('alter table clients drop constraint clients_origin_check');
  await knex.raw('alter table clients drop constraint clients_category_check');
  await knex.schema.alterTable('clients', (t) => {
    t.dropColumn('status_changed_at');
    t.dropColumn('registration_token_hash');
    t.dropColumn('previous_secret_expires_at');
    t.dropColumn('previous_secret_hash');
    t.dropColumn('origin');
    t.dropColumn('verified');
    t.dropColumn('category');
  });
}
