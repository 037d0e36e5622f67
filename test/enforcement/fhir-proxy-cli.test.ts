import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { runCli } from '../../src/cli/main.ts';
import { loadFhirProxyConfig } from '../../src/config/index.ts';
import { createPageLinkSeal } from '../../src/enforcement/page-link-seal.ts';
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover } from '../helpers/oidc-client.ts';
import { startFhirTestServer, type FhirTestServer } from '../helpers/fhir-test-server.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PAGE_SECRET = 'the paging secret the proxy instances share';

async function cli(argv: string[], env: Record<string, string>) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: string[] = [];
  const err: string[] = [];
  stdout.on('data', (c: Buffer) => out.push(String(c)));
  stderr.on('data', (c: Buffer) => err.push(String(c)));
  const code = await runCli(argv, { stdout, stderr, stdin: new PassThrough(), env });
  return { code, stdout: out.join(''), stderr: err.join('') };
}

describe('fhir-proxy configuration', () => {
  const base = { FHIR_PROXY_UPSTREAM: 'http://fhir.internal:8080/fhir/', ISSUER: 'https://custos.example', FHIR_PROXY_INTROSPECTION_CLIENT_ID: 'rs', FHIR_PROXY_INTROSPECTION_CLIENT_SECRET: 'secret' };

  it('reads the environment, lets flags win, and has safe defaults', () => {
    const c = loadFhirProxyConfig(base, { port: '9000', cacheTtl: '2' });
    assert.equal(c.upstream, 'http://fhir.internal:8080/fhir');
    assert.equal(c.issuer, 'https://custos.example');
    assert.equal(c.port, 9000);
    assert.deepEqual(c.cache, { ttlSeconds: 2, maxEntries: 1000 });
    assert.deepEqual(c.introspection, { clientId: 'rs', clientSecret: 'secret' });
    assert.deepEqual(c.writeAcrValues, ['urn:custos:acr:mfa']);
    assert.equal(c.audit, 'log');
    assert.deepEqual(loadFhirProxyConfig(base, { writeAcr: 'none' }).writeAcrValues, []);
    assert.equal(c.pageSecret, undefined, 'a random key per process unless one is given');
    assert.equal(loadFhirProxyConfig({ ...base, FHIR_PROXY_PAGE_SECRET: 's'.repeat(32) }).pageSecret, 's'.repeat(32));
  });

  it('refuses incomplete or unsafe settings with a message naming the flag', async () => {
    const cases: [Record<string, string>, string[], RegExp][] = [
      [{ ...base, FHIR_PROXY_UPSTREAM: '' }, [], /--upstream \(FHIR_PROXY_UPSTREAM\)/],
      [{ ...base, FHIR_PROXY_INTROSPECTION_CLIENT_SECRET: '' }, [], /both the introspection client id and its secret/],
      [{ FHIR_PROXY_UPSTREAM: 'http://x', ISSUER: 'https://c' }, [], /give introspection client credentials, or enable JWT/],
      [base, ['--cache-ttl', '3600'], /--cache-ttl \(FHIR_PROXY_CACHE_TTL\)/],
      [base, ['--audit', 'syslog'], /--audit/],
      [{ ...base, FHIR_PROXY_PAGE_SECRET: 'short' }, [], /FHIR_PROXY_PAGE_SECRET: must be at least 32 characters/],
      [{ ...base, NODE_ENV: 'production', ISSUER: 'http://custos.example' }, [], /issuer must be an https/],
    ];
    for (const [env, flags, message] of cases) {
      const r = await cli(['fhir-proxy', ...flags], env);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /secret'|at .*\.ts:\d+/, 'no secret or stack trace');
      if (env.FHIR_PROXY_PAGE_SECRET) assert.ok(!r.stderr.includes(env.FHIR_PROXY_PAGE_SECRET), 'the paging secret is not echoed');
    }
  });
});

describe('custos fhir-proxy (the command, run as a process)', () => {
  let server: TestServer;
  let fhir: FhirTestServer;
  let child: ChildProcess | undefined;

  before(async () => {
    fhir = await startFhirTestServer();
  });
  after(async () => {
    child?.kill('SIGKILL');
    await fhir?.close();
    await server?.close();
  });

  it('forwards what the token allows, filtered, logs each decision, and stops on SIGTERM', async () => {
    const port = await freePort();
    const proxyUrl = `http://127.0.0.1:${port}`;
    server = await startTestServer({ env: { FHIR_BASE_URLS: proxyUrl } });
    const rs = await server.createClient({ client_name: 'FHIR proxy', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const pat = await server.createAccount({ username: 'alex', role: 'patient', fhirId: 'pat-1' });
    const app = await server.createClient({ client_name: 'Viewer', redirect_uris: ['http://127.0.0.1:8765/callback'], scope: 'openid launch/patient patient/*.rs' });
    const config = await discover(server.issuer, app.clientId, app.clientSecret);
    const { tokens } = await codeFlow(config, server.issuer, pat, { scope: 'openid launch/patient patient/Observation.rs', aud: proxyUrl });

    child = spawn(
      process.execPath,
      ['src/cli/main.ts', 'fhir-proxy', '--upstream', fhir.url, '--port', String(port), '--issuer', server.issuer, '--introspection-client-id', rs.clientId],
      { cwd: ROOT, env: { PATH: process.env.PATH, FHIR_PROXY_INTROSPECTION_CLIENT_SECRET: rs.clientSecret!, FHIR_PROXY_PAGE_SECRET: PAGE_SECRET, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const lines: string[] = [];
    child.stdout!.on('data', (c: Buffer) => lines.push(...String(c).split('\n').filter(Boolean)));
    child.stderr!.on('data', (c: Buffer) => lines.push(String(c)));
    for (let i = 0; i < 200 && !lines.some((l) => l.includes('fhir-proxy listening')); i += 1) await new Promise((r) => setTimeout(r, 50));
    assert.ok(lines.some((l) => l.startsWith(`fhir-proxy listening on ${proxyUrl}`)), lines.join('\n'));

    assert.equal((await fetch(`${proxyUrl}/metadata`)).status, 200);
    const res = await fetch(`${proxyUrl}/Observation`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(res.status, 200);
    const bundle = (await res.json()) as { total: number; entry: { resource: { id: string } }[] };
    assert.equal(bundle.total, 4);
    assert.ok(!bundle.entry.some((e) => e.resource.id === 'obs-hiv-2020'));
    assert.equal((await fetch(`${proxyUrl}/Patient/pat-2`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status, 403);
    // Its paging links are sealed with the secret it was given, so other instances can open them.
    const paged = (await (await fetch(`${proxyUrl}/Observation?_count=2`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).json()) as { link: { relation: string; url: string }[] };
    const next = new URL(paged.link.find((l) => l.relation === 'next')!.url);
    assert.equal(createPageLinkSeal(Buffer.from(PAGE_SECRET)).open(next.searchParams.get('page')!)?.r, '/Observation?_count=2');

    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    const audit = lines.filter((l) => l.includes('"fhir access"')).map((l) => JSON.parse(l) as { outcome: string; patient: string; details: { status: number } });
    assert.deepEqual(audit.map((a) => [a.outcome, a.details.status, a.patient]), [['success', 200, 'pat-1'], ['denied', 403, 'pat-1'], ['success', 200, 'pat-1']]);
    assert.ok(!lines.join('\n').includes(tokens.access_token), 'the token never reaches the log');
    assert.ok(!lines.join('\n').includes(rs.clientSecret!), 'nor the secret');
    assert.ok(!lines.join('\n').includes(PAGE_SECRET), 'nor the paging secret');
  });
});
