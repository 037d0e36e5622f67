import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize } from '../helpers/browserless.ts';

const FHIR = 'https://fhir.example.org/r4';
const OTHER_FHIR = 'https://other-fhir.example.org/fhir';

describe('SMART resource scopes and the FHIR audience', () => {
  let server: TestServer;
  let alice: { id: string; username: string; password: string };
  let config: oidc.Configuration;

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: `${FHIR},${OTHER_FHIR}` } });
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-123' });
    const client = await server.createClient({
      client_name: 'SMART App',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid fhirUser offline_access online_access patient/*.rs user/Observation.rs',
    });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  it('issues a token for the FHIR server named by aud, with v1 and v2 scopes as asked', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, {
      scope: 'openid fhirUser patient/Observation.read patient/Condition.rs',
      aud: FHIR,
    });
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.aud, FHIR);
    assert.deepEqual(String(info.scope).split(' ').sort(), ['patient/Condition.rs', 'patient/Observation.read']);
    assert.equal(tokens.claims()?.fhirUser, `${FHIR}/Patient/pat-123`);
  });

  it('accepts resource (RFC 8707) as a synonym of aud, with a trailing slash ignored', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid patient/Observation.rs', resource: `${OTHER_FHIR}` });
    assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).aud, OTHER_FHIR);
    const again = await codeFlow(config, server.issuer, alice, { scope: 'openid patient/Observation.rs', aud: `${FHIR}/` });
    assert.equal((await oidc.tokenIntrospection(config, again.tokens.access_token)).aud, FHIR);
  });

  it('narrows scopes to the ceiling: wider requests are cut down, outside ones dropped', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, {
      scope: 'openid patient/Observation.cruds user/Patient.rs',
      aud: FHIR,
    });
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.scope, 'patient/Observation.rs');
  });

  it('keeps offline_access without prompt=consent and issues a refresh token', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: 'openid offline_access patient/Observation.rs', aud: FHIR });
    assert.ok(tokens.refresh_token, 'offline_access survived');
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    const info = await oidc.tokenIntrospection(config, refreshed.access_token);
    assert.equal(info.aud, FHIR, 'the refreshed token is for the same FHIR server');
    assert.equal(info.scope, 'patient/Observation.rs');
    // Offline refresh tokens live 90 days, counted again from every refresh.
    const rt = await oidc.tokenIntrospection(config, refreshed.refresh_token!);
    assert.equal(rt.active, true);
    assert.ok(rt.exp! - Math.floor(Date.now() / 1000) > 89 * 86400);
  });

  it('grants user/ scopes to a practitioner (permission-user)', async () => {
    const doc = await server.createAccount({ username: 'drwho', role: 'practitioner', fhirId: 'prac-9' });
    const { tokens } = await codeFlow(config, server.issuer, doc, { scope: 'openid fhirUser user/Observation.rs', aud: FHIR });
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.scope, 'user/Observation.rs');
    assert.equal(info.patient, undefined, 'user scopes alone need no patient context');
    assert.equal(tokens.claims()?.fhirUser, `${FHIR}/Practitioner/prac-9`);
  });

  it('grants granular scopes and keeps their constraints', async () => {
    const lab = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    const { tokens } = await codeFlow(config, server.issuer, alice, { scope: `openid ${lab}`, aud: FHIR });
    assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).scope, lab);
  });

  it('narrows on refresh when the app asks for less, and never widens', async () => {
    const { tokens } = await codeFlow(config, server.issuer, alice, {
      scope: 'openid offline_access patient/Observation.rs patient/Condition.rs',
      aud: FHIR,
    });
    const narrower = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { scope: 'patient/Condition.rs' });
    assert.equal((await oidc.tokenIntrospection(config, narrower.access_token)).scope, 'patient/Condition.rs');
    const full = await oidc.refreshTokenGrant(config, narrower.refresh_token!);
    assert.deepEqual(String((await oidc.tokenIntrospection(config, full.access_token)).scope).split(' ').sort(), [
      'patient/Condition.rs',
      'patient/Observation.rs',
    ]);
    await assert.rejects(oidc.refreshTokenGrant(config, full.refresh_token!, { scope: 'patient/Patient.rs' }), { error: 'invalid_scope' });
  });

  it('issues online_access refresh tokens that end with the session', async () => {
    const { tokens, agent } = await codeFlow(config, server.issuer, alice, { scope: 'openid online_access patient/Observation.rs', aud: FHIR });
    assert.ok(tokens.refresh_token, 'online_access gives a refresh token');
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    assert.ok(refreshed.access_token);
    // Signing out ends the session, and with it the online refresh token.
    const logout = await agent.request(oidc.buildEndSessionUrl(config, { id_token_hint: tokens.id_token! }).toString());
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(logout.body)![1]!;
    await agent.request(new URL('/session/end/confirm', server.issuer).toString(), { form: { xsrf, logout: 'yes' } });
    await assert.rejects(oidc.refreshTokenGrant(config, refreshed.refresh_token!), { error: 'invalid_grant' });
  });

  for (const [name, params] of [
    ['an unregistered aud', { aud: 'https://evil.example/fhir' }],
    ['a missing aud with resource scopes', {}],
    ['aud and resource naming different servers', { aud: FHIR, resource: OTHER_FHIR }],
  ] as const) {
    it(`shows an error page for ${name} and never redirects to the app`, async () => {
      const { url } = await startCodeFlow(config, { scope: 'openid patient/Observation.rs', ...params });
      const res = await new UserAgent().request(url.toString(), { headers: { accept: 'text/html' } });
      assert.equal(res.status, 400);
      assert.equal(res.location, undefined);
      assert.match(res.body, /aud|resource/);
    });
  }

  it('answers a malformed scope with invalid_scope naming it', async () => {
    const { url } = await startCodeFlow(config, { scope: 'openid patient/Observation.sr', aud: FHIR });
    const res = await authorize(new UserAgent(), url.toString(), server.issuer, alice);
    const back = new URL(res.location!);
    assert.equal(back.searchParams.get('error'), 'invalid_scope');
    assert.match(back.searchParams.get('error_description') ?? '', /patient\/Observation\.sr/);
  });
});
