import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

const FHIR = 'https://fhir.example.org/r4';

/**
 * A practitioner's account becomes a patient's between authorization and the next use of its
 * tokens: the grant stored `user/` scopes the role no longer allows. Introspection stops naming
 * them at once, and the refresh gives nothing (a patient has no consent for the app), writing
 * nothing either.
 */
describe('user/ scopes after a change of role from practitioner to patient', () => {
  let server: TestServer;
  let app: oidc.Configuration;
  let rs: oidc.Configuration;

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    const client = await server.createClient({
      client_name: 'Chart Viewer',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access user/*.rs',
    });
    app = await discover(server.issuer, client.clientId, client.clientSecret);
    const resourceServer = await server.createClient({ client_name: 'FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = await discover(server.issuer, resourceServer.clientId, resourceServer.clientSecret);
  });
  after(() => server.close());

  const tokenState = () => server.running.services.db('oidc_payloads').select('kind', 'id', 'consumed_at').orderBy(['kind', 'id']);

  it('introspection drops the user/ scope at once, and the refresh is refused without consuming anything', async () => {
    const doc = await server.createAccount({ username: 'dora', role: 'practitioner', fhirId: 'dora-1' });
    const { tokens } = await codeFlow(app, server.issuer, doc, { scope: 'openid offline_access user/Observation.rs', aud: FHIR });
    const before = await oidc.tokenIntrospection(rs, tokens.access_token);
    assert.equal(before.scope, 'user/Observation.rs');
    assert.equal(before.fhirUser, `${FHIR}/Practitioner/dora-1`, 'fhirUser without the fhirUser scope');
    assert.equal((await oidc.tokenIntrospection(rs, tokens.refresh_token!)).scope, 'openid offline_access user/Observation.rs');

    await server.running.services.db('accounts').where({ id: doc.id }).update({ role: 'patient', fhir_patient_id: 'dora-p', fhir_practitioner_id: null });

    const after = await oidc.tokenIntrospection(rs, tokens.access_token);
    assert.equal(after.active, true);
    assert.equal(after.scope, undefined, 'the live access token no longer names user/Observation.rs');
    assert.equal((await oidc.tokenIntrospection(rs, tokens.refresh_token!)).scope, 'openid offline_access', 'nor does the refresh token');

    const state = await tokenState();
    await assert.rejects(oidc.refreshTokenGrant(app, tokens.refresh_token!), (err: oidc.ResponseBodyError) => {
      assert.equal(err.status, 400);
      assert.equal(err.error, 'invalid_grant');
      return true;
    });
    assert.deepEqual(await tokenState(), state, 'no token was issued and the refresh token was not consumed');
  });
});
