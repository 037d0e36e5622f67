/**
 * The audit trail: an append-only event table and, beside it, the hash chain that seals it.
 *
 * Events are written in the same transaction as the action they describe, so an event is never
 * lost once its action committed. Chaining them at write time would serialise every audited
 * transaction behind one lock; instead a sealer appends each new event to `audit_chain` shortly
 * afterwards (one instance at a time, under an advisory lock), and `custos audit verify` recomputes
 * the chain. Both tables refuse UPDATE and DELETE through a trigger, on top of the grants the
 * README recommends for the application's role.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table audit_events (
      id bigint generated always as identity primary key,
      occurred_at timestamptz not null,
      type text not null,
      outcome text not null check (outcome in ('success', 'failure', 'denied')),
      actor text,
      client_id text,
      patient_id text,
      ip text,
      details jsonb not null default '{}'::jsonb
    )`);
  await knex.raw('create index audit_events_occurred on audit_events (occurred_at, id)');
  await knex.raw('create index audit_events_actor on audit_events (actor, id) where actor is not null');
  await knex.raw('create index audit_events_client on audit_events (client_id, id) where client_id is not null');
  await knex.raw('create index audit_events_patient on audit_events (patient_id, id) where patient_id is not null');
  await knex.raw('create index audit_events_type on audit_events (type, id)');
  await knex.raw(`
    create table audit_chain (
      seq bigint primary key,
      event_id bigint not null unique references audit_events (id),
      hash text not null,
      sealed_at timestamptz not null default now()
    )`);
  await knex.raw(`
    create function audit_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'the audit trail is append-only (% on %)', tg_op, tg_table_name;
    end $$`);
  for (const table of ['audit_events', 'audit_chain']) {
    await knex.raw(`create trigger ${table}_append_only before update or delete on ${table} for each row execute function audit_append_only()`);
    await knex.raw(`create trigger ${table}_no_truncate before truncate on ${table} for each statement execute function audit_append_only()`);
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table audit_chain');
  await knex.raw('drop table audit_events');
  await knex.raw('drop function audit_append_only()');
}
