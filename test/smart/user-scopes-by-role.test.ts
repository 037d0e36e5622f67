import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize } from '../helpers/browserless.ts';
import { scopeContextsForRole, scopesAllowedForRole } from '../../src/smart/index.ts';

const FHIR = 'https://fhir.example.org/r4';

describe('user/ scopes go only to accounts whose role allows them', () => {
  let server: TestServer;
  let app: oidc.Configuration;
  let rs: oidc.Configuration;

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR, MFA_FOR_WRITE_SCOPES: 'false' } });
    const client = await server.createClient({
      client_name: 'Chart Viewer',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid fhirUser launch/patient offline_access patient/*.rs user/*.rs',
    });
    app = await discover(server.issuer, client.clientId, client.clientSecret);
    const resourceServer = await server.createClient({ client_name: 'FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = await discover(server.issuer, resourceServer.clientId, resourceServer.clientSecret);
  });
  after(() => server.close());

  it('is a rule of its own: practitioners may hold user/ scopes, nobody else', () => {
    assert.deepEqual(scopeContextsForRole('practitioner'), ['patient', 'user']);
    assert.deepEqual(scopeContextsForRole('patient'), ['patient']);
    assert.deepEqual(scopeContextsForRole('admin'), ['patient']);
    assert.equal(scopesAllowedForRole('patient/Observation.rs user/*.rs system/*.rs user/Patient.read', 'patient'), 'patient/Observation.rs');
    assert.equal(scopesAllowedForRole('patient/Observation.rs user/*.rs', 'practitioner'), 'patient/Observation.rs user/*.rs');
  });

  async function login(who: { username: string; password: string }, scope: string) {
    const start = await startCodeFlow(app, { scope, aud: FHIR });
    let offered: string[] = [];
    const res = await authorize(new UserAgent(), start.url.toString(), server.issuer, who, {
      consentForm: (form) => {
        offered = form.filter(([n]) => n === 'scope').map(([, v]) => v);
        return form;
      },
    });
    assert.ok(res.location?.startsWith(REDIRECT_URI), `the flow finished: ${res.status} ${res.body.slice(0, 300)}`);
    const tokens = await oidc.authorizationCodeGrant(app, new URL(res.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    return { tokens, offered };
  }
  const scopesOf = async (token: string) => {
    const info = await oidc.tokenIntrospection(rs, token);
    return { info, scopes: String(info.scope ?? '').split(' ').filter(Boolean).sort() };
  };

  it('negotiates user/ scopes away for a patient, who is not even offered them, and says who the user is', async () => {
    const pat = await server.createAccount({ username: 'pia', role: 'patient', fhirId: 'pia-1' });
    const { tokens, offered } = await login(pat, 'openid launch/patient offline_access patient/Observation.rs user/*.rs user/Observation.rs');
    assert.ok(offered.includes('patient/Observation.rs'));
    assert.ok(!offered.some((s) => s.startsWith('user/')), `the consent page offers no user/ scope: ${offered.join(' ')}`);
    const { info, scopes } = await scopesOf(tokens.access_token);
    assert.deepEqual(scopes, ['patient/Observation.rs']);
    assert.equal(info.fhirUser, `${FHIR}/Patient/pia-1`, 'fhirUser is there though the app did not ask for it');
    const refreshed = await oidc.refreshTokenGrant(app, tokens.refresh_token!);
    assert.deepEqual((await scopesOf(refreshed.access_token)).scopes, ['patient/Observation.rs']);
  });

  it('grants user/ scopes to a practitioner, and takes them away at the next refresh once the role is no longer one', async () => {
    const doc = await server.createAccount({ username: 'dora', role: 'practitioner', fhirId: 'dora-1' });
    const { tokens } = await login(doc, 'openid offline_access user/Observation.rs');
    const { info, scopes } = await scopesOf(tokens.access_token);
    assert.deepEqual(scopes, ['user/Observation.rs']);
    assert.equal(info.fhirUser, `${FHIR}/Practitioner/dora-1`);
    // The account stops being a practitioner's (she moved to administration, say).
    await server.running.services.db('accounts').where({ id: doc.id }).update({ role: 'admin', fhir_practitioner_id: null });
    const refreshed = await oidc.refreshTokenGrant(app, tokens.refresh_token!);
    assert.deepEqual((await scopesOf(refreshed.access_token)).scopes, [], 'the grant stored user/Observation.rs; the role no longer allows it');
  });
});
