/**
 * The core schema: accounts, registered clients, oidc-provider's artifacts and signing keys.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('accounts', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.text('username').notNullable();
    t.text('role').notNullable();
    t.text('display_name');
    t.text('email');
    t.text('fhir_patient_id');
    t.text('fhir_practitioner_id');
    t.text('password_hash').notNullable();
    t.timestamp('disabled_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`alter table accounts add constraint accounts_role_check check (role in ('patient', 'practitioner', 'admin'))`);
  await knex.raw('create unique index accounts_username_unique on accounts (lower(username))');

  await knex.schema.createTable('clients', (t) => {
    t.text('client_id').primary();
    t.text('name').notNullable();
    t.jsonb('metadata').notNullable();
    t.text('secret_hash');
    t.text('status').notNullable().defaultTo('approved');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('last_used_at', { useTz: true });
  });
  await knex.raw(
    `alter table clients add constraint clients_status_check check (status in ('pending', 'approved', 'suspended', 'retired'))`,
  );

  // One table for every oidc-provider model (sessions, grants, codes, tokens, replay records...);
  // `kind` is the model name. Lookups are by primary key, uid, user code or grant id, all indexed.
  await knex.schema.createTable('oidc_payloads', (t) => {
    t.text('kind').notNullable();
    t.text('id').notNullable();
    t.jsonb('payload').notNullable();
    t.text('grant_id');
    t.text('uid');
    t.text('user_code');
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('consumed_at', { useTz: true });
    t.primary(['kind', 'id']);
  });
  await knex.raw('create index oidc_payloads_grant_id on oidc_payloads (grant_id) where grant_id is not null');
  await knex.raw('create unique index oidc_payloads_uid on oidc_payloads (kind, uid) where uid is not null');
  await knex.raw('create unique index oidc_payloads_user_code on oidc_payloads (kind, user_code) where user_code is not null');
  await knex.raw('create index oidc_payloads_expires_at on oidc_payloads (expires_at) where expires_at is not null');

  await knex.schema.createTable('signing_keys', (t) => {
    t.text('kid').primary();
    t.text('alg').notNullable();
    t.jsonb('public_jwk').notNullable();
    t.text('private_jwk_encrypted').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Published at once, used for signing only from here on, so every instance publishes a new
    // key before any instance signs with it.
    t.timestamp('activates_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Set when a newer key replaces this one: it stays published (for verification) until then.
    t.timestamp('retire_at', { useTz: true });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('signing_keys');
  await knex.schema.dropTable('oidc_payloads');
  await knex.schema.dropTable('clients');
  await knex.schema.dropTable('accounts');
}
