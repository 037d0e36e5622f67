import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

describe('authorization code flow with PKCE through the login and consent pages', () => {
  let server: TestServer;
  let client: { clientId: string; clientSecret?: string };
  let alice: { id: string; username: string; password: string };

  before(async () => {
    server = await startTestServer();
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1', displayName: 'Alice Doe', email: 'alice@example.org' });
    client = await server.createClient({
      client_name: 'Test App',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid profile email fhirUser offline_access',
    });
  });
  after(() => server.close());

  it('publishes discovery with S256 only, code only, and RFC 9207 iss', async () => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const meta = config.serverMetadata();
    assert.equal(meta.issuer, server.issuer);
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(meta.response_types_supported, ['code']);
    assert.equal(meta.authorization_response_iss_parameter_supported, true);
    assert.ok(!meta.grant_types_supported?.includes('implicit'));
    assert.ok(!meta.grant_types_supported?.includes('password'));
    assert.ok(meta.introspection_endpoint && meta.revocation_endpoint && meta.end_session_endpoint);
  });

  it('issues tokens, an RS256 ID token with kid, userinfo, and short-lived access tokens', async () => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { tokens, callbackUrl } = await codeFlow(config, server.issuer, alice, { scope: 'openid profile email fhirUser' });
    assert.equal(callbackUrl.searchParams.get('iss'), server.issuer);
    assert.ok(tokens.access_token);
    assert.ok(tokens.expires_in! <= 300 && tokens.expires_in! > 0);
    const [headerB64] = tokens.id_token!.split('.');
    const header = JSON.parse(Buffer.from(headerB64!, 'base64url').toString());
    assert.equal(header.alg, 'RS256');
    assert.ok(header.kid);
    const claims = tokens.claims()!;
    assert.equal(claims.sub, alice.id);
    const info = await oidc.fetchUserInfo(config, tokens.access_token, alice.id);
    assert.equal(info.preferred_username, 'alice');
    assert.equal(info.name, 'Alice Doe');
    assert.equal(info.email, 'alice@example.org');
    assert.equal(tokens.refresh_token, undefined, 'no refresh token without offline_access');
  });

  it('rotates refresh tokens, and reuse of a rotated one revokes the whole grant', async () => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    const first = tokens.refresh_token!;
    assert.ok(first, 'refresh token issued for offline_access');
    const refreshed = await oidc.refreshTokenGrant(config, first);
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== first, 'a new refresh token on every refresh');
    const active = await oidc.tokenIntrospection(config, refreshed.access_token);
    assert.equal(active.active, true);

    await assert.rejects(oidc.refreshTokenGrant(config, first), (err: oidc.ResponseBodyError) => {
      assert.equal(err.error, 'invalid_grant');
      return true;
    });
    // The reuse revoked the grant: the rotated token and its access token are dead too.
    await assert.rejects(oidc.refreshTokenGrant(config, refreshed.refresh_token!), { error: 'invalid_grant' });
    assert.equal((await oidc.tokenIntrospection(config, refreshed.access_token)).active, false);
  });

  it('introspects (RFC 7662) and revokes (RFC 7009) access and refresh tokens', async () => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.client_id, client.clientId);
    assert.equal(info.sub, alice.id);
    assert.equal(info.iss, server.issuer);

    // Revoking the refresh token revokes the grant, so its access tokens go with it.
    const again = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    await oidc.tokenRevocation(config, again.refresh_token!);
    assert.equal((await oidc.tokenIntrospection(config, again.access_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, again.refresh_token!), { error: 'invalid_grant' });

    // Revoking an access token also revokes the refresh token issued with it (RFC 7009 section 2.1).
    const second = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    await oidc.tokenRevocation(config, second.tokens.access_token);
    assert.equal((await oidc.tokenIntrospection(config, second.tokens.access_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, second.tokens.refresh_token!), { error: 'invalid_grant' });
  });

  it('lets a confidential client introspect only its own tokens', async () => {
    const other = await server.createClient({ client_name: 'Other', grant_types: ['client_credentials'] });
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { tokens } = await codeFlow(config, server.issuer, alice);
    const otherConfig = await discover(server.issuer, other.clientId, other.clientSecret);
    assert.equal((await oidc.tokenIntrospection(otherConfig, tokens.access_token)).active, false);
  });

  it('accepts pushed authorization requests (RFC 9126)', async () => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const verifier = oidc.randomPKCECodeVerifier();
    const url = await oidc.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    assert.match(url.searchParams.get('request_uri') ?? '', /^urn:ietf:params:oauth:request_uri:/);
    const { authorize: drive, UserAgent } = await import('../helpers/browserless.ts');
    const res = await drive(new UserAgent(), url.toString(), server.issuer, alice);
    assert.ok(res.location?.startsWith(REDIRECT_URI), `${res.status} ${res.body}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: verifier });
    assert.equal(tokens.claims()?.sub, alice.id);
  });

  it('signs the user out through RP-initiated logout', async () => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { tokens, agent } = await codeFlow(config, server.issuer, alice);
    const url = oidc.buildEndSessionUrl(config, { id_token_hint: tokens.id_token! });
    const page = await agent.request(url.toString());
    assert.equal(page.status, 200);
    assert.match(page.body, /Sign out\?/);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)?.[1];
    assert.ok(xsrf);
    const done = await agent.request(new URL('/session/end/confirm', server.issuer).toString(), { form: { xsrf, logout: 'yes' } });
    const final = await agent.follow(done.location!, server.issuer);
    assert.match(final.body, /You are signed out/);
    // The session is gone: a new authorization request shows the login page again.
    const { url: again } = await import('../helpers/oidc-client.ts').then((m) => m.startCodeFlow(config));
    const next = await agent.follow(again.toString(), server.issuer);
    assert.match(next.body, /Sign in/);
  });
});

describe('client_credentials', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('issues an access token to a confidential client with client_secret_basic and client_secret_post', async () => {
    for (const method of ['client_secret_basic', 'client_secret_post'] as const) {
      const c = await server.createClient({ client_name: `svc ${method}`, grant_types: ['client_credentials'], token_endpoint_auth_method: method });
      const auth = method === 'client_secret_basic' ? oidc.ClientSecretBasic(c.clientSecret!) : oidc.ClientSecretPost(c.clientSecret!);
      const config = await discover(server.issuer, c.clientId, c.clientSecret, auth);
      const tokens = await oidc.clientCredentialsGrant(config);
      assert.ok(tokens.access_token);
      assert.equal(tokens.refresh_token, undefined);
      const info = await oidc.tokenIntrospection(config, tokens.access_token);
      assert.equal(info.active, true);
      assert.equal(info.client_id, c.clientId);
    }
  });

  it('authenticates a client with private_key_jwt (RS384 and ES384)', async () => {
    for (const alg of ['RS384', 'ES384'] as const) {
      const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true });
      const jwk = { ...(await jose.exportJWK(publicKey)), alg, use: 'sig', kid: `key-${alg}` };
      const c = await server.createClient({
        client_name: `jwt ${alg}`,
        grant_types: ['client_credentials'],
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: alg,
        jwks: { keys: [jwk] },
      });
      assert.equal(c.clientSecret, undefined, 'no secret for a key-authenticated client');
      const config = await discover(server.issuer, c.clientId, undefined, oidc.PrivateKeyJwt({ key: privateKey, kid: jwk.kid }));
      const tokens = await oidc.clientCredentialsGrant(config);
      assert.ok(tokens.access_token);
    }
  });

  it('refuses a wrong secret with 401 invalid_client and WWW-Authenticate', async () => {
    const c = await server.createClient({ client_name: 'svc', grant_types: ['client_credentials'] });
    const res = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${c.clientId}:wrong-secret`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic/);
    const body = (await res.json()) as { error: string };
    assert.equal(body.error, 'invalid_client');
  });

  it('refuses an unknown client with 401 invalid_client', async () => {
    const res = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from('no-such-client:whatever').toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  });
});
