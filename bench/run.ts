/**
 * `npm run bench [-- options]`: boots Custos as a child process on a freshly seeded database,
 * drives each scenario with a load generator and prints, per scenario, operations per second,
 * operations per second per busy server core, p50 and p99 latency and the server's memory.
 *
 * "Per busy core" divides the throughput by the CPU seconds the server process used per wall
 * second of the run (from /proc/<pid>/stat), so the figure does not depend on how many cores the
 * machine has or how many the load generator took. On PostgreSQL the database's own CPU (its
 * backends serving this benchmark's database) is shown apart; PGlite runs inside the server
 * process, so there the server's figure includes the database.
 *
 * Options: --quick (about 2 s per scenario, small seed: what CI runs), --duration=<s>,
 * --connections=<n>, --flow-concurrency=<n>, --users=<n>, --clients=<n>,
 * --only=<scenario,...>, --profile[=<dir>] (writes a V8 CPU profile of the server; read it with
 * `node bench/profile-top.ts <file>`), --server=<dir> (run the server of another checkout of
 * Custos with the same schema, e.g. the commit before a change, against the same seed),
 * --node-options=<flags> (NODE_OPTIONS for the server, e.g. heap limits).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, createWriteStream, readFileSync, mkdirSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes, randomUUID, sign } from 'node:crypto';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { loadConfig } from '../src/config/index.ts';
import { freePort } from '../test/helpers/server.ts';
import { seedDatabase, type Seed } from './seed.ts';
import { basicAuth, fullFlow, tokenRequest } from './flows.ts';
import { cpuMeter, loadAverage, machineTicks, memoryMiB, rssSampler } from './process-stats.ts';

const ROOT = resolve(import.meta.dirname, '..');
const FHIR_BASE = 'https://fhir.bench.example/r4';

// `--profile` alone means the default folder.
const argv = process.argv.slice(2).map((a) => (a === '--profile' ? '--profile=bench-profiles' : a));
const { values: args } = parseArgs({
  args: argv,
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    connections: { type: 'string' },
    'flow-concurrency': { type: 'string' },
    users: { type: 'string' },
    clients: { type: 'string' },
    only: { type: 'string' },
    profile: { type: 'string' },
    server: { type: 'string' },
    'node-options': { type: 'string' },
  },
  allowPositionals: false,
});
const profileDir = args.profile ? resolve(args.profile) : undefined;

const int = (v: string | undefined, fallback: number) => (v === undefined ? fallback : Math.max(1, Number.parseInt(v, 10) || fallback));
const quick = args.quick;
const settings = {
  duration: int(args.duration, quick ? 2 : 20),
  connections: int(args.connections, 10),
  flowConcurrency: int(args['flow-concurrency'], 4),
  users: int(args.users, quick ? 200 : 3000),
  clients: int(args.clients, quick ? 200 : 3000),
};

interface Target {
  perCore: number;
  p99?: number;
}

interface Scenario {
  name: string;
  what: string;
  target: Target;
  run(ctx: RunContext): Promise<LoadResult>;
}

interface LoadResult {
  ok: number;
  errors: number;
  seconds: number;
  p50: number;
  p99: number;
  firstError?: string;
}

interface RunContext {
  base: string;
  issuer: string;
  seed: Seed;
  tokens: { introspected: string; refreshPool: string[] };
  nextUser(): string;
}

// --- the server under test -------------------------------------------------------------------

interface BenchDatabase {
  env: Record<string, string>;
  /** PIDs of the PostgreSQL backends serving this database (none on PGlite). */
  backends(): Promise<number[]>;
  drop(): Promise<void>;
}

async function createBenchDatabase(dataDir: string): Promise<BenchDatabase> {
  const adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) return { env: { DATA_DIR: dataDir }, backends: async () => [], drop: async () => {} };
  const name = `custos_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    env: { DATA_DIR: dataDir, DATABASE_URL: url.toString() },
    async backends() {
      const { rows } = await admin.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1', [name]);
      return rows.map((r) => r.pid);
    },
    async drop() {
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

function serverEnv(port: number, database: BenchDatabase): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    // Production settings (views cached, argon2id at OWASP's minimum, MFA policy as shipped),
    // behind a TLS-terminating proxy on loopback as a real deployment would be.
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    ISSUER: `https://127.0.0.1:${port}`,
    TRUST_PROXY: '127.0.0.1',
    FHIR_BASE_URLS: FHIR_BASE,
    COOKIE_KEYS: randomBytes(32).toString('base64url'),
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    // The limits stay in the request path (their cost is real) but high enough never to refuse.
    RATE_LIMIT_OAUTH_PER_IP: '1000000',
    RATE_LIMIT_PER_CLIENT: '1000000',
    RATE_LIMIT_PAGES_PER_IP: '1000000',
    RATE_LIMIT_KEY_PREFIX: `bench-${randomBytes(4).toString('hex')}`,
    LOG_LEVEL: 'warn',
    ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
    ...(args['node-options'] ? { NODE_OPTIONS: args['node-options'] } : {}),
    ...database.env,
  };
}

async function startChild(env: Record<string, string>, logFile: string): Promise<ChildProcess> {
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const child = spawn(process.execPath, [...nodeArgs, 'src/main.ts'], { cwd: args.server ? resolve(args.server) : ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logFile);
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const base = `http://127.0.0.1:${env.PORT}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) return child;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error(`the server did not become ready; its log:\n${readFileSync(logFile, 'utf8').slice(-3000)}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

// --- load generation ---------------------------------------------------------------------------

interface AutocannonRequest {
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** Builds each request's body when every request needs a fresh value. */
  setupRequest?: (req: autocannon.Request) => autocannon.Request;
  onResponse?: (status: number, body: string) => void;
  /** Looks at a 2xx response's body; returns what is wrong with it, if anything. */
  check?: (body: string) => string | undefined;
}

async function cannon(ctx: RunContext, request: AutocannonRequest): Promise<LoadResult> {
  let firstError: string | undefined;
  let wrong = 0;
  const { onResponse, check, ...rest } = request;
  const result = await autocannon({
    url: ctx.base,
    // As the TLS-terminating proxy in front of Custos would say.
    headers: { 'x-forwarded-proto': 'https' },
    connections: settings.connections,
    duration: settings.duration,
    requests: [
      {
        ...rest,
        onResponse(status: number, body: string) {
          const problem = status >= 300 ? `${status} ${body.slice(0, 200)}` : check?.(body);
          if (problem) {
            firstError ??= problem;
            if (status < 300) wrong += 1;
          }
          onResponse?.(status, body);
        },
      },
    ],
  });
  return {
    ok: result['2xx'] - wrong,
    errors: result.non2xx + result.errors + result.timeouts + wrong,
    seconds: result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    ...(firstError ? { firstError } : {}),
  };
}

const form = (params: Record<string, string>) => new URLSearchParams(params).toString();
const FORM = 'application/x-www-form-urlencoded';

/** A client assertion (RFC 7523) signed here, synchronously, with a fresh jti each time. */
function clientAssertion(seed: Seed, audience: string): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const id = seed.backend.clientId;
  const input = `${b64({ alg: 'ES384', kid: seed.backend.kid, typ: 'JWT' })}.${b64({ iss: id, sub: id, aud: audience, jti: randomUUID(), iat: now, exp: now + 240 })}`;
  const signature = sign('sha384', Buffer.from(input), { key: seed.backend.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'client_credentials',
    what: 'client_credentials grant, client_secret_basic',
    target: { perCore: 1000, p99: 25 },
    run: (ctx) =>
      cannon(ctx, {
        method: 'POST',
        path: '/token',
        headers: { authorization: basicAuth(ctx.seed.service.clientId, ctx.seed.service.clientSecret), 'content-type': FORM },
        body: form({ grant_type: 'client_credentials', scope: 'system/Observation.rs' }),
      }),
  },
  {
    name: 'private_key_jwt',
    what: 'SMART backend services: client_credentials, ES384 client assertion',
    target: { perCore: 600 },
    run: (ctx) =>
      cannon(ctx, {
        method: 'POST',
        path: '/token',
        headers: { 'content-type': FORM },
        setupRequest: (req) => ({
          ...req,
          body: form({
            grant_type: 'client_credentials',
            scope: 'system/Observation.rs',
            client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
            client_assertion: clientAssertion(ctx.seed, `${ctx.issuer}/token`),
          }),
        }),
      }),
  },
  {
    name: 'refresh',
    what: 'refresh_token grant with rotation (each token used once)',
    target: { perCore: 500 },
    run: (ctx) => {
      // Each connection takes a chain's current token and puts the rotated one back.
      const pool = [...ctx.tokens.refreshPool];
      return cannon(ctx, {
        method: 'POST',
        path: '/token',
        headers: { authorization: basicAuth(ctx.seed.app.clientId, ctx.seed.app.clientSecret), 'content-type': FORM },
        setupRequest: (req) => ({ ...req, body: form({ grant_type: 'refresh_token', refresh_token: pool.shift() ?? 'exhausted' }) }),
        onResponse: (status, body) => {
          if (status === 200) pool.push((JSON.parse(body) as { refresh_token: string }).refresh_token);
        },
      });
    },
  },
  {
    name: 'introspection',
    what: "a resource server introspecting a patient's active access token",
    target: { perCore: 3000, p99: 10 },
    run: (ctx) =>
      cannon(ctx, {
        method: 'POST',
        path: '/token/introspection',
        headers: { authorization: basicAuth(ctx.seed.resourceServer.clientId, ctx.seed.resourceServer.clientSecret), 'content-type': FORM },
        body: form({ token: ctx.tokens.introspected }),
        check: (body) => ((JSON.parse(body) as { active?: boolean }).active ? undefined : 'the token was not active'),
      }),
  },
  {
    name: 'full_flow',
    what: 'authorization code + PKCE: login form (argon2id), TOTP, consent, code exchange',
    target: { perCore: 25 },
    async run(ctx) {
      const latencies: number[] = [];
      let errors = 0;
      let firstError: string | undefined;
      const started = performance.now();
      const end = started + settings.duration * 1000;
      await Promise.all(
        Array.from({ length: settings.flowConcurrency }, async () => {
          while (performance.now() < end) {
            const t0 = performance.now();
            try {
              await fullFlow(ctx.issuer, FHIR_BASE, ctx.seed, ctx.nextUser());
              latencies.push(performance.now() - t0);
            } catch (err) {
              errors += 1;
              firstError ??= String(err);
            }
          }
        }),
      );
      latencies.sort((a, b) => a - b);
      return {
        ok: latencies.length,
        errors,
        seconds: (performance.now() - started) / 1000,
        p50: percentile(latencies, 50),
        p99: percentile(latencies, 99),
        ...(firstError ? { firstError } : {}),
      };
    },
  },
];

// --- the run -----------------------------------------------------------------------------------

interface Row {
  scenario: Scenario;
  result: LoadResult;
  serverCores: number;
  dbCores: number;
  machineCores: number;
  rss: number;
  load: string;
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function table(rows: Row[], idleRss: number, postgres: boolean): string {
  const head = ['scenario', 'ops/s', 'server cores', 'ops/s per core', 'target/core', ...(postgres ? ['db cores'] : []), 'p50 ms', 'p99 ms', 'errors', 'RSS MiB', 'load avg'];
  const lines = rows.map((r) => {
    const opsPerSecond = r.result.ok / r.result.seconds;
    const perCore = r.serverCores > 0 ? opsPerSecond / r.serverCores : 0;
    const met = perCore >= r.scenario.target.perCore && (r.scenario.target.p99 === undefined || r.result.p99 <= r.scenario.target.p99);
    const target = `${met ? 'ok' : 'MISS'} >=${r.scenario.target.perCore}${r.scenario.target.p99 ? `, p99<=${r.scenario.target.p99}` : ''}`;
    return [
      r.scenario.name,
      fmt(opsPerSecond),
      fmt(r.serverCores, 2),
      fmt(perCore),
      target,
      ...(postgres ? [fmt(r.dbCores, 2)] : []),
      fmt(r.result.p50, 1),
      fmt(r.result.p99, 1),
      String(r.result.errors),
      fmt(r.rss),
      r.load,
    ];
  });
  const all = [head, ...lines];
  const widths = head.map((_, i) => Math.max(...all.map((l) => l[i]!.length)));
  const render = (l: string[]) => `| ${l.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  const idle = `idle server RSS after boot: ${fmt(idleRss)} MiB (${idleRss <= 120 ? 'ok' : 'MISS'} <=120)`;
  return [render(head), rule, ...lines.map(render), '', idle].join('\n');
}

async function main() {
  const selected = args.only ? SCENARIOS.filter((s) => args.only!.split(',').includes(s.name)) : SCENARIOS;
  if (selected.length === 0) throw new Error(`--only: no such scenario; the scenarios are ${SCENARIOS.map((s) => s.name).join(', ')}`);
  if (profileDir) mkdirSync(profileDir, { recursive: true });

  const work = mkdtempSync(join(tmpdir(), 'custos-bench-'));
  const database = await createBenchDatabase(work);
  const postgres = Boolean(database.env.DATABASE_URL);
  const port = await freePort();
  const env = serverEnv(port, database);
  let child: ChildProcess | undefined;
  try {
    console.log(`custos bench: ${postgres ? 'PostgreSQL' : 'PGlite (embedded)'}, rate-limit store ${env.REDIS_URL ? 'Redis' : postgres ? 'PostgreSQL' : 'memory'}`);
    console.log(`  ${settings.duration} s per scenario, ${settings.connections} connections (full flow: ${settings.flowConcurrency} at once), ${settings.users} patients, ${settings.clients} extra clients`);
    console.log(`  machine: ${availableParallelism()} CPUs, load average ${loadAverage()}`);
    if (args.server) console.log(`  server from ${resolve(args.server)}`);
    if (args['node-options']) console.log(`  server NODE_OPTIONS=${args['node-options']}`);

    const seedStarted = performance.now();
    const seed = await seedDatabase(loadConfig(env), { users: settings.users, clients: settings.clients });
    console.log(`  seeded in ${fmt((performance.now() - seedStarted) / 1000, 1)} s`);

    child = await startChild(env, join(work, 'server.log'));
    const pid = child.pid!;
    // Let start-up work (key loading, first compilations) settle before reading idle memory.
    await new Promise((r) => setTimeout(r, 2000));
    const idleRss = memoryMiB(pid).rss;

    const base = `http://127.0.0.1:${port}`;
    const issuer = env.ISSUER!;
    let userIndex = 0;
    const nextUser = () => {
      // A TOTP code works once per account and time step, so every flow signs in a new patient.
      if (userIndex >= seed.users.length) throw new Error(`all ${seed.users.length} seeded patients have signed in; seed more with --users`);
      return seed.users[userIndex++]!;
    };

    // Tokens the scenarios need: refresh-token chains (one per connection, and spares) and a
    // patient's access token for the resource server to introspect.
    const preparing = Array.from({ length: settings.connections + 2 }, () => fullFlow(issuer, FHIR_BASE, seed, nextUser()));
    const prepared = await Promise.all(preparing);
    const refreshPool = prepared.map((t) => t.refresh_token).filter((t) => t !== undefined);
    if (refreshPool.length !== prepared.length) throw new Error('the app got no refresh token (offline_access)');
    const introspected = (await tokenRequest(issuer, seed.app, { grant_type: 'refresh_token', refresh_token: refreshPool.pop()! })).access_token;
    const ctx: RunContext = { base, issuer, seed, tokens: { introspected, refreshPool }, nextUser };

    const rows: Row[] = [];
    const serverCpu = cpuMeter(() => [pid]);
    const dbCpu = cpuMeter(() => database.backends());
    for (const scenario of selected) {
      const load = loadAverage();
      const machineBefore = machineTicks();
      const rss = rssSampler(pid);
      await serverCpu.start();
      await dbCpu.start();
      const result = await scenario.run(ctx);
      const serverCores = await serverCpu.stop();
      const dbCores = await dbCpu.stop();
      const machineAfter = machineTicks();
      const machineCores =
        ((machineAfter.busy - machineBefore.busy) / Math.max(1, machineAfter.total - machineBefore.total)) * availableParallelism();
      const row = { scenario, result, serverCores, dbCores, machineCores, rss: rss.stop(), load };
      rows.push(row);
      console.log(
        `  ${scenario.name}: ${fmt(result.ok)} ok, ${result.errors} errors in ${fmt(result.seconds, 1)} s; server ${fmt(serverCores, 2)} cores, machine ${fmt(machineCores, 2)} cores busy` +
          (result.firstError ? `\n    first error: ${result.firstError}` : ''),
      );
    }

    console.log('');
    console.log(table(rows, idleRss, postgres));
    console.log('');
    for (const r of rows) console.log(`${r.scenario.name}: ${r.scenario.what}`);
    console.log(
      [
        '',
        'ops/s per core = ops/s / server cores; server cores = CPU seconds the server process used per wall second',
        `(its libuv threads, argon2 included${postgres ? '' : ', and the embedded database'}). ${postgres ? 'db cores = CPU of the PostgreSQL backends serving this run, not counted per core. ' : ''}`,
        'Latency is per request (per whole flow for full_flow) as the load generator saw it; load avg is the',
        "machine's at the start of each scenario: other work on the machine makes every figure noisier.",
      ].join('\n'),
    );
    const failed = rows.filter((r) => r.result.errors > 0 || r.result.ok === 0);
    if (failed.length > 0) {
      console.error(`\nfailed: ${failed.map((r) => r.scenario.name).join(', ')} (errors, or nothing completed)`);
      process.exitCode = 1;
    }
  } finally {
    if (child) await stopChild(child);
    await database.drop();
    rmSync(work, { recursive: true, force: true });
    if (profileDir) console.log(`CPU profile written to ${profileDir}`);
  }
}

await main();
