/**
 * Second factors. One table for every kind of factor (TOTP now; WebAuthn passkeys later add rows
 * of another `kind` with their own columns), and single-use recovery codes.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('mfa_factors', (t) => {
    t.uuid('id').primary().defaultTo(knex.raw('gen_random_uuid()'));
    t.uuid('account_id').notNullable().references('id').inTable('accounts').onDelete('CASCADE');
    t.text('kind').notNullable();
    // TOTP: the shared secret, sealed under the KEK; the last accepted time step (replay guard).
    t.text('secret_encrypted');
    t.bigInteger('last_step').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Null while enrolment waits for the first valid code.
    t.timestamp('confirmed_at', { useTz: true });
  });
  await knex.raw(`alter table mfa_factors add constraint mfa_factors_kind_check check (kind in ('totp', 'webauthn'))`);
  await knex.raw('create index mfa_factors_account on mfa_factors (account_id)');
  await knex.raw(`create unique index mfa_factors_one_totp on mfa_factors (account_id) where kind = 'totp' and confirmed_at is not null`);

  await knex.schema.createTable('recovery_codes', (t) => {
    t.uuid('account_id').notNullable().references('id').inTable('accounts').onDelete('CASCADE');
    t.text('code_hash').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('used_at', { useTz: true });
    t.primary(['account_id', 'code_hash']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('recovery_codes');
  await knex.schema.dropTable('mfa_factors');
}
