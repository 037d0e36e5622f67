/**
 * The real server as a child process (`node src/main.ts` configured through its environment), for
 * tests that must kill it hard or watch it survive: what happens to the process is the point.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface ServerProcess {
  child: ChildProcess;
  /** Everything the process wrote so far (its log lines), for failure messages. */
  output(): string;
  /** Resolves with the exit code or signal once the process is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive(): boolean;
  /** Sends `signal` and waits for the process to go. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node src/main.ts` with `env`, without waiting for it (see {@link startServerProcess}). */
export function spawnServerProcess(env: Record<string, string>): ServerProcess {
  const child = spawn(process.execPath, ['src/main.ts'], {
    cwd: ROOT,
    env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  let running = true;
  // 'close' rather than 'exit': by then everything the process wrote has been read.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
  });
  return {
    child,
    output: () => log,
    exited,
    alive: () => running,
    async stop(signal = 'SIGTERM') {
      if (running) child.kill(signal);
      return exited;
    },
  };
}

/** Starts `node src/main.ts` with `env` and waits until `issuer`/healthz answers. */
export async function startServerProcess(env: Record<string, string>, issuer: string): Promise<ServerProcess> {
  const proc = spawnServerProcess(env);
  // Polls rather than waits a fixed time: start-up runs migrations and may take a while.
  for (let attempt = 0; attempt < 600; attempt += 1) {
    if (!proc.alive()) throw new Error(`the server exited during start-up:\n${proc.output()}`);
    try {
      const res = await fetch(`${issuer}/healthz`);
      if (res.ok) return proc;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await proc.stop('SIGKILL');
  throw new Error(`the server did not start:\n${proc.output()}`);
}
