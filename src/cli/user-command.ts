import type { Command } from 'commander';
import { newAccountSchema, ROLES, type Account } from '../accounts/index.ts';
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
