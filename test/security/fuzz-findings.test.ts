/**
 * Regressions for the server errors the route fuzzer (fuzz-routes.test.ts) found, each pinned as
 * an exact request and its exact refusal, with nothing written:
 *   - NUL in a form field (login, bearer introspection): PostgreSQL refuses it as a parameter;
 *   - NUL in a URL (admin searches and filters, provider parameters) and in form parameters
 *     oidc-provider stores (state at /session/end) or looks up (a code at /token);
 *   - a Host or X-Forwarded-Host that is not a host, or an X-Forwarded-Proto that is not http(s),
 *     from which the provider built its URLs;
 *   - admin page actions (approve, rotate secret) on a client id that does not exist;
 *   - a refused TOTP confirmation that started a new enrolment (a write) when none was pending.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminApi, adminPagesAgent, adminToken, createAdminTool, createMfaAdmin } from '../helpers/admin.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, accountPagesAgent, csrfTokenOf, formActionOf } from '../helpers/browserless.ts';

/** One raw HTTP/1.1 request, for headers fetch will not send (a Host that is not a host). */
function rawRequest(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(`${head}\r\nConnection: close\r\n\r\n`));
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

describe('fuzzer findings stay fixed', () => {
  let server: TestServer;
  let web: { clientId: string; clientSecret: string };
  let config: oidc.Configuration;
  const count = async (table: string) => Number((await server.running.services.db(table).count<{ c: string }[]>({ c: '*' }))[0]?.c);

  before(async () => {
    server = await startTestServer({ env: { TRUST_PROXY: 'true' } });
    const app = await server.createClient({ client_name: 'Findings', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    web = { clientId: app.clientId, clientSecret: app.clientSecret! };
    config = await discover(server.issuer, web.clientId, web.clientSecret);
  });
  after(() => server.close());

  it('a NUL in the login form is a 400 page, not a server error, and nothing is recorded', async () => {
    const agent = new UserAgent();
    const flow = await startCodeFlow(config);
    const page = await agent.follow(flow.url.toString(), server.issuer);
    const [events, payloads] = [await count('audit_events'), await count('oidc_payloads')];
    const res = await agent.request(new URL(formActionOf(page.body, 'login'), server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), username: 'a\u0000b', password: 'x' },
      headers: { accept: 'text/html' },
    });
    assert.equal(res.status, 400);
    assert.match(res.body, /the form contains a NUL character or an unpaired surrogate/);
    assert.deepEqual([await count('audit_events'), await count('oidc_payloads')], [events, payloads]);
  });

  it('a NUL in the token of a bearer introspection form is a 400', async () => {
    const rs = await server.createClient({ client_name: 'Findings RS', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const rsToken = (await oidc.clientCredentialsGrant(await discover(server.issuer, rs.clientId, rs.clientSecret), { scope: 'custos:introspect' })).access_token;
    const res = await fetch(`${server.issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Bearer ${rsToken}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'token=%00',
    });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
  });

  it('a NUL in the URL is invalid_request before any route runs; in a form the provider stores, when it would be stored', async () => {
    const payloads = await count('oidc_payloads');
    const nul = { error: 'invalid_request', error_description: 'the request contains a NUL character or an unpaired surrogate' };
    const end = await fetch(`${server.issuer}/session/end?state=a%00b`, { headers: { accept: 'application/json' } });
    assert.equal(end.status, 400);
    assert.deepEqual(await end.json(), nul);
    const flow = await startCodeFlow(config, { state: 'a\u0000b' });
    const auth = await fetch(flow.url, { headers: { accept: 'application/json' }, redirect: 'manual' });
    assert.equal(auth.status, 400);
    assert.deepEqual(await auth.json(), nul);
    assert.equal(await count('oidc_payloads'), payloads);
    // A form the provider reads itself: a pushed authorization request keeps its parameters inside
    // a signed request object, so the NUL first reaches storage when /auth starts the interaction.
    // The adapter refuses it, and the provider, which trusts the redirect URI by then, says so to the client.
    const par = await fetch(`${server.issuer}/request`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${web.clientId}:${web.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ client_id: web.clientId, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', state: 'a\u0000b' }),
    });
    assert.equal(par.status, 201);
    const { request_uri: requestUri } = (await par.json()) as { request_uri: string };
    const afterPar = await count('oidc_payloads');
    const pushed = await fetch(`${server.issuer}/auth?${new URLSearchParams({ client_id: web.clientId, request_uri: requestUri })}`, { redirect: 'manual' });
    assert.equal(pushed.status, 303);
    const location = new URL(pushed.headers.get('location')!);
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.equal(location.searchParams.get('error'), 'invalid_request');
    assert.equal(location.searchParams.get('error_description'), nul.error_description);
    assert.ok((await count('oidc_payloads')) <= afterPar, 'no interaction or session written');
  });

  it('a NUL in the search and filter parameters of the admin API and pages is a 400, not a server error', async () => {
    const tool = await createAdminTool(server);
    const api = adminApi(server, (await adminToken(server, tool)).token);
    for (const path of ['/clients?q=%00', '/accounts?q=a%00', '/audit?actor=%00', '/audit?client_id=%00', '/audit?patient=%00', '/audit?type=%00', '/audit/fhir?actor=%00', '/clients/%00']) {
      const res = await api('GET', path);
      assert.equal(res.status, 400, path);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(res.json.detail, 'the request contains a NUL character or an unpaired surrogate', path);
    }
  });

  it('a NUL in an authorization code at /token is invalid_grant', async () => {
    const res = await fetch(`${server.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${web.clientId}:${web.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'a\u0000b', redirect_uri: REDIRECT_URI, code_verifier: 'x'.repeat(43) }),
    });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant');
  });

  it('a Host, X-Forwarded-Host or X-Forwarded-Proto that names no http(s) origin is a 400', async () => {
    const port = Number(new URL(server.issuer).port);
    for (const host of ['a b', '[::1', 'example.org:99999', 'x/y', '%']) {
      const res = await rawRequest(port, `GET /.well-known/openid-configuration HTTP/1.1\r\nHost: ${host}\r\nAccept: application/json`);
      assert.match(res, /^HTTP\/1\.1 400 /, host);
      assert.match(res, /"error":"invalid_request"/, host);
    }
    for (const [name, value] of [['x-forwarded-host', 'a b'], ['x-forwarded-host', '%'], ['x-forwarded-proto', 'ftp'], ['x-forwarded-proto', 'javascript']]) {
      for (const path of ['/.well-known/openid-configuration', '/session/end']) {
        const res = await fetch(`${server.issuer}${path}`, { headers: { [name!]: value!, accept: 'application/json' } });
        assert.equal(res.status, 400, `${name}: ${value} at ${path}`);
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
      }
    }
    const ok = await fetch(`${server.issuer}/.well-known/openid-configuration`, { headers: { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'custos.example.org' } });
    assert.equal(ok.status, 200, 'a proper forwarded origin still works');
    await ok.body?.cancel();
  });

  it('admin page actions on a client that does not exist are 404 pages', async () => {
    const pages = await adminPagesAgent(server, await createMfaAdmin(server));
    await pages.page('/admin/clients');
    const clients = await count('clients');
    for (const action of ['approve', 'suspend', 'reactivate', 'retire', 'secret']) {
      const res = await pages.post(`/admin/clients/no-such-client/${action}`, {});
      assert.equal(res.status, 404, `${action}: ${res.body.slice(0, 200)}`);
      assert.match(res.body, /there is no such client/, action);
    }
    assert.equal(await count('clients'), clients);
  });

  it('a wrong TOTP confirmation with no enrolment pending starts none (a refused form writes nothing)', async () => {
    const who = await server.createAccount({ username: 'totp-findings', role: 'patient', fhirId: 'totp-1' });
    const { agent, csrf } = await accountPagesAgent(server.issuer, who);
    const factors = await count('mfa_factors');
    const res = await agent.request(`${server.issuer}/account/mfa/totp`, { form: { _csrf: csrf, code: '000000' } });
    assert.equal(res.status, 302);
    assert.equal(res.location, `${server.issuer}/account/mfa/totp`);
    assert.equal(await count('mfa_factors'), factors, 'no pending factor created by the refused form');
    // The page itself starts the enrolment; a wrong code is then refused with the page again.
    const page = await agent.request(`${server.issuer}/account/mfa/totp`);
    assert.equal(page.status, 200);
    assert.equal(await count('mfa_factors'), factors + 1);
    const wrong = await agent.request(`${server.issuer}/account/mfa/totp`, { form: { _csrf: csrfTokenOf(page.body), code: '000000' } });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /That code is not valid/);
    assert.equal(await count('mfa_factors'), factors + 1);
  });
});
