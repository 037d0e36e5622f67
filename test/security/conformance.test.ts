/**
 * Checks the OpenID Foundation conformance suite runs against an OP (Basic, Config and Dynamic OP
 * plans), ported to black-box tests of a code flow + PKCE provider. Each test is named after the
 * suite's test module so a certification run and this file can be read side by side.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, type PageResponse } from '../helpers/browserless.ts';
import { rotateSigningKeys } from '../../src/keys/index.ts';
import { signedTokenMaxLifetime } from '../../src/oidc/index.ts';

type OAuthErrorBody = { error: string; error_description?: string };
type Account = { id: string; username: string; password: string };
type Key = Awaited<ReturnType<typeof jose.generateKeyPair>>['publicKey'];

const basicAuth = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
const kidOf = (jwt: string) => jose.decodeProtectedHeader(jwt).kid;
const isLoginPage = (res: PageResponse) => res.status === 200 && res.body.includes('/login"');

/** The error an authorization response carried back to the client's redirect URI. */
function errorAtRedirect(res: PageResponse, state?: string) {
  assert.ok(res.location, `expected a redirect to the client, got ${res.status}: ${res.body.slice(0, 200)}`);
  const back = new URL(res.location!);
  assert.equal(back.origin + back.pathname, REDIRECT_URI, 'the error goes back to the registered redirect URI');
  if (state) assert.equal(back.searchParams.get('state'), state);
  return back.searchParams.get('error');
}

/** An error page shown by the OP itself: nothing was sent to the (untrusted) redirect URI. */
function assertErrorPage(res: PageResponse, pattern: RegExp) {
  assert.equal(res.status, 400);
  assert.equal(res.location, undefined, 'never redirects to an unverified redirect URI');
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  assert.match(res.body, pattern);
  assert.doesNotMatch(res.body, /at .*\.[jt]s:\d+/, 'no stack trace');
}

/** Polls until `check` passes; fails with its last assertion after `limit` attempts. */
async function eventually(check: () => Promise<void>, limit = 100): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await check();
    } catch (err) {
      if (attempt >= limit) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function publishedKids(issuer: string): Promise<string[]> {
  const { keys } = (await (await fetch(new URL('/jwks', issuer))).json()) as { keys: Array<{ kid: string; d?: string }> };
  assert.ok(keys.every((k) => k.d === undefined), 'no private key material is published');
  return keys.map((k) => k.kid).sort();
}

describe('OpenID conformance suite checks (code flow with PKCE)', () => {
  let server: TestServer;
  let client: { clientId: string; clientSecret?: string };
  let config: oidc.Configuration;
  let alice: Account;
  let bob: Account;

  function redeem(code: string, verifier: string, c = client) {
    return fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: { authorization: basicAuth(c.clientId, c.clientSecret!), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier }),
    });
  }

  async function userinfoStatus(accessToken: string) {
    return (await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${accessToken}` } })).status;
  }

  /** Signs in through the pages and returns the code and verifier (not yet redeemed). */
  async function freshCode(params: Record<string, string> = {}, who = alice) {
    const { url, verifier } = await startCodeFlow(config, params);
    const res = await authorize(new UserAgent(), url.toString(), server.issuer, who);
    assert.ok(res.location?.startsWith(REDIRECT_URI), `expected a redirect to the client, got ${res.status}`);
    const code = new URL(res.location!).searchParams.get('code');
    assert.ok(code);
    return { code, verifier };
  }

  /** Continues an authorization request in `agent`'s session without signing in again. */
  async function silently(agent: UserAgent, params: Record<string, string>) {
    const flow = await startCodeFlow(config, params);
    const res = await agent.follow(flow.url.toString(), server.issuer);
    return { res, ...flow };
  }

  async function redeemAt(res: PageResponse, flow: { verifier: string; state: string }) {
    assert.ok(res.location?.startsWith(REDIRECT_URI), `expected a code at the client, got ${res.status}: ${res.body.slice(0, 200)}`);
    return oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
  }

  before(async () => {
    server = await startTestServer({ env: { REGISTRATION_OPEN: 'true' } });
    alice = await server.createAccount({ username: 'alice' });
    bob = await server.createAccount({ username: 'bob' });
    client = await server.createClient({
      client_name: 'Conformance RP',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid profile offline_access',
    });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  it('oidcc-idtoken-signature: the ID token is RS256-signed with a kid published at jwks_uri', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice);
    const header = jose.decodeProtectedHeader(tokens.id_token!);
    assert.equal(header.alg, 'RS256');
    assert.ok((await publishedKids(server.issuer)).includes(header.kid!));
    const jwks = jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri!));
    const { payload } = await jose.jwtVerify(tokens.id_token!, jwks, { issuer: server.issuer, audience: client.clientId });
    assert.equal(payload.sub, alice.id);
  });

  it('oidcc-ensure-request-without-nonce-succeeds-for-code-flow: a code request without nonce gets an ID token without one', async () => {
    const { url } = await startCodeFlow(config);
    assert.equal(url.searchParams.has('nonce'), false);
    const { tokens } = await codeFlow(config, server.issuer, alice);
    assert.equal(tokens.claims()?.nonce, undefined);
    assert.equal(tokens.claims()?.sub, alice.id);
  });

  it('oidcc-ensure-request-with-unknown-parameter-succeeds: an unknown authorization parameter is ignored', async () => {
    const { tokens, callbackUrl } = await codeFlow(config, server.issuer, alice, { extra_param: 'foobar' });
    assert.equal(tokens.claims()?.sub, alice.id);
    assert.equal(callbackUrl.searchParams.has('extra_param'), false);
  });

  it('oidcc-discovery-endpoint-verification: discovery names this issuer and what a code-flow RP needs, and nothing it does not support', async () => {
    const res = await fetch(new URL('/.well-known/openid-configuration', server.issuer));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    const meta = (await res.json()) as Record<string, unknown>;
    assert.equal(meta.issuer, server.issuer);
    for (const field of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'registration_endpoint']) {
      assert.ok(String(meta[field]).startsWith(`${server.issuer}/`), `${field} is on this issuer`);
    }
    assert.deepEqual(meta.response_types_supported, ['code']);
    assert.ok((meta.scopes_supported as string[]).includes('openid'));
    assert.ok((meta.subject_types_supported as string[]).includes('public'));
    assert.ok((meta.id_token_signing_alg_values_supported as string[]).includes('RS256'));
    assert.ok(!(meta.id_token_signing_alg_values_supported as string[]).includes('none'));
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
    assert.ok(!(meta.grant_types_supported as string[]).includes('implicit'));
  });

  it('oidcc-userinfo-get: userinfo answers GET with the access token in the Authorization header', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid profile' });
    const res = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { sub: alice.id, preferred_username: 'alice' });
  });

  it('oidcc-userinfo-post-header: userinfo answers POST with the access token in the Authorization header', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid profile' });
    const res = await fetch(new URL('/me', server.issuer), { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { sub: string }).sub, alice.id);
  });

  it('oidcc-userinfo-post-body: userinfo answers POST with the access token in the form body', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid profile' });
    const res = await fetch(new URL('/me', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ access_token: tokens.access_token }),
    });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { sub: string }).sub, alice.id);
    // And not with a token that is not one.
    const bad = await fetch(new URL('/me', server.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'access_token=nope' });
    assert.equal(bad.status, 401);
    assert.match(bad.headers.get('www-authenticate') ?? '', /^Bearer .*error="invalid_token"/);
  });

  it('oidcc-login-hint: login_hint fills in the username on the login page', async () => {
    const { url } = await startCodeFlow(config, { login_hint: 'alice' });
    const page = await new UserAgent().follow(url.toString(), server.issuer);
    assert.ok(isLoginPage(page));
    assert.match(page.body, /name="username"[^>]*value="alice"/);
  });

  it('oidcc-ensure-request-with-acr-values-succeeds: acr values the OP does not know do not fail the request, and acr is reported', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { acr_values: '1 2' });
    assert.equal(tokens.claims()?.sub, alice.id);
    assert.equal(typeof tokens.claims()?.acr, 'string');
  });

  it('oidcc-claims-essential: a claims request parameter (not supported) does not fail the request', async () => {
    assert.notEqual(config.serverMetadata().claims_parameter_supported, true);
    const claims = JSON.stringify({ userinfo: { name: { essential: true } } });
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid profile', claims });
    assert.equal(tokens.claims()?.sub, alice.id);
    assert.equal(await userinfoStatus(tokens.access_token), 200);
  });

  it('oidcc-response-type-missing: a request without response_type gets an error at the redirect URI, not a code', async () => {
    const { url, state } = await startCodeFlow(config);
    url.searchParams.delete('response_type');
    const res = await new UserAgent().request(url.toString());
    assert.equal(errorAtRedirect(res, state), 'invalid_request');
    assert.equal(new URL(res.location!).searchParams.has('code'), false);
  });

  it('oidcc-codereuse: a second redemption of a code fails with invalid_grant and revokes what the first one issued', async () => {
    const { code, verifier } = await freshCode({ scope: 'openid offline_access', prompt: 'consent' });
    const first = await redeem(code, verifier);
    assert.equal(first.status, 200);
    const tokens = (await first.json()) as { access_token: string; refresh_token: string };
    assert.equal(await userinfoStatus(tokens.access_token), 200);

    const second = await redeem(code, verifier);
    assert.equal(second.status, 400);
    assert.equal(((await second.json()) as OAuthErrorBody).error, 'invalid_grant');
    assert.equal(await userinfoStatus(tokens.access_token), 401, 'the first access token is revoked');
    assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token), { error: 'invalid_grant' });
  });

  it('oidcc-codereuse-30seconds: reuse noticed 30 seconds later is still refused and still revokes', async () => {
    const { code, verifier } = await freshCode();
    const first = await redeem(code, verifier);
    assert.equal(first.status, 200);
    const tokens = (await first.json()) as { access_token: string };
    // What the suite's 30-second wait checks: that reuse detection is not a short-lived cache.
    // The stored redemption is moved 30 s into the past instead of sleeping.
    const { db } = server.running.services;
    const moved = await db('oidc_payloads')
      .where({ kind: 'AuthorizationCode', id: code })
      .whereNotNull('consumed_at')
      .update({ consumed_at: db.raw(`consumed_at - interval '30 seconds'`) });
    assert.equal(moved, 1, 'the code is stored as consumed');

    const reuse = await redeem(code, verifier);
    assert.equal(reuse.status, 400);
    assert.equal(((await reuse.json()) as OAuthErrorBody).error, 'invalid_grant');
    assert.equal(await userinfoStatus(tokens.access_token), 401);
  });

  it('oidcc-ensure-redirect-uri-in-authorization-request: a request without redirect_uri is refused on an error page', async () => {
    const { url } = await startCodeFlow(config);
    url.searchParams.delete('redirect_uri');
    const res = await new UserAgent().request(url.toString(), { headers: { accept: 'text/html' } });
    assertErrorPage(res, /redirect_uri/);
  });

  it('oidcc-ensure-registered-redirect-uri: an unregistered redirect URI gets an error page and is never redirected to', async () => {
    for (const redirect of ['http://127.0.0.1:8765/other', 'https://attacker.example/callback', `${REDIRECT_URI}/`, REDIRECT_URI.toUpperCase()]) {
      const { url } = await startCodeFlow(config, { redirect_uri: redirect });
      const res = await new UserAgent().request(url.toString(), { headers: { accept: 'text/html' } });
      assertErrorPage(res, /redirect_uri/);
    }
  });

  describe('redirect URIs registered with a query component', () => {
    const WITH_QUERY = `${REDIRECT_URI}?foo=bar`;
    let queryClient: { clientId: string; clientSecret?: string };
    let queryConfig: oidc.Configuration;
    before(async () => {
      queryClient = await server.createClient({ client_name: 'Query RP', redirect_uris: [WITH_QUERY], scope: 'openid' });
      queryConfig = await discover(server.issuer, queryClient.clientId, queryClient.clientSecret);
    });

    it('oidcc-redirect-uri-query-OK: the exact registered URI works and its query is kept in the response', async () => {
      const { url, verifier, state } = await startCodeFlow(queryConfig, { redirect_uri: WITH_QUERY });
      const res = await authorize(new UserAgent(), url.toString(), server.issuer, alice);
      assert.ok(res.location?.startsWith(REDIRECT_URI), `${res.status} ${res.body.slice(0, 200)}`);
      const back = new URL(res.location!);
      assert.equal(back.searchParams.get('foo'), 'bar');
      assert.equal(back.searchParams.get('state'), state);
      // (Redeemed by hand: openid-client derives redirect_uri from the callback without its query.)
      const token = await fetch(new URL('/token', server.issuer), {
        method: 'POST',
        headers: { authorization: basicAuth(queryClient.clientId, queryClient.clientSecret!), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: WITH_QUERY, code_verifier: verifier }),
      });
      assert.equal(token.status, 200);
      const { id_token } = (await token.json()) as { id_token: string };
      assert.equal(jose.decodeJwt(id_token).sub, alice.id);
    });

    it('oidcc-redirect-uri-query-mismatch: a different query value is an unregistered URI', async () => {
      const { url } = await startCodeFlow(queryConfig, { redirect_uri: `${REDIRECT_URI}?foo=zot` });
      assertErrorPage(await new UserAgent().request(url.toString(), { headers: { accept: 'text/html' } }), /redirect_uri/);
    });

    it('oidcc-redirect-uri-query-added: an added query component is an unregistered URI', async () => {
      const { url } = await startCodeFlow(config, { redirect_uri: `${REDIRECT_URI}?foo=bar` });
      assertErrorPage(await new UserAgent().request(url.toString(), { headers: { accept: 'text/html' } }), /redirect_uri/);
      const { url: extra } = await startCodeFlow(queryConfig, { redirect_uri: `${WITH_QUERY}&bar=foo` });
      assertErrorPage(await new UserAgent().request(extra.toString(), { headers: { accept: 'text/html' } }), /redirect_uri/);
    });
  });

  it('oidcc-redirect-uri-regfrag: registering a redirect URI with a fragment is refused with invalid_redirect_uri', async () => {
    const register = (redirect: string) =>
      fetch(new URL('/register', server.issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'Fragment RP', redirect_uris: [redirect], token_endpoint_auth_method: 'none' }),
      });
    const before = await server.running.services.clients.search({ limit: 100 });
    const res = await register(`${REDIRECT_URI}#foo`);
    assert.equal(res.status, 400);
    const body = (await res.json()) as OAuthErrorBody;
    assert.equal(body.error, 'invalid_redirect_uri');
    assert.match(body.error_description ?? '', /fragment/);
    const after = await server.running.services.clients.search({ limit: 100 });
    assert.equal(after.clients.length, before.clients.length, 'nothing was registered');
    // The same registration without the fragment goes through (so the refusal was for the fragment).
    assert.equal((await register(REDIRECT_URI)).status, 201);
  });

  it('oidcc-registration-sector-bad: a sector_identifier_uri is refused with invalid_client_metadata (no pairwise subjects)', async () => {
    const res = await fetch(new URL('/register', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Sector RP', redirect_uris: [REDIRECT_URI], sector_identifier_uri: 'https://rp.example/sector.json' }),
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { error: 'invalid_client_metadata', error_description: 'unsupported field(s): sector_identifier_uri' });
  });

  it('oidcc-idtoken-unsigned: registering for unsigned ID tokens is refused, and none is never offered', async () => {
    assert.ok(!config.serverMetadata().id_token_signing_alg_values_supported?.includes('none'));
    const res = await fetch(new URL('/register', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Unsigned RP', redirect_uris: [REDIRECT_URI], id_token_signed_response_alg: 'none' }),
    });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as OAuthErrorBody).error, 'invalid_client_metadata');
  });

  it('oidcc-prompt-none-not-logged-in: prompt=none without a session answers login_required at the redirect URI', async () => {
    const { url, state } = await startCodeFlow(config, { prompt: 'none' });
    const res = await new UserAgent().request(url.toString());
    assert.equal(errorAtRedirect(res, state), 'login_required');
    assert.equal(new URL(res.location!).searchParams.get('iss'), server.issuer);
  });

  it('oidcc-prompt-none-logged-in: prompt=none with a session returns a code without showing any page', async () => {
    const first = await codeFlow(config, server.issuer, alice);
    const flow = await silently(first.agent, { prompt: 'none' });
    assert.equal(flow.res.status, 303);
    const tokens = await redeemAt(flow.res, flow);
    assert.equal(tokens.claims()?.sub, alice.id);
  });

  it('oidcc-prompt-login: prompt=login shows the login page despite a session, and the new login is what the ID token reports', async () => {
    const first = await codeFlow(config, server.issuer, alice, { max_age: '3600' });
    const firstAuthTime = first.tokens.claims()!.auth_time!;
    // auth_time has one-second resolution: a new login has to be told apart from the first.
    await new Promise((r) => setTimeout(r, 1100));
    const flow = await silently(first.agent, { prompt: 'login', max_age: '3600' });
    assert.ok(isLoginPage(flow.res), `expected the login page, got ${flow.res.status}`);
    const res = await authorize(first.agent, flow.url.toString(), server.issuer, alice);
    const tokens = await redeemAt(res, flow);
    assert.equal(tokens.claims()?.sub, alice.id);
    assert.ok(tokens.claims()!.auth_time! > firstAuthTime, 'auth_time is the new login');
  });

  it('oidcc-max-age-1: max_age=1 after more than a second forces a new login and a later auth_time', async () => {
    const first = await codeFlow(config, server.issuer, alice, { max_age: '3600' });
    const firstAuthTime = first.tokens.claims()!.auth_time;
    assert.equal(typeof firstAuthTime, 'number', 'auth_time is in the ID token when max_age is asked');
    // The precondition of the check, not a timing assertion: the session must be older than
    // max_age in whole seconds, which is how oidc-provider compares (now - auth_time > max_age).
    await new Promise((r) => setTimeout(r, Math.max(0, (firstAuthTime! + 2) * 1000 - Date.now() + 50)));
    const flow = await silently(first.agent, { max_age: '1' });
    assert.ok(isLoginPage(flow.res), `expected the login page, got ${flow.res.status}`);
    const res = await authorize(first.agent, flow.url.toString(), server.issuer, alice);
    const tokens = await redeemAt(res, flow);
    assert.ok(tokens.claims()!.auth_time! > firstAuthTime!);
  });

  it('oidcc-max-age-10000: a recent enough session is reused and keeps its auth_time', async () => {
    const first = await codeFlow(config, server.issuer, alice, { max_age: '3600' });
    const flow = await silently(first.agent, { max_age: '10000' });
    const tokens = await redeemAt(flow.res, flow);
    assert.equal(tokens.claims()?.sub, alice.id);
    assert.equal(tokens.claims()?.auth_time, first.tokens.claims()?.auth_time);
  });

  it('oidcc-id-token-hint: prompt=none with the ID token as hint returns a code for the same user; a bad hint does not', async () => {
    const first = await codeFlow(config, server.issuer, alice);
    const hint = first.tokens.id_token!;
    const flow = await silently(first.agent, { prompt: 'none', id_token_hint: hint });
    const tokens = await redeemAt(flow.res, flow);
    assert.equal(tokens.claims()?.sub, alice.id);

    // A hint about someone else than the signed-in user cannot be satisfied without a login.
    const bobs = await codeFlow(config, server.issuer, bob);
    const other = await silently(first.agent, { prompt: 'none', id_token_hint: bobs.tokens.id_token! });
    assert.equal(errorAtRedirect(other.res, other.state), 'login_required');

    // A hint whose signature does not verify is refused outright.
    const [h, p, s] = hint.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...jose.decodeJwt(hint), sub: bob.id })).toString('base64url')}.${s}`;
    assert.notEqual(p, forged.split('.')[1]);
    const bad = await silently(first.agent, { prompt: 'none', id_token_hint: forged });
    assert.equal(errorAtRedirect(bad.res, bad.state), 'invalid_request');
  });

  it('oidcc-refresh-token: a refresh gives new tokens for the same user and is bound to the client it was issued to', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    assert.ok(tokens.refresh_token);
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
    assert.ok(refreshed.access_token && refreshed.refresh_token);
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
    const claims = refreshed.claims();
    assert.equal(claims?.sub, alice.id);
    assert.equal(claims?.iss, server.issuer);
    assert.equal(claims?.aud, client.clientId);
    assert.equal(await userinfoStatus(refreshed.access_token), 200);

    const other = await server.createClient({
      client_name: 'Other RP',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access',
    });
    const otherConfig = await discover(server.issuer, other.clientId, other.clientSecret);
    await assert.rejects(oidc.refreshTokenGrant(otherConfig, refreshed.refresh_token), { error: 'invalid_grant' });
    // The refusal did not spend the token: its own client can still use it.
    assert.ok((await oidc.refreshTokenGrant(config, refreshed.refresh_token)).access_token);
  });

  it('oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported: request objects are rejected as unsupported', async () => {
    const meta = config.serverMetadata();
    assert.notEqual(meta.request_parameter_supported, true, 'discovery does not advertise request objects');
    const { url, state } = await startCodeFlow(config);
    const claims = Object.fromEntries(url.searchParams);
    const unsigned = `${jose.base64url.encode(JSON.stringify({ alg: 'none' }))}.${jose.base64url.encode(JSON.stringify(claims))}.`;
    url.searchParams.set('request', unsigned);
    const res = await new UserAgent().request(url.toString());
    assert.equal(errorAtRedirect(res, state), 'request_not_supported');
  });

  it('oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported: request_uri other than PAR is rejected', async () => {
    const { url, state } = await startCodeFlow(config);
    url.searchParams.set('request_uri', 'https://rp.example/request.jwt');
    const res = await new UserAgent().request(url.toString());
    assert.match(errorAtRedirect(res, state) ?? '', /^(request_uri_not_supported|invalid_request_uri)$/);
  });

  it('oidcc-refresh-token-rp-key-rotation: after the RP rotates its keys, refresh works with the new key only', async () => {
    const oldKey = await jose.generateKeyPair('ES384', { extractable: true });
    const newKey = await jose.generateKeyPair('ES384', { extractable: true });
    const publicJwk = async (k: Key, kid: string) => ({ ...(await jose.exportJWK(k)), alg: 'ES384', use: 'sig', kid });
    const rp = await server.createClient({
      client_name: 'Key RP',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES384',
      jwks: { keys: [await publicJwk(oldKey.publicKey, 'rp-1')] },
      scope: 'openid offline_access',
    });
    const withKey = (key: Key, kid: string) => discover(server.issuer, rp.clientId, undefined, oidc.PrivateKeyJwt({ key, kid }));
    const oldConfig = await withKey(oldKey.privateKey, 'rp-1');
    const { tokens } = await codeFlow(oldConfig, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });

    await server.running.services.clients.update(rp.clientId, { jwks: { keys: [await publicJwk(newKey.publicKey, 'rp-2')] } }, {}, { actor: 'test' });

    await assert.rejects(oidc.refreshTokenGrant(oldConfig, tokens.refresh_token!), { error: 'invalid_client' });
    const newConfig = await withKey(newKey.privateKey, 'rp-2');
    const refreshed = await oidc.refreshTokenGrant(newConfig, tokens.refresh_token!);
    assert.equal(refreshed.claims()?.sub, alice.id);
  });
});

describe('OpenID conformance suite checks: OP key rotation', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { SIGNING_KEY_REFRESH_INTERVAL: '1' } });
  });
  after(() => server.close());

  it('oidcc-server-rotate-keys: new keys publish at once and sign after activation; old tokens and hints keep working until the keys retire', async () => {
    const alice = await server.createAccount({ username: 'alice' });
    const client = await server.createClient({
      client_name: 'Rotating RP',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access',
    });
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const before = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    const oldKid = kidOf(before.tokens.id_token!);
    const kidsBefore = await publishedKids(server.issuer);

    // What `custos keys rotate` does, with a short activation delay instead of the configured one.
    const created = await rotateSigningKeys(server.running.services.db, server.config.secrets.keyEncryptionKey, {
      activateAfterSeconds: 2,
      maxSignedLifetimeSeconds: signedTokenMaxLifetime(server.config),
    });
    const newKids = created.map((k) => k.kid);
    assert.equal(newKids.length, 2);

    // Published by the running server without a restart, before any of them signs...
    await eventually(async () => assert.deepEqual(await publishedKids(server.issuer), [...kidsBefore, ...newKids].sort()));
    // ...and used for signing once activated, for code and refresh grants alike.
    let after: Awaited<ReturnType<typeof codeFlow>> | undefined;
    await eventually(async () => {
      after = await codeFlow(config, server.issuer, alice);
      assert.ok(newKids.includes(kidOf(after.tokens.id_token!)!), 'signed with a new key');
    });
    assert.notEqual(kidOf(after!.tokens.id_token!), oldKid);
    const refreshed = await oidc.refreshTokenGrant(config, before.tokens.refresh_token!);
    assert.ok(newKids.includes(kidOf(refreshed.id_token!)!));

    // The ID token signed before the rotation still verifies against the published JWKS...
    const jwks = jose.createRemoteJWKSet(new URL('/jwks', server.issuer));
    const { payload } = await jose.jwtVerify(before.tokens.id_token!, jwks, { issuer: server.issuer, audience: client.clientId });
    assert.equal(payload.sub, alice.id);
    // ...and is still accepted as id_token_hint.
    const hinted = await startCodeFlow(config, { prompt: 'none', id_token_hint: before.tokens.id_token! });
    const res = await after!.agent.follow(hinted.url.toString(), server.issuer);
    assert.ok(res.location?.startsWith(REDIRECT_URI) && new URL(res.location).searchParams.get('code'), `${res.status} ${res.location}`);

    // Once their retirement time has passed the old keys are no longer published, and what they
    // signed no longer verifies, as a hint either.
    const { db } = server.running.services;
    await db('signing_keys').whereNotNull('retire_at').update({ retire_at: db.raw(`now() - interval '1 second'`) });
    await eventually(async () => assert.deepEqual(await publishedKids(server.issuer), [...newKids].sort()));
    const fresh = jose.createRemoteJWKSet(new URL('/jwks', server.issuer));
    await assert.rejects(jose.jwtVerify(before.tokens.id_token!, fresh), { code: 'ERR_JWKS_NO_MATCHING_KEY' });
    const stale = await startCodeFlow(config, { prompt: 'none', id_token_hint: before.tokens.id_token! });
    const refused = await after!.agent.follow(stale.url.toString(), server.issuer);
    assert.equal(new URL(refused.location!).searchParams.get('error'), 'invalid_request');
  });
});
