/**
 * What every CLI command shares: the configuration, the services (opened only for the duration
 * of the command), output as text or JSON, and one way to fail: a message and a non-zero exit.
 */
import { userInfo } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { z } from 'zod';
import { loadConfig, ConfigError, type Config } from '../config/index.ts';
import { closeDatabase, DatabaseBusyError, isDatabaseUnavailable, unavailableMessage } from '../db/index.ts';
import { createLogger } from '../logging/index.ts';
import { openServices, type Services } from '../main.ts';

export interface CliIo {
  stdout: Writable;
  stderr: Writable;
  stdin: Readable & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

/** A failure the user can fix; printed without a stack trace. */
export class CliError extends Error {
  override name = 'CliError';
}

export function describeZodError(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.length ? `${i.path.join('.')}: ` : ''}${i.message}`).join('\n');
}

export function userFacingMessage(err: unknown): string | undefined {
  if (err instanceof CliError || err instanceof ConfigError || err instanceof DatabaseBusyError) return err.message;
  if (err instanceof z.ZodError) return describeZodError(err);
  if (isDatabaseUnavailable(err)) return unavailableMessage(err);
  return undefined;
}

export class CliContext {
  readonly io: CliIo;
  #config: Config | undefined;

  constructor(io: CliIo) {
    this.io = io;
  }

  get config(): Config {
    this.#config ??= loadConfig(this.io.env, (msg) => this.io.stderr.write(`${msg}\n`));
    return this.#config;
  }

  /** Opens the database (applying migrations), runs `fn`, and always closes it again. */
  async withServices<T>(fn: (services: Services) => Promise<T>): Promise<T> {
    const services = await openServices(this.config, createLogger('warn'));
    try {
      return await fn(services);
    } finally {
      await closeDatabase(services.db);
    }
  }

  /**
   * Who the audit trail says acted: `cli:<operating-system user>`. The CLI runs with direct
   * database access, so the OS account is the identity there is to record.
   */
  actor(): { actor: string; ip?: string } {
    let name: string;
    try {
      name = userInfo().username;
    } catch {
      name = 'unknown';
    }
    return { actor: `cli:${name}` };
  }

  /** Prints `value` as JSON with --json, otherwise as the given text. */
  print(json: boolean, value: unknown, text: string): void {
    this.io.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text}\n`);
  }
}

export async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

/** Fixed-width columns for list output. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export const pageLimit = z.coerce
  .number({ error: '--limit must be a whole number from 1 to 500' })
  .int({ error: '--limit must be a whole number from 1 to 500' })
  .min(1, { error: '--limit must be a whole number from 1 to 500' })
  .max(500, { error: '--limit must be a whole number from 1 to 500' });
