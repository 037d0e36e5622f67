import type { Command } from 'commander';
import { closeDatabase, migrateLatest, migrationStatus, openDatabase } from '../db/index.ts';
import type { CliContext } from './context.ts';

export function registerMigrate(program: Command, cli: CliContext): void {
  program
    .command('migrate')
    .description('apply pending database migrations (also done at start-up)')
    .option('--status', 'list applied and pending migrations without changing anything')
    .option('--json', 'print JSON')
    .action(async (opts: { status?: boolean; json?: boolean }) => {
      const db = await openDatabase(cli.config.database);
      try {
        if (opts.status) {
          const status = await migrationStatus(db);
          cli.print(Boolean(opts.json), status, `applied: ${status.applied.join(', ') || 'none'}\npending: ${status.pending.join(', ') || 'none'}`);
          return;
        }
        const applied = await migrateLatest(db);
        cli.print(Boolean(opts.json), { applied }, applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      } finally {
        await closeDatabase(db);
      }
    });
}
