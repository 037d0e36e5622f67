/**
 * Forged tokens and assertions, made with `jose`, against every place Custos accepts one:
 *   - access tokens at introspection (client-authenticated and bearer), userinfo (/me),
 *     /fhir/Consent (whose bearer is a resource server's token), and the enforcement library's
 *     token validator, which verifies RFC 9068 JWTs against the server's JWKS: its control is
 *     the real token's claims signed with the server's real key, which it must accept;
 *   - private_key_jwt client assertions at /token (SMART Backend Services);
 *   - id_token_hint at /session/end and /auth; request objects at /auth and /request (PAR).
 * Variants: alg none, HS256 keyed with the server's (or the client's) public key as PEM and as
 * JWK JSON, unknown kid, right kid with the wrong key, expired exp, future nbf and iat, wrong aud,
 * wrong iss (these signed with the real key, so only the claim is wrong), truncation, jti replay,
 * and bits flipped in the decoded header, payload or signature at positions fast-check picks.
 * Every one must be refused with the right error, and the real token must pass the same check
 * (so each assertion can fail). Refused client assertions write no token.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';
import { loadSigningKeys } from '../../src/keys/index.ts';
import { createTokenValidator, type TokenValidator } from '../../src/enforcement/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const decodeSegment = (s: string) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Record<string, unknown>;
const now = () => Math.floor(Date.now() / 1000);

/**
 * Flips one bit of a dot-separated token's segment, in its decoded bytes (so they really differ,
 * which changing a base64url character does not guarantee), and re-encodes it.
 */
function flipBit(token: string, segment: number, position: number): string {
  const parts = token.split('.');
  const i = segment % parts.length;
  const bytes = Buffer.from(parts[i]!, 'base64url');
  const bit = position % (bytes.length * 8);
  bytes[bit >> 3]! ^= 1 << (bit & 7);
  parts[i] = bytes.toString('base64url');
  return parts.join('.');
}

describe('forged tokens and assertions are refused everywhere', () => {
  let server: TestServer;
  let accessToken: string;
  let idToken: string;
  let web: { clientId: string; clientSecret: string };
  let rs: { clientId: string; clientSecret: string };
  let rsToken: string;
  let consentId: string;
  let validator: TokenValidator;
  /** RFC 9068 claims of the real access token, and those claims signed with the server's real key. */
  let atClaims: Record<string, unknown>;
  let atHeader: jose.JWTHeaderParameters;
  let genuineJwt: string;
  /** The server's RS256 signing key (private), its kid and its public forms. */
  let serverKey: { privateKey: jose.CryptoKey; kid: string; publicPem: string; publicJwkJson: string };
  let attacker: { privateKey: jose.CryptoKey; privateKey384: jose.CryptoKey };
  let backend: { clientId: string; privateKey: jose.CryptoKey; kid: string; publicPem: string; publicJwkJson: string };

  const basic = (c: { clientId: string; clientSecret: string }) => `Basic ${Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64')}`;
  const payloads = async () => Number((await server.running.services.db('oidc_payloads').whereIn('kind', ['AccessToken', 'ClientCredentials']).count<{ c: string }[]>({ c: '*' }))[0]?.c);

  async function introspect(token: string, by: 'web' | 'rs' | 'bearer') {
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    headers.authorization = by === 'bearer' ? `Bearer ${rsToken}` : basic(by === 'web' ? web : rs);
    const res = await fetch(`${server.issuer}/token/introspection`, { method: 'POST', headers, body: new URLSearchParams({ token }) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /**
   * RFC 7662 says `active: false`; oidc-provider answers a JWT-shaped token (it issues opaque
   * ones here) with `unsupported_token_type` instead. Either is a refusal; `active: true` is not.
   */
  async function assertInactive(token: string, by: 'web' | 'rs' | 'bearer', name: string) {
    const { status, body } = await introspect(token, by);
    if (status === 400 && by !== 'bearer') assert.equal(body.error, 'unsupported_token_type', `${name} (${by}): ${JSON.stringify(body)}`);
    else assert.deepEqual([status, body], [200, { active: false }], `${name} (${by})`);
  }

  async function userinfo(token: string) {
    const res = await fetch(`${server.issuer}/me`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, wwwAuthenticate: res.headers.get('www-authenticate') ?? '', body: await res.text() };
  }

  async function consent(token: string) {
    const res = await fetch(`${server.issuer}/fhir/Consent/${consentId}`, { headers: { authorization: `Bearer ${token}` } });
    await res.body?.cancel();
    return res.status;
  }

  /**
   * An access token is refused everywhere: inactive at both kinds of introspection, invalid at
   * userinfo, and invalid to the enforcement library.
   */
  async function assertAccessTokenRefused(name: string, token: string) {
    for (const by of ['web', 'rs', 'bearer'] as const) await assertInactive(token, by, name);
    const me = await userinfo(token);
    assert.equal(me.status, 401, `${name}: userinfo ${me.body}`);
    assert.match(me.wwwAuthenticate, /error="invalid_token"/, name);
    const verdict = await validator.validate(token);
    // The validator leaves the audience to its caller (the FHIR proxy checks `aud` against itself):
    // a token for elsewhere may verify, but must not claim to be for this FHIR server.
    if (verdict.active) assert.ok(!verdict.facts.aud.includes(FHIR), `${name}: the enforcement validator accepted it for ${FHIR}`);
  }

  /** Claims of the real access token, re-signed however the forger likes. */
  async function resign(header: jose.JWTHeaderParameters, claims: Record<string, unknown>, key: jose.CryptoKey | Uint8Array) {
    return new jose.SignJWT(claims).setProtectedHeader(header).sign(key);
  }

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    const patient = await server.createAccount({ username: 'forgery-target', role: 'patient', fhirId: 'forge-1' });
    const app = await server.createClient({ client_name: 'Forgery Web', redirect_uris: [REDIRECT_URI], scope: 'openid launch/patient patient/*.rs' });
    web = { clientId: app.clientId, clientSecret: app.clientSecret! };
    const config = await discover(server.issuer, web.clientId, web.clientSecret);
    const { tokens } = await codeFlow(config, server.issuer, patient, { scope: 'openid launch/patient patient/Observation.rs', aud: FHIR });
    accessToken = tokens.access_token;
    idToken = tokens.id_token!;
    const rsClient = await server.createClient({ client_name: 'Forgery RS', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = { clientId: rsClient.clientId, clientSecret: rsClient.clientSecret! };
    rsToken = (await oidc.clientCredentialsGrant(await discover(server.issuer, rs.clientId, rs.clientSecret), { scope: 'custos:introspect' })).access_token;
    const info = (await introspect(accessToken, 'rs')).body;
    consentId = String(info.consent_id);

    const { jwks } = await loadSigningKeys(server.running.services.db, server.config.secrets.keyEncryptionKey);
    const rsa = jwks.find((k) => k.alg === 'RS256')!;
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = rsa;
    serverKey = {
      privateKey: (await jose.importJWK(rsa, 'RS256')) as jose.CryptoKey,
      kid: rsa.kid!,
      publicPem: createPublicKey({ key: publicJwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString(),
      publicJwkJson: JSON.stringify(publicJwk),
    };
    attacker = {
      privateKey: (await jose.generateKeyPair('RS256')).privateKey as jose.CryptoKey,
      privateKey384: (await jose.generateKeyPair('RS384')).privateKey as jose.CryptoKey,
    };

    const pair = await jose.generateKeyPair('RS384', { extractable: true });
    const backendJwk = { ...(await jose.exportJWK(pair.publicKey)), kid: 'backend-1', alg: 'RS384', use: 'sig' };
    const b = await server.createClient({
      client_name: 'Forgery Backend',
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [backendJwk] },
      scope: 'system/*.rs',
    });
    backend = {
      clientId: b.clientId,
      privateKey: pair.privateKey as jose.CryptoKey,
      kid: 'backend-1',
      publicPem: await jose.exportSPKI(pair.publicKey),
      publicJwkJson: JSON.stringify(backendJwk),
    };
    validator = createTokenValidator({ issuer: server.issuer, jwt: {}, cache: { ttlSeconds: 0 } });
    atHeader = { alg: 'RS256', kid: serverKey.kid, typ: 'at+jwt' };
    atClaims = { iss: info.iss, sub: info.sub, client_id: info.client_id, aud: info.aud, scope: info.scope, jti: info.jti ?? randomUUID(), iat: info.iat, exp: info.exp, patient: info.patient };
    genuineJwt = await resign(atHeader, atClaims, serverKey.privateKey);
  });
  after(() => server.close());

  it('the real tokens pass every check the forgeries must fail', async () => {
    for (const by of ['web', 'rs', 'bearer'] as const) assert.equal((await introspect(accessToken, by)).body.active, true, by);
    // The real token is for the FHIR server, so userinfo answers 403 (not 401 as to forgeries).
    assert.equal((await userinfo(accessToken)).status, 403);
    const verdict = await validator.validate(genuineJwt);
    assert.ok(verdict.active, 'the validator accepts the real claims signed with the real key');
    assert.deepEqual(verdict.facts.aud, [FHIR]);
    assert.equal(await consent(rsToken), 200);
    const endSession = await fetch(`${server.issuer}/session/end?${new URLSearchParams({ id_token_hint: idToken })}`);
    assert.equal(endSession.status, 200);
    await endSession.body?.cancel();
  });

  it('forged access tokens: alg none, HS256 with the public key, unknown kid, wrong key, bad claims, truncation', async () => {
    const [h, p] = genuineJwt.split('.') as [string, string, string];
    const header = atHeader;
    const claims = atClaims;
    const forged: [string, string][] = [
      ['alg none', `${b64({ ...header, alg: 'none' })}.${p}.`],
      ['alg none, no signature part', `${b64({ ...header, alg: 'none' })}.${p}`],
      ['alg "None"', `${b64({ ...header, alg: 'None' })}.${p}.`],
      ['HS256 keyed with the public key (PEM)', await resign({ ...header, alg: 'HS256' }, claims, new TextEncoder().encode(serverKey.publicPem))],
      ['HS256 keyed with the public key (JWK JSON)', await resign({ ...header, alg: 'HS256' }, claims, new TextEncoder().encode(serverKey.publicJwkJson))],
      ['unknown kid', await resign({ ...header, kid: 'not-a-key-of-ours' }, claims, attacker.privateKey)],
      ['right kid, wrong key', await resign(header, claims, attacker.privateKey)],
      ['no kid, wrong key', await resign({ alg: 'RS256', typ: 'at+jwt' }, claims, attacker.privateKey)],
      ['expired (real key)', await resign(header, { ...claims, iat: now() - 7200, exp: now() - 3600 }, serverKey.privateKey)],
      ['not yet valid: nbf an hour ahead (real key)', await resign(header, { ...claims, nbf: now() + 3600 }, serverKey.privateKey)],
      ['wrong aud (real key)', await resign(header, { ...claims, aud: 'https://elsewhere.example/fhir' }, serverKey.privateKey)],
      ['wrong iss (real key)', await resign(header, { ...claims, iss: 'https://evil.example' }, serverKey.privateKey)],
      ['an ID token presented as an access token (real key, typ JWT)', await resign({ ...header, typ: 'JWT' }, claims, serverKey.privateKey)],
      ['the real key\'s signature on different claims', `${h}.${b64({ ...claims, scope: 'patient/*.cruds' })}.${genuineJwt.split('.')[2]}`],
      ['truncated signature', genuineJwt.slice(0, -10)],
      ['header and payload only', `${h}.${p}`],
      ['the real opaque token truncated', accessToken.slice(0, -4)],
      ['the real opaque token with a suffix', `${accessToken}A`],
      ['the real opaque token in another case', accessToken.toUpperCase() === accessToken ? accessToken.toLowerCase() : accessToken.toUpperCase()],
    ];
    for (const [name, token] of forged) await assertAccessTokenRefused(name, token);
  });

  it('forged resource-server tokens cannot read /fhir/Consent or introspect', async () => {
    const jwtShaped = await resign({ alg: 'RS256', kid: serverKey.kid }, { iss: server.issuer, client_id: rs.clientId, scope: 'custos:introspect', exp: now() + 60 }, attacker.privateKey);
    for (const [name, token] of [
      ['an access token for the patient app (no custos:introspect)', accessToken],
      ['a JWT with custos:introspect signed by a stranger', jwtShaped],
      ['alg none with custos:introspect', `${b64({ alg: 'none' })}.${b64({ iss: server.issuer, client_id: rs.clientId, scope: 'custos:introspect' })}.`],
      ['the real token truncated', rsToken.slice(0, -3)],
      ['the real token with a character changed', `${rsToken.slice(0, -1)}${rsToken.endsWith('A') ? 'B' : 'A'}`],
    ] as const) {
      const status = await consent(token);
      assert.ok(status === 401 || status === 403, `${name}: ${status}`);
      const res = await fetch(`${server.issuer}/token/introspection`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: accessToken }),
      });
      assert.ok(res.status === 401 || res.status === 403, `${name}: bearer introspection ${res.status}`);
      assert.ok(!('active' in ((await res.json()) as object)), name);
    }
  });

  it('bits flipped anywhere in the opaque access token and in the signed JWT (fast-check) are refused', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 2 }), fc.nat(), async (segment, position) => {
        const opaque = flipBit(accessToken, 0, position);
        await assertInactive(opaque, 'rs', `opaque bit ${position}`);
        assert.equal((await userinfo(opaque)).status, 401, `opaque bit ${position}`);
        const jwt = flipBit(genuineJwt, segment, position);
        assert.equal((await validator.validate(jwt)).active, false, `JWT segment ${segment} bit ${position}`);
      }),
      { numRuns: 200 },
    );
  });

  describe('private_key_jwt client assertions at /token', () => {
    const tokenEndpoint = () => `${server.issuer}/token`;

    async function assertion(overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key: jose.CryptoKey | Uint8Array = backend.privateKey) {
      const claims = { iss: backend.clientId, sub: backend.clientId, aud: tokenEndpoint(), jti: randomUUID(), iat: now(), exp: now() + 120, ...overrides };
      return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS384', kid: backend.kid, typ: 'JWT', ...header } as jose.JWTHeaderParameters).sign(key);
    }

    async function exchange(jwt: string) {
      const res = await fetch(tokenEndpoint(), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/Observation.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: jwt }),
      });
      return { status: res.status, body: (await res.json()) as { error?: string; error_description?: string; access_token?: string } };
    }

    async function assertRefused(name: string, jwt: string) {
      const before = await payloads();
      const res = await exchange(jwt);
      // An assertion that does not even decode is a malformed request (400); any other is 401.
      const expected = res.status === 400 ? ['invalid_request', /client_assertion/] : ['invalid_client', /./];
      assert.ok(res.status === 401 || res.status === 400, `${name}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error, expected[0], `${name}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.error_description ?? '', expected[1] as RegExp, name);
      assert.equal(res.body.access_token, undefined, name);
      assert.equal(await payloads(), before, `${name}: no token written`);
    }

    it('a genuine assertion works (the control), and is refused when replayed', async () => {
      const jwt = await assertion();
      const first = await exchange(jwt);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.ok(first.body.access_token);
      await assertRefused('jti replay', jwt);
    });

    it('forged assertions: alg none, HS384 with the public key, unknown kid, wrong key, bad claims, truncation', async () => {
      const genuine = await assertion();
      const [, p] = genuine.split('.');
      const forged: [string, string][] = [
        ['alg none', `${b64({ alg: 'none', kid: backend.kid })}.${p}.`],
        ['HS384 keyed with the client public key (PEM)', await assertion({}, { alg: 'HS384' }, new TextEncoder().encode(backend.publicPem))],
        ['HS256 keyed with the client public JWK JSON', await assertion({}, { alg: 'HS256' }, new TextEncoder().encode(backend.publicJwkJson))],
        ['unknown kid', await assertion({}, { kid: 'nobody' }, attacker.privateKey384)],
        ['right kid, wrong key', await assertion({}, {}, attacker.privateKey384)],
        ['no kid, wrong key', await assertion({}, { kid: undefined }, attacker.privateKey384)],
        ['expired', await assertion({ iat: now() - 600, exp: now() - 300 })],
        ['exp more than five minutes ahead', await assertion({ exp: now() + 3600 })],
        ['nbf an hour ahead', await assertion({ nbf: now() + 3600 })],
        ['iat an hour ahead', await assertion({ iat: now() + 3600, exp: now() + 3700 })],
        ['wrong aud', await assertion({ aud: 'https://elsewhere.example/token' })],
        ['wrong iss', await assertion({ iss: 'someone-else' })],
        ['sub is another client', await assertion({ sub: web.clientId })],
        ['no jti', await assertion({ jti: undefined })],
        ['jku pointing elsewhere', await assertion({}, { jku: 'https://evil.example/jwks.json' })],
        ['signed by the server key (not the client key)', await assertion({}, { alg: 'RS256', kid: serverKey.kid }, serverKey.privateKey)],
        ['truncated', genuine.slice(0, -12)],
        ['two parts only', genuine.split('.').slice(0, 2).join('.')],
      ];
      for (const [name, jwt] of forged) await assertRefused(name, jwt);
    });

    it('bits flipped in a fresh assertion (fast-check) are refused and write nothing', async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: 2 }), fc.nat(), async (segment, position) => {
          await assertRefused(`segment ${segment} bit ${position}`, flipBit(await assertion(), segment, position));
        }),
        { numRuns: 60 },
      );
    });
  });

  describe('id_token_hint and request objects', () => {
    async function forgedIdTokens(): Promise<[string, string][]> {
      const [h, p] = idToken.split('.') as [string, string, string];
      const header = decodeSegment(h) as jose.JWTHeaderParameters;
      const claims = decodeSegment(p);
      return [
        ['alg none', `${b64({ ...header, alg: 'none' })}.${p}.`],
        ['HS256 keyed with the public key (PEM)', await resign({ ...header, alg: 'HS256' }, claims, new TextEncoder().encode(serverKey.publicPem))],
        ['HS256 keyed with the client secret', await resign({ ...header, alg: 'HS256' }, claims, new TextEncoder().encode(web.clientSecret))],
        ['unknown kid', await resign({ ...header, kid: 'nobody' }, claims, attacker.privateKey)],
        ['right kid, wrong key', await resign(header, claims, attacker.privateKey)],
        ['wrong iss (real key)', await resign(header, { ...claims, iss: 'https://evil.example' }, serverKey.privateKey)],
        ['flipped signature bit', flipBit(idToken, 2, 17)],
        ['flipped payload bit', flipBit(idToken, 1, 40)],
        ['truncated', idToken.slice(0, -8)],
      ];
    }

    it('/session/end refuses a forged id_token_hint', async () => {
      for (const [name, hint] of await forgedIdTokens()) {
        const res = await fetch(`${server.issuer}/session/end?${new URLSearchParams({ id_token_hint: hint, post_logout_redirect_uri: REDIRECT_URI })}`, {
          headers: { accept: 'application/json' },
          redirect: 'manual',
        });
        assert.equal(res.status, 400, name);
        const body = await res.text();
        assert.match(body, /invalid_request/, name);
        assert.match(body, /id_token_hint/, name);
      }
    });

    it('/auth refuses a forged id_token_hint with an error redirect to the client', async () => {
      const base = { client_id: web.clientId, redirect_uri: REDIRECT_URI, response_type: 'code', scope: 'openid', state: 'st', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' };
      const genuine = await fetch(`${server.issuer}/auth?${new URLSearchParams({ ...base, id_token_hint: idToken })}`, { redirect: 'manual' });
      assert.ok(!/[?&]error=/.test(genuine.headers.get('location') ?? ''), 'the real hint is accepted');
      for (const [name, hint] of await forgedIdTokens()) {
        const res = await fetch(`${server.issuer}/auth?${new URLSearchParams({ ...base, id_token_hint: hint })}`, { redirect: 'manual' });
        assert.equal(res.status, 303, name);
        const location = new URL(res.headers.get('location')!);
        assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI, name);
        assert.equal(location.searchParams.get('error'), 'invalid_request', name);
        assert.match(location.searchParams.get('error_description') ?? '', /id_token_hint/, name);
      }
    });

    it('request objects (not offered by this server) are refused, signed or not', async () => {
      const claims = { iss: web.clientId, aud: server.issuer, client_id: web.clientId, redirect_uri: REDIRECT_URI, response_type: 'code', scope: 'openid custos:admin' };
      const objects: [string, string][] = [
        ['alg none', `${b64({ alg: 'none' })}.${b64(claims)}.`],
        ['HS256 keyed with the client secret', await new jose.SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(web.clientSecret))],
        ['signed by a stranger', await new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: serverKey.kid }).sign(attacker.privateKey)],
      ];
      const before = await server.running.services.db('oidc_payloads').where({ kind: 'PushedAuthorizationRequest' }).count<{ c: string }[]>({ c: '*' });
      for (const [name, request] of objects) {
        const auth = await fetch(`${server.issuer}/auth?${new URLSearchParams({ client_id: web.clientId, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid', request })}`, { redirect: 'manual' });
        const location = auth.headers.get('location') ?? '';
        assert.ok(auth.status === 400 || /[?&]error=(request_not_supported|invalid_request_object|invalid_request)/.test(location), `${name} at /auth: ${auth.status} ${location}`);
        await auth.body?.cancel();
        const par = await fetch(`${server.issuer}/request`, {
          method: 'POST',
          headers: { authorization: basic(web), 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ client_id: web.clientId, request }),
        });
        assert.equal(par.status, 400, `${name} at /request`);
        assert.match(((await par.json()) as { error: string }).error, /^(request_not_supported|invalid_request_object|invalid_request)$/, name);
      }
      const afterCount = await server.running.services.db('oidc_payloads').where({ kind: 'PushedAuthorizationRequest' }).count<{ c: string }[]>({ c: '*' });
      assert.deepEqual(afterCount, before, 'no pushed request stored');
    });
  });
});
