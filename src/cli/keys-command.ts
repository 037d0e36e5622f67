import type { Command } from 'commander';
import { listSigningKeys, rotateSigningKeys } from '../keys/index.ts';
import { signedTokenMaxLifetime } from '../oidc/index.ts';
import { table, type CliContext } from './context.ts';

export function registerKeys(program: Command, cli: CliContext): void {
  const keys = program.command('keys').description('manage the signing keys');

  keys
    .command('rotate')
    .description('add new signing keys; the current ones stop signing and stay published until what they signed has expired')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const retireAfter = signedTokenMaxLifetime(cli.config);
      await cli.withServices(async ({ db }) => {
        const kids = await rotateSigningKeys(db, cli.config.secrets.keyEncryptionKey, retireAfter);
        cli.print(
          Boolean(opts.json),
          { created: kids, previous_keys_retire_in_seconds: retireAfter },
          `new signing keys: ${kids.join(', ')}\nprevious keys stay published for ${retireAfter} s; restart the servers to sign with the new keys`,
        );
      });
    });

  keys
    .command('list')
    .description('list signing keys')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await cli.withServices(async ({ db }) => {
        const list = await listSigningKeys(db);
        cli.print(
          Boolean(opts.json),
          list.map((k) => ({ kid: k.kid, alg: k.alg, created_at: k.createdAt.toISOString(), retire_at: k.retireAt?.toISOString() ?? null })),
          table(['KID', 'ALG', 'CREATED', 'RETIRES'], list.map((k) => [k.kid, k.alg, k.createdAt.toISOString(), k.retireAt?.toISOString() ?? '-'])),
        );
      });
    });
}
