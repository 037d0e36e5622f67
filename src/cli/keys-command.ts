import type { Command } from 'commander';
import { listSigningKeys, rotateSigningKeys } from '../keys/index.ts';
import { rotationTiming } from '../oidc/index.ts';
import { table, type CliContext } from './context.ts';

export function registerKeys(program: Command, cli: CliContext): void {
  const keys = program.command('keys').description('manage the signing keys');

  keys
    .command('rotate')
    .description('add new signing keys: published at once, signing shortly after on every server; the old ones stay published until what they signed has expired')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const timing = rotationTiming(cli.config);
      await cli.withServices(async ({ db }) => {
        const hadKeys = (await listSigningKeys(db)).some((k) => k.retireAt === null);
        const created = await rotateSigningKeys(db, cli.config.secrets.keyEncryptionKey, timing);
        const retireIn = hadKeys ? timing.activateAfterSeconds + timing.maxSignedLifetimeSeconds : 0;
        cli.print(
          Boolean(opts.json),
          {
            created: created.map((k) => ({ kid: k.kid, alg: k.alg, activates_at: k.activatesAt.toISOString() })),
            previous_keys_retire_in_seconds: retireIn,
          },
          [
            `new signing keys: ${created.map((k) => `${k.kid} (${k.alg})`).join(', ')}`,
            `published now; every running server signs with them from ${created[0]?.activatesAt.toISOString()} (no restart needed)`,
            hadKeys
              ? `the previous keys stay published for ${retireIn} s, until everything they signed has expired`
              : 'there were no keys before: these sign at once',
          ].join('\n'),
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
          list.map((k) => ({
            kid: k.kid,
            alg: k.alg,
            created_at: k.createdAt.toISOString(),
            activates_at: k.activatesAt.toISOString(),
            retire_at: k.retireAt?.toISOString() ?? null,
          })),
          table(
            ['KID', 'ALG', 'CREATED', 'SIGNS FROM', 'RETIRES'],
            list.map((k) => [k.kid, k.alg, k.createdAt.toISOString(), k.activatesAt.toISOString(), k.retireAt?.toISOString() ?? '-']),
          ),
        );
      });
    });
}
