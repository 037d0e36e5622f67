import type { Command } from 'commander';
import { newAccountSchema, RELATIONSHIPS, ROLES, type Account, type Relationship } from '../accounts/index.ts';
import { UsernameTakenError } from '../accounts/index.ts';
import { CliError, pageLimit, readAll, table, type CliContext } from './context.ts';

function accountJson(a: Account) {
  return {
    id: a.id,
    username: a.username,
    role: a.role,
    display_name: a.displayName,
    email: a.email,
    fhir_patient_id: a.fhirPatientId,
    fhir_practitioner_id: a.fhirPractitionerId,
    disabled: a.disabled,
    created_at: a.createdAt.toISOString(),
  };
}

async function readPassword(cli: CliContext, opts: { password?: string; passwordStdin?: boolean }): Promise<string> {
  if (opts.password !== undefined && opts.passwordStdin) throw new CliError('use either --password or --password-stdin, not both');
  if (opts.password !== undefined) return opts.password;
  if (opts.passwordStdin || !cli.io.stdin.isTTY) {
    // One line: a trailing newline from `echo` or a here-string is not part of the password.
    return (await readAll(cli.io.stdin)).replace(/\r?\n$/, '');
  }
  throw new CliError('give the password with --password-stdin (recommended: it stays out of shell history) or --password');
}

export function registerUser(program: Command, cli: CliContext): void {
  const user = program.command('user').description('manage accounts');

  user
    .command('create <username>')
    .description('create an account')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .option('--fhir-id <id>', 'the FHIR Patient id (patients) or Practitioner id (practitioners)')
    .option('--display-name <name>', 'the name shown to the user and in the ID token')
    .option('--email <email>', 'email address')
    .option('--password <password>', 'the password (prefer --password-stdin)')
    .option('--password-stdin', 'read the password from standard input')
    .option('--json', 'print JSON')
    .action(async (username: string, opts: Record<string, string | boolean | undefined>) => {
      const password = await readPassword(cli, { password: opts.password as string | undefined, passwordStdin: Boolean(opts.passwordStdin) });
      const input = newAccountSchema.parse({
        username,
        password,
        role: opts.role,
        fhirId: opts.fhirId,
        displayName: opts.displayName,
        email: opts.email,
      });
      await cli.withServices(async ({ accounts }) => {
        try {
          const account = await accounts.create(input);
          cli.print(Boolean(opts.json), accountJson(account), `created ${account.role} "${account.username}" (id ${account.id})`);
        } catch (err) {
          if (err instanceof UsernameTakenError) throw new CliError(err.message);
          throw err;
        }
      });
    });

  user
    .command('represent <representative> <patient>')
    .description('let one patient account act for another (a parent for a child, a guardian, a caregiver): pick their record and give or revoke consent for it')
    .option('--relationship <relationship>', `one of ${RELATIONSHIPS.join(', ')}`, 'other')
    .option('--remove', 'end the representation instead')
    .option('--json', 'print JSON')
    .action(async (repName: string, patientName: string, opts: { relationship: string; remove?: boolean; json?: boolean }) => {
      if (!(RELATIONSHIPS as readonly string[]).includes(opts.relationship)) {
        throw new CliError(`--relationship must be one of ${RELATIONSHIPS.join(', ')}`);
      }
      await cli.withServices(async ({ accounts, audit }) => {
        const rep = await accounts.findByUsername(repName);
        const patient = await accounts.findByUsername(patientName);
        if (!rep || rep.role !== 'patient') throw new CliError(`"${repName}" is not a patient account`);
        if (!patient || patient.role !== 'patient') throw new CliError(`"${patientName}" is not a patient account`);
        if (rep.id === patient.id) throw new CliError('an account always acts for itself');
        const actor = `cli:${cli.io.env.USER ?? 'unknown'}`;
        if (opts.remove) {
          const removed = await accounts.removeRepresentative(rep.id, patient.id);
          if (!removed) throw new CliError(`"${repName}" does not represent "${patientName}"`);
          await audit.record({ type: 'account.representative_removed', outcome: 'success', actor, patientId: patient.fhirPatientId ?? undefined, details: { representative: rep.id } });
          cli.print(Boolean(opts.json), { representative: rep.username, patient: patient.username, removed: true }, `"${repName}" no longer acts for "${patientName}"`);
          return;
        }
        await accounts.addRepresentative(rep.id, patient.id, opts.relationship as Relationship);
        await audit.record({
          type: 'account.representative_added',
          outcome: 'success',
          actor,
          patientId: patient.fhirPatientId ?? undefined,
          details: { representative: rep.id, relationship: opts.relationship },
        });
        cli.print(
          Boolean(opts.json),
          { representative: rep.username, patient: patient.username, relationship: opts.relationship },
          `"${repName}" (${opts.relationship}) may now act for "${patientName}"`,
        );
      });
    });

  user
    .command('list')
    .description('list accounts, ordered by username')
    .option('--limit <n>', 'at most this many (1-500)', '100')
    .option('--after <username>', 'start after this username (paging)')
    .option('--json', 'print JSON')
    .action(async (opts: { limit: string; after?: string; json?: boolean }) => {
      const limit = pageLimit.parse(opts.limit);
      await cli.withServices(async ({ accounts }) => {
        const list = await accounts.list({ limit, ...(opts.after ? { after: opts.after } : {}) });
        cli.print(
          Boolean(opts.json),
          list.map(accountJson),
          table(
            ['USERNAME', 'ROLE', 'FHIR', 'STATUS', 'ID'],
            list.map((a) => [a.username, a.role, a.fhirPatientId ?? a.fhirPractitionerId ?? '-', a.disabled ? 'disabled' : 'active', a.id]),
          ),
        );
      });
    });
}
