import type { Command } from 'commander';
import { z } from 'zod';
import { InvalidCursorError, type AuditEvent } from '../audit/index.ts';
import { CliError, pageLimit, table, type CliContext } from './context.ts';

function eventJson(e: AuditEvent) {
  return {
    id: e.id,
    occurred_at: e.occurredAt.toISOString(),
    type: e.type,
    outcome: e.outcome,
    actor: e.actor,
    client_id: e.clientId,
    patient_id: e.patientId,
    ip: e.ip,
    details: e.details,
  };
}

const instant = (flag: string) =>
  z.iso.datetime({ offset: true, error: `${flag} must be an ISO 8601 date-time, for example 2026-11-24T09:00:00Z` }).transform((s) => new Date(s));

export function registerAudit(program: Command, cli: CliContext): void {
  const audit = program.command('audit').description('inspect and verify the audit trail');

  audit
    .command('verify')
    .description('seal pending events into the hash chain, then recompute the whole chain; exits 1 when any link does not match')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await cli.withServices(async ({ audit: trail }) => {
        while ((await trail.seal()) > 0);
        const report = await trail.verify();
        cli.print(
          Boolean(opts.json),
          report,
          report.ok
            ? `the audit trail is intact: ${report.checked} events chained` +
                (report.head ? `; head ${report.head.seq}:${report.head.hash}` : '') +
                (report.unsealed ? `; ${report.unsealed} written during the check are not chained yet` : '')
            : [
                `the audit trail has been altered: ${report.problems.length} problem(s) in ${report.checked} events`,
                ...report.problems.map((p) => `  link ${p.seq} (event ${p.eventId ?? '?'}): ${p.problem.replace('_', ' ')}`),
              ].join('\n'),
        );
        if (!report.ok) throw new CliError('audit trail verification failed');
      });
    });

  audit
    .command('list')
    .description('list audit events, newest first')
    .option('--actor <id>', 'only events by this account id (or client:<id>)')
    .option('--client <id>', 'only events about this client')
    .option('--patient <id>', 'only events about this FHIR Patient id')
    .option('--type <type>', 'an event type, or a prefix ending in "." such as login.')
    .option('--from <time>', 'only events at or after this ISO 8601 time')
    .option('--to <time>', 'only events before this ISO 8601 time')
    .option('--limit <n>', 'how many (1-500)', '50')
    .option('--cursor <cursor>', 'continue from a previous page')
    .option('--json', 'print JSON')
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const limit = pageLimit.parse(opts.limit);
      const from = opts.from ? instant('--from').parse(opts.from) : undefined;
      const to = opts.to ? instant('--to').parse(opts.to) : undefined;
      await cli.withServices(async ({ audit: trail }) => {
        const page = await trail
          .list(
            {
              actor: opts.actor as string | undefined,
              clientId: opts.client as string | undefined,
              patientId: opts.patient as string | undefined,
              type: opts.type as string | undefined,
              from,
              to,
            },
            { limit, cursor: opts.cursor as string | undefined },
          )
          .catch((err: unknown) => {
            throw err instanceof InvalidCursorError ? new CliError(err.message) : err;
          });
        cli.print(
          Boolean(opts.json),
          { events: page.events.map(eventJson), next_cursor: page.nextCursor ?? null },
          table(
            ['ID', 'TIME', 'TYPE', 'OUTCOME', 'ACTOR', 'CLIENT', 'PATIENT', 'IP'],
            page.events.map((e) => [e.id, e.occurredAt.toISOString(), e.type, e.outcome, e.actor ?? '-', e.clientId ?? '-', e.patientId ?? '-', e.ip ?? '-']),
          ) + (page.nextCursor ? `\nmore: --cursor ${page.nextCursor}` : ''),
        );
      });
    });
}
