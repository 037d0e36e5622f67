/**
 * RFC 9700: no implicit grant, no open redirect at logout, and tokens that live no longer than
 * configured (a client may only shorten its own).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

describe('lifetimes and redirects', () => {
  let server: TestServer;
  let app: { clientId: string; clientSecret?: string };
  before(async () => {
    server = await startTestServer({ env: { ID_TOKEN_TTL: '600', ACCESS_TOKEN_TTL: '300' } });
    app = await server.createClient({ client_name: 'Web app', redirect_uris: [REDIRECT_URI], post_logout_redirect_uris: ['http://127.0.0.1:8765/bye'] });
  });
  after(() => server.close());

  it('refuses the implicit grant: response_type=token and id_token token never put a token in a redirect', async () => {
    for (const responseType of ['token', 'id_token token', 'code token']) {
      const url = new URL('/auth', server.issuer);
      url.search = new URLSearchParams({
        client_id: app.clientId,
        response_type: responseType,
        redirect_uri: REDIRECT_URI,
        scope: 'openid',
        nonce: 'n',
        state: 's',
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbkdyn1MVP6A',
        code_challenge_method: 'S256',
      }).toString();
      const res = await fetch(url, { redirect: 'manual' });
      const location = res.headers.get('location') ?? '';
      await res.body?.cancel();
      assert.doesNotMatch(location, /access_token|id_token=/, responseType);
      assert.match(location, /error=(unsupported_response_type|invalid_request)/, `${responseType}: ${res.status} ${location}`);
    }
  });

  it('never redirects to an unregistered post_logout_redirect_uri', async () => {
    const config = await discover(server.issuer, app.clientId, app.clientSecret);
    const who = await server.createAccount({ username: 'logout-user' });
    const { tokens } = await codeFlow(config, server.issuer, who);
    const url = new URL('/session/end', server.issuer);
    url.search = new URLSearchParams({ id_token_hint: tokens.id_token!, post_logout_redirect_uri: 'https://evil.example/phish', client_id: app.clientId }).toString();
    const res = await fetch(url, { redirect: 'manual' });
    const body = await res.text();
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null);
    assert.match(body, /post_logout_redirect_uri/);
    assert.doesNotMatch(body, /evil\.example/);
  });

  it('issues ID tokens for ID_TOKEN_TTL and access tokens for no longer than the client allows', async () => {
    const config = await discover(server.issuer, app.clientId, app.clientSecret);
    const who = await server.createAccount({ username: 'ttl-user' });
    const { tokens } = await codeFlow(config, server.issuer, who);
    const claims = jose.decodeJwt(tokens.id_token!);
    assert.equal(claims.exp! - claims.iat!, 600);
    assert.equal(tokens.expires_in, 300);

    const short = await server.createClient({ client_name: 'Short-lived', grant_types: ['client_credentials'], access_token_ttl: 60 });
    const shortConfig = await discover(server.issuer, short.clientId, short.clientSecret);
    const issued = await oidc.clientCredentialsGrant(shortConfig);
    assert.equal(issued.expires_in, 60);
    const info = await oidc.tokenIntrospection(shortConfig, issued.access_token);
    assert.equal(info.exp! - info.iat!, 60);
  });

  it('stores authorization codes for AUTHORIZATION_CODE_TTL only', async () => {
    const rows = (await server.running.services.db('oidc_payloads').where({ kind: 'AuthorizationCode' }).select('payload', 'expires_at')) as { payload: { iat: number; exp: number }; expires_at: Date }[];
    assert.ok(rows.length > 0, 'the flows above stored codes');
    for (const row of rows) {
      assert.equal(row.payload.exp - row.payload.iat, server.config.ttl.authorizationCode);
      assert.ok(Math.abs(row.expires_at.getTime() / 1000 - row.payload.exp) < 1, 'the row is removed when the code expires');
    }
  });
});
