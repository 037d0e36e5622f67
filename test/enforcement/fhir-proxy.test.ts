import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf } from '../helpers/browserless.ts';
import { enrolTotp } from '../helpers/totp.ts';
import { startFhirTestServer, type FhirTestServer } from '../helpers/fhir-test-server.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';

const LAB_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const TTL = 5;

type Form = [string, string][];
type Bundle = { resourceType: string; total?: number; link?: { relation: string; url: string }[]; entry?: { fullUrl?: string; resource: { resourceType: string; id: string }; search?: { mode?: string } }[] };

/**
 * `custos fhir-proxy`'s engine in front of a small FHIR server, with real tokens from Custos
 * obtained through the consent page, where the patient picks scopes, hides or shares sensitive
 * categories and limits dates and record types.
 */
describe('FHIR proxy: every patient choice enforced', () => {
  let server: TestServer;
  let fhir: FhirTestServer;
  let proxyUrl: string;
  let closeProxy: () => Promise<void>;
  let nowMs = Date.now();
  let alice: { id: string; username: string; password: string };
  let bob: { id: string; username: string; password: string };
  const aliceAgent = new UserAgent();
  let clients = 0;

  before(async () => {
    fhir = await startFhirTestServer();
    const port = await freePort();
    proxyUrl = `http://127.0.0.1:${port}`;
    server = await startTestServer({ env: { FHIR_BASE_URLS: proxyUrl, MFA_FOR_WRITE_SCOPES: 'false' } });
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1' });
    bob = await server.createAccount({ username: 'bob', role: 'patient', fhirId: 'pat-2' });
    const rs = await server.createClient({ client_name: 'FHIR proxy', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const tokens = createTokenValidator({
      issuer: server.issuer,
      introspection: { clientId: rs.clientId, clientSecret: rs.clientSecret! },
      cache: { ttlSeconds: TTL, maxEntries: 100 },
      clock: () => nowMs,
    });
    const { audit } = server.running.services;
    const proxy = createFhirProxy({ upstream: fhir.url, publicUrl: proxyUrl, tokens, clock: () => nowMs, audit: (e) => audit.record(e) });
    closeProxy = (await proxy.listen(port)).close;

    // Alice has an authenticator app and signs in with it once: sharing sensitive data needs it.
    const { mfa } = server.running.services;
    const secret = await enrolTotp(mfa, alice.id);
    const { config } = await newApp();
    const start = await startCodeFlow(config, { scope: 'openid', aud: proxyUrl });
    let page = await aliceAgent.follow(start.url.toString(), server.issuer);
    page = await aliceAgent.request(new URL(/action="([^"]*\/login)"/.exec(page.body)![1]!, server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), username: alice.username, password: alice.password },
    });
    page = await aliceAgent.request(new URL(/action="([^"]*\/otp)"/.exec(page.body)![1]!, server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), code: await generate({ secret }) },
    });
    assert.ok(page.location, 'the second factor was accepted');
    const done = await authorize(aliceAgent, page.location, server.issuer);
    assert.ok(done.location?.startsWith(REDIRECT_URI), 'the multi-factor session is in place');
  });
  after(async () => {
    await closeProxy?.();
    await fhir?.close();
    await server?.close();
  });

  async function newApp() {
    clients += 1;
    const app = await server.createClient({
      client_name: `App ${clients}`,
      redirect_uris: [REDIRECT_URI],
      scope: 'openid fhirUser launch/patient patient/*.cruds patient/*.read patient/*.write',
    });
    return { config: await discover(server.issuer, app.clientId, app.clientSecret), clientId: app.clientId };
  }

  /** A new app connects: the patient approves `scope` with the consent form changed by `edit`. */
  async function connect(scope: string, edit: (f: Form) => Form = (f) => f, who: 'alice' | 'bob' = 'alice'): Promise<string> {
    const { config } = await newApp();
    const start = await startCodeFlow(config, { scope: `openid launch/patient ${scope}`, aud: proxyUrl });
    const agent = who === 'alice' ? aliceAgent : new UserAgent();
    const res = await authorize(agent, start.url.toString(), server.issuer, who === 'bob' ? bob : undefined, { consentForm: edit });
    assert.ok(res.location?.startsWith(REDIRECT_URI), `the flow ended at ${res.status}: ${res.body.slice(0, 300)}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    return tokens.access_token;
  }

  async function get(token: string | undefined, path: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}) {
    const res = await fetch(path.startsWith('http') ? path : `${proxyUrl}${path}`, {
      method: init.method ?? 'GET',
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : undefined) as Record<string, unknown> & Bundle };
  }

  const ids = (b: Bundle) => (b.entry ?? []).map((e) => e.resource.id).sort();
  const upstreamSince = (mark: number) => fhir.requests.slice(mark);
  const diagnostics = (body: Record<string, unknown>) => (body.issue as { diagnostics: string }[])[0]!.diagnostics;
  const share = (...labels: string[]) => (f: Form) => [...f, ...labels.map((l) => ['share', l] as [string, string])];
  const setField = (name: string, value: string) => (f: Form) => [...f.filter(([n]) => n !== name), [name, value]] as Form;

  it('serves the capability statement without a token, and nothing else', async () => {
    const meta = await get(undefined, '/metadata');
    assert.equal(meta.status, 200);
    assert.equal(meta.body.resourceType, 'CapabilityStatement');
    for (const spelt of ['/metadata/', '//metadata']) assert.equal((await get(undefined, spelt)).status, 200, spelt);
    const refused = await get(undefined, '/Observation');
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('www-authenticate'), `Bearer realm="${proxyUrl}"`);
    assert.equal(refused.body.resourceType, 'OperationOutcome');
  });

  it('v2 scope: searches stay in the patient compartment, hidden categories are dropped and the total counts what is shown', async () => {
    const token = await connect('patient/Observation.rs');
    const mark = fhir.requests.length;
    const res = await get(token, '/Observation');
    assert.equal(res.status, 200);
    assert.deepEqual(ids(res.body), ['obs-a1c-2021', 'obs-bp-2022', 'obs-glucose-2019', 'obs-weight-undated'], 'HIV and mental health (labelled, or labelled inside) are hidden by default');
    assert.equal(res.body.total, 4, 'the total is what the app sees, not what the server holds');
    assert.deepEqual(upstreamSince(mark), ['GET /Observation?patient=pat-1&_count=100'], 'the search was confined to the patient (read in pages the proxy sizes)');
    assert.ok(res.body.entry!.every((e) => e.fullUrl!.startsWith(`${proxyUrl}/Observation/`)), 'full URLs point at the proxy');
    assert.equal(res.body.link?.find((l) => l.relation === 'self')?.url, `${proxyUrl}/Observation`);

    assert.equal((await get(token, '/Observation/obs-glucose-2019')).status, 200);
    const hidden = await get(token, '/Observation/obs-hiv-2020');
    assert.equal(hidden.status, 404, 'a hidden resource is not found, so its existence does not leak');
    assert.equal(hidden.body.resourceType, 'OperationOutcome');
    assert.equal((await get(token, '/Observation/obs-viral-2021')).status, 404, 'a labelled contained resource hides its container');

    const noScope = await get(token, '/Condition');
    assert.equal(noScope.status, 403);
    assert.match(noScope.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/);
    assert.equal((await get(token, '/Observation/obs-glucose-2019', { method: 'DELETE' })).status, 403, 'rs does not delete');
  });

  it('refuses cross-patient reads and searches before they reach the server', async () => {
    const token = await connect('patient/Observation.rs patient/Patient.rs');
    const mark = fhir.requests.length;
    for (const path of ['/Patient/pat-2', '/Observation?patient=pat-2', '/Observation?subject=Patient/pat-2', '/Observation?patient=pat-1,pat-2', '/Patient/pat-2/Observation', '/Patient?_id=pat-2', '/Patient/pat-2/$everything']) {
      const res = await get(token, path);
      assert.equal(res.status, 403, path);
      assert.equal(res.body.resourceType, 'OperationOutcome', path);
    }
    assert.deepEqual(upstreamSince(mark), [], 'nothing reached the FHIR server');
    assert.equal((await get(token, '/Observation/obs-p2-lab-2021')).status, 404, "another patient's resource, read by id, is not found");
    const own = await get(token, '/Patient/pat-1/Observation?category=' + encodeURIComponent(LAB_CAT));
    assert.equal(own.status, 200);
    assert.deepEqual(ids(own.body), ['obs-a1c-2021', 'obs-glucose-2019']);
    const patients = await get(token, '/Patient');
    assert.deepEqual(ids(patients.body), ['pat-1']);
  });

  it('v1 scopes: read means read and search; sensitive codes hide unlabelled data', async () => {
    const token = await connect('patient/Condition.read patient/Patient.read');
    const res = await get(token, '/Condition');
    assert.equal(res.status, 200);
    assert.deepEqual(ids(res.body), ['cond-asthma-2018'], 'F10 (substance use) and the PSY-labelled depression are hidden');
    assert.equal((await get(token, '/Condition/cond-alcohol-2021')).status, 404);
    assert.equal((await get(token, '/Patient/pat-1')).status, 200);
    const write = await get(token, '/Condition', { method: 'POST', body: '{}', headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(write.status, 403);
  });

  it('granular scope: only the chosen category is seen, with or without a category in the search', async () => {
    const lab = `patient/Observation.rs?category=${LAB_CAT}`;
    const token = await connect('patient/Observation.rs', (f) => [...f.filter(([n, v]) => !(n === 'scope' && v === 'patient/Observation.rs')), ['scope', lab]]);
    const all = await get(token, '/Observation');
    assert.deepEqual(ids(all.body), ['obs-a1c-2021', 'obs-glucose-2019'], 'vital signs are filtered out of a search without a category');
    assert.equal(all.body.total, 2);
    const narrowed = await get(token, `/Observation?category=${encodeURIComponent(LAB_CAT)}`);
    assert.deepEqual(ids(narrowed.body), ['obs-a1c-2021', 'obs-glucose-2019']);
    assert.equal((await get(token, '/Observation/obs-bp-2022')).status, 404, 'a vital sign is outside the granted category');
  });

  it('shows a sensitive category the patient shared (after multi-factor), and only that one', async () => {
    const token = await connect('patient/Condition.rs patient/Observation.rs', share('PSY'));
    assert.deepEqual(ids((await get(token, '/Condition')).body), ['cond-asthma-2018', 'cond-depression-2022'], 'mental health shared; substance use still hidden');
    assert.deepEqual(ids((await get(token, '/Observation')).body), ['obs-a1c-2021', 'obs-bp-2022', 'obs-glucose-2019', 'obs-phq9-2023', 'obs-weight-undated']);
    const hiv = await connect('patient/Observation.rs', share('HIV'));
    assert.deepEqual(ids((await get(hiv, '/Observation')).body), ['obs-a1c-2021', 'obs-bp-2022', 'obs-glucose-2019', 'obs-hiv-2020', 'obs-viral-2021', 'obs-weight-undated']);
  });

  it('applies the date range and the record types the patient chose', async () => {
    const dated = await connect('patient/*.rs', (f) => setField('until', '2021-12-31')(setField('from', '2020-01-01')(f)));
    assert.deepEqual(ids((await get(dated, '/Observation')).body), ['obs-a1c-2021'], 'the undated observation is hidden too');
    assert.deepEqual(ids((await get(dated, '/MedicationRequest')).body), ['medreq-2020']);
    assert.deepEqual(ids((await get(dated, '/Encounter')).body), [], 'Encounter.period 2019 is out of range');
    assert.equal((await get(dated, '/Observation/obs-glucose-2019')).status, 404);
    assert.deepEqual(ids((await get(dated, '/Patient')).body), ['pat-1'], 'the patient resource is not dated');

    const typed = await connect('patient/*.rs', setField('types', 'Observation'));
    assert.equal((await get(typed, '/Observation')).status, 200);
    const condition = await get(typed, '/Condition');
    assert.equal(condition.status, 403);
    assert.match(diagnostics(condition.body), /not shared Condition records/);
    assert.equal((await get(typed, '/Patient/pat-1')).status, 403);
  });

  it('pages through the proxy, re-deciding each page, without a total that could count hidden data', async () => {
    const token = await connect('patient/Observation.rs');
    const seen: string[] = [];
    let res = await get(token, '/Observation?_count=3');
    assert.equal(res.body.total, undefined, 'a paged result has no total');
    for (let pages = 0; ; pages += 1) {
      assert.equal(res.status, 200);
      seen.push(...ids(res.body));
      const next = res.body.link?.find((l) => l.relation === 'next')?.url;
      if (!next) break;
      assert.ok(next.startsWith(`${proxyUrl}/_page?page=`), `paging links point at the proxy: ${next}`);
      assert.ok(pages < 5);
      res = await get(token, next);
    }
    assert.deepEqual(seen.sort(), ['obs-a1c-2021', 'obs-bp-2022', 'obs-glucose-2019', 'obs-weight-undated']);
    const first = await get(token, '/Observation?_count=3');
    const next = first.body.link!.find((l) => l.relation === 'next')!.url;
    const other = await connect('patient/Observation.rs', (f) => f, 'bob');
    assert.equal((await get(other, next)).status, 403, "a paging link does not work with another patient's token");
    const tampered = next.replace(/page=(.)/, (_m, c: string) => `page=${c === 'A' ? 'B' : 'A'}`);
    assert.equal((await get(token, tampered)).status, 400);
  });

  it('filters included resources and $everything, and drops what is outside the compartment', async () => {
    const token = await connect('patient/*.rs');
    const meds = await get(token, '/MedicationRequest?_include=MedicationRequest:requester');
    assert.deepEqual(ids(meds.body), ['medreq-2020'], 'the practitioner is not in the patient compartment');
    assert.equal(meds.body.total, 1);
    const withObs = await get(token, '/Patient?_revinclude=Observation:subject');
    assert.deepEqual(ids(withObs.body), ['obs-a1c-2021', 'obs-bp-2022', 'obs-glucose-2019', 'obs-weight-undated', 'pat-1']);
    assert.equal(withObs.body.total, 1, 'included resources are not counted');
    const everything = await get(token, '/Patient/pat-1/$everything');
    assert.equal(everything.status, 200);
    const all = ids(everything.body);
    assert.ok(all.includes('pat-1') && all.includes('medreq-2020') && all.includes('cond-asthma-2018'));
    for (const hidden of ['obs-hiv-2020', 'obs-phq9-2023', 'cond-alcohol-2021', 'cond-depression-2022', 'prac-1', 'obs-p2-lab-2021']) {
      assert.ok(!all.includes(hidden), `${hidden} is not in $everything`);
    }
    assert.equal(everything.body.total, all.length);
    assert.equal((await get(token, '/Observation/_history')).status, 400, 'history across a type is refused');
    const history = await get(token, '/Observation/obs-a1c-2021/_history');
    assert.equal(history.body.type, 'history');
    assert.deepEqual(ids(history.body), ['obs-a1c-2021']);
    const unknown = await get(token, '/Observation/no-such-obs/_history');
    assert.equal(unknown.status, 404);
    for (const path of ['/Observation/obs-hiv-2020/_history/1', '/Observation/obs-hiv-2020/_history', '/Observation/obs-hiv-2020']) {
      const hidden = await get(token, path);
      assert.deepEqual([hidden.status, hidden.body], [unknown.status, unknown.body], `${path} answers as a resource that does not exist`);
    }
    assert.equal((await get(token, '/Binary/bin-1')).status, 403);
    assert.equal((await get(token, '/DocumentReference/doc-2022')).status, 200);
  });

  it('stops a revoked consent within the cache lifetime', async () => {
    const token = await connect('patient/Observation.rs');
    assert.equal((await get(token, '/Observation/obs-glucose-2019')).status, 200);
    const { consents } = server.running.services;
    const consent = await latestConsent();
    await consents.revoke(consent, { accountId: alice.id, acr: null, strongRecentLogin: false });
    assert.equal((await get(token, '/Observation/obs-glucose-2019')).status, 200, 'the cached answer still stands for a few seconds');
    nowMs += (TTL + 1) * 1000;
    const refused = await get(token, '/Observation/obs-glucose-2019');
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  async function latestConsent(): Promise<string> {
    const events = await server.running.services.audit.list({ type: 'consent.granted', actor: alice.id }, { limit: 1 });
    return String(events.events[0]!.details.consent_id);
  }

  it('asks for a stronger login before a write (RFC 9470), and keeps writes inside what was shared', async () => {
    const weak = await connect('patient/Observation.cruds', (f) => f, 'bob');
    const body = JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'steps' }, subject: { reference: 'Patient/pat-2' }, effectiveDateTime: '2024-01-01' });
    const challenged = await get(weak, '/Observation', { method: 'POST', body, headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(challenged.status, 401);
    assert.match(challenged.headers.get('www-authenticate') ?? '', /^Bearer error="insufficient_user_authentication", error_description="[^"]+", acr_values="urn:custos:acr:mfa"$/);

    const strong = await connect('patient/Observation.cruds');
    const mine = body.replace('pat-2', 'pat-1');
    const created = await get(strong, '/Observation', { method: 'POST', body: mine, headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(created.status, 201);
    assert.match(created.headers.get('location') ?? '', new RegExp(`^${proxyUrl}/Observation/new-\\d+/_history/1$`));
    const newId = String(created.body.id);
    const mark = fhir.requests.length;
    const theirs = await get(strong, '/Observation', { method: 'POST', body, headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(theirs.status, 403);
    assert.match(diagnostics(theirs.body), /would not belong to the patient in context/);
    const hiddenUpdate = await get(strong, '/Observation/obs-hiv-2020', { method: 'PUT', body: JSON.stringify({ resourceType: 'Observation', id: 'obs-hiv-2020', subject: { reference: 'Patient/pat-1' } }), headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(hiddenUpdate.status, 404, 'a hidden resource cannot be overwritten');
    assert.deepEqual(upstreamSince(mark), ['GET /Observation/obs-hiv-2020'], 'only the check reached the server');
    const patch = await get(strong, `/Observation/${newId}`, { method: 'PATCH', body: JSON.stringify([{ op: 'replace', path: '/subject', value: { reference: 'Patient/pat-2' } }]), headers: { 'content-type': 'application/json-patch+json' } });
    assert.equal(patch.status, 403, 'a patch may not move data to another patient');
    const okPatch = await get(strong, `/Observation/${newId}`, { method: 'PATCH', body: JSON.stringify([{ op: 'replace', path: '/status', value: 'amended' }]), headers: { 'content-type': 'application/json-patch+json' } });
    assert.equal(okPatch.status, 200);
    assert.equal((await get(strong, `/Observation/${newId}`, { method: 'DELETE' })).status, 204);
  });

  it('answers malformed and unsupported requests with an OperationOutcome, never a 500', async () => {
    const token = await connect('patient/*.cruds');
    const cases: [string, string, number, RegExp?][] = [
      ['GET', '/Observation/bad id!', 400],
      ['GET', '/Observation/%ZZ', 400],
      ['GET', '/observation', 404],
      ['GET', '/Observation/a/b/c/d/e', 404],
      ['POST', '/', 400, /batches and transactions/],
      ['GET', '/?_type=Observation', 400],
      ['GET', '/_history', 400],
      ['GET', '/Observation/$lastn', 400],
      ['GET', '/Patient?_has:Condition:patient:code=F10.20', 400, /chained/],
      ['GET', '/Observation?subject.name=Rivera', 400, /chained/],
      ['GET', '/Observation?_summary=count', 400],
      ['GET', '/Observation?_elements=code', 400],
      ['GET', '/Observation?_format=xml', 400, /only JSON/],
      ['GET', '/Observation?_query=x', 400],
      ['OPTIONS', '/Observation', 405],
      ['PUT', '/Observation', 400, /conditional/],
      ['POST', '/Observation', 415],
      ['GET', '/_page?page=garbage', 400],
      ['GET', '/Bundle', 403],
    ];
    for (const [method, path, status, message] of cases) {
      const res = await get(token, path, { method });
      assert.equal(res.status, status, `${method} ${path}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.resourceType, 'OperationOutcome', `${method} ${path}`);
      if (message) assert.match(diagnostics(res.body), message, `${method} ${path}`);
    }
    const badJson = await get(token, '/Observation', { method: 'POST', body: '{not json', headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(badJson.status, 400);
    const wrongType = await get(token, '/Observation', { method: 'POST', body: '{"resourceType":"Condition"}', headers: { 'content-type': 'application/fhir+json' } });
    assert.equal(wrongType.status, 400);
    for (const auth of ['Basic abc', 'Bearer', 'Bearer a b', `Bearer ${'x'.repeat(9000)}`, 'Bearer not-a-real-token']) {
      const res = await fetch(`${proxyUrl}/Observation`, { headers: { authorization: auth } });
      assert.equal(res.status, 401, auth.slice(0, 20));
      assert.equal(((await res.json()) as { resourceType: string }).resourceType, 'OperationOutcome');
    }
  });

  it('refuses a token meant for another server', async () => {
    const token = await connect('patient/Observation.rs');
    const rs = await server.createClient({ client_name: 'Other FHIR proxy', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const other = createFhirProxy({
      upstream: fhir.url,
      publicUrl: 'https://other-fhir.example.org/r4',
      tokens: createTokenValidator({ issuer: server.issuer, introspection: { clientId: rs.clientId, clientSecret: rs.clientSecret! } }),
    });
    const listening = await other.listen(0);
    try {
      const res = await fetch(`${listening.url}/Observation`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    } finally {
      await listening.close();
    }
  });

  it('records every decision in the audit trail', async () => {
    const events = await server.running.services.audit.list({ type: 'fhir.access', patientId: 'pat-1' }, { limit: 200 });
    const denied = events.events.find((e) => e.outcome === 'denied' && e.details.path === '/Patient/pat-2');
    assert.ok(denied, 'a cross-patient read is recorded as denied');
    assert.equal(denied.actor, alice.id);
    const filtered = events.events.find((e) => e.outcome === 'success' && e.details.interaction === 'search' && Number(e.details.withheld) > 0);
    assert.ok(filtered, 'a filtered search records how much was withheld');
    assert.ok(typeof filtered.details.consent_id === 'string');
    assert.ok(JSON.stringify(events.events).indexOf('Bearer') < 0, 'no token in the trail');
  });
});
