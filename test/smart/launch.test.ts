import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf } from '../helpers/browserless.ts';

const FHIR = 'https://fhir.example.org/r4';
type TokenBody = Record<string, unknown> & { access_token: string; scope: string };

describe('SMART launch context', () => {
  let server: TestServer;
  let app: { clientId: string; clientSecret?: string };
  let config: oidc.Configuration;
  let ehrToken: string;
  let alice: { id: string; username: string; password: string };
  let drSmith: { id: string; username: string; password: string };

  /** Runs the authorization through login, picker and consent; returns the raw token response. */
  async function launchFlow(
    credentials: { username: string; password: string },
    params: Record<string, string>,
    pick?: { query: string; patient: string; encounter?: string },
  ): Promise<{ body: TokenBody; agent: UserAgent }> {
    const agent = new UserAgent();
    const { url, verifier, state } = await startCodeFlow(config, params);
    let res = await authorize(agent, url.toString(), server.issuer, credentials);
    if (pick) {
      assert.equal(res.status, 200, 'the patient picker is shown');
      assert.match(res.body, /Choose a patient/);
      const pageUrl = res.url.split('?')[0]!;
      const search = await agent.request(`${pageUrl}?q=${encodeURIComponent(pick.query)}`);
      assert.match(search.body, new RegExp(`value="${pick.patient}"`));
      const action = new URL(/action="([^"]*\/patient)"/.exec(search.body)![1]!, server.issuer).toString();
      const chosen = await agent.request(action, {
        form: { _csrf: csrfTokenOf(search.body), patient: pick.patient, ...(pick.encounter ? { encounter: pick.encounter } : {}) },
      });
      assert.equal(chosen.status, 303);
      res = await authorize(agent, chosen.location!, server.issuer, credentials);
    }
    assert.ok(res.location?.startsWith(REDIRECT_URI), `expected a code, got ${res.status} ${res.body.slice(0, 200)}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: verifier, expectedState: state });
    return { body: tokens as unknown as TokenBody, agent };
  }

  async function newLaunch(context: Record<string, unknown>, clientId = app.clientId) {
    const res = await fetch(new URL('/smart/launch', server.issuer), {
      method: 'POST',
      headers: { authorization: `Bearer ${ehrToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: clientId, ...context }),
    });
    return res;
  }

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-alice', displayName: 'Alice Doe' });
    await server.createAccount({ username: 'bob', role: 'patient', fhirId: 'pat-bob', displayName: 'Bob Roe' });
    drSmith = await server.createAccount({ username: 'drsmith', role: 'practitioner', fhirId: 'prac-1', displayName: 'Dr Smith' });
    app = await server.createClient({
      client_name: 'Launchable App',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid fhirUser launch launch/patient launch/encounter offline_access online_access patient/*.rs user/*.rs',
    });
    config = await discover(server.issuer, app.clientId, app.clientSecret);
    const ehr = await server.createClient({ client_name: 'EHR', grant_types: ['client_credentials'], scope: 'custos:ehr-launch' });
    const ehrConfig = await discover(server.issuer, ehr.clientId, ehr.clientSecret);
    ehrToken = (await oidc.clientCredentialsGrant(ehrConfig, { scope: 'custos:ehr-launch' })).access_token;
  });
  after(() => server.close());

  it('standalone patient launch: a patient gets their own record as context', async () => {
    const { body } = await launchFlow(alice, { scope: 'openid fhirUser launch/patient patient/Observation.rs', aud: FHIR });
    assert.equal(body.patient, 'pat-alice');
    assert.equal(body.need_patient_banner, true);
    assert.equal(body.smart_style_url, `${server.issuer}/smart/style.json`);
    assert.deepEqual(body.scope.split(' ').sort(), ['fhirUser', 'launch/patient', 'openid', 'patient/Observation.rs']);
    const info = await oidc.tokenIntrospection(config, body.access_token);
    assert.equal(info.patient, 'pat-alice');
  });

  it('standalone practitioner launch: the patient picker chooses the patient (and an encounter)', async () => {
    const { body } = await launchFlow(
      drSmith,
      { scope: 'openid fhirUser launch/patient launch/encounter patient/*.rs', aud: FHIR },
      { query: 'Bob', patient: 'pat-bob', encounter: 'enc-9' },
    );
    assert.equal(body.patient, 'pat-bob');
    assert.equal(body.encounter, 'enc-9');
    const claims = JSON.parse(Buffer.from(String(body.id_token).split('.')[1]!, 'base64url').toString()) as { fhirUser: string };
    assert.equal(claims.fhirUser, `${FHIR}/Practitioner/prac-1`);
  });

  it('refuses a patient that is not in the directory', async () => {
    const agent = new UserAgent();
    const { url } = await startCodeFlow(config, { scope: 'openid launch/patient', aud: FHIR });
    const picker = await authorize(agent, url.toString(), server.issuer, drSmith);
    const action = new URL(/action="([^"]*\/patient)"/.exec(`action="${picker.url.split('?')[0]}/patient"`)![1]!, server.issuer).toString();
    const res = await agent.request(action, { form: { _csrf: csrfTokenOf(picker.body), patient: 'pat-nobody' } });
    assert.equal(res.status, 400);
    assert.match(res.body, /Choose one of the patients listed/);
  });

  it('EHR launch: the launch value brings patient, encounter and the rest, once, for its app only', async () => {
    const created = await newLaunch({
      patient: 'pat-alice',
      encounter: 'enc-1',
      fhirContext: [{ reference: 'DiagnosticReport/dr-7' }],
      intent: 'reconcile-medications',
      need_patient_banner: false,
      tenant: 'hospital-a',
    });
    assert.equal(created.status, 201);
    const { launch } = (await created.json()) as { launch: string };
    const { body } = await launchFlow(drSmith, { scope: 'openid fhirUser launch patient/*.rs', aud: FHIR, launch });
    assert.equal(body.patient, 'pat-alice');
    assert.equal(body.encounter, 'enc-1');
    assert.deepEqual(body.fhirContext, [{ reference: 'DiagnosticReport/dr-7' }]);
    assert.equal(body.intent, 'reconcile-medications');
    assert.equal(body.need_patient_banner, false);
    assert.equal(body.tenant, 'hospital-a');
    const info = await oidc.tokenIntrospection(config, body.access_token);
    assert.equal(info.patient, 'pat-alice');
    assert.equal(info.encounter, 'enc-1');

    // Used once: a second authorization with the same value is refused on a page.
    const { url } = await startCodeFlow(config, { scope: 'openid launch', aud: FHIR, launch });
    const reuse = await new UserAgent().request(url.toString());
    assert.equal(reuse.status, 400);
    assert.equal(reuse.location, undefined);
    assert.match(reuse.body, /launch value is unknown, expired, already used/);
  });

  it("EHR launch by a patient's account: the consent is about the launch's patient, and only someone who may act for them gives it", async () => {
    const carol = await server.createAccount({ username: 'carol', role: 'patient', fhirId: 'pat-carol', displayName: 'Carol Doe' });
    await server.running.services.accounts.addRepresentative(carol.id, alice.id, 'parent');
    const consentsOf = () => server.running.services.db('consents').where({ client_id: app.clientId }).whereIn('patient_fhir_id', ['pat-bob', 'pat-carol']).select('patient_fhir_id');

    // Bob's record, which Carol may not act for: refused on the consent page, nothing recorded.
    const forBob = ((await (await newLaunch({ patient: 'pat-bob' })).json()) as { launch: string }).launch;
    const refused = await authorize(new UserAgent(), (await startCodeFlow(config, { scope: 'openid launch patient/*.rs', aud: FHIR, launch: forBob })).url.toString(), server.issuer, carol);
    assert.equal(refused.status, 403, refused.body.slice(0, 300));
    assert.match(refused.body, /you may not give access to this record/);
    assert.doesNotMatch(refused.body, /Bob/, "not even the record's name is shown");
    assert.deepEqual(await consentsOf(), [], 'no consent, for Bob or for Carol herself');

    // Alice's, whom Carol represents: the consent and the token are about Alice.
    const forAlice = ((await (await newLaunch({ patient: 'pat-alice' })).json()) as { launch: string }).launch;
    const { body } = await launchFlow(carol, { scope: 'openid launch patient/*.rs', aud: FHIR, launch: forAlice });
    assert.equal(body.patient, 'pat-alice');
    const info = await oidc.tokenIntrospection(config, body.access_token);
    const details = (info.authorization_details as { patient?: string }[] | undefined)?.[0];
    assert.equal(details?.patient, 'Patient/pat-alice', JSON.stringify(info.authorization_details));
  });

  it('refuses unknown launch values and launch values issued for another app', async () => {
    const other = await server.createClient({ client_name: 'Other', redirect_uris: [REDIRECT_URI], scope: 'openid launch' });
    const created = await newLaunch({ patient: 'pat-alice' }, other.clientId);
    const { launch } = (await created.json()) as { launch: string };
    for (const value of [launch, 'made-up-launch-value']) {
      const { url } = await startCodeFlow(config, { scope: 'openid launch', aud: FHIR, launch: value });
      const res = await new UserAgent().request(url.toString());
      assert.equal(res.status, 400);
      assert.match(res.body, /launch value is unknown/);
    }
  });

  it('keeps the contexts of two launches of one app apart', async () => {
    const first = (await (await newLaunch({ patient: 'pat-alice' })).json()) as { launch: string };
    const second = (await (await newLaunch({ patient: 'pat-bob' })).json()) as { launch: string };
    const a = await launchFlow(drSmith, { scope: 'openid launch patient/*.rs offline_access', aud: FHIR, launch: first.launch });
    const b = await launchFlow(drSmith, { scope: 'openid launch patient/*.rs offline_access', aud: FHIR, launch: second.launch });
    assert.equal(a.body.patient, 'pat-alice');
    assert.equal(b.body.patient, 'pat-bob');
    const refreshedA = (await oidc.refreshTokenGrant(config, String(a.body.refresh_token))) as unknown as TokenBody;
    assert.equal(refreshedA.patient, 'pat-alice', 'a refresh keeps its own launch context');
  });

  it('refuses the EHR launch API without the dedicated scope or with bad input', async () => {
    const noToken = await fetch(new URL('/smart/launch', server.issuer), { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(noToken.status, 401);
    assert.match(noToken.headers.get('www-authenticate') ?? '', /^Bearer/);
    const plain = await server.createClient({ client_name: 'Not EHR', grant_types: ['client_credentials'], scope: 'openid' });
    const plainConfig = await discover(server.issuer, plain.clientId, plain.clientSecret);
    const { access_token: weak } = await oidc.clientCredentialsGrant(plainConfig);
    const forbidden = await fetch(new URL('/smart/launch', server.issuer), {
      method: 'POST',
      headers: { authorization: `Bearer ${weak}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: app.clientId, patient: 'p' }),
    });
    assert.equal(forbidden.status, 403);
    for (const bad of [{ patient: 'not a valid id!' }, { patient: 'p', surprise: 1 }, { fhirContext: [{}] }]) {
      const res = await newLaunch(bad);
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
    }
    const unknownApp = await newLaunch({ patient: 'p' }, 'no-such-app');
    assert.equal(unknownApp.status, 400);
  });

  it('keeps each app to the launch modes it is registered for (launch_modes), with the refusal shown to the user', async () => {
    const scope = 'openid fhirUser launch launch/patient launch/encounter patient/*.rs';
    const ehrOnly = await server.createClient({ client_name: 'EHR-only', redirect_uris: [REDIRECT_URI], scope, launch_modes: ['ehr'] });
    const standaloneOnly = await server.createClient({ client_name: 'Standalone-only', redirect_uris: [REDIRECT_URI], scope, launch_modes: ['standalone'] });
    const noLaunch = await server.createClient({ client_name: 'No launches', redirect_uris: [REDIRECT_URI], scope, launch_modes: [] });
    const configs = {
      ehrOnly: await discover(server.issuer, ehrOnly.clientId, ehrOnly.clientSecret),
      standaloneOnly: await discover(server.issuer, standaloneOnly.clientId, standaloneOnly.clientSecret),
      noLaunch: await discover(server.issuer, noLaunch.clientId, noLaunch.clientSecret),
    };

    // The EHR launch API refuses to create a launch for an app without the EHR mode, writing nothing.
    for (const id of [standaloneOnly.clientId, noLaunch.clientId]) {
      const res = await newLaunch({ patient: 'pat-alice' }, id);
      assert.equal(res.status, 400);
      const body = (await res.json()) as { error: string; error_description: string };
      assert.equal(body.error, 'invalid_request');
      assert.match(body.error_description, /not registered for EHR launch/);
    }
    const created = await newLaunch({ patient: 'pat-alice' }, ehrOnly.clientId);
    assert.equal(created.status, 201);
    const { launch } = (await created.json()) as { launch: string };

    /** The first answer to an authorization request, before any login. */
    async function firstAnswer(config: oidc.Configuration, params: Record<string, string>) {
      const { url } = await startCodeFlow(config, { aud: FHIR, ...params });
      return new UserAgent().request(url.toString());
    }

    // Standalone (launch/patient without launch) for an EHR-only app: a page, not a redirect.
    for (const extra of ['launch/patient', 'launch/encounter']) {
      const res = await firstAnswer(configs.ehrOnly, { scope: `openid ${extra} patient/*.rs` });
      assert.equal(res.status, 400, extra);
      assert.equal(res.location, undefined, 'never sent back to the app');
      assert.match(res.body, /not registered for standalone launch/);
    }
    const noContext = await firstAnswer(configs.noLaunch, { scope: 'openid launch/patient' });
    assert.match(noContext.body, /not registered for standalone launch/);

    // A launch value (even a made-up one) for a standalone-only app: refused before it is looked up.
    for (const value of [launch, 'made-up']) {
      const res = await firstAnswer(configs.standaloneOnly, { scope: 'openid launch patient/*.rs', launch: value });
      assert.equal(res.status, 400);
      assert.equal(res.location, undefined);
      assert.match(res.body, /not registered for EHR launch/);
    }

    // Each mode still works for the app registered for it.
    const ehr = await launchFlowWith(configs.ehrOnly, { scope: 'openid launch patient/*.rs', launch });
    assert.equal(ehr.patient, 'pat-alice');
    const standalone = await launchFlowWith(configs.standaloneOnly, { scope: 'openid launch/patient patient/*.rs' });
    assert.equal(standalone.patient, 'pat-alice');
    // A plain sign-in without any launch context is not a launch: allowed even with no modes.
    const plain = await launchFlowWith(configs.noLaunch, { scope: 'openid' });
    assert.equal(plain.patient, undefined);

    async function launchFlowWith(c: oidc.Configuration, params: Record<string, string>) {
      const { url, verifier, state } = await startCodeFlow(c, { aud: FHIR, ...params });
      const res = await authorize(new UserAgent(), url.toString(), server.issuer, alice);
      assert.ok(res.location?.startsWith(REDIRECT_URI), `expected a code, got ${res.status} ${res.body.slice(0, 300)}`);
      return (await oidc.authorizationCodeGrant(c, new URL(res.location!), { pkceCodeVerifier: verifier, expectedState: state })) as unknown as TokenBody;
    }
  });
});

describe('SMART configuration document', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
  });
  after(() => server.close());

  it('is JSON whatever the Accept header, CORS-open, with absolute URLs and the capabilities', async () => {
    for (const accept of ['application/json', 'text/html', 'application/fhir+json', '*/*']) {
      const res = await fetch(new URL('/.well-known/smart-configuration', server.issuer), { headers: { accept, origin: 'https://app.example' } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      const doc = (await res.json()) as Record<string, unknown>;
      assert.equal(doc.issuer, server.issuer);
      for (const key of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint']) {
        assert.ok(String(doc[key]).startsWith(server.issuer), `${key} is absolute`);
      }
      assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
      const caps = doc.capabilities as string[];
      for (const cap of ['launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric', 'client-confidential-asymmetric',
        'sso-openid-connect', 'context-banner', 'context-style', 'context-ehr-patient', 'context-ehr-encounter', 'context-standalone-patient',
        'context-standalone-encounter', 'permission-offline', 'permission-online', 'permission-patient', 'permission-user', 'permission-v1', 'permission-v2']) {
        assert.ok(caps.includes(cap), cap);
      }
    }
    const style = await fetch(new URL('/smart/style.json', server.issuer));
    assert.equal(style.status, 200);
    assert.ok(((await style.json()) as Record<string, string>).color_highlight);
  });
});
