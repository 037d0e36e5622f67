/**
 * Custos instances as separate processes (`node src/main.ts`, exactly what `npm start` runs), for
 * tests about what several instances share and how one stops.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface Instance {
  readonly url: string;
  readonly port: number;
  readonly process: ChildProcess;
  /** Log lines (pino JSON) the instance wrote so far. */
  readonly logs: Record<string, unknown>[];
  /** Sends the signal and resolves with the exit code once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startInstance(env: Record<string, string>, port: number, timeoutMs = 60_000): Promise<Instance> {
  const child = spawn(process.execPath, ['src/main.ts'], {
    cwd: ROOT,
    // The ready line is how we know it listens, so the log level is at least info.
    env: { PATH: process.env.PATH ?? '', ...env, PORT: String(port), LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let buffered = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`instance on ${port} not ready after ${timeoutMs} ms: ${stderr.slice(-2000)}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'Custos is ready') {
            clearTimeout(timer);
            resolve();
          }
        } catch {
          // pretty-printed or partial output is not ours to parse
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`instance on ${port} exited with ${code} before it was ready: ${stderr.slice(-2000)}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process: child,
    logs,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}
