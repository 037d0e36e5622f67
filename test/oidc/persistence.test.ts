import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { rotateSigningKeys } from '../../src/keys/index.ts';
import { signedTokenMaxLifetime } from '../../src/oidc/index.ts';

async function publishedKids(issuer: string): Promise<string[]> {
  const res = await fetch(new URL('/jwks', issuer));
  const { keys } = (await res.json()) as { keys: Array<{ kid: string; d?: string }> };
  assert.ok(keys.every((k) => k.d === undefined), 'no private key material is published');
  return keys.map((k) => k.kid).sort();
}

const kidOf = (jwt: string) => jose.decodeProtectedHeader(jwt).kid;

describe('restarting on the same database', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('keeps clients, accounts, keys, sessions and refresh tokens', async () => {
    const alice = await server.createAccount({ username: 'alice' });
    const client = await server.createClient({
      client_name: 'Durable App',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access',
    });
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { tokens, agent } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access', prompt: 'consent' });
    const kidsBefore = await publishedKids(server.issuer);
    assert.equal(kidsBefore.length, 2, 'one RS256 and one ES256 key');

    await server.restart();

    assert.deepEqual(await publishedKids(server.issuer), kidsBefore, 'same signing keys after restart');
    const configAfter = await discover(server.issuer, client.clientId, client.clientSecret);
    // The refresh token (and so the grant, client and account) survived.
    const refreshed = await oidc.refreshTokenGrant(configAfter, tokens.refresh_token!);
    assert.ok(refreshed.access_token);
    assert.equal(refreshed.claims()?.sub, alice.id);
    // The browser session survived too: prompt=none succeeds without a login.
    const { url, verifier, state } = await startCodeFlow(configAfter, { prompt: 'none' });
    const res = await agent.follow(url.toString(), server.issuer);
    assert.ok(res.location?.startsWith(REDIRECT_URI), `expected a code without login, got ${res.status}`);
    const again = await oidc.authorizationCodeGrant(configAfter, new URL(res.location!), { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(again.claims()?.sub, alice.id);
  });
});

describe('signing key rotation', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { SIGNING_KEY_REFRESH_INTERVAL: '1' } });
  });
  after(() => server.close());

  /** Polls until `check` passes; fails with the last assertion after `limit` attempts. */
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

  it('publishes new keys at once, signs with them shortly after without a restart, and retires the old ones', async () => {
    const alice = await server.createAccount({ username: 'alice' });
    const client = await server.createClient({ client_name: 'Rotating App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const before = await codeFlow(config, server.issuer, alice);
    const oldKid = kidOf(before.tokens.id_token!);
    const kidsBefore = await publishedKids(server.issuer);

    const created = await rotateSigningKeys(server.running.services.db, server.config.secrets.keyEncryptionKey, {
      activateAfterSeconds: 2,
      maxSignedLifetimeSeconds: signedTokenMaxLifetime(server.config),
    });
    const newKids = created.map((k) => k.kid);
    assert.equal(newKids.length, 2);

    // Published by the running server without a restart...
    await eventually(async () => assert.deepEqual(await publishedKids(server.issuer), [...kidsBefore, ...newKids].sort()));
    // ...and used for signing once activated.
    let after: Awaited<ReturnType<typeof codeFlow>> | undefined;
    await eventually(async () => {
      after = await codeFlow(config, server.issuer, alice);
      assert.ok(newKids.includes(kidOf(after.tokens.id_token!)!), 'signed with a new key');
    });
    assert.notEqual(kidOf(after!.tokens.id_token!), oldKid);

    // The ID token signed before the rotation still verifies against the published JWKS.
    const jwks = jose.createRemoteJWKSet(new URL('/jwks', server.issuer));
    const { payload } = await jose.jwtVerify(before.tokens.id_token!, jwks, { issuer: server.issuer, audience: client.clientId });
    assert.equal(payload.sub, alice.id);

    // Once the retirement time has passed the old keys are no longer published.
    const { db } = server.running.services;
    await db('signing_keys').whereNotNull('retire_at').update({ retire_at: db.raw(`now() - interval '1 second'`) });
    await eventually(async () => assert.deepEqual(await publishedKids(server.issuer), [...newKids].sort()));
  });
});
