import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf, formDefaults, type PageResponse } from '../helpers/browserless.ts';
import { enrolTotp } from '../helpers/totp.ts';
import { CONSENT_DETAILS_TYPE, type ConsentDetailsEntry } from '../../src/consent/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const OBS = 'patient/Observation.rs';
const LAB = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const VITALS = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';
const DAY = 86400_000;

type Form = [string, string][];
const without = (form: Form, name: string, value?: string) => form.filter(([n, v]) => n !== name || (value !== undefined && v !== value));
const setField = (form: Form, name: string, value: string) => [...without(form, name), [name, value]] as Form;

describe('consent at authorization, and tokens that obey it', () => {
  let now = new Date();
  let server: TestServer;
  let config: oidc.Configuration;
  let clientId: string;

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR }, clock: () => now });
    const client = await server.createClient({
      client_name: 'Health Diary',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    });
    clientId = client.clientId;
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  let patients = 0;
  async function newPatient() {
    patients += 1;
    return server.createAccount({ username: `patient${patients}`, role: 'patient', fhirId: `pat-${patients}` });
  }

  /** Runs the flow, changing the consent form with `edit`; returns the consent page's last response or the tokens. */
  async function flow(
    who: { username: string; password: string },
    scope: string,
    edit: (form: Form) => Form = (f) => f,
    agent = new UserAgent(),
  ): Promise<{ tokens?: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers; page: PageResponse; form?: Form }> {
    const start = await startCodeFlow(config, { scope, aud: FHIR });
    let submitted: Form | undefined;
    const res = await authorize(agent, start.url.toString(), server.issuer, who, {
      consentForm: (defaults) => (submitted = edit(defaults)),
    });
    if (!res.location?.startsWith(REDIRECT_URI)) return { page: res, form: submitted };
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    return { tokens, page: res, form: submitted };
  }

  const consentEntry = (info: Record<string, unknown>) => {
    const details = info.authorization_details as ConsentDetailsEntry[] | undefined;
    return details?.find((d) => d.type === CONSENT_DETAILS_TYPE);
  };

  it('shows every requested scope as a checkbox, the app, and the sensitive categories hidden by default', async () => {
    const pat = await newPatient();
    const agent = new UserAgent();
    const start = await startCodeFlow(config, { scope: `openid fhirUser launch/patient offline_access ${OBS} patient/Condition.rs`, aud: FHIR });
    let page = await agent.follow(start.url.toString(), server.issuer);
    page = await agent.request(new URL(/action="([^"]*\/login)"/.exec(page.body)![1]!, server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), username: pat.username, password: pat.password },
    });
    page = await agent.follow(page.location!, server.issuer);
    assert.match(page.body, /Health Diary/);
    assert.match(page.body, /A third-party app, not run by your care provider/);
    assert.match(page.body, /Not verified by your care provider/);
    assert.match(page.body, /keep access while you are away/);
    const form = formDefaults(page.body, 'confirm');
    const ticked = form.filter(([n]) => n === 'scope').map(([, v]) => v);
    assert.deepEqual(ticked.sort(), [OBS, 'offline_access', 'patient/Condition.rs'].sort(), 'identity scopes have no checkbox; the rest start ticked');
    assert.equal(form.filter(([n]) => n === 'share').length, 0, 'no sensitive category is shared by default');
    assert.match(page.body, /value="[^"]*\|laboratory"/, 'granular Observation categories are offered');
    assert.match(page.body, /value="[^"]*\|problem-list-item"/, 'granular Condition categories are offered');
  });

  it('grants only what the patient left ticked, in the token and in introspection', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid fhirUser launch/patient ${OBS} patient/Condition.rs patient/MedicationRequest.rs`, (f) =>
      without(f, 'scope', 'patient/MedicationRequest.rs'),
    );
    assert.ok(tokens);
    assert.deepEqual(String(tokens.scope).split(' ').sort(), ['fhirUser', 'launch/patient', 'openid', OBS, 'patient/Condition.rs'].sort());
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.deepEqual(String(info.scope).split(' ').sort(), [OBS, 'patient/Condition.rs'].sort());
    const entry = consentEntry(info);
    assert.ok(entry, 'the consent travels as authorization_details');
    assert.equal(entry.consent_version, 1);
    assert.equal(entry.patient, `Patient/pat-${patients}`);
    assert.equal(info.consent_id, entry.consent_id);
    assert.deepEqual(
      entry.hidden_security_labels.map((l) => l.code),
      ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'],
    );
    assert.deepEqual(tokens.authorization_details, info.authorization_details, 'the token response names the same details (RFC 9396 section 7)');
    const { consents } = server.running.services;
    const record = await consents.repo.find(entry.consent_id);
    assert.equal(record?.current.change, 'granted');
    assert.equal(record?.current.changedBy, pat.id);
    assert.equal(record?.current.acr, 'urn:custos:acr:password');
  });

  it('grants chosen granular sub-scopes instead of the broad scope', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid launch/patient ${OBS}`, (f) => [...without(f, 'scope', OBS), ['scope', LAB], ['scope', VITALS]]);
    assert.ok(tokens);
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.deepEqual(String(info.scope).split(' ').sort(), [LAB, VITALS].sort());
    assert.doesNotMatch(String(tokens.scope), new RegExp(`(^| )${OBS.replace('.', '\\.')}( |$)`), 'the broad scope is gone');
  });

  it('still approves with every data scope unticked', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid fhirUser launch/patient ${OBS}`, (f) => without(f, 'scope'));
    assert.ok(tokens);
    assert.deepEqual(String(tokens.scope).split(' ').sort(), ['fhirUser', 'launch/patient', 'openid']);
  });

  it('keeps the expiry chosen, and refuses tokens once it has passed', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid launch/patient offline_access ${OBS}`, (f) => setField(f, 'expires', '7'));
    assert.ok(tokens?.refresh_token);
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    const expiresAt = Date.parse(consentEntry(info)!.expires_at!);
    assert.ok(Math.abs(expiresAt - (now.getTime() + 7 * DAY)) < 60_000, 'seven days from now');
    const saved = now;
    try {
      now = new Date(saved.getTime() + 8 * DAY);
      assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).active, false, 'inactive once the consent expired');
      await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token), (err: oidc.ResponseBodyError) => {
        assert.equal(err.error, 'invalid_grant');
        return true;
      });
      // Connecting again asks the patient again (the old grant is not reused) and works.
      let asked = false;
      const again = await flow(pat, `openid launch/patient ${OBS}`, (f) => {
        asked = true;
        return f;
      });
      assert.ok(asked, 'the consent page was shown again');
      assert.ok(again.tokens);
      const renewed = consentEntry(await oidc.tokenIntrospection(config, again.tokens.access_token));
      assert.equal(renewed?.consent_version, 2);
    } finally {
      now = saved;
    }
  });

  it('narrows on the next refresh after the patient narrows the consent, and introspection follows at once', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid launch/patient offline_access ${OBS} patient/Condition.rs`);
    assert.ok(tokens?.refresh_token);
    const before = await oidc.tokenIntrospection(config, tokens.access_token);
    const { consents } = server.running.services;
    const consentId = consentEntry(before)!.consent_id;
    await consents.change(
      consentId,
      { scopes: ['openid', 'launch/patient', 'offline_access', OBS], limits: { hiddenLabels: ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'], from: '2020-01-01' } },
      { accountId: pat.id, acr: 'urn:custos:acr:password', strongRecentLogin: false },
    );
    const old = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(old.scope, OBS, 'the live token is narrowed in introspection');
    assert.equal(consentEntry(old)?.consent_version, 2);
    assert.deepEqual(consentEntry(old)?.period, { start: '2020-01-01' });
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
    const info = await oidc.tokenIntrospection(config, refreshed.access_token);
    assert.equal(info.scope, OBS);
    assert.equal(consentEntry(info)?.consent_version, 2);
    const versions = await consents.repo.versions(consentId, 10);
    assert.deepEqual(versions.map((v) => [v.version, v.change]), [[2, 'narrowed'], [1, 'granted']]);
  });

  it('kills every token at once when the patient revokes', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid launch/patient offline_access ${OBS}`);
    assert.ok(tokens?.refresh_token);
    const consentId = consentEntry(await oidc.tokenIntrospection(config, tokens.access_token))!.consent_id;
    await server.running.services.consents.revoke(consentId, { accountId: pat.id, acr: null, strongRecentLogin: false });
    assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).active, false);
    assert.equal((await oidc.tokenIntrospection(config, tokens.refresh_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token), (err: oidc.ResponseBodyError) => err.error === 'invalid_grant');
    const events = await server.running.services.audit.list({ type: 'consent.', clientId }, { limit: 50 });
    assert.ok(events.events.some((e) => e.type === 'consent.revoked' && e.actor === pat.id && e.details.consent_id === consentId));
    // Connecting again asks again and starts a new version.
    const again = await flow(pat, `openid launch/patient ${OBS}`);
    assert.ok(again.tokens);
    assert.equal(consentEntry(await oidc.tokenIntrospection(config, again.tokens.access_token))?.consent_version, 3);
  });

  it('demands a current second factor to share a sensitive category', async () => {
    const pat = await newPatient();
    const { mfa } = server.running.services;
    const share = (f: Form) => [...f, ['share', 'PSY']] as Form;
    const noFactor = await flow(pat, `openid launch/patient ${OBS}`, share);
    assert.equal(noFactor.page.status, 403);
    assert.match(noFactor.page.body, /Sharing sensitive information needs two-step verification/);

    const secret = await enrolTotp(mfa, pat.id);
    // The login now asks for the factor too; this helper signs in by password only, so use a fresh
    // account state: remove the factor from the session's point of view by signing in here with it.
    const agent = new UserAgent();
    const start = await startCodeFlow(config, { scope: `openid launch/patient ${OBS}`, aud: FHIR });
    let page = await agent.follow(start.url.toString(), server.issuer);
    page = await agent.request(new URL(/action="([^"]*\/login)"/.exec(page.body)![1]!, server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), username: pat.username, password: pat.password },
    });
    assert.match(page.body, /Two-step verification/);
    page = await agent.request(new URL(/action="([^"]*\/otp)"/.exec(page.body)![1]!, server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), code: await generate({ secret }) },
    });
    page = await agent.follow(page.location!, server.issuer);
    // A multi-factor login made moments ago is enough: no code is asked on the consent page.
    assert.doesNotMatch(page.body, /name="code"/);
    page = await agent.request(new URL(/action="([^"]*\/confirm)"/.exec(page.body)![1]!, server.issuer).toString(), {
      form: share(formDefaults(page.body, 'confirm')),
    });
    page = await agent.follow(page.location!, server.issuer);
    assert.ok(page.location?.startsWith(REDIRECT_URI), `returned to the app: ${page.status} ${page.body.slice(0, 200)}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(page.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    const entry = consentEntry(await oidc.tokenIntrospection(config, tokens.access_token))!;
    assert.ok(!entry.hidden_security_labels.some((l) => l.code === 'PSY'), 'mental health is shared');
    const record = await server.running.services.consents.repo.find(entry.consent_id);
    assert.equal(record?.current.acr, 'urn:custos:acr:mfa');
  });

  it('counts codes typed on the consent page with the login\'s second-factor guesses, and locks both alike', async () => {
    const pat = await newPatient();
    const agent = new UserAgent();
    // Signed in by password alone (no factor yet), then the factor is set up: the session is weak.
    assert.ok((await flow(pat, `openid launch/patient ${OBS}`, (f) => f, agent)).tokens);
    const secret = await enrolTotp(server.running.services.mfa, pat.id);
    const start = await startCodeFlow(config, { scope: `openid launch/patient ${OBS} patient/Condition.rs`, aud: FHIR });
    const page = await agent.follow(start.url.toString(), server.issuer);
    const action = new URL(/action="([^"]*\/confirm)"/.exec(page.body)![1]!, server.issuer).toString();
    const form = [...formDefaults(page.body, 'confirm').filter(([n]) => n !== 'code'), ['share', 'PSY']] as Form;
    const submit = (code: string) => agent.request(action, { form: [...form, ['code', code]] });
    const valid = async () => {
      const now = Math.floor(Date.now() / 1000);
      return new Set(await Promise.all([-60, -30, 0, 30, 60].map((d) => generate({ secret, epoch: now + d }))));
    };
    const statuses: number[] = [];
    for (let i = 0, n = 100000; i < 5; i += 1, n += 7) {
      const taken = await valid();
      while (taken.has(String(n))) n += 1;
      statuses.push((await submit(String(n))).status);
    }
    assert.deepEqual(statuses, [401, 401, 401, 401, 429], 'the fifth wrong code locks, as at the login');
    const right = await submit(await generate({ secret }));
    assert.equal(right.status, 429, 'and the right code waits it out too');
    assert.ok(Number(right.headers.get('retry-after')) > 0);
    assert.match(right.body, /Too many failed attempts/);
    assert.equal(right.location, undefined, 'nothing was shared');

    // The lock is the login's own: signing in again with the right code waits as well.
    const login = new UserAgent();
    let step = await login.follow((await startCodeFlow(config, { scope: 'openid', aud: FHIR })).url.toString(), server.issuer);
    step = await login.request(new URL(/action="([^"]*\/login)"/.exec(step.body)![1]!, server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(step.body), username: pat.username, password: pat.password },
    });
    step = await login.request(new URL(/action="([^"]*\/otp)"/.exec(step.body)![1]!, server.issuer).toString(), { form: { _csrf: csrfTokenOf(step.body), code: await generate({ secret }) } });
    assert.equal(step.status, 429);

    const { events } = await server.running.services.audit.list({ actor: pat.id }, { limit: 100 });
    assert.equal(events.filter((e) => e.type === 'login.failure' && e.details.during === 'consent').length, 5, 'each wrong code is audited');
    assert.ok(events.some((e) => e.type === 'login.throttled' && e.details.during === 'consent'));
  });

  it('treats dropping or loosening the date range or record types on a new authorization as sharing more', async () => {
    const pat = await newPatient();
    const scope = `openid launch/patient offline_access ${OBS} patient/Condition.rs`;
    const first = await flow(pat, scope, (f) => setField(setField(setField(f, 'from', '2020-01-01'), 'until', '2021-12-31'), 'types', 'Observation'));
    assert.ok(first.tokens, 'limits are free to set');
    const consentId = consentEntry(await oidc.tokenIntrospection(config, first.tokens.access_token))!.consent_id;
    const versions = async () => (await server.running.services.consents.repo.versions(consentId, 10)).length;
    const before = await versions();
    const loosened: [string, (f: Form) => Form][] = [
      ['no date range', (f) => without(without(f, 'from'), 'until')],
      ['no type list', (f) => without(f, 'types')],
      ['a later end', (f) => setField(f, 'until', '2022-06-30')],
    ];
    for (const [what, edit] of loosened) {
      const res = await flow(pat, scope, edit);
      assert.equal(res.tokens, undefined, what);
      assert.equal(res.page.status, 403, what);
      assert.match(res.page.body, /Showing the app more dates or record types than before needs two-step verification/, what);
    }
    assert.equal(await versions(), before, 'nothing written');
    const same = await flow(pat, scope);
    assert.ok(same.tokens, 'the same limits again need nothing more');
  });

  it('keeps the limits last set as the baseline after a revocation: reconnecting cannot loosen them without a second factor', async () => {
    const pat = await newPatient();
    const scope = `openid launch/patient offline_access ${OBS} patient/Condition.rs`;
    const first = await flow(pat, scope, (f) => setField(setField(setField(f, 'from', '2020-01-01'), 'until', '2021-12-31'), 'types', 'Observation'));
    const consentId = consentEntry(await oidc.tokenIntrospection(config, first.tokens!.access_token))!.consent_id;
    // Revoking needs no step-up (it only takes away); it must not be a way round one.
    await server.running.services.consents.revoke(consentId, { accountId: pat.id, acr: 'urn:custos:acr:password', strongRecentLogin: false });
    const versions = async () => (await server.running.services.consents.repo.versions(consentId, 10)).map((v) => v.change);
    assert.deepEqual(await versions(), ['revoked', 'granted']);

    const loosened = await flow(pat, scope, (f) => without(without(without(f, 'from'), 'until'), 'types'));
    assert.equal(loosened.tokens, undefined);
    assert.equal(loosened.page.status, 403);
    assert.match(loosened.page.body, /Showing the app more dates or record types than before needs two-step verification/);
    assert.deepEqual(await versions(), ['revoked', 'granted'], 'nothing written');
    // The service holds the line too, for any caller that skips the page's check.
    const { consents } = server.running.services;
    const record = (await consents.repo.find(consentId))!;
    await assert.rejects(
      consents.approve(
        { patientAccountId: pat.id, patientFhirId: record.patientFhirId, clientId: record.clientId, scopes: [OBS], limits: { hiddenLabels: record.current.limits.hiddenLabels }, expiresAt: new Date(Date.now() + 86400_000) },
        { accountId: pat.id, acr: 'urn:custos:acr:password', strongRecentLogin: false },
      ),
      (err: Error & { kind?: string }) => err.kind === 'step_up_required',
    );
    assert.deepEqual(await versions(), ['revoked', 'granted'], 'nothing written');

    // The page starts from those limits, so reconnecting as it stands keeps them and needs nothing more.
    const again = await flow(pat, scope);
    assert.deepEqual(
      ['from', 'until', 'types'].map((k) => again.form?.find(([n]) => n === k)?.[1]),
      ['2020-01-01', '2021-12-31', 'Observation'],
      'the form starts from the limits set before the revocation',
    );
    assert.ok(again.tokens, `reconnected: ${again.page.status} ${again.page.body.slice(0, 200)}`);
    const entry = consentEntry(await oidc.tokenIntrospection(config, again.tokens.access_token))!;
    assert.equal(entry.consent_id, consentId);
    assert.deepEqual(entry.resource_types, ['Observation']);
    assert.deepEqual(entry.period, { start: '2020-01-01', end: '2021-12-31' });
    assert.deepEqual(await versions(), ['granted', 'revoked', 'granted']);
  });

  it('keeps history linear when changes race: each one wins or is refused as a conflict', async () => {
    const pat = await newPatient();
    const { tokens } = await flow(pat, `openid launch/patient ${OBS} patient/Condition.rs`);
    const consentId = consentEntry(await oidc.tokenIntrospection(config, tokens!.access_token))!.consent_id;
    const { consents } = server.running.services;
    const results = await Promise.allSettled(
      ['2020-01-01', '2021-01-01', '2022-01-01', '2023-01-01'].map((from) =>
        consents.change(consentId, { limits: { hiddenLabels: ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'], from } }, { accountId: pat.id, acr: null, strongRecentLogin: false }),
      ),
    );
    for (const r of results) {
      if (r.status === 'rejected') assert.equal((r.reason as { kind?: string }).kind, 'conflict', String(r.reason));
    }
    const versions = (await consents.repo.versions(consentId, 20)).map((v) => v.version);
    const won = results.filter((r) => r.status === 'fulfilled').length;
    assert.ok(won >= 1);
    assert.deepEqual(versions, Array.from({ length: won + 1 }, (_, i) => won + 1 - i), 'versions 1..n, none twice');
  });

  it('refuses bad choices with a readable message and writes nothing', async () => {
    const pat = await newPatient();
    const cases: [string, (f: Form) => Form, RegExp][] = [
      ['a scope not offered', (f) => [...f, ['scope', 'patient/*.cruds']], /That choice is not available: "patient\/\*\.cruds" was not one of the choices offered/],
      ['a date that is not a date', (f) => setField(f, 'from', '31/12/2020'), /Dates: dates are written YYYY-MM-DD/],
      ['a reversed range', (f) => setField(setField(f, 'from', '2024-01-01'), 'until', '2020-01-01'), /"from" must not be after "until"/],
      ['a made-up record type', (f) => setField(f, 'types', 'observation; drop table'), /Record types: a resource type is a FHIR type name/],
      ['an expiry not offered', (f) => setField(f, 'expires', '9999'), /Choose one of the periods offered/],
      ['an unknown sensitive category', (f) => [...f, ['share', 'XYZ']], /"XYZ" is not one of the sensitive categories offered/],
    ];
    for (const [name, edit, message] of cases) {
      const res = await flow(pat, `openid launch/patient ${OBS}`, edit);
      assert.equal(res.tokens, undefined, `${name}: ${JSON.stringify(res.form)}`);
      assert.equal(res.page.status, 400, `${name}: ${res.page.status}`);
      assert.match(res.page.body.replace(/&quot;/g, '"'), message, name);
      assert.doesNotMatch(res.page.body, /at .*\.ts:\d+/, 'no stack trace');
    }
    assert.equal((await server.running.services.consents.forGrant(pat.id, clientId)), undefined, 'no consent was recorded');
  });

  it('starts from the patient’s privacy preferences', async () => {
    const pat = await newPatient();
    const { consents } = server.running.services;
    const all = ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'] as const;
    await consents.setPreferences(
      { internal: [...all], external: [...all], 'third-party': all.filter((l) => l !== 'GDIS') },
      { accountId: pat.id, acr: 'urn:custos:acr:mfa', strongRecentLogin: true },
    );
    await assert.rejects(
      consents.setPreferences({ internal: [], external: [], 'third-party': [] }, { accountId: pat.id, acr: null, strongRecentLogin: false }),
      /needs a recent sign-in with two-step verification/,
    );
    let shared: string[] = [];
    await flow(pat, `openid launch/patient ${OBS}`, (f) => {
      shared = f.filter(([n]) => n === 'share').map(([, v]) => v);
      return without(f, 'share');
    });
    assert.deepEqual(shared, ['GDIS'], 'genetic data is pre-ticked for third-party apps, as the patient prefers');
  });
});
