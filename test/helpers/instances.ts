/**
 * Custos instances behind a balancer: server processes (see server-process.ts) on a given port,
 * ready once they log that they are, with their log lines at hand.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnServerProcess, type ServerProcess } from './server-process.ts';

export interface Instance {
  readonly url: string;
  readonly port: number;
  readonly process: ServerProcess;
  /** Log lines (pino JSON) the instance wrote so far. */
  logs(): Record<string, unknown>[];
  /** Sends the signal and resolves with the exit code once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function jsonLines(output: string): Record<string, unknown>[] {
  return output.split('\n').flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

export async function startInstance(env: Record<string, string>, port: number, timeoutMs = 60_000): Promise<Instance> {
  // The ready line is how we know it listens, so the log level is at least info.
  const proc = spawnServerProcess({ ...env, PORT: String(port), LOG_LEVEL: 'info' });
  const deadline = Date.now() + timeoutMs;
  while (!proc.output().includes('"msg":"Custos is ready"')) {
    if (!proc.alive()) throw new Error(`instance on ${port} exited before it was ready:\n${proc.output().slice(-2000)}`);
    if (Date.now() > deadline) {
      await proc.stop('SIGKILL');
      throw new Error(`instance on ${port} not ready after ${timeoutMs} ms:\n${proc.output().slice(-2000)}`);
    }
    await sleep(50);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process: proc,
    logs: () => jsonLines(proc.output()),
    async stop(signal = 'SIGTERM') {
      return (await proc.stop(signal)).code;
    },
  };
}
