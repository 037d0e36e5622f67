/**
 * The access log of one consent (the patient portal's "access log") is the token events that name
 * it: index them by consent id so that log is not a scan of the app's whole history.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`create index audit_events_consent on audit_events ((details->>'consent_id'), id) where details->>'consent_id' is not null`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index audit_events_consent');
}
