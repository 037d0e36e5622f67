/**
 * An exclusive lock on the embedded database's data folder. PGlite cannot be shared between
 * processes, so a second `custos` process (a CLI command while `npm start` runs, say) must stop
 * with a clear message rather than open the same files.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export class DatabaseBusyError extends Error {
  override name = 'DatabaseBusyError';
}

export interface DataDirLock {
  release(): void;
}

const heldInThisProcess = new Set<string>();

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireDataDirLock(dataDir: string): Promise<DataDirLock> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dirname(dataDir), `${dataDir.split('/').pop()}.lock`);
  if (heldInThisProcess.has(file)) {
    throw new DatabaseBusyError(`the embedded database in ${dataDir} is already open in this process`);
  }
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      heldInThisProcess.add(file);
      return {
        release() {
          if (!heldInThisProcess.delete(file)) return;
          rmSync(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(readFileSync(file, 'utf8'), 10);
      if (Number.isInteger(holder) && holder !== process.pid && processAlive(holder)) {
        throw new DatabaseBusyError(
          `the embedded database in ${dataDir} is in use by process ${holder} (is the server running?). ` +
            'Stop it first, or point DATABASE_URL at a PostgreSQL server to share one database between processes.',
        );
      }
      // A stale lock left by a process that died: take it over.
      rmSync(file, { force: true });
    }
  }
  throw new DatabaseBusyError(`could not lock the embedded database in ${dataDir}`);
}
