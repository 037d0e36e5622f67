import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { createTokenValidator, TokenServiceUnavailable } from '../../src/enforcement/index.ts';

const ISSUER = 'https://custos.test';

/** A fake introspection endpoint: answers from `answers` by token, counting calls. */
function fakeCustos(answers: Record<string, Record<string, unknown> | 'down' | 500>) {
  const calls: { token: string; authorization: string }[] = [];
  const fetchImpl = (async (url: string | URL | Request, init?: RequestInit) => {
    assert.equal(String(url), `${ISSUER}/token/introspection`);
    const token = new URLSearchParams(String(init?.body)).get('token')!;
    calls.push({ token, authorization: String((init?.headers as Record<string, string>).authorization) });
    const answer = answers[token] ?? { active: false };
    if (answer === 'down') throw new TypeError('fetch failed');
    if (answer === 500) return new Response('oops', { status: 500 });
    return Response.json(answer);
  }) as typeof fetch;
  return { calls, fetchImpl };
}

const active = (extra: Record<string, unknown> = {}) => ({ active: true, token_type: 'Bearer', iss: ISSUER, scope: 'patient/Observation.rs', patient: 'p1', exp: 2_000_000_000, ...extra });

describe('token validator: introspection with a short, bounded cache', () => {
  it('authenticates with client_secret_basic and turns the answer into access facts', async () => {
    const { calls, fetchImpl } = fakeCustos({ t1: active() });
    const v = createTokenValidator({ issuer: ISSUER, introspection: { clientId: 'rs:1', clientSecret: 's3cr%t' }, fetch: fetchImpl });
    const verdict = await v.validate('t1');
    assert.ok(verdict.active);
    assert.equal(verdict.facts.patient, 'p1');
    assert.equal(calls[0]!.authorization, `Basic ${Buffer.from('rs%3A1:s3cr%25t').toString('base64')}`, 'RFC 6749 2.3.1: form-encoded before base64');
  });

  it('reuses an answer until its time-to-live passes, then asks again', async () => {
    let now = 1_000_000;
    const answers: Record<string, Record<string, unknown>> = { t1: active() };
    const { calls, fetchImpl } = fakeCustos(answers);
    const v = createTokenValidator({ issuer: ISSUER, introspection: { clientId: 'rs', clientSecret: 's' }, fetch: fetchImpl, clock: () => now, cache: { ttlSeconds: 3 } });
    assert.ok((await v.validate('t1')).active);
    answers.t1 = { active: false };
    now += 2999;
    assert.ok((await v.validate('t1')).active, 'cached');
    assert.equal(calls.length, 1);
    now += 1;
    assert.equal((await v.validate('t1')).active, false, 'revocation shows once the answer is 3 seconds old');
    assert.equal(calls.length, 2);
  });

  it('never keeps an answer past the token expiry, and keeps at most maxEntries answers', async () => {
    let now = 1_000_000_000;
    const answers: Record<string, Record<string, unknown>> = { soon: active({ exp: now / 1000 + 1 }), a: active(), b: active(), c: active() };
    const { calls, fetchImpl } = fakeCustos(answers);
    const v = createTokenValidator({ issuer: ISSUER, introspection: { clientId: 'rs', clientSecret: 's' }, fetch: fetchImpl, clock: () => now, cache: { ttlSeconds: 60, maxEntries: 2 } });
    await v.validate('soon');
    now += 1000;
    await v.validate('soon');
    assert.equal(calls.length, 2, 'the expired token was checked again');
    await v.validate('a');
    await v.validate('b');
    await v.validate('c');
    assert.equal(v.cacheSize, 2);
    await v.validate('a');
    assert.equal(calls.filter((c) => c.token === 'a').length, 2, 'the oldest answer was evicted');
  });

  it('asks once for concurrent requests with the same token', async () => {
    const { calls, fetchImpl } = fakeCustos({ t: active() });
    const v = createTokenValidator({ issuer: ISSUER, introspection: { clientId: 'rs', clientSecret: 's' }, fetch: fetchImpl });
    await Promise.all([v.validate('t'), v.validate('t'), v.validate('t')]);
    assert.equal(calls.length, 1);
  });

  it('refuses refresh tokens, DPoP tokens, tokens from another issuer and malformed tokens', async () => {
    const { calls, fetchImpl } = fakeCustos({
      refresh: active({ token_type: undefined }),
      dpop: active({ token_type: 'DPoP' }),
      foreign: active({ iss: 'https://evil.test' }),
      expired: active({ exp: 1 }),
      mtls: active({ cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } }),
    });
    const v = createTokenValidator({ issuer: ISSUER, introspection: { clientId: 'rs', clientSecret: 's' }, fetch: fetchImpl });
    for (const t of ['refresh', 'dpop', 'foreign', 'expired', 'mtls', 'unknown']) assert.equal((await v.validate(t)).active, false, t);
    for (const t of ['', 'a b', 'x'.repeat(9000), 'tok"en']) assert.equal((await v.validate(t)).active, false);
    assert.equal(calls.length, 6, 'malformed tokens are not sent anywhere');
  });

  it('reports an unreachable or failing authorization server instead of calling the token invalid', async () => {
    const { fetchImpl } = fakeCustos({ down: 'down', broken: 500 });
    const v = createTokenValidator({ issuer: ISSUER, introspection: { clientId: 'rs', clientSecret: 's' }, fetch: fetchImpl });
    await assert.rejects(v.validate('down'), TokenServiceUnavailable);
    await assert.rejects(v.validate('broken'), TokenServiceUnavailable);
    assert.equal(v.cacheSize, 0, 'failures are not cached');
  });
});

describe('token validator: JWT access tokens against the JWKS', () => {
  let jwksServer: Server;
  let issuer: string;
  let sign: (claims: Record<string, unknown>, typ?: string) => Promise<string>;

  before(async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    jwksServer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', () => resolve()));
    issuer = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}`;
    sign = (claims, typ = 'at+jwt') =>
      new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ }).setIssuer(issuer).setIssuedAt().setExpirationTime('5m').sign(privateKey);
  });
  after(() => new Promise<void>((resolve) => jwksServer.close(() => resolve())));

  it('accepts a signed at+jwt from the issuer and refuses anything else', async () => {
    const v = createTokenValidator({ issuer, jwt: {} });
    const good = await v.validate(await sign({ scope: 'patient/Observation.rs', patient: 'p1', aud: 'https://fhir' }));
    assert.ok(good.active);
    assert.deepEqual(good.facts.aud, ['https://fhir']);
    assert.equal((await v.validate(await sign({ scope: 'x' }, 'JWT'))).active, false, 'an ID token is not an access token');
    const other = await new SignJWT({}).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setIssuer(issuer).sign(new Uint8Array(32));
    assert.equal((await v.validate(other)).active, false);
    assert.equal((await v.validate('opaque-token')).active, false, 'without introspection an opaque token cannot be checked');
  });

  it('refuses a signed at+jwt bound to a DPoP key, since no proof is checked', async () => {
    const v = createTokenValidator({ issuer, jwt: {} });
    const claims = { scope: 'patient/Observation.rs', patient: 'p1', aud: 'https://fhir' };
    assert.ok((await v.validate(await sign(claims))).active, 'the same token without cnf is accepted');
    const bound = await v.validate(await sign({ ...claims, cnf: { jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' } }));
    assert.equal(bound.active, false);
    assert.match(bound.active ? '' : bound.reason, /cnf/);
  });
});
