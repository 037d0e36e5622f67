import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc } from '../helpers/oidc-client.ts';

const METRICS_TOKEN = 'm'.repeat(40);
const servers: TestServer[] = [];
async function server(env: Record<string, string>) {
  const s = await startTestServer({ env: { METRICS_TOKEN, ...env } });
  servers.push(s);
  return s;
}

const tokenRequest = (s: TestServer, body: Record<string, string>, headers: Record<string, string> = {}) =>
  fetch(`${s.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(body).toString(),
  });

const metricsOf = async (s: TestServer) => (await fetch(`${s.issuer}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text();

describe('rate limits and metrics', () => {
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  it('limits OAuth endpoints per IP: 429 with Retry-After, audited once per window, counted', async () => {
    const s = await server({ RATE_LIMIT_OAUTH_PER_IP: '5' });
    const statuses: number[] = [];
    for (let i = 0; i < 8; i += 1) statuses.push((await tokenRequest(s, { grant_type: 'client_credentials', client_id: 'nobody', client_secret: 'x' })).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    const res = await tokenRequest(s, { grant_type: 'client_credentials' });
    assert.equal(res.status, 429);
    const wait = Number(res.headers.get('retry-after'));
    assert.ok(wait >= 1 && wait <= 60, `Retry-After ${wait}`);
    assert.deepEqual(await res.json(), { error: 'temporarily_unavailable', error_description: `too many requests; try again in ${wait} seconds` });
    const events = (await s.running.services.audit.list({ type: 'rate_limit.' }, { limit: 50 })).events;
    assert.equal(events.length, 1, 'one audit event for the window, not one per refused request');
    assert.equal(events[0]?.details.limit, 'oauth_ip');
    assert.equal(events[0]?.outcome, 'denied');
    // Pages have their own budget: the token flood does not lock the user out of signing in.
    assert.equal((await fetch(`${s.issuer}/account`, { redirect: 'manual' })).status, 302);
    assert.match(await metricsOf(s), /custos_rate_limited_total\{limit="oauth_ip"\} 4/);
  });

  it('limits each client on its own, whichever way it authenticates', async () => {
    const s = await server({ RATE_LIMIT_PER_CLIENT: '3' });
    const a = await s.createClient({ client_name: 'A', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post', scope: 'custos:introspect' });
    const b = await s.createClient({ client_name: 'B', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const asA = () => tokenRequest(s, { grant_type: 'client_credentials', client_id: a.clientId, client_secret: a.clientSecret!, scope: 'custos:introspect' });
    for (let i = 0; i < 3; i += 1) assert.equal((await asA()).status, 200);
    const limited = await asA();
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal(((await limited.json()) as { error: string }).error, 'temporarily_unavailable');
    const config = await discover(s.issuer, b.clientId, b.clientSecret);
    assert.ok((await oidc.clientCredentialsGrant(config, { scope: 'custos:introspect' })).access_token, 'another client is not affected');
    assert.match(await metricsOf(s), /custos_tokens_issued_total\{grant_type="client_credentials"\} 4/);
  });

  it('limits pages per IP with a readable page', async () => {
    const s = await server({ RATE_LIMIT_PAGES_PER_IP: '3' });
    for (let i = 0; i < 3; i += 1) assert.equal((await fetch(`${s.issuer}/account`, { redirect: 'manual' })).status, 302);
    const res = await fetch(`${s.issuer}/account`, { redirect: 'manual', headers: { accept: 'text/html' } });
    assert.equal(res.status, 429);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await res.text(), /too many requests; try again in \d+ seconds/);
  });

  it('serves /metrics only to the holder of METRICS_TOKEN, and not at all without one', async () => {
    const s = await server({});
    assert.equal((await fetch(`${s.issuer}/metrics`)).status, 401);
    assert.equal((await fetch(`${s.issuer}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    const body = await metricsOf(s);
    assert.match(body, /# TYPE custos_http_requests_total counter/);
    assert.match(body, /custos_http_request_duration_seconds_bucket/);
    assert.doesNotMatch(body, /route="\/account\/apps\/[0-9a-f-]{36}"/, 'routes are patterns, never raw ids');
    const closed = await startTestServer({ env: {} });
    servers.push(closed);
    assert.equal((await fetch(`${closed.issuer}/metrics`)).status, 404);
  });

  it('shares counters between instances through Redis', async () => {
    const prefix = `t${randomBytes(6).toString('hex')}`;
    const env = { REDIS_URL: 'redis://127.0.0.1:6379', RATE_LIMIT_KEY_PREFIX: prefix, RATE_LIMIT_OAUTH_PER_IP: '4' };
    const one = await server(env);
    const two = await server(env);
    const bad = { grant_type: 'client_credentials', client_id: 'nobody', client_secret: 'x' };
    assert.equal((await tokenRequest(one, bad)).status, 401);
    assert.equal((await tokenRequest(two, bad)).status, 401);
    assert.equal((await tokenRequest(one, bad)).status, 401);
    assert.equal((await tokenRequest(two, bad)).status, 401);
    assert.equal((await tokenRequest(one, bad)).status, 429, 'the fifth request, wherever it lands, is over the shared limit');
    assert.equal((await tokenRequest(two, bad)).status, 429);
  });

  it('lets requests through (and logs) when the counter store is down', async () => {
    const s = await server({ REDIS_URL: 'redis://127.0.0.1:1', RATE_LIMIT_OAUTH_PER_IP: '1' });
    for (let i = 0; i < 3; i += 1) {
      assert.equal((await tokenRequest(s, { grant_type: 'client_credentials', client_id: 'nobody', client_secret: 'x' })).status, 401);
    }
  });
});
