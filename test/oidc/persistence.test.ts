import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';

async function publishedKids(issuer: string): Promise<string[]> {
  const res = await fetch(new URL('/jwks', issuer));
  const { keys } = (await res.json()) as { keys: Array<{ kid: string; d?: string }> };
  assert.ok(keys.every((k) => k.d === undefined), 'no private key material is published');
  return keys.map((k) => k.kid).sort();
}

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
