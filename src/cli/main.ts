#!/usr/bin/env node
/**
 * The `custos` command line. Every command validates its input before it writes anything, prints
 * a readable message and exits non-zero on bad input, and offers `--json` for scripting.
 */
import { Command, CommanderError } from 'commander';
import { CliContext, userFacingMessage, type CliIo } from './context.ts';
import { registerMigrate } from './migrate-command.ts';
import { registerUser } from './user-command.ts';
import { registerClient } from './client-command.ts';
import { registerKeys } from './keys-command.ts';
import { registerDemo } from './demo-command.ts';
import { registerAudit } from './audit-command.ts';
import { registerFhirProxy } from './fhir-proxy-command.ts';

/** Runs the CLI and returns its exit code (tests call this directly). */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const cli = new CliContext(io);
  const program = new Command('custos')
    .description('Custos, a patient-consent-aware OAuth 2.0 / OpenID Connect server for healthcare')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError();
  registerMigrate(program, cli);
  registerUser(program, cli);
  registerClient(program, cli);
  registerKeys(program, cli);
  registerDemo(program, cli);
  registerAudit(program, cli);
  registerFhirProxy(program, cli);
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) sub.exitOverride();
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const message = userFacingMessage(err);
    if (message) {
      io.stderr.write(`error: ${message}\n`);
      return 1;
    }
    io.stderr.write(`error: unexpected failure: ${(err as Error).message}\n`);
    return 70;
  }
}

if (import.meta.main) {
  process.exitCode = await runCli(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
  });
}
