import type { Command } from 'commander';
import { fhirId, newAccountSchema, RELATIONSHIPS, ROLES, type Account, type Relationship } from '../accounts/index.ts';
import { UsernameTakenError } from '../accounts/index.ts';
import { AccountNotFoundError, AccountStateError } from '../admin/index.ts';
import type { Services } from '../main.ts';
import { CliError, pageLimit, readAll, table, type CliContext } from './context.ts';

/** An account named by username or by id. */
async function accountNamed(services: Services, who: string): Promise<Account> {
  const account = (await services.accounts.findByUsername(who)) ?? (await services.accounts.findById(who));
  if (!account) throw new CliError(`no account "${who}"`);
  return account;
}

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
      await cli.withServices(async ({ accountAdmin }) => {
        try {
          const account = await accountAdmin.create(input, cli.actor());
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
    .option('--remove', 'end the representation instead, revoking at once the consents, grants and tokens it gave')
    .option('--json', 'print JSON')
    .action(async (repName: string, patientName: string, opts: { relationship: string; remove?: boolean; json?: boolean }) => {
      if (!(RELATIONSHIPS as readonly string[]).includes(opts.relationship)) {
        throw new CliError(`--relationship must be one of ${RELATIONSHIPS.join(', ')}`);
      }
      await cli.withServices(async ({ accounts, audit, consents }) => {
        const rep = await accounts.findByUsername(repName);
        const patient = await accounts.findByUsername(patientName);
        if (!rep || rep.role !== 'patient') throw new CliError(`"${repName}" is not a patient account`);
        if (!patient || patient.role !== 'patient') throw new CliError(`"${patientName}" is not a patient account`);
        if (rep.id === patient.id) throw new CliError('an account always acts for itself');
        const actor = `cli:${cli.io.env.USER ?? 'unknown'}`;
        if (opts.remove) {
          const ended = await consents.endRepresentation(rep, patient, { actor });
          if (!ended) throw new CliError(`"${repName}" does not represent "${patientName}"`);
          cli.print(
            Boolean(opts.json),
            { representative: rep.username, patient: patient.username, removed: true, consents_revoked: ended.consentsRevoked, grants_revoked: ended.grantsRevoked },
            `"${repName}" no longer acts for "${patientName}"; ${ended.consentsRevoked} consent(s) they gave for them revoked`,
          );
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

  const change = (name: string, description: string, run: (s: Services, id: string, arg: string | undefined) => Promise<Account>, arg?: string) => {
    const cmd = user.command(`${name} <username>${arg ? ` <${arg}>` : ''}`).description(description).option('--json', 'print JSON');
    cmd.action(async (...args: unknown[]) => {
      const who = String(args[0]);
      const value = arg ? String(args[1]) : undefined;
      const opts = (arg ? args[2] : args[1]) as { json?: boolean };
      await cli.withServices(async (services) => {
        const account = await accountNamed(services, who);
        try {
          const after = await run(services, account.id, value);
          cli.print(Boolean(opts.json), accountJson(after), `${name}: done for "${after.username}"`);
        } catch (err) {
          if (err instanceof AccountNotFoundError || err instanceof AccountStateError) throw new CliError(err.message);
          throw err;
        }
      });
    });
  };
  change('disable', 'disable an account and end its sessions, grants and tokens', (s, id) => s.accountAdmin.disable(id, cli.actor()));
  change('enable', 'enable a disabled account', (s, id) => s.accountAdmin.enable(id, cli.actor()));
  change('reset-mfa', 'remove the second factor and recovery codes; the user is told on the account page', (s, id) => s.accountAdmin.resetMfa(id, cli.actor()));
  change(
    'link',
    'link a patient to its FHIR Patient id, a practitioner to its Practitioner id',
    (s, id, fhir) => s.accountAdmin.link(id, fhirId.parse(fhir), cli.actor()),
    'fhir-id',
  );
}
