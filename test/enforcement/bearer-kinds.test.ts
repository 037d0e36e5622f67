import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';
import { startFhirTestServer, type FhirTestServer } from '../helpers/fhir-test-server.ts';
import { createFhirProxy, createTokenValidator, TokenServiceUnavailable, type TokenValidatorOptions } from '../../src/enforcement/index.ts';

/**
 * Only an active access token opens the FHIR proxy. Anything else a client might present as a
 * bearer token (the ID token or the refresh token from the same login) is an invalid token: 401
 * with `invalid_token`, never 503 (which tells the app to retry the same token later).
 */
for (const format of ['opaque', 'jwt'] as const) {
  describe(`FHIR proxy: tokens other than access tokens (${format} access tokens)`, () => {
    let server: TestServer;
    let fhir: FhirTestServer;
    let proxyUrl: string;
    const closers: (() => Promise<void>)[] = [];
    /** One proxy per way of validating tokens this format allows. */
    const proxies: { name: string; url: string }[] = [];
    let tokens: { access: string; id: string; refresh: string };
    /** The proxy's client, for introspecting opaque tokens as the proxy does. */
    let proxiesIntrospection: oidc.Configuration | undefined;

    before(async () => {
      fhir = await startFhirTestServer();
      // The proxies' public URL (the tokens' audience) need not be where they listen: each listens
      // on a port of its own, bound only when it starts, so nothing else can take it meanwhile.
      proxyUrl = `http://127.0.0.1:${await freePort()}`;
      server = await startTestServer({ env: { FHIR_BASE_URLS: proxyUrl, ACCESS_TOKEN_FORMAT: format } });
      const rs = await server.createClient({ client_name: 'FHIR proxy', grant_types: ['client_credentials'], scope: 'custos:introspect' });
      const introspection = { clientId: rs.clientId, clientSecret: rs.clientSecret! };
      proxiesIntrospection = await discover(server.issuer, rs.clientId, rs.clientSecret);
      // Both proxies answer for the same public URL (the token's audience); each listens on its own port.
      const modes: [string, TokenValidatorOptions][] =
        format === 'opaque'
          ? [['introspection', { issuer: server.issuer, introspection }]]
          : [
              ['JWKS only', { issuer: server.issuer, jwt: {} }],
              ['JWKS and introspection', { issuer: server.issuer, jwt: {}, introspection }],
            ];
      for (const [name, options] of modes) {
        const proxy = createFhirProxy({ upstream: fhir.url, publicUrl: proxyUrl, tokens: createTokenValidator(options) });
        const listening = await proxy.listen(0);
        closers.push(listening.close);
        proxies.push({ name, url: listening.url });
      }

      const pat = await server.createAccount({ username: 'alex', role: 'patient', fhirId: 'pat-1' });
      const app = await server.createClient({
        client_name: 'Viewer',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token'],
        scope: 'openid fhirUser offline_access launch/patient patient/*.rs',
      });
      const config = await discover(server.issuer, app.clientId, app.clientSecret);
      const flow = await codeFlow(config, server.issuer, pat, { scope: 'openid offline_access launch/patient patient/Observation.rs', aud: proxyUrl });
      assert.ok(flow.tokens.id_token && flow.tokens.refresh_token, 'the login gave an ID token and a refresh token');
      tokens = { access: flow.tokens.access_token, id: flow.tokens.id_token, refresh: flow.tokens.refresh_token };
      assert.equal(tokens.access.split('.').length, format === 'jwt' ? 3 : 1);
    });
    after(async () => {
      for (const close of closers) await close();
      await fhir?.close();
      await server?.close();
    });

    async function present(proxy: string, token: string) {
      const mark = fhir.requests.length;
      const res = await fetch(`${proxy}/Observation`, { headers: { authorization: `Bearer ${token}` } });
      const body = (await res.json()) as { resourceType: string };
      return { status: res.status, challenge: res.headers.get('www-authenticate'), body, reachedFhir: fhir.requests.length - mark };
    }

    it('the access token itself opens the proxy (so the refusals below are about the token kind)', async () => {
      for (const proxy of proxies) {
        const res = await present(proxy.url, tokens.access);
        assert.equal(res.status, 200, proxy.name);
        assert.equal(res.reachedFhir, 1, proxy.name);
      }
    });

    it('the access token says who the user is (fhirUser), though the app did not ask for the fhirUser scope', async () => {
      const claims =
        format === 'jwt'
          ? (JSON.parse(Buffer.from(tokens.access.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>)
          : await oidc.tokenIntrospection(proxiesIntrospection!, tokens.access);
      assert.equal(claims.fhirUser, `${proxyUrl}/Patient/pat-1`);
      assert.ok(!String(claims.scope).split(' ').includes('fhirUser'), 'fhirUser was not granted as a scope');
    });

    it('an ID token from the same login is an invalid token (401), not an unavailable server (503)', async () => {
      assert.equal(tokens.id.split('.').length, 3, 'ID tokens are JWTs');
      for (const proxy of proxies) {
        const res = await present(proxy.url, tokens.id);
        assert.equal(res.status, 401, proxy.name);
        assert.equal(res.challenge, `Bearer realm="${proxyUrl}", error="invalid_token"`, proxy.name);
        assert.equal(res.body.resourceType, 'OperationOutcome', proxy.name);
        assert.equal(res.reachedFhir, 0, `${proxy.name}: nothing reached the FHIR server`);
      }
    });

    it('a refresh token presented as a bearer token is an invalid token (401)', async () => {
      for (const proxy of proxies) {
        const res = await present(proxy.url, tokens.refresh);
        assert.equal(res.status, 401, proxy.name);
        assert.equal(res.challenge, `Bearer realm="${proxyUrl}", error="invalid_token"`, proxy.name);
        assert.equal(res.reachedFhir, 0, proxy.name);
      }
    });
  });
}

/** How the validator reads each kind of introspection answer (a stand-in for Custos's endpoint). */
describe('token validator: inactive token or unavailable server', () => {
  const ISSUER = 'https://custos.test';
  const answering = (status: number, body: string, type = 'application/json') =>
    createTokenValidator({
      issuer: ISSUER,
      introspection: { clientId: 'rs', clientSecret: 's' },
      fetch: (async () => new Response(body, { status, headers: { 'content-type': type } })) as typeof fetch,
    });

  it('a 400 naming an OAuth error about the token means the token is not active', async () => {
    for (const error of ['invalid_request', 'unsupported_token_type', 'invalid_token', 'invalid_grant']) {
      const verdict = await answering(400, JSON.stringify({ error, error_description: 'no' })).validate('some-token');
      assert.deepEqual(verdict, { active: false, reason: `introspection refused the token (${error})` }, error);
    }
  });

  it('a refusal of the proxy itself, a server error or an unreadable answer means the server is unavailable', async () => {
    const cases: [number, string, string?][] = [
      [401, JSON.stringify({ error: 'invalid_client' })],
      [403, JSON.stringify({ error: 'access_denied' })],
      [400, JSON.stringify({ error: 'invalid_client' })],
      [400, JSON.stringify({ error: 'server_error' })],
      [400, '<html>bad request</html>', 'text/html'],
      [400, JSON.stringify(['invalid_request'])],
      [500, JSON.stringify({ error: 'server_error' })],
      [503, JSON.stringify({ error: 'temporarily_unavailable' })],
      [200, 'not json', 'text/plain'],
    ];
    for (const [status, body, type] of cases) {
      await assert.rejects(answering(status, body, type).validate('some-token'), TokenServiceUnavailable, `${status} ${body}`);
    }
  });
});
