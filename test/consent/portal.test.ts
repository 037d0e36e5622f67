import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf, formDefaults, type PageResponse } from '../helpers/browserless.ts';
import type { ConsentDetailsEntry } from '../../src/consent/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const OBS = 'patient/Observation.rs';
const COND = 'patient/Condition.rs';

describe('the patient portal (management_endpoint)', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let rsConfig: oidc.Configuration;

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    const client = await server.createClient({
      client_name: 'Step Counter',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid launch/patient offline_access patient/*.rs',
    });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
    const rs = await server.createClient({ client_name: 'FHIR server', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rsConfig = await discover(server.issuer, rs.clientId, rs.clientSecret);
  });
  after(() => server.close());

  let n = 0;
  /** A patient who connected the app; returns their tokens and a browser agent signed in to the portal. */
  async function connectedPatient() {
    n += 1;
    const who = await server.createAccount({ username: `portal${n}`, role: 'patient', fhirId: `pp-${n}` });
    const agent = new UserAgent();
    const start = await startCodeFlow(config, { scope: `openid launch/patient offline_access ${OBS} ${COND}`, aud: FHIR });
    const res = await authorize(agent, start.url.toString(), server.issuer, who);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    const info = await oidc.tokenIntrospection(rsConfig, tokens.access_token);
    const consentId = (info.authorization_details as unknown as ConsentDetailsEntry[])[0]!.consent_id;
    // The portal signs in through Custos; the browser still has its session, so no form again.
    const portal = await agent.follow(`${server.issuer}/account`, server.issuer);
    assert.equal(portal.status, 200);
    assert.match(portal.body, /Connected apps/);
    return { who, agent, tokens, consentId };
  }

  const url = (path: string) => `${server.issuer}${path}`;
  async function post(agent: UserAgent, page: PageResponse, action: string, form: [string, string][]) {
    return agent.request(url(action), { form: [['_csrf', csrfTokenOf(page.body)], ...form] });
  }

  it('is advertised as the SMART management_endpoint', async () => {
    const doc = (await (await fetch(`${FHIR.replace(FHIR, server.issuer)}/.well-known/smart-configuration`)).json()) as Record<string, unknown>;
    assert.equal(doc.management_endpoint, `${server.issuer}/account/apps`);
  });

  it('lists the app with its permissions, limits and access log', async () => {
    const { agent, consentId } = await connectedPatient();
    const list = await agent.request(url('/account/apps'));
    assert.equal(list.status, 200);
    assert.match(list.body, /Step Counter/);
    assert.match(list.body, new RegExp(`/account/apps/${consentId}`));
    assert.match(list.body, new RegExp(`last used ${new Date().toISOString().slice(0, 10)}`));
    const page = await agent.request(url(`/account/apps/${consentId}`));
    assert.equal(page.status, 200);
    assert.match(page.body, /Read and search your observation records/);
    assert.match(page.body, /Read and search your condition records/);
    assert.match(page.body, /access given/, 'the token issued shows in the access log');
    assert.match(page.body, /checked by /, 'so does the resource server that introspected it');
    assert.match(page.body, /Version 1: granted/);
  });

  it('narrows in one step: introspection and the next refresh follow at once', async () => {
    const { agent, tokens, consentId } = await connectedPatient();
    const page = await agent.request(url(`/account/apps/${consentId}`));
    const form = formDefaults(page.body, consentId).filter(([k, v]) => k !== '_csrf' && !(k === 'scope' && v === COND));
    const saved = await post(agent, page, `/account/apps/${consentId}`, form);
    assert.equal(saved.status, 302, saved.body.slice(0, 300));
    assert.equal((await oidc.tokenIntrospection(rsConfig, tokens.access_token)).scope, OBS);
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    assert.equal((await oidc.tokenIntrospection(rsConfig, refreshed.access_token)).scope, OBS);
    const after = await agent.request(url(`/account/apps/${consentId}`));
    assert.match(after.body, /Version 2: narrowed/);
    assert.match(after.body, /access renewed/);
  });

  it('asks for a recent multi-factor sign-in before sharing a sensitive category, and writes nothing until then', async () => {
    const { agent, consentId } = await connectedPatient();
    const page = await agent.request(url(`/account/apps/${consentId}`));
    const form = [...formDefaults(page.body, consentId).filter(([k]) => k !== '_csrf'), ['share', 'HIV']] as [string, string][];
    const res = await post(agent, page, `/account/apps/${consentId}`, form);
    assert.equal(res.status, 403);
    assert.match(res.body, /needs a recent sign-in with two-step verification/);
    assert.equal((await server.running.services.consents.repo.versions(consentId, 10)).length, 1);
  });

  it('treats loosening a date range or type list as sharing more: step-up first, nothing written until then', async () => {
    const { agent, consentId } = await connectedPatient();
    const versions = async () => (await server.running.services.consents.repo.versions(consentId, 10)).length;
    let page = await agent.request(url(`/account/apps/${consentId}`));
    const base = formDefaults(page.body, consentId).filter(([k]) => !['_csrf', 'from', 'until', 'types'].includes(k));
    const limited = [...base, ['from', '2020-01-01'], ['until', '2021-12-31'], ['types', 'Observation']] as [string, string][];
    const narrowed = await post(agent, page, `/account/apps/${consentId}`, limited);
    assert.equal(narrowed.status, 302, 'adding limits needs no step-up');
    assert.equal(await versions(), 2);
    page = await agent.request(url(`/account/apps/${consentId}`));
    const widenings: [string, [string, string][]][] = [
      ['no date range', [...base, ['types', 'Observation']]],
      ['no type list', [...base, ['from', '2020-01-01'], ['until', '2021-12-31']]],
      ['an earlier start', [...base, ['from', '2019-01-01'], ['until', '2021-12-31'], ['types', 'Observation']]],
      ['another type', [...base, ['from', '2020-01-01'], ['until', '2021-12-31'], ['types', 'Observation Condition']]],
    ];
    for (const [what, form] of widenings) {
      const res = await post(agent, page, `/account/apps/${consentId}`, form);
      assert.equal(res.status, 403, what);
      assert.match(res.body, /needs a recent sign-in with two-step verification/, what);
    }
    assert.equal(await versions(), 2, 'nothing written');
  });

  it('refuses bad limits with a readable message', async () => {
    const { agent, consentId } = await connectedPatient();
    const page = await agent.request(url(`/account/apps/${consentId}`));
    const base = formDefaults(page.body, consentId).filter(([k]) => k !== '_csrf');
    const cases: [[string, string][], RegExp, number][] = [
      [[...base.filter(([k]) => k !== 'from'), ['from', 'soon']], /dates are written YYYY-MM-DD/, 400],
      [[...base, ['scope', 'patient/*.cruds']], /only scopes already granted can be kept/, 400],
      [[...base, ['share', 'NOPE']], /is not one of the sensitive categories offered/, 400],
    ];
    for (const [form, message, status] of cases) {
      const res = await post(agent, page, `/account/apps/${consentId}`, form);
      assert.equal(res.status, status);
      assert.match(res.body.replace(/&quot;/g, '"'), message);
    }
    assert.equal((await server.running.services.consents.repo.versions(consentId, 10)).length, 1, 'nothing written');
  });

  it('revokes in one click: every token dies and the app shows as revoked', async () => {
    const { agent, tokens, consentId } = await connectedPatient();
    const page = await agent.request(url(`/account/apps/${consentId}`));
    const res = await post(agent, page, `/account/apps/${consentId}/revoke`, []);
    assert.equal(res.status, 302);
    assert.equal(res.location, url('/account/apps?done=revoked'));
    assert.equal((await oidc.tokenIntrospection(rsConfig, tokens.access_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token!), (e: oidc.ResponseBodyError) => e.error === 'invalid_grant');
    const list = await agent.request(url('/account/apps'));
    assert.match(list.body, /revoked/);
  });

  it('serves each consent as a FHIR R4 Consent resource', async () => {
    const { agent, consentId } = await connectedPatient();
    const res = await agent.request(url(`/account/apps/${consentId}/fhir`));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/fhir\+json/);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking a FHIR resource's structure
    const c = JSON.parse(res.body) as Record<string, any>;
    assert.equal(c.resourceType, 'Consent');
    assert.equal(c.id, consentId);
    assert.equal(c.meta.versionId, '1');
    assert.equal(c.status, 'active');
    assert.equal(c.scope.coding[0].code, 'patient-privacy');
    assert.ok(c.category.length >= 1);
    assert.equal(c.patient.reference, `Patient/pp-${n}`);
    assert.ok(!Number.isNaN(Date.parse(c.dateTime)));
    assert.equal(c.performer[0].reference, `Patient/pp-${n}`);
    assert.ok(c.policyRule.coding[0].code);
    assert.equal(c.provision.type, 'permit');
    assert.ok(c.provision.period.end, 'the expiry is the provision period end');
    assert.equal(c.provision.actor[0].reference.display, 'Step Counter');
    assert.equal(c.provision.action[0].coding[0].code, 'access');
    assert.deepEqual(c.provision.class.map((x: { code: string }) => x.code).sort(), ['Condition', 'Observation']);
    const deny = c.provision.provision[0];
    assert.equal(deny.type, 'deny');
    assert.deepEqual(deny.securityLabel.map((l: { code: string }) => l.code), ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V']);
    assert.equal(deny.securityLabel[0].system, 'http://terminology.hl7.org/CodeSystem/v3-ActCode');
    assert.equal(deny.securityLabel.at(-1).system, 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality');
  });

  it("never shows or changes another patient's consent, on any route", async () => {
    const a = await connectedPatient();
    const b = await connectedPatient();
    const bPage = await b.agent.request(url('/account/apps'));
    assert.doesNotMatch(bPage.body, new RegExp(a.consentId));
    for (const path of [`/account/apps/${a.consentId}`, `/account/apps/${a.consentId}/fhir`, `/account/apps/${a.consentId}/verify`]) {
      assert.equal((await b.agent.request(url(path))).status, 404, path);
    }
    const bOwn = await b.agent.request(url(`/account/apps/${b.consentId}`));
    for (const path of [`/account/apps/${a.consentId}`, `/account/apps/${a.consentId}/revoke`]) {
      const res = await post(b.agent, bOwn, path, [['scope', OBS]]);
      assert.equal(res.status, 404, path);
    }
    assert.equal((await b.agent.request(url('/account/apps/not-a-uuid'))).status, 404);
    assert.equal((await server.running.services.consents.repo.versions(a.consentId, 10)).length, 1, "A's consent is untouched");
    assert.equal((await oidc.tokenIntrospection(rsConfig, a.tokens.access_token)).active, true);
  });

  it('refuses a change without the page’s CSRF token', async () => {
    const { agent, consentId } = await connectedPatient();
    const res = await agent.request(url(`/account/apps/${consentId}/revoke`), { form: { _csrf: 'forged' } });
    assert.equal(res.status, 403);
    assert.equal((await server.running.services.consents.repo.versions(consentId, 10)).length, 1);
  });

  it('keeps privacy preferences: hiding more is free, hiding less needs step-up', async () => {
    const { agent, who } = await connectedPatient();
    const page = await agent.request(url('/account/privacy'));
    assert.equal(page.status, 200);
    const all = formDefaults(page.body, 'privacy').filter(([k]) => k !== '_csrf');
    assert.equal(all.length, 27, 'everything is hidden from every kind of app by default');
    const less = await post(agent, page, '/account/privacy', all.filter(([k, v]) => !(k === 'hide-internal' && v === 'GDIS')));
    assert.equal(less.status, 403);
    assert.deepEqual((await server.running.services.consents.repo.preferences(who.id)).internal.includes('GDIS'), true);
    const same = await post(agent, page, '/account/privacy', all);
    assert.equal(same.status, 302);
    const bad = await post(agent, page, '/account/privacy', [...all, ['hide-external', 'XX']]);
    assert.equal(bad.status, 400);
  });
});
