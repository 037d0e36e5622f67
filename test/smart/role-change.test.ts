import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf } from '../helpers/browserless.ts';

const FHIR = 'https://fhir.example.org/r4';

/**
 * A practitioner's account becomes a patient's between authorization and the next use of its
 * tokens: the grant stored `user/` scopes the role no longer allows. Introspection stops naming
 * them at once, and the refresh gives nothing (a patient has no consent for the app), writing
 * nothing either. Both introspection doors (client credentials, and a Bearer token held by the
 * resource server) give the same answer, and name who the user is now.
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

  async function bearerIntrospection(token: string): Promise<Record<string, unknown>> {
    const { access_token } = await oidc.clientCredentialsGrant(rs, { scope: 'custos:introspect' });
    const res = await fetch(`${server.issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    assert.equal(res.status, 200);
    return (await res.json()) as Record<string, unknown>;
  }

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
    assert.equal(after.fhirUser, `${FHIR}/Patient/dora-p`, 'fhirUser is who the user is now');
    const byBearer = await bearerIntrospection(tokens.access_token);
    assert.deepEqual(
      { active: byBearer.active, scope: byBearer.scope, fhirUser: byBearer.fhirUser },
      { active: true, scope: undefined, fhirUser: `${FHIR}/Patient/dora-p` },
      'the Bearer-authenticated door answers the same',
    );
    assert.equal((await oidc.tokenIntrospection(rs, tokens.refresh_token!)).scope, 'openid offline_access', 'nor does the refresh token');

    const state = await tokenState();
    await assert.rejects(oidc.refreshTokenGrant(app, tokens.refresh_token!), (err: oidc.ResponseBodyError) => {
      assert.equal(err.status, 400);
      assert.equal(err.error, 'invalid_grant');
      return true;
    });
    assert.deepEqual(await tokenState(), state, 'no token was issued and the refresh token was not consumed');
  });

  it('a token that outlived its account being disabled is inactive at both doors', async () => {
    const doc = await server.createAccount({ username: 'ezra', role: 'practitioner', fhirId: 'ezra-1' });
    const { tokens } = await codeFlow(app, server.issuer, doc, { scope: 'openid offline_access user/Observation.rs', aud: FHIR });
    assert.equal((await bearerIntrospection(tokens.access_token)).active, true);
    // Straight into the table: `custos user disable` also ends the grants, which would hide this check.
    await server.running.services.db('accounts').where({ id: doc.id }).update({ disabled_at: new Date() });
    assert.deepEqual(await oidc.tokenIntrospection(rs, tokens.access_token), { active: false });
    assert.deepEqual(await bearerIntrospection(tokens.access_token), { active: false });
  });

  it("patient/ scopes a practitioner held for someone else's record are gone from introspection once the account is a patient's", async () => {
    const chart = await server.createClient({
      client_name: 'Chart',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid launch/patient offline_access patient/*.rs',
    });
    const chartApp = await discover(server.issuer, chart.clientId, chart.clientSecret);
    await server.createAccount({ username: 'vic', role: 'patient', fhirId: 'vic-1', displayName: 'Vic Tim' });
    const doc = await server.createAccount({ username: 'fern', role: 'practitioner', fhirId: 'fern-1' });
    // The practitioner opens Vic's record through the patient picker.
    const agent = new UserAgent();
    const { url, verifier, state } = await startCodeFlow(chartApp, { scope: 'openid launch/patient offline_access patient/Observation.rs', aud: FHIR });
    let page = await authorize(agent, url.toString(), server.issuer, doc);
    assert.match(page.body, /Choose a patient/);
    const search = await agent.request(`${page.url.split('?')[0]}?q=vic`);
    const action = new URL(/action="([^"]*\/patient)"/.exec(search.body)![1]!, server.issuer).toString();
    const chosen = await agent.request(action, { form: { _csrf: csrfTokenOf(search.body), patient: 'vic-1' } });
    page = await authorize(agent, chosen.location!, server.issuer, doc);
    assert.ok(page.location?.startsWith(REDIRECT_URI), `${page.status} ${page.body.slice(0, 300)}`);
    const tokens = await oidc.authorizationCodeGrant(chartApp, new URL(page.location!), { pkceCodeVerifier: verifier, expectedState: state });
    const before = await oidc.tokenIntrospection(rs, tokens.access_token);
    assert.deepEqual([before.scope, before.patient], ['patient/Observation.rs', 'vic-1']);

    await server.running.services.db('accounts').where({ id: doc.id }).update({ role: 'patient', fhir_patient_id: 'fern-p', fhir_practitioner_id: null });

    // A patient reaches records only through a consent, and this token rests on none.
    for (const after of [await oidc.tokenIntrospection(rs, tokens.access_token), await bearerIntrospection(tokens.access_token)]) {
      assert.equal(after.active, true);
      assert.equal(after.scope, undefined, 'no patient/ scope is left');
      assert.equal(after.patient, undefined, "and no other patient's record in context");
      assert.equal(after.fhirUser, `${FHIR}/Patient/fern-p`);
    }
    await assert.rejects(oidc.refreshTokenGrant(chartApp, tokens.refresh_token!), { error: 'invalid_grant' });
  });
});
