/**
 * Patient consent: one consent per patient, app and acting person, with append-only versions
 * (a change adds a version; nothing is updated or deleted), and each patient's privacy
 * preferences. Grants are looked up by account and app when a consent changes, hence the index
 * on oidc_payloads.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table consents (
      id uuid primary key default gen_random_uuid(),
      patient_account_id uuid not null references accounts (id),
      patient_fhir_id text,
      client_id text not null,
      actor_account_id uuid not null references accounts (id),
      created_at timestamptz not null,
      unique (patient_account_id, client_id, actor_account_id)
    )`);
  await knex.raw('create index consents_client on consents (client_id)');
  await knex.raw(`
    create table consent_versions (
      consent_id uuid not null references consents (id),
      version integer not null check (version > 0),
      status text not null check (status in ('active', 'revoked')),
      scopes text not null,
      limits jsonb not null,
      expires_at timestamptz,
      acr text,
      changed_by uuid not null references accounts (id),
      change text not null check (change in ('granted', 'extended', 'narrowed', 'limits_changed', 'revoked')),
      created_at timestamptz not null,
      primary key (consent_id, version)
    )`);
  // audit_append_only() comes from 005_audit_trail.
  await knex.raw(
    'create trigger consent_versions_append_only before update or delete on consent_versions for each row execute function audit_append_only()',
  );
  await knex.raw(`
    create table privacy_preferences (
      account_id uuid primary key references accounts (id),
      hidden jsonb not null,
      updated_at timestamptz not null
    )`);
  await knex.raw(
    `create index oidc_payloads_grant_owner on oidc_payloads ((payload->>'accountId'), (payload->>'clientId')) where kind = 'Grant'`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index oidc_payloads_grant_owner');
  await knex.raw('drop table privacy_preferences');
  await knex.raw('drop table consent_versions');
  await knex.raw('drop table consents');
}
