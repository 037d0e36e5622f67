import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize } from '../helpers/browserless.ts';

const FHIR_A = 'https://fhir-a.example/r4';
const FHIR_B = 'https://fhir-b.example/r4';

/**
 * RFC 6749 section 5.2: a refused refresh request is an error and nothing else. The refresh
 * token stays usable and its grant alive; only presenting an already rotated token again (reuse,
 * RFC 9700 section 4.14.2) revokes the grant.
 */
describe('refused refreshes consume nothing', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let alice: { id: string; username: string; password: string };
  // The clock consent expiry is judged by.
  let nowMs = Date.now();

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: `${FHIR_A},${FHIR_B}` }, clock: () => new Date(nowMs) });
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1' });
    const app = await server.createClient({
      client_name: 'Viewer',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access launch/patient patient/*.rs',
    });
    config = await discover(server.issuer, app.clientId, app.clientSecret);
  });
  after(async () => {
    await server?.close();
  });

  /** Every stored token, code and grant, and whether it was used: what a refused request must not change. */
  async function tokenState() {
    return server.running.services.db('oidc_payloads').select('kind', 'id', 'consumed_at').orderBy(['kind', 'id']);
  }

  async function login() {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access launch/patient patient/Observation.rs', aud: FHIR_A });
    assert.ok(tokens.refresh_token);
    return tokens.refresh_token;
  }

  async function refused(refreshToken: string, params: URLSearchParams, error: string, description: string) {
    const before = await tokenState();
    await assert.rejects(oidc.refreshTokenGrant(config, refreshToken, params), (err: oidc.ResponseBodyError) => {
      assert.equal(err.status, 400);
      assert.equal(err.error, error);
      assert.equal(err.error_description, description);
      return true;
    });
    assert.deepEqual(await tokenState(), before, `${params}: nothing was written or consumed`);
  }

  it('a resource other than the granted one is invalid_target, and the refresh token then still works once', async () => {
    const first = await login();
    await refused(first, new URLSearchParams({ resource: FHIR_B }), 'invalid_target', 'the resource was not granted to this refresh token');
    await refused(first, new URLSearchParams({ resource: 'https://elsewhere.example/fhir' }), 'invalid_target', 'the resource was not granted to this refresh token');
    const two = new URLSearchParams([['resource', FHIR_A], ['resource', FHIR_B]]);
    await refused(first, two, 'invalid_target', 'only a single resource indicator value must be requested/resolved during Access Token Request');

    const refreshed = await oidc.refreshTokenGrant(config, first);
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== first, 'the refused requests left the token usable; it rotates now');
    assert.equal(refreshed.scope?.split(' ').includes('patient/Observation.rs'), true);
    const info = await oidc.tokenIntrospection(config, refreshed.access_token);
    assert.equal(info.active, true);
    assert.equal(info.aud, FHIR_A, 'still a token for the granted server');

    // Naming the granted server explicitly is fine.
    const explicit = await oidc.refreshTokenGrant(config, refreshed.refresh_token, new URLSearchParams({ resource: FHIR_A }));
    assert.equal((await oidc.tokenIntrospection(config, explicit.access_token)).aud, FHIR_A);

    // Reuse detection is unchanged: the rotated token presented again revokes the whole grant.
    await assert.rejects(oidc.refreshTokenGrant(config, first), (err: oidc.ResponseBodyError) => {
      assert.equal(err.error, 'invalid_grant');
      assert.equal(err.error_description, 'grant request is invalid');
      return true;
    });
    await assert.rejects(oidc.refreshTokenGrant(config, explicit.refresh_token!), { error: 'invalid_grant' });
    assert.equal((await oidc.tokenIntrospection(config, explicit.access_token)).active, false);
  });

  it('a scope wider than granted is invalid_scope, and the refresh token still works', async () => {
    const first = await login();
    await refused(first, new URLSearchParams({ scope: 'openid patient/Observation.rs patient/Condition.rs' }), 'invalid_scope', 'refresh token missing requested scope');
    const refreshed = await oidc.refreshTokenGrant(config, first, new URLSearchParams({ scope: 'openid patient/Observation.rs' }));
    assert.ok(refreshed.refresh_token);
    assert.equal((await oidc.tokenIntrospection(config, refreshed.access_token)).active, true);
  });

  it("a refresh refused because the patient's consent has expired consumes nothing either", async () => {
    const start = await startCodeFlow(config, { scope: 'openid offline_access launch/patient patient/Observation.rs', aud: FHIR_A });
    const oneDay = (form: [string, string][]) => [...form.filter(([n]) => n !== 'expires'), ['expires', '1']] as [string, string][];
    const res = await authorize(new UserAgent(), start.url.toString(), server.issuer, alice, { consentForm: oneDay });
    assert.ok(res.location?.startsWith(REDIRECT_URI), `the flow ended at ${res.status}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    const realNow = nowMs;
    nowMs += 2 * 86400_000;
    try {
      await refused(tokens.refresh_token!, new URLSearchParams(), 'invalid_grant', 'grant request is invalid');
    } finally {
      nowMs = realNow;
    }
    // Within the consent's lifetime again, the same refresh token works: the refusal consumed nothing.
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    assert.equal((await oidc.tokenIntrospection(config, refreshed.access_token)).active, true);
  });
});
