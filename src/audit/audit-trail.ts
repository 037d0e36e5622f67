/**
 * The audit trail's storage: append events (inside the caller's transaction when there is one),
 * seal them into the hash chain, verify the chain, and page through events with filters.
 */
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { chainHash, cleanDetails, GENESIS_HASH, type AuditEvent, type AuditEventInput, type AuditOutcome } from './audit-event.ts';

export interface AuditFilter {
  actor?: string | undefined;
  clientId?: string | undefined;
  patientId?: string | undefined;
  /** Events that name this consent (`details.consent_id`): token events issued or checked under it. */
  consentId?: string | undefined;
  /** An exact type, or a prefix ending in `.` (`login.` matches every login event). */
  type?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
}

export interface AuditPage {
  events: AuditEvent[];
  /** Pass back as `cursor` for the next (older) page; absent on the last page. */
  nextCursor?: string;
}

export interface VerifyProblem {
  seq: number;
  eventId: string | null;
  problem: 'hash_mismatch' | 'missing_event' | 'sequence_gap';
}

export interface VerifyReport {
  ok: boolean;
  checked: number;
  /** Events not sealed into the chain yet (written in the last moments, or the sealer is not running). */
  unsealed: number;
  head: { seq: number; hash: string } | null;
  problems: VerifyProblem[];
}

export interface AuditTrail {
  /** Appends an event; pass the transaction of the action so both commit or neither does. */
  record(event: AuditEventInput, trx?: Knex.Transaction): Promise<void>;
  /**
   * Runs `write` (an INSERT, UPDATE or DELETE) and appends `event` in one statement: both happen
   * or neither does, in one round trip to the database instead of a four-statement transaction.
   */
  recordAlong(write: Knex.QueryBuilder, event: AuditEventInput): Promise<void>;
  /** Appends unsealed events to the hash chain; returns how many. Safe to run on every instance. */
  seal(): Promise<number>;
  /** Recomputes the whole chain and reports every link that does not match. */
  verify(): Promise<VerifyReport>;
  list(filter: AuditFilter, page: { limit: number; cursor?: string | undefined }): Promise<AuditPage>;
  /** Calls `fn` with every event recorded from now on (metrics count them). */
  observe(fn: (event: AuditEventInput) => void): void;
}

/** Hard cap on one page of events, whatever a caller asks for. */
export const MAX_AUDIT_PAGE = 200;
const SEAL_BATCH = 500;
// An arbitrary constant shared by every instance: whoever holds it is the one sealing right now.
const SEAL_LOCK_KEY = 0x637573746f73;

export class InvalidCursorError extends Error {
  override name = 'InvalidCursorError';
}

interface EventRow {
  id: string | number;
  occurred_at: Date;
  type: string;
  outcome: AuditOutcome;
  actor: string | null;
  client_id: string | null;
  patient_id: string | null;
  ip: string | null;
  details: Record<string, never> | string;
}

function toEvent(row: EventRow): AuditEvent {
  return {
    id: String(row.id),
    occurredAt: new Date(row.occurred_at),
    type: row.type,
    outcome: row.outcome,
    actor: row.actor,
    clientId: row.client_id,
    patientId: row.patient_id,
    ip: row.ip,
    details: typeof row.details === 'string' ? JSON.parse(row.details) : row.details,
  };
}

const encodeCursor = (id: string) => Buffer.from(`a:${id}`).toString('base64url');
function decodeCursor(cursor: string): string {
  const m = /^a:(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m?.[1]) throw new InvalidCursorError('the cursor is not one this server gave out');
  return m[1];
}

export function createAuditTrail(db: Knex, opts: { log?: Logger; clock?: () => Date } = {}): AuditTrail {
  const clock = opts.clock ?? (() => new Date());
  const observers: ((event: AuditEventInput) => void)[] = [];

  const rowOf = (event: AuditEventInput) => ({
    // Millisecond precision, so the time read back is exactly the time that was hashed.
    occurred_at: new Date(clock().getTime()),
    type: event.type,
    outcome: event.outcome,
    actor: event.actor ?? null,
    client_id: event.clientId ?? null,
    patient_id: event.patientId ?? null,
    ip: event.ip ?? null,
    details: JSON.stringify(cleanDetails(event.details)),
  });
  const recorded = (event: AuditEventInput, row: ReturnType<typeof rowOf>) => {
    opts.log?.info({ audit: event.type, outcome: event.outcome, actor: row.actor, client: row.client_id }, 'audit event');
    for (const fn of observers) fn(event);
  };

  return {
    async record(event, trx) {
      const row = rowOf(event);
      await (trx ?? db)('audit_events').insert(row);
      recorded(event, row);
    },

    async recordAlong(write, event) {
      const row = rowOf(event);
      const first = write.toSQL();
      const audit = db('audit_events').insert(row).toSQL();
      // A data-modifying WITH runs whether or not it is referenced, and the statement is atomic.
      await db.raw(`with written as (${first.sql}) ${audit.sql}`, [...first.bindings, ...audit.bindings]);
      recorded(event, row);
    },

    async seal() {
      return db.transaction(async (trx) => {
        const lock = await trx.raw<{ rows: { locked: boolean }[] }>('select pg_try_advisory_xact_lock(?) as locked', [SEAL_LOCK_KEY]);
        if (!lock.rows[0]?.locked) return 0;
        const last = await trx('audit_chain').orderBy('seq', 'desc').first<{ seq: string | number; hash: string } | undefined>('seq', 'hash');
        let seq = Number(last?.seq ?? 0);
        let hash = last?.hash ?? GENESIS_HASH;
        const rows = await trx('audit_events as e')
          .leftJoin('audit_chain as c', 'c.event_id', 'e.id')
          .whereNull('c.event_id')
          .orderBy('e.id')
          .limit(SEAL_BATCH)
          .select<EventRow[]>('e.*');
        if (rows.length === 0) return 0;
        const links = rows.map((row) => {
          seq += 1;
          hash = chainHash(hash, seq, toEvent(row));
          return { seq, event_id: row.id, hash };
        });
        await trx('audit_chain').insert(links);
        return links.length;
      });
    },

    async verify() {
      const problems: VerifyProblem[] = [];
      let previous = GENESIS_HASH;
      let expectedSeq = 1;
      let checked = 0;
      let head: VerifyReport['head'] = null;
      for (;;) {
        const rows = await db('audit_chain as c')
          .leftJoin('audit_events as e', 'e.id', 'c.event_id')
          .where('c.seq', '>=', expectedSeq)
          .orderBy('c.seq')
          .limit(1000)
          .select<(EventRow & { seq: string | number; event_id: string | number; hash: string; id: string | number | null })[]>(
            'c.seq',
            'c.event_id',
            'c.hash',
            'e.*',
          );
        if (rows.length === 0) break;
        for (const row of rows) {
          const seq = Number(row.seq);
          if (seq !== expectedSeq) problems.push({ seq: expectedSeq, eventId: null, problem: 'sequence_gap' });
          if (row.id === null) {
            problems.push({ seq, eventId: String(row.event_id), problem: 'missing_event' });
          } else if (chainHash(previous, seq, toEvent(row)) !== row.hash) {
            problems.push({ seq, eventId: String(row.id), problem: 'hash_mismatch' });
          }
          // Continue from the stored hash so one bad link is reported once, not for every later one.
          previous = row.hash;
          expectedSeq = seq + 1;
          checked += 1;
          head = { seq, hash: row.hash };
        }
      }
      const pending = await db('audit_events as e')
        .leftJoin('audit_chain as c', 'c.event_id', 'e.id')
        .whereNull('c.event_id')
        .count<{ count: string | number }[]>({ count: '*' });
      return { ok: problems.length === 0, checked, unsealed: Number(pending[0]?.count ?? 0), head, problems };
    },

    observe(fn) {
      observers.push(fn);
    },

    async list(filter, page) {
      const limit = Math.min(Math.max(1, Math.trunc(page.limit)), MAX_AUDIT_PAGE);
      const q = db('audit_events').orderBy('id', 'desc').limit(limit + 1);
      if (filter.actor) q.where('actor', filter.actor);
      if (filter.clientId) q.where('client_id', filter.clientId);
      if (filter.patientId) q.where('patient_id', filter.patientId);
      if (filter.consentId) q.whereRaw(`details->>'consent_id' = ?`, [filter.consentId]);
      if (filter.type) {
        if (filter.type.endsWith('.')) q.whereLike('type', `${filter.type.replace(/[\\%_]/g, '\\$&')}%`);
        else q.where('type', filter.type);
      }
      if (filter.from) q.where('occurred_at', '>=', filter.from);
      if (filter.to) q.where('occurred_at', '<', filter.to);
      if (page.cursor) q.where('id', '<', decodeCursor(page.cursor));
      const rows = await q.select<EventRow[]>('*');
      const events = rows.slice(0, limit).map(toEvent);
      const last = events.at(-1);
      return rows.length > limit && last ? { events, nextCursor: encodeCursor(last.id) } : { events };
    },
  };
}
