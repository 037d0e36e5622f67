import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf } from '../helpers/browserless.ts';

type OAuthErrorBody = { error: string; error_description?: string };

describe('refusals at the authorization and token endpoints', () => {
  let server: TestServer;
  let client: { clientId: string; clientSecret?: string };
  let alice: { id: string; username: string; password: string };
  let config: oidc.Configuration;

  /** Logs in and returns a fresh authorization code with its PKCE verifier. */
  async function freshCode(params: Record<string, string> = {}) {
    const { url, verifier } = await startCodeFlow(config, params);
    const res = await authorize(new UserAgent(), url.toString(), server.issuer, alice);
    assert.ok(res.location?.startsWith(REDIRECT_URI), `expected a redirect to the client, got ${res.status}`);
    const code = new URL(res.location!).searchParams.get('code');
    assert.ok(code);
    return { code, verifier };
  }

  function redeem(code: string, verifier?: string) {
    const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI });
    if (verifier !== undefined) body.set('code_verifier', verifier);
    return fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body,
    });
  }

  before(async () => {
    server = await startTestServer();
    alice = await server.createAccount({ username: 'alice' });
    client = await server.createClient({
      client_name: 'Negative App',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access',
    });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  it('refuses a wrong PKCE verifier with invalid_grant', async () => {
    const { code } = await freshCode();
    const res = await redeem(code, oidc.randomPKCECodeVerifier());
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as OAuthErrorBody).error, 'invalid_grant');
  });

  it('refuses a missing PKCE verifier', async () => {
    const { code } = await freshCode();
    const res = await redeem(code);
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as OAuthErrorBody).error, 'invalid_grant');
  });

  it('refuses an authorization request without a code_challenge, or with the plain method', async () => {
    for (const params of [{ code_challenge: '' }, { code_challenge_method: 'plain' }]) {
      const { url } = await startCodeFlow(config);
      for (const [k, v] of Object.entries(params)) {
        if (v) url.searchParams.set(k, v);
        else url.searchParams.delete(k);
      }
      if (!params.code_challenge_method) url.searchParams.delete('code_challenge_method');
      const res = await new UserAgent().request(url.toString());
      assert.equal(res.status, 303);
      const back = new URL(res.location!);
      assert.equal(back.origin + back.pathname, REDIRECT_URI);
      assert.equal(back.searchParams.get('error'), 'invalid_request');
    }
  });

  it('shows an error page for an unknown client', async () => {
    const { url } = await startCodeFlow(config);
    url.searchParams.set('client_id', 'no-such-client');
    const res = await new UserAgent().request(url.toString());
    assert.equal(res.status, 400);
    assert.equal(res.location, undefined);
    assert.match(res.body, /invalid_client/);
  });

  it('lets exactly one of two concurrent redemptions of one code win', async () => {
    for (let round = 0; round < 3; round += 1) {
      const { code, verifier } = await freshCode();
      const results = await Promise.all([redeem(code, verifier), redeem(code, verifier)]);
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 400]);
      const loser = results.find((r) => r.status === 400)!;
      assert.equal(((await loser.json()) as OAuthErrorBody).error, 'invalid_grant');
    }
  });

  it('lets exactly one of two concurrent refreshes with one refresh token win', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    const refresh = () =>
      fetch(new URL('/token', server.issuer), {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token! }),
      });
    const results = await Promise.all([refresh(), refresh()]);
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 400]);
    const loser = results.find((r) => r.status === 400)!;
    assert.equal(((await loser.json()) as OAuthErrorBody).error, 'invalid_grant');
  });

  it('answers malformed and oversized token requests with clean OAuth errors', async () => {
    const url = new URL('/token', server.issuer);
    const basic = `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`;
    const json = await fetch(url, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/json' }, body: '{"grant_type":' });
    assert.equal(json.status, 400);
    assert.equal(((await json.json()) as OAuthErrorBody).error, 'invalid_request');

    const noGrant = await fetch(url, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: 'foo=bar' });
    assert.equal(noGrant.status, 400);
    assert.equal(((await noGrant.json()) as OAuthErrorBody).error, 'invalid_request');

    const unsupported = await fetch(url, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=password&username=a&password=b',
    });
    assert.equal(unsupported.status, 400);
    assert.equal(((await unsupported.json()) as OAuthErrorBody).error, 'unsupported_grant_type');

    const huge = await fetch(url, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=client_credentials&pad=${'x'.repeat(200 * 1024)}`,
    });
    assert.equal(huge.status, 413);
    assert.equal(((await huge.json()) as OAuthErrorBody).error, 'invalid_request');
  });
});

describe('our pages and routes refuse bad input cleanly', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let alice: { id: string; username: string; password: string };

  before(async () => {
    server = await startTestServer();
    alice = await server.createAccount({ username: 'alice' });
    const client = await server.createClient({ client_name: 'Pages App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  async function loginPage() {
    const agent = new UserAgent();
    const { url } = await startCodeFlow(config);
    const page = await agent.follow(url.toString(), server.issuer);
    assert.equal(page.status, 200);
    const action = new URL(/action="([^"]*\/login)"/.exec(page.body)![1]!, server.issuer).toString();
    return { agent, page, action, csrf: csrfTokenOf(page.body) };
  }

  it('refuses a login form without the CSRF token or from another origin, and signs nobody in', async () => {
    const { agent, action, csrf } = await loginPage();
    const missing = await agent.request(action, { form: { username: alice.username, password: alice.password } });
    assert.equal(missing.status, 403);
    const forged = await agent.request(action, { form: { _csrf: 'x'.repeat(43), username: alice.username, password: alice.password } });
    assert.equal(forged.status, 403);
    const foreign = await agent.request(action, {
      form: { _csrf: csrf, username: alice.username, password: alice.password },
      headers: { origin: 'https://attacker.example' },
    });
    assert.equal(foreign.status, 403);
    const crossSite = await agent.request(action, {
      form: { _csrf: csrf, username: alice.username, password: alice.password },
      headers: { 'sec-fetch-site': 'cross-site' },
    });
    assert.equal(crossSite.status, 403);
    assert.match(crossSite.body, /submitted from another site/);
    // Nobody was signed in: the page still asks for a login.
    const again = await agent.request(action.replace(/\/login$/, ''));
    assert.match(again.body, /Sign in/);
  });

  it('accepts our own form posted with Origin: null (what browsers send under no-referrer)', async () => {
    const { agent, action, csrf } = await loginPage();
    const res = await agent.request(action, {
      form: { _csrf: csrf, username: alice.username, password: alice.password },
      headers: { origin: 'null', 'sec-fetch-site': 'same-origin' },
    });
    assert.equal(res.status, 303);
  });

  it('refuses an oversized login form with 413', async () => {
    const { agent, action, csrf } = await loginPage();
    const res = await agent.request(action, { form: { _csrf: csrf, username: 'a', password: 'p'.repeat(100 * 1024) } });
    assert.equal(res.status, 413);
    assert.doesNotMatch(res.body, /Error:|at .*\.ts:\d+/);
  });

  it('explains an expired or foreign interaction instead of failing', async () => {
    const res = await new UserAgent().request(new URL('/interaction/does-not-exist', server.issuer).toString(), { headers: { accept: 'text/html' } });
    assert.equal(res.status, 400);
    assert.match(res.body, /expired or was opened in another browser/);
  });

  it('answers unknown routes with 404 and unused methods with 405, never a stack trace', async () => {
    const notFound = await fetch(new URL('/no/such/route', server.issuer), { headers: { accept: 'application/json' } });
    assert.equal(notFound.status, 404);
    assert.deepEqual(await notFound.json(), { error: 'not_found', error_description: 'the requested resource does not exist' });
    const wrongMethod = await fetch(new URL('/healthz', server.issuer), { method: 'DELETE', headers: { accept: 'application/json' } });
    assert.equal(wrongMethod.status, 405);
    assert.match(wrongMethod.headers.get('allow') ?? '', /GET/);
    assert.equal(((await wrongMethod.json()) as OAuthErrorBody).error, 'method_not_allowed');
  });

  it('keeps CORS closed on our routes and on the token endpoint for confidential clients', async () => {
    const health = await fetch(new URL('/healthz', server.issuer), { headers: { origin: 'https://app.example' } });
    assert.equal(health.headers.get('access-control-allow-origin'), null);
    // (oidc-provider answers the preflight before it knows the client; the real response decides.)
    const c = await server.createClient({ client_name: 'cors svc', grant_types: ['client_credentials'] });
    const token = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: {
        origin: 'http://127.0.0.1:8765',
        authorization: `Basic ${Buffer.from(`${c.clientId}:${c.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(token.headers.get('access-control-allow-origin'), null);
  });

  it('starts a new session on every login', async () => {
    const agent = new UserAgent();
    await codeFlow(config, server.issuer, alice, {}, agent);
    const sessionCookie = async () =>
      (await agent.jar.getCookies(server.issuer)).find((c) => c.key === 'custos_session')?.value;
    const first = await sessionCookie();
    assert.ok(first);
    await codeFlow(config, server.issuer, alice, { prompt: 'login' }, agent);
    const second = await sessionCookie();
    assert.ok(second);
    assert.notEqual(second, first);
  });
});
