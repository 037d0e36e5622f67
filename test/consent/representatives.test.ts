import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { text } from 'node:stream/consumers';
import { startTestServer, testEnv, type TestServer } from '../helpers/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, formActionOf, formDefaults, type PageResponse } from '../helpers/browserless.ts';
import { runCli } from '../../src/cli/main.ts';
import type { ConsentDetailsEntry } from '../../src/consent/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const OBS = 'patient/Observation.rs';
const COND = 'patient/Condition.rs';

describe('representatives act for another patient, with consents of their own', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let rs: oidc.Configuration;
  let parent: { id: string; username: string; password: string };
  let kid: { id: string; username: string; password: string };

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    parent = await server.createAccount({ username: 'pat-parent', role: 'patient', fhirId: 'par-1', displayName: 'Pat Parent' });
    kid = await server.createAccount({ username: 'kid', role: 'patient', fhirId: 'kid-1', displayName: 'Kim Kid' });
    await server.createAccount({ username: 'stranger', role: 'patient', fhirId: 'str-1' });
    await server.running.services.accounts.addRepresentative(parent.id, kid.id, 'parent');
    const app = await server.createClient({
      client_name: 'Family Health',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid launch/patient offline_access patient/*.rs',
    });
    config = await discover(server.issuer, app.clientId, app.clientSecret);
    const resourceServer = await server.createClient({ client_name: 'FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = await discover(server.issuer, resourceServer.clientId, resourceServer.clientSecret);
  });
  after(() => server.close());

  /** Signs the parent in and stops at the picker. */
  async function toPicker(agent: UserAgent) {
    const start = await startCodeFlow(config, { scope: `openid launch/patient offline_access ${OBS} ${COND}`, aud: FHIR });
    let page = await agent.follow(start.url.toString(), server.issuer);
    page = await agent.request(new URL(formActionOf(page.body, 'login'), server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), username: parent.username, password: parent.password },
    });
    page = await agent.follow(page.location!, server.issuer);
    return { start, page };
  }

  async function choose(agent: UserAgent, picker: PageResponse, start: Awaited<ReturnType<typeof toPicker>>['start'], patient: string) {
    let page = await agent.request(new URL(formActionOf(picker.body, 'patient'), server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(picker.body), patient },
    });
    if (page.status !== 303 && page.status !== 302) return { page };
    page = await agent.follow(page.location!, server.issuer);
    const consentPage = page;
    page = await agent.request(new URL(formActionOf(page.body, 'confirm'), server.issuer).toString(), { form: formDefaults(page.body, 'confirm') });
    assert.ok(page.location, `consent answered ${page.status}: ${page.body.slice(0, 400)}`);
    page = await agent.follow(page.location, server.issuer);
    assert.ok(page.location, `after consent ${page.status}: ${page.body.replace(/\s+/g, ' ').slice(0, 600)}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(page.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    return { page, consentPage, tokens };
  }

  const entryOf = async (token: string) => {
    const info = await oidc.tokenIntrospection(rs, token);
    return { info, entry: (info.authorization_details as unknown as ConsentDetailsEntry[] | undefined)?.[0] };
  };

  it('lets the parent pick only themselves or the child, and records the consent as the child’s, given by the parent', async () => {
    const agent = new UserAgent();
    const { start, page } = await toPicker(agent);
    assert.match(page.body, /Whose record\?/);
    assert.match(page.body, /Pat Parent \(you\)/);
    assert.match(page.body, /Kim Kid \(parent\)/);
    assert.doesNotMatch(page.body, /str-1/);
    assert.doesNotMatch(page.body, /name="q"/, 'no search of other patients');

    const forged = await choose(agent, page, start, 'str-1');
    assert.equal(forged.page.status, 400);
    assert.match(forged.page.body, /Choose one of the patients listed/);

    const res = await choose(agent, forged.page, start, 'kid-1');
    assert.ok(res.tokens, `consent completed: ${res.page.status}`);
    assert.match(res.consentPage!.body, /You are deciding for <strong>Kim Kid<\/strong>/);
    assert.equal(res.tokens.patient, 'kid-1');
    const { entry } = await entryOf(res.tokens.access_token);
    assert.equal(entry?.patient, 'Patient/kid-1');
    const consent = await server.running.services.consents.repo.find(entry!.consent_id);
    assert.equal(consent?.patientAccountId, kid.id);
    assert.equal(consent?.actorAccountId, parent.id);
    assert.equal(consent?.current.changedBy, parent.id);
  });

  it('keeps the parent’s own consent apart: revoking the child’s leaves the parent’s tokens alive', async () => {
    const forKid = await (async () => {
      const agent = new UserAgent();
      const { start, page } = await toPicker(agent);
      return choose(agent, page, start, 'kid-1');
    })();
    const forSelf = await (async () => {
      const agent = new UserAgent();
      const { start, page } = await toPicker(agent);
      return choose(agent, page, start, 'par-1');
    })();
    assert.equal(forSelf.tokens?.patient, 'par-1');
    const kidEntry = (await entryOf(forKid.tokens!.access_token)).entry!;
    const selfEntry = (await entryOf(forSelf.tokens!.access_token)).entry!;
    assert.notEqual(kidEntry.consent_id, selfEntry.consent_id);

    // The child narrows, then revokes, what the parent allowed: the patient stays in control.
    const { consents } = server.running.services;
    await consents.change(kidEntry.consent_id, { scopes: [OBS] }, { accountId: kid.id, acr: null, strongRecentLogin: false });
    const kidRefreshed = await oidc.refreshTokenGrant(config, forKid.tokens!.refresh_token!);
    assert.equal((await entryOf(kidRefreshed.access_token)).info.scope, OBS);
    const selfRefreshed = await oidc.refreshTokenGrant(config, forSelf.tokens!.refresh_token!);
    assert.deepEqual(String((await entryOf(selfRefreshed.access_token)).info.scope).split(' ').sort(), [COND, OBS].sort(), 'the parent’s own grant is untouched');

    await consents.revoke(kidEntry.consent_id, { accountId: kid.id, acr: null, strongRecentLogin: false });
    assert.equal((await oidc.tokenIntrospection(rs, kidRefreshed.access_token)).active, false);
    assert.equal((await oidc.tokenIntrospection(rs, selfRefreshed.access_token)).active, true);
    await oidc.refreshTokenGrant(config, selfRefreshed.refresh_token!);

    // A stranger cannot touch either consent.
    const stranger = (await server.running.services.accounts.findPatientByFhirId('str-1'))!;
    await assert.rejects(consents.revoke(selfEntry.consent_id, { accountId: stranger.id, acr: null, strongRecentLogin: false }), /no such app connection/);
  });

  it("pre-fills the consent page from the represented patient's privacy preferences, not the representative's", async () => {
    const { accounts, consents } = server.running.services;
    const teen = await server.createAccount({ username: 'teen', role: 'patient', fhirId: 'teen-1', displayName: 'Tess Teen' });
    await accounts.addRepresentative(parent.id, teen.id, 'parent');
    const all = ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'] as const;
    const strong = { acr: 'urn:custos:acr:mfa', strongRecentLogin: true };
    // The teen shares genetic data with third-party apps by default; the parent shares nothing.
    await consents.setPreferences({ internal: [...all], external: [...all], 'third-party': all.filter((l) => l !== 'GDIS') }, { accountId: teen.id, ...strong });
    await consents.setPreferences({ internal: [...all], external: [...all], 'third-party': [...all] }, { accountId: parent.id, ...strong });
    const parentPrefs = await consents.repo.preferences(parent.id);

    const agent = new UserAgent();
    const { page } = await toPicker(agent);
    let consentPage = await agent.request(new URL(formActionOf(page.body, 'patient'), server.issuer).toString(), { form: { _csrf: csrfTokenOf(page.body), patient: 'teen-1' } });
    consentPage = await agent.follow(consentPage.location!, server.issuer);
    assert.match(consentPage.body, /You are deciding for <strong>Tess Teen<\/strong>/);
    const shared = formDefaults(consentPage.body, 'confirm').filter(([n]) => n === 'share').map(([, v]) => v);
    assert.deepEqual(shared, ['GDIS'], "the teen's own choice, though the parent shares nothing");
    assert.deepEqual(await consents.repo.preferences(parent.id), parentPrefs, "the parent's preferences are untouched");
  });
});

describe('custos user represent', () => {
  let database: TestDatabase;
  let env: Record<string, string>;
  const cli = async (...argv: string[]) => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const stdin = new PassThrough();
    stdin.end('a long enough password\n');
    const code = await runCli(argv, { stdout, stderr, stdin, env });
    stdout.end();
    stderr.end();
    return { code, stdout: await text(stdout), stderr: await text(stderr) };
  };
  before(async () => {
    database = await createTestDatabase();
    env = { ...testEnv(database, 0), USER: 'ops' };
  });
  after(() => database.drop());

  it('links and unlinks, refusing what makes no sense', async () => {
    assert.equal((await cli('user', 'create', 'mum', '--role', 'patient', '--fhir-id', 'm-1', '--password-stdin')).code, 0);
    assert.equal((await cli('user', 'create', 'baby', '--role', 'patient', '--fhir-id', 'b-1', '--password-stdin')).code, 0);
    assert.equal((await cli('user', 'create', 'doc', '--role', 'practitioner', '--fhir-id', 'd-1', '--password-stdin')).code, 0);
    const ok = await cli('user', 'represent', 'mum', 'baby', '--relationship', 'parent', '--json');
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), { representative: 'mum', patient: 'baby', relationship: 'parent' });
    assert.match((await cli('user', 'represent', 'mum', 'baby', '--relationship', 'aunt')).stderr, /--relationship must be one of parent, guardian, caregiver, other/);
    assert.match((await cli('user', 'represent', 'doc', 'baby')).stderr, /"doc" is not a patient account/);
    assert.match((await cli('user', 'represent', 'mum', 'nobody')).stderr, /"nobody" is not a patient account/);
    assert.match((await cli('user', 'represent', 'mum', 'mum')).stderr, /always acts for itself/);
    assert.equal((await cli('user', 'represent', 'mum', 'baby', '--remove')).code, 0);
    assert.match((await cli('user', 'represent', 'mum', 'baby', '--remove')).stderr, /does not represent/);
    const events = JSON.parse((await cli('audit', 'list', '--type', 'account.', '--json')).stdout) as { events: { type: string; actor: string }[] };
    assert.deepEqual(events.events.filter((e) => e.type.startsWith('account.representative')).map((e) => [e.type, e.actor]), [
      ['account.representative_removed', 'cli:ops'],
      ['account.representative_added', 'cli:ops'],
    ]);
  });
});
