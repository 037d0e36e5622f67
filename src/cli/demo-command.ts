import type { Command } from 'commander';
import { seedDemo } from '../demo/index.ts';
import { CliError, table, type CliContext } from './context.ts';

export function registerDemo(program: Command, cli: CliContext): void {
  program
    .command('demo')
    .description('seed demo accounts, a demo SMART app and a demo EHR client (not in production)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      if (cli.config.env === 'production') throw new CliError('the demo is not available with NODE_ENV=production');
      await cli.withServices(async ({ accounts, clients }) => {
        const seed = await seedDemo(accounts, clients, cli.config.issuer);
        const rows = seed.created.map((c) => [c.kind, c.name, c.id, c.secret ?? '-']);
        const text = [
          seed.created.length ? table(['KIND', 'NAME', 'ID', 'PASSWORD OR SECRET (shown once)'], rows) : 'nothing new to create',
          seed.skipped.length ? `already there: ${seed.skipped.join(', ')}` : '',
          `start the server (npm start) and open ${cli.config.issuer}/demo`,
        ]
          .filter(Boolean)
          .join('\n');
        cli.print(Boolean(opts.json), seed, text);
      });
    });
}
