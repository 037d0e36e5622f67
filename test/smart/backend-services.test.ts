import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

const FHIR = 'https://fhir.example.org/r4';
type TokenBody = { access_token?: string; refresh_token?: string; expires_in?: number; scope?: string; error?: string; error_description?: string };

describe('SMART Backend Services (client_credentials with a signed assertion)', () => {
  let server: TestServer;
  const keys: Record<string, { privateKey: jose.CryptoKey; kid: string }> = {};
  const clients: Record<string, string> = {};

  async function assertion(alg: string, overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
    const { privateKey, kid } = keys[alg]!;
    const now = Math.floor(Date.now() / 1000);
    return new jose.SignJWT({ jti: randomUUID(), ...overrides })
      .setProtectedHeader({ alg, kid, typ: 'JWT', ...header })
      .setIssuer(clients[alg]!)
      .setSubject(clients[alg]!)
      .setAudience(`${server.issuer}/token`)
      .setIssuedAt(now)
      .setExpirationTime(typeof overrides.exp === 'number' ? overrides.exp : now + 240)
      .sign(privateKey);
  }

  async function token(alg: string, jwt: string, scope = 'system/Observation.rs system/Patient.read') {
    const res = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        scope,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: jwt,
      }),
    });
    return { status: res.status, body: (await res.json()) as TokenBody, headers: res.headers };
  }

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR, ACCESS_TOKEN_TTL: '900' } });
    for (const alg of ['RS384', 'ES384']) {
      const { privateKey, publicKey } = await jose.generateKeyPair(alg);
      const kid = `backend-${alg}`;
      keys[alg] = { privateKey: privateKey as jose.CryptoKey, kid };
      const c = await server.createClient({
        client_name: `Backend ${alg}`,
        grant_types: ['client_credentials'],
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: { keys: [{ ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' }] },
        scope: 'system/*.rs',
      });
      clients[alg] = c.clientId;
    }
  });
  after(() => server.close());

  for (const alg of ['RS384', 'ES384']) {
    it(`issues a short-lived system token to a ${alg} client, without a refresh token`, async () => {
      const res = await token(alg, await assertion(alg));
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.ok(res.body.access_token);
      assert.ok(res.body.expires_in! <= 300, 'expires_in at most 300 even when access tokens may live longer');
      assert.equal(res.body.refresh_token, undefined);
      assert.deepEqual(res.body.scope!.split(' ').sort(), ['system/Observation.rs', 'system/Patient.read']);
      assert.equal(res.headers.get('cache-control'), 'no-store');
    });
  }

  it('refuses a replayed assertion (jti seen before)', async () => {
    const jwt = await assertion('ES384');
    assert.equal((await token('ES384', jwt)).status, 200);
    const again = await token('ES384', jwt);
    assert.equal(again.status, 401);
    assert.equal(again.body.error, 'invalid_client');
  });

  it('accepts an assertion presented several times at once only once', async () => {
    const jwt = await assertion('ES384');
    const results = await Promise.all(Array.from({ length: 6 }, () => token('ES384', jwt)));
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 401, 401, 401, 401, 401]);
    for (const r of results.filter((x) => x.status === 401)) assert.equal(r.body.error, 'invalid_client');
  });

  it('refuses an assertion expiring more than five minutes ahead, an expired one, and a wrong audience', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const jwt of [
      await assertion('RS384', { exp: now + 600 }),
      await assertion('RS384', { exp: now - 120 }),
      await new jose.SignJWT({ jti: randomUUID() })
        .setProtectedHeader({ alg: 'RS384', kid: keys.RS384!.kid })
        .setIssuer(clients.RS384!)
        .setSubject(clients.RS384!)
        .setAudience('https://somewhere-else.example/token')
        .setExpirationTime(now + 120)
        .sign(keys.RS384!.privateKey),
    ]) {
      const res = await token('RS384', jwt);
      assert.equal(res.status, 401);
      assert.equal(res.body.error, 'invalid_client');
    }
  });

  it('refuses a jku header that is not the registered jwks_uri, and a wrong algorithm or key', async () => {
    const jku = await assertion('ES384', {}, { jku: 'https://attacker.example/jwks.json' });
    assert.equal((await token('ES384', jku)).status, 401);
    const { privateKey } = await jose.generateKeyPair('ES384');
    const forged = await new jose.SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384', kid: keys.ES384!.kid })
      .setIssuer(clients.ES384!)
      .setSubject(clients.ES384!)
      .setAudience(`${server.issuer}/token`)
      .setExpirationTime('2m')
      .sign(privateKey);
    assert.equal((await token('ES384', forged)).status, 401);
    const hs = await new jose.SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(clients.ES384!)
      .setSubject(clients.ES384!)
      .setAudience(`${server.issuer}/token`)
      .setExpirationTime('2m')
      .sign(new TextEncoder().encode('x'.repeat(32)));
    assert.equal((await token('ES384', hs)).status, 401);
  });

  it('grants only system scopes within the ceiling', async () => {
    const res = await token('RS384', await assertion('RS384'), 'system/Observation.cruds patient/Observation.rs system/Patient.rs');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.scope!.split(' ').sort(), ['system/Observation.rs', 'system/Patient.rs']);
  });
});

describe('token introspection for resource servers (SMART)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
  });
  after(() => server.close());

  it('lets a registered resource server introspect any token and see fhirUser and the launch context', async () => {
    const alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1' });
    const app = await server.createClient({
      client_name: 'App',
      redirect_uris: [REDIRECT_URI],
      scope: 'openid fhirUser launch/patient patient/*.rs',
    });
    const rs = await server.createClient({ client_name: 'FHIR server', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const stranger = await server.createClient({ client_name: 'Stranger', grant_types: ['client_credentials'] });
    const appConfig = await discover(server.issuer, app.clientId, app.clientSecret);
    const { tokens } = await codeFlow(appConfig, server.issuer, alice, { scope: 'openid fhirUser launch/patient patient/Observation.rs', aud: FHIR });

    const rsConfig = await discover(server.issuer, rs.clientId, rs.clientSecret);
    const info = await oidc.tokenIntrospection(rsConfig, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.client_id, app.clientId);
    assert.equal(info.sub, alice.id);
    assert.equal(info.iss, server.issuer);
    assert.equal(info.aud, FHIR);
    assert.equal(info.scope, 'patient/Observation.rs');
    assert.equal(info.patient, 'pat-1');
    assert.equal(info.fhirUser, `${FHIR}/Patient/pat-1`);
    assert.ok(typeof info.exp === 'number');

    const strangerConfig = await discover(server.issuer, stranger.clientId, stranger.clientSecret);
    assert.equal((await oidc.tokenIntrospection(strangerConfig, tokens.access_token)).active, false);
  });
});
