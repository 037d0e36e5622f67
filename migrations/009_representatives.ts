/**
 * Representatives: a person (a parent, guardian or caregiver, with their own patient account) who
 * may act for another patient. Consents they give name them as the acting person.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table representatives (
      representative_account_id uuid not null references accounts (id),
      patient_account_id uuid not null references accounts (id),
      relationship text not null check (relationship in ('parent', 'guardian', 'caregiver', 'other')),
      created_at timestamptz not null default now(),
      primary key (representative_account_id, patient_account_id),
      check (representative_account_id <> patient_account_id)
    )`);
  await knex.raw('create index representatives_patient on representatives (patient_account_id)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table representatives');
}
