/**
 * What an audit event is, and how the chain that seals the trail is computed. Pure code: the
 * repository stores events, this module decides what their hashes are.
 */
import { createHash } from 'node:crypto';

/** How the audited action ended: done, failed (bad input or credentials), or refused by policy. */
export type AuditOutcome = 'success' | 'failure' | 'denied';

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** One audited action: who did what, to which client and patient, from where, and how it ended. */
export interface AuditEventInput {
  /** Dotted name, for example `login.failure`, `consent.revoked`, `client.suspended`. */
  type: string;
  outcome: AuditOutcome;
  /** The account id of the person acting, or `client:<id>` when an app acts on its own. */
  actor?: string | undefined;
  clientId?: string | undefined;
  /** The FHIR Patient id the action concerns. */
  patientId?: string | undefined;
  ip?: string | undefined;
  /** Anything else worth keeping; never secrets, tokens or passwords. */
  details?: Record<string, Json | undefined> | undefined;
}

export interface AuditEvent {
  id: string;
  occurredAt: Date;
  type: string;
  outcome: AuditOutcome;
  actor: string | null;
  clientId: string | null;
  patientId: string | null;
  ip: string | null;
  details: Record<string, Json>;
}

/** The hash every chain starts from. */
export const GENESIS_HASH = '0'.repeat(64);

function sortedJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedJson);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => [k, sortedJson(v)]),
    );
  }
  return value;
}

/**
 * The link for `event` at position `seq` after `previousHash`. Every stored field takes part, in
 * a fixed order, with object keys sorted, so the same event always gives the same hash whichever
 * database returned it.
 */
export function chainHash(previousHash: string, seq: number, event: AuditEvent): string {
  const canonical = JSON.stringify([
    seq,
    event.id,
    event.occurredAt.toISOString(),
    event.type,
    event.outcome,
    event.actor,
    event.clientId,
    event.patientId,
    event.ip,
    sortedJson(event.details),
  ]);
  return createHash('sha256').update(previousHash).update('\n').update(canonical).digest('hex');
}

/** Drops undefined detail values so what is stored is exactly what is hashed. */
export function cleanDetails(details: AuditEventInput['details']): Record<string, Json> {
  return (sortedJson(details ?? {}) as Record<string, Json>);
}
