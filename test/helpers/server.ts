/**
 * Boots the real Custos server (the same `startServer` production runs) on a free port with a
 * clean database, and offers fixtures to create accounts and clients through the real services.
 */
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { loadConfig, type Config } from '../../src/config/index.ts';
import { startServer, type RunningServer } from '../../src/main.ts';
import { createLogger } from '../../src/logging/index.ts';
import type { NewAccount } from '../../src/accounts/index.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface TestServer {
  issuer: string;
  config: Config;
  running: RunningServer;
  database: TestDatabase;
  createAccount(input: Partial<NewAccount> & { username: string }): Promise<{ id: string; username: string; password: string }>;
  createClient(metadata: Record<string, unknown>): Promise<{ clientId: string; clientSecret?: string }>;
  /** Stops the HTTP server and closes the database, keeping the data (for restart tests). */
  stop(): Promise<void>;
  /** Starts again on the same port and data. */
  restart(): Promise<void>;
  /** Stops and deletes the database. */
  close(): Promise<void>;
}

export const TEST_PASSWORD = 'correct horse battery staple';

export function testEnv(database: TestDatabase, port: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    PORT: String(port),
    HOST: '127.0.0.1',
    ISSUER: `http://localhost:${port}`,
    ARGON2_MEMORY_KIB: '1024',
    ARGON2_TIME_COST: '1',
    LOG_LEVEL: 'silent',
    // Tests drive many flows from one address within a minute; the rate-limit tests set their own.
    RATE_LIMIT_OAUTH_PER_IP: '100000',
    RATE_LIMIT_PAGES_PER_IP: '100000',
    RATE_LIMIT_PER_CLIENT: '100000',
    ...database.env,
    ...extra,
  };
}

/**
 * `behindHttpsProxy`: the server is configured as if a trusted reverse proxy terminated TLS in
 * front of it (https issuer, TRUST_PROXY=true); talk to it with `new UserAgent({ behindHttpsProxy: true })`.
 */
export async function startTestServer(
  opts: {
    env?: Record<string, string> | ((issuer: string) => Record<string, string>);
    behindHttpsProxy?: boolean;
    /** The clock consent expiry is judged by (a controllable one for expiry tests). */
    clock?: () => Date;
  } = {},
): Promise<TestServer> {
  const database = await createTestDatabase();
  const port = await freePort();
  const issuer = `${opts.behindHttpsProxy ? 'https' : 'http'}://localhost:${port}`;
  const proxy: Record<string, string> = opts.behindHttpsProxy ? { ISSUER: issuer, TRUST_PROXY: 'true' } : {};
  const extra = typeof opts.env === 'function' ? opts.env(issuer) : opts.env;
  const config = loadConfig(testEnv(database, port, { ...proxy, ...extra }));
  const log = createLogger(config.logLevel);
  const overrides = opts.clock ? { clock: opts.clock } : {};
  let running = await startServer(config, log, overrides);
  let stopped = false;
  const ts: TestServer = {
    issuer: config.issuer,
    config,
    get running() {
      return running;
    },
    database,
    async createAccount(input) {
      const password = input.password ?? TEST_PASSWORD;
      const role = input.role ?? 'patient';
      const account = await running.services.accounts.create({
        role,
        password,
        fhirId: role === 'admin' ? undefined : (input.fhirId ?? `id-${input.username}`),
        ...input,
      } as NewAccount);
      return { id: account.id, username: account.username, password };
    },
    async createClient(metadata) {
      const { client, clientSecret } = await running.services.clients.create(metadata);
      return clientSecret ? { clientId: client.clientId, clientSecret } : { clientId: client.clientId };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await running.close();
    },
    async restart() {
      await ts.stop();
      running = await startServer(config, log, overrides);
      stopped = false;
    },
    async close() {
      await ts.stop();
      await database.drop();
    },
  };
  return ts;
}
