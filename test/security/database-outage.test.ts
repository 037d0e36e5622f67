/**
 * Database outage (issue 8): the server runs as a child process whose PostgreSQL connection goes
 * through a proxy the test cuts and restores. While the database is away every request gets a
 * clean 503 (never a crash or a stack trace), readiness says not ready, liveness stays up,
 * introspection fails closed; when it returns, service resumes without a restart.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { text } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../../src/config/index.ts';
import { closeDatabase } from '../../src/db/index.ts';
import { openServices, type Services } from '../../src/main.ts';
import { createLogger } from '../../src/logging/index.ts';
import { enrolTotp } from '../helpers/totp.ts';
import { adminUrl, createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { freePort, testEnv, TEST_PASSWORD, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, formActionOf } from '../helpers/browserless.ts';
import { ADMIN_TOOL, signInForTokens } from '../helpers/admin.ts';
import { startDbProxy, type DbProxy } from '../helpers/db-proxy.ts';
import { spawnServerProcess, startServerProcess, type ServerProcess } from '../helpers/server-process.ts';

// Far above the configured database timeouts (2 s): a request still unanswered by then hangs.
const HANG_LIMIT_MS = 20_000;

interface Answer {
  status: number;
  type: string;
  retryAfter: string | null;
  text: string;
}


const NO_INTERNALS = /at \w+ \(|node_modules|ECONN|Connection terminated|Query read timeout|select |insert |KnexTimeout|oops/i;

describe('database outage', { skip: adminUrl ? false : 'needs DATABASE_URL: the embedded database cannot be taken away from a running process' }, () => {
  let database: TestDatabase;
  let proxy: DbProxy;
  let server: ServerProcess;
  let issuer: string;
  let rsBasic: string;
  let adminToken: string;
  let loginPage: string;
  let loginForm: string;
  const browser = new UserAgent();
  let appId: string;

  before(async () => {
    database = await createTestDatabase();
    proxy = await startDbProxy({ host: '127.0.0.1', port: Number(new URL(adminUrl!).port || 5432) });
    const port = await freePort();
    issuer = `http://localhost:${port}`;
    const env = testEnv(database, port, { LOG_LEVEL: 'warn' });
    // Seeded directly; only the server goes through the proxy.
    const services: Services = await openServices(loadConfig(env), createLogger('silent'));
    let adminSecret: string;
    let toolId: string;
    try {
      const s = await services.clients.create({ client_name: 'Outage service', grant_types: ['client_credentials'], scope: 'custos:introspect' });
      rsBasic = `Basic ${Buffer.from(`${encodeURIComponent(s.client.clientId)}:${encodeURIComponent(s.clientSecret!)}`).toString('base64')}`;
      const app = await services.clients.create({ client_name: 'Outage app', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], scope: 'openid' });
      appId = app.client.clientId;
      const tool = await services.clients.create(ADMIN_TOOL, { category: 'internal', verified: true });
      toolId = tool.client.clientId;
      await services.accounts.create({ username: 'outage-patient', role: 'patient', password: TEST_PASSWORD, fhirId: 'outage-1' });
      const admin = await services.accounts.create({ username: 'outage-admin', role: 'admin', password: TEST_PASSWORD });
      adminSecret = await enrolTotp(services.mfa, admin.id);
      server = await startServerProcess({ ...env, DATABASE_URL: proxy.url(env.DATABASE_URL!), DATABASE_CONNECT_TIMEOUT: '2', DATABASE_QUERY_TIMEOUT: '2' }, issuer);
    } finally {
      await closeDatabase(services.db);
    }
    const tool = await discover(issuer, toolId, undefined, oidc.None());
    // signInForTokens only needs the issuer: it drives the real pages over HTTP.
    adminToken = (await signInForTokens({ issuer } as TestServer, tool, { username: 'outage-admin', password: TEST_PASSWORD, secret: adminSecret })).access_token;
    const app = await discover(issuer, appId, undefined);
    const flow = await startCodeFlow(app);
    const page = await browser.follow(flow.url.toString(), issuer);
    assert.equal(page.status, 200);
    assert.match(page.body, /\/login"/, 'the login page');
    loginPage = page.url;
    loginForm = page.body;
  });

  after(async () => {
    await server?.stop('SIGKILL');
    await proxy?.close();
    await database?.drop();
  });

  async function call(url: string, init: RequestInit = {}): Promise<Answer> {
    let res: Response;
    try {
      res = await fetch(url, { ...init, redirect: 'manual', signal: AbortSignal.timeout(HANG_LIMIT_MS) });
    } catch (err) {
      // A crashing server may still be exiting when its connection drops.
      await Promise.race([server.exited, sleep(1000)]);
      const reason = [err, (err as Error).cause].map((e) => (e instanceof Error ? e.message : '')).filter(Boolean).join(': ');
      throw new Error(`${url}: no answer (${reason}); the server ${server.alive() ? 'is still running' : 'died'}:\n${server.output()}`, { cause: err });
    }
    return { status: res.status, type: res.headers.get('content-type') ?? '', retryAfter: res.headers.get('retry-after'), text: await res.text() };
  }

  const token = () =>
    call(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: rsBasic, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&scope=custos%3Aintrospect',
    });
  const introspect = (value: string) =>
    call(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: rsBasic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: value }).toString(),
    });
  const bearerIntrospect = (bearer: string, value: string) =>
    call(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: value }).toString(),
    });
  const adminClients = () => call(`${issuer}/admin/api/clients`, { headers: { authorization: `Bearer ${adminToken}`, accept: 'application/json' } });
  const asAnswer = (res: { status: number; headers: Headers; body: string }): Answer => ({
    status: res.status,
    type: res.headers.get('content-type') ?? '',
    retryAfter: res.headers.get('retry-after'),
    text: res.body,
  });
  const login = async () => asAnswer(await browser.request(loginPage, { headers: { accept: 'text/html' } }));
  /** Submits the login form of the page seen before the outage (its CSRF token is still good). */
  const signIn = async () => {
    return asAnswer(
      await browser.request(new URL(formActionOf(loginForm, 'login'), issuer).toString(), {
        form: { _csrf: csrfTokenOf(loginForm), username: 'outage-patient', password: TEST_PASSWORD },
        headers: { accept: 'text/html' },
      }),
    );
  };
  const authorizeStart = () =>
    call(`${issuer}/auth?${new URLSearchParams({ client_id: appId, response_type: 'code', scope: 'openid', redirect_uri: REDIRECT_URI, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })}`, {
      headers: { accept: 'text/html' },
    });

  async function activeToken(): Promise<string> {
    const res = await token();
    assert.equal(res.status, 200, res.text);
    return (JSON.parse(res.text) as { access_token: string }).access_token;
  }

  async function waitUntilReady() {
    for (let attempt = 0; attempt < 100; attempt += 1) {
      if ((await call(`${issuer}/readyz`)).status === 200) return;
      await sleep(200);
    }
    assert.fail('the server did not become ready again after the database came back');
  }

  function assertUnavailableJson(res: Answer, what: string) {
    assert.equal(res.status, 503, `${what}: ${res.status} ${res.text.slice(0, 300)}`);
    assert.match(res.type, /application\/json/, what);
    const body = JSON.parse(res.text) as Record<string, unknown>;
    assert.equal(body.error, 'temporarily_unavailable', what);
    assert.equal(typeof body.error_description, 'string', what);
    assert.equal(body.active, undefined, `${what}: never an introspection answer`);
    assert.ok(Number(res.retryAfter) > 0, `${what}: Retry-After`);
    assert.doesNotMatch(res.text, NO_INTERNALS, what);
  }

  it('refuses to start, and the CLI refuses to run, with a clear message when the database cannot be reached', async () => {
    const port = await freePort();
    const env = { ...testEnv(database, port, { LOG_LEVEL: 'info' }), DATABASE_URL: proxy.url(database.env.DATABASE_URL!), DATABASE_CONNECT_TIMEOUT: '2' };
    proxy.cut('refuse');
    try {
      const starting = spawnServerProcess(env);
      const exit = await starting.exited;
      assert.equal(exit.code, 1, starting.output());
      assert.match(starting.output(), /the database is unreachable or not answering \(\w+\); check DATABASE_URL and that PostgreSQL is running/);
      assert.doesNotMatch(starting.output(), /\n\s+at |"stack"/, 'no stack trace');

      const cli = spawn(process.execPath, ['src/cli/main.ts', 'user', 'list'], {
        cwd: fileURLToPath(new URL('../../', import.meta.url)),
        env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const [stdout, stderr, code] = await Promise.all([text(cli.stdout), text(cli.stderr), new Promise<number | null>((resolve) => cli.once('close', resolve))]);
      assert.equal(code, 1, stderr);
      assert.equal(stdout, '');
      assert.match(stderr, /^error: the database is unreachable or not answering \(\w+\); check DATABASE_URL and that PostgreSQL is running\n$/);
    } finally {
      proxy.restore();
    }
  });

  for (const mode of ['refuse', 'hang'] as const) {
    it(`answers 503 while the database ${mode === 'refuse' ? 'is down' : 'does not answer'}, and resumes by itself when it is back`, async () => {
      const pid = server.child.pid;
      const held = await activeToken();
      const ownToken = await activeToken();
      assert.equal((JSON.parse((await introspect(held)).text) as { active: boolean }).active, true);

      proxy.cut(mode);
      try {
        assert.equal((await call(`${issuer}/healthz`)).status, 200, 'liveness does not depend on the database');
        const ready = await call(`${issuer}/readyz`);
        assert.equal(ready.status, 503);
        assert.deepEqual(JSON.parse(ready.text), { status: 'unavailable' });

        assertUnavailableJson(await token(), 'token endpoint');
        assertUnavailableJson(await introspect(held), 'introspection');
        assertUnavailableJson(await bearerIntrospect(ownToken, held), 'introspection with a bearer token');

        const admin = await adminClients();
        assert.equal(admin.status, 503, admin.text.slice(0, 300));
        assert.match(admin.type, /application\/problem\+json/);
        const problem = JSON.parse(admin.text) as Record<string, unknown>;
        assert.equal(problem.status, 503);
        assert.equal(problem.type, 'urn:custos:problem:temporarily_unavailable');
        assert.ok(Number(admin.retryAfter) > 0);
        assert.doesNotMatch(admin.text, NO_INTERNALS);

        const pages = [
          ['login page', await login()],
          ['login form submitted', await signIn()],
          ['authorization request', await authorizeStart()],
        ] as const;
        for (const [what, res] of pages) {
          assert.equal(res.status, 503, `${what}: ${res.status} ${res.text.slice(0, 300)}`);
          assert.match(res.type, /text\/html/, what);
          assert.match(res.text, /temporarily unavailable/i, `${what}: says what is wrong`);
          assert.doesNotMatch(res.text, NO_INTERNALS, what);
        }
        assert.ok(server.alive(), `the server process survived:\n${server.output()}`);
        const log = server.output();
        assert.match(log, /"msg":"database unavailable"/, 'the outage is in the log');
        assert.doesNotMatch(log, /"msg":"(unhandled error|provider server error)"/, 'as what it is, not as unknown failures');
      } finally {
        proxy.restore();
      }

      await waitUntilReady();
      assert.equal(server.child.pid, pid, 'the same process, not a restart');
      assert.ok(server.alive());
      const fresh = await activeToken();
      const info = await introspect(fresh);
      assert.equal(info.status, 200, info.text);
      assert.equal((JSON.parse(info.text) as { active: boolean }).active, true);
      assert.equal((JSON.parse((await introspect(held)).text) as { active: boolean }).active, true, 'tokens from before the outage still work');
      assert.equal((await adminClients()).status, 200);
      assert.equal((await login()).status, 200);
    });
  }
});
