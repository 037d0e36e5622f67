import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { text } from 'node:stream/consumers';
import { startTestServer, testEnv, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, accountPagesAgent, authorize, csrfTokenOf, formActionOf, formDefaults, type PageResponse } from '../helpers/browserless.ts';
import { runCli } from '../../src/cli/main.ts';
import type { ConsentDetailsEntry } from '../../src/consent/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const OBS = 'patient/Observation.rs';
const COND = 'patient/Condition.rs';
const NO_LONGER = /you no longer act for this patient, so nothing was changed/;

describe('ending a representation ends what it allowed', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  /** A second app, so a consent page for it holds no grant that ending the representation removes. */
  let other: oidc.Configuration;
  let rs: oidc.Configuration;
  let parent: { id: string; username: string; password: string };
  let kid: { id: string; username: string; password: string };

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    parent = await server.createAccount({ username: 'ex-parent', role: 'patient', fhirId: 'xp-1', displayName: 'Alex Parent' });
    kid = await server.createAccount({ username: 'ex-kid', role: 'patient', fhirId: 'xk-1', displayName: 'Bo Kid' });
    await server.running.services.accounts.addRepresentative(parent.id, kid.id, 'parent');
    const app = await server.createClient({
      client_name: 'Family Health',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid launch/patient offline_access patient/*.rs',
    });
    config = await discover(server.issuer, app.clientId, app.clientSecret);
    const second = await server.createClient({
      client_name: 'Growth Chart',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      scope: 'openid launch/patient patient/*.rs',
    });
    other = await discover(server.issuer, second.clientId, second.clientSecret);
    const resourceServer = await server.createClient({ client_name: 'FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = await discover(server.issuer, resourceServer.clientId, resourceServer.clientSecret);
  });
  after(() => server.close());

  const url = (path: string) => `${server.issuer}${path}`;

  /** The parent signs in (or is already signed in) and stops at the consent page for `patient`. */
  async function parentConsentPage(agent: UserAgent, patient: string, app = config) {
    const scope = app === config ? `openid launch/patient offline_access ${OBS} ${COND}` : `openid launch/patient ${OBS}`;
    const start = await startCodeFlow(app, { scope, aud: FHIR });
    let page = await agent.follow(start.url.toString(), server.issuer);
    if (page.body.includes('/login"')) {
      page = await agent.request(new URL(formActionOf(page.body, 'login'), server.issuer).toString(), {
        form: { _csrf: csrfTokenOf(page.body), username: parent.username, password: parent.password },
      });
      page = await agent.follow(page.location!, server.issuer);
    }
    assert.match(page.body, /Whose record\?/);
    page = await agent.request(new URL(formActionOf(page.body, 'patient'), server.issuer).toString(), { form: { _csrf: csrfTokenOf(page.body), patient } });
    page = await agent.follow(page.location!, server.issuer);
    assert.match(page.body, /\/confirm"/, `consent page: ${page.status}`);
    return { start, page };
  }

  async function approve(agent: UserAgent, start: Awaited<ReturnType<typeof startCodeFlow>>, consentPage: PageResponse) {
    let page = await agent.request(new URL(formActionOf(consentPage.body, 'confirm'), server.issuer).toString(), { form: formDefaults(consentPage.body, 'confirm') });
    assert.ok(page.location, `consent answered ${page.status}: ${page.body.slice(0, 400)}`);
    page = await agent.follow(page.location, server.issuer);
    return oidc.authorizationCodeGrant(config, new URL(page.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
  }

  const consentOf = async (token: string) =>
    ((await oidc.tokenIntrospection(rs, token)).authorization_details as unknown as ConsentDetailsEntry[])[0]!.consent_id;

  /** `custos user represent ... --remove`, as an operator runs it (the embedded database is one process's at a time). */
  async function removeWithCli(): Promise<{ code: number; stdout: string; stderr: string }> {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const env = { ...testEnv(server.database, 0), USER: 'ops' };
    const pglite = server.database.kind === 'pglite';
    if (pglite) await server.stop();
    try {
      const code = await runCli(['user', 'represent', parent.username, kid.username, '--remove', '--json'], { stdout, stderr, stdin: new PassThrough(), env });
      stdout.end();
      stderr.end();
      return { code, stdout: await text(stdout), stderr: await text(stderr) };
    } finally {
      if (pglite) await server.restart();
    }
  }

  it('revokes the representative’s consents, grants and tokens for the patient at once, and nothing else', async () => {
    const { consents } = server.running.services;
    const agent = new UserAgent();

    // The parent connects the app for the kid and for themselves; the kid connects it for their own record.
    const forKidFlow = await parentConsentPage(agent, 'xk-1');
    const forKid = await approve(agent, forKidFlow.start, forKidFlow.page);
    assert.equal(forKid.patient, 'xk-1');
    assert.ok(forKid.refresh_token);
    const forSelfFlow = await parentConsentPage(agent, 'xp-1');
    const forSelf = await approve(agent, forSelfFlow.start, forSelfFlow.page);
    assert.equal(forSelf.patient, 'xp-1');
    const kidAgent = new UserAgent();
    const kidStart = await startCodeFlow(config, { scope: `openid launch/patient offline_access ${OBS}`, aud: FHIR });
    const kidRes = await authorize(kidAgent, kidStart.url.toString(), server.issuer, kid);
    const kidOwn = await oidc.authorizationCodeGrant(config, new URL(kidRes.location!), { pkceCodeVerifier: kidStart.verifier, expectedState: kidStart.state });
    assert.equal(kidOwn.patient, 'xk-1');

    const kidConsentId = await consentOf(forKid.access_token);
    const selfConsentId = await consentOf(forSelf.access_token);
    const kidOwnConsentId = await consentOf(kidOwn.access_token);
    assert.equal(new Set([kidConsentId, selfConsentId, kidOwnConsentId]).size, 3);
    assert.equal((await consents.repo.find(kidConsentId))?.actorAccountId, parent.id);

    // In the portal the parent may still change the kid's consent: adding a limit works now.
    const portal = await agent.follow(url('/account'), server.issuer);
    assert.equal(portal.status, 200);
    let page = await agent.request(url(`/account/apps/${kidConsentId}`));
    assert.equal(page.status, 200);
    const base = formDefaults(page.body, kidConsentId).filter(([k]) => !['_csrf', 'types'].includes(k));
    const limited = await agent.request(url(`/account/apps/${kidConsentId}`), { form: [['_csrf', csrfTokenOf(page.body)], ...base, ['types', 'Observation']] });
    assert.equal(limited.status, 302, limited.body.slice(0, 300));

    // Forms opened before the representation ends: the portal's (widening, revoking) and a consent page for the kid.
    page = await agent.request(url(`/account/apps/${kidConsentId}`));
    const staleCsrf = csrfTokenOf(page.body);
    const widen: [string, string][] = [['_csrf', staleCsrf], ...formDefaults(page.body, kidConsentId).filter(([k]) => !['_csrf', 'types'].includes(k)), ['share', 'HIV']];
    const staleConsentPage = await parentConsentPage(agent, 'xk-1', other);
    const versionsBefore = await consents.repo.versions(kidConsentId, 10);
    assert.deepEqual(versionsBefore.map((v) => v.change), ['limits_changed', 'granted']);

    const removed = await removeWithCli();
    assert.equal(removed.code, 0, removed.stderr);
    const out = JSON.parse(removed.stdout) as Record<string, unknown>;
    assert.equal(out.removed, true);
    assert.equal(out.consents_revoked, 1);
    const after = server.running.services;

    // The parent's tokens for the kid are gone.
    assert.equal((await oidc.tokenIntrospection(rs, forKid.access_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, forKid.refresh_token!), (err: { error?: string }) => err.error === 'invalid_grant');
    const kidConsent = await after.consents.repo.find(kidConsentId);
    assert.equal(kidConsent?.current.status, 'revoked');
    assert.equal(kidConsent?.current.change, 'revoked');
    assert.equal(kidConsent?.current.version, 3);

    // The parent's own record and the kid's own consent are untouched.
    assert.equal((await oidc.tokenIntrospection(rs, forSelf.access_token)).active, true);
    const selfRefreshed = await oidc.refreshTokenGrant(config, forSelf.refresh_token!);
    assert.equal((await oidc.tokenIntrospection(rs, selfRefreshed.access_token)).patient, 'xp-1');
    assert.equal((await after.consents.repo.find(selfConsentId))?.current.status, 'active');
    assert.equal((await after.consents.repo.find(kidOwnConsentId))?.current.status, 'active');
    assert.equal((await oidc.tokenIntrospection(rs, kidOwn.access_token)).active, true);
    await oidc.refreshTokenGrant(config, kidOwn.refresh_token!);

    // The operator is named in the audit trail, with what went.
    const events = (await after.audit.list({ type: 'account.representative_removed' }, { limit: 10 })).events;
    assert.equal(events.length, 1);
    assert.equal(events[0]!.actor, 'cli:ops');
    assert.equal(events[0]!.patientId, 'xk-1');
    assert.equal(events[0]!.details.representative, parent.id);
    assert.equal(events[0]!.details.consents_revoked, 1);
    const revokedEvents = (await after.audit.list({ type: 'consent.revoked' }, { limit: 10 })).events;
    assert.deepEqual(revokedEvents.map((e) => [e.actor, e.details.consent_id, e.details.reason]), [['cli:ops', kidConsentId, 'representation_ended']]);

    // The stale portal forms write nothing and say why.
    const widened = await agent.request(url(`/account/apps/${kidConsentId}`), { form: widen });
    assert.equal(widened.status, 403);
    assert.match(widened.body, NO_LONGER);
    const revoke = await agent.request(url(`/account/apps/${kidConsentId}/revoke`), { form: { _csrf: staleCsrf } });
    assert.equal(revoke.status, 403);
    assert.match(revoke.body, NO_LONGER);
    assert.deepEqual((await after.consents.repo.versions(kidConsentId, 10)).map((v) => v.version), [3, 2, 1], 'no version was added');

    // Nor may the ex-representative read it any more: not its limits, not how the app is used for the kid.
    const view = await agent.request(url(`/account/apps/${kidConsentId}`));
    assert.equal(view.status, 403);
    assert.match(view.body, /you no longer act for this patient, so this app connection is no longer yours to see/);
    assert.doesNotMatch(view.body, /Access log|access given/);
    assert.equal((await agent.request(url(`/account/apps/${kidConsentId}/fhir`))).status, 403);
    const list = await agent.request(url('/account/apps'));
    assert.equal(list.status, 200);
    assert.ok(!list.body.includes(kidConsentId), 'the list no longer shows the consent given for the kid');
    assert.ok(list.body.includes(selfConsentId), "it still shows the parent's own");

    // The kid's page for their own consent logs that consent's tokens only, not the parent's for them.
    const { agent: kidPortal } = await accountPagesAgent(server.issuer, kid);
    const kidView = await kidPortal.request(url(`/account/apps/${kidOwnConsentId}`));
    assert.equal(kidView.status, 200);
    const shown = (kidView.body.match(/ UTC<\/span> · /g) ?? []).length;
    const clientId = config.clientMetadata().client_id;
    const ofConsent = (await after.audit.list({ clientId, patientId: 'xk-1', consentId: kidOwnConsentId, type: 'token.' }, { limit: 20 })).events;
    const ofAppAndPatient = (await after.audit.list({ clientId, patientId: 'xk-1', type: 'token.' }, { limit: 20 })).events;
    assert.ok(ofConsent.length >= 2, `the kid's own use is logged (${ofConsent.length})`);
    assert.ok(ofAppAndPatient.some((e) => e.details.consent_id === kidConsentId), "the audit trail holds the parent's use for the kid");
    assert.equal(shown, ofConsent.length, "the page shows the kid's consent's events and none of the parent's");

    // So does the consent page opened for the kid before the end.
    const decision = await agent.request(new URL(formActionOf(staleConsentPage.page.body, 'confirm'), server.issuer).toString(), {
      form: formDefaults(staleConsentPage.page.body, 'confirm'),
    });
    assert.equal(decision.status, 403, decision.body.replace(/\s+/g, " ").slice(0, 1500));
    assert.match(decision.body, /you may not give access to this record/);
    assert.equal((await after.consents.repo.find(kidConsentId))?.current.version, 3, 'the consent page wrote nothing');
    assert.equal(await after.consents.repo.findFor(kid.id, other.clientMetadata().client_id, parent.id), undefined, 'no consent for the second app');
  });
});
