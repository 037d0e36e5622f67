/**
 * Regressions for the breaks a second adversarial review of the FHIR proxy found (issue 14), each
 * against Medplum's FHIR server with real JWT tokens: includes that came with hidden matches,
 * app-chosen ids on create, JSON Patch judged otherwise than PUT, dot-segment ids, periods that end
 * before they start, and key-bound tokens taken as bearer tokens.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Answer, type Rig } from './oracle/proxy-rig.ts';
import { checkWorld } from './oracle/differential.ts';
import { ACT, LOINC, SNOMED } from './oracle/worlds.ts';
import type { FhirResource, SeedHistory } from '../helpers/medplum-fhir-server.ts';
import type { OracleToken } from './oracle/visibility-oracle.ts';

const patients: SeedHistory[] = ['p1', 'p2'].map((id) => ({ versions: [{ resourceType: 'Patient', id }] }));
const one = (...versions: FhirResource[]): SeedHistory => ({ versions });
const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });
const hiv = { meta: { security: [{ system: ACT, code: 'HIV' }] } };
const PATCH = 'application/json-patch+json';
const MFA = () => ({ acr: 'urn:custos:acr:mfa', auth_time: Math.floor(Date.now() / 1000) });
type Bundle = { total?: number; entry?: { search?: { mode?: string }; resource: { resourceType: string; id: string } }[] };
const keys = (a: Answer) => ((a.body as Bundle).entry ?? []).map((e) => `${e.search?.mode === 'include' ? '+' : ''}${e.resource.resourceType}/${e.resource.id}`);
const diagnostics = (a: Answer) => String((a.body as { issue?: { diagnostics?: string }[] }).issue?.[0]?.diagnostics);

describe('FHIR proxy: the second review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  it('_include and _revinclude bring only what the matches shown refer to, or are referred to by', async () => {
    const world = [
      ...patients,
      one(obs('o-hiv', 'p1', hiv)),
      one(obs('o-fine', 'p1')),
      one(obs('panel-hidden', 'p1', { ...hiv, hasMember: [{ reference: 'Observation/o-fine' }] })),
      one(obs('panel-shown', 'p1', { hasMember: [{ reference: 'Observation/o-hiv' }] })),
    ];
    const token: OracleToken = { scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['HIV'] } };
    await rig.reseed(world);
    const jwt = await rig.mint(token);
    const same = async (a: string, b: string) => {
      const [x, y] = [await rig.get(a, jwt), await rig.get(b, jwt)];
      assert.deepEqual([x.status, keys(x), x.body.total], [y.status, keys(y), y.body.total], `${a} answers as ${b}`);
      return x;
    };
    // A hidden match brings nothing: not its patient, not what it has as members, not its panel.
    assert.deepEqual(keys(await same('/Observation?_id=o-hiv&_include=Observation:patient', '/Observation?_id=none&_include=Observation:patient')), []);
    assert.deepEqual(keys(await same('/Observation?_id=panel-hidden&_include=Observation:has-member', '/Observation?_id=none&_include=Observation:has-member')), []);
    assert.deepEqual(keys(await same('/Observation?_id=o-hiv&_revinclude=Observation:has-member', '/Observation?_id=none&_revinclude=Observation:has-member')), []);
    // A shown match brings what it names, and what names it, when those are visible.
    assert.deepEqual(keys(await rig.get('/Observation?_id=o-fine,o-hiv&_include=Observation:patient', jwt)), ['Observation/o-fine', '+Patient/p1']);
    assert.deepEqual(keys(await rig.get('/Observation?_id=o-fine&_revinclude=Observation:has-member', jwt)), ['Observation/o-fine'], 'its panel is hidden');
    assert.deepEqual(keys(await rig.get('/Observation?_id=panel-shown&_include=Observation:has-member', jwt)), ['Observation/panel-shown'], 'its member is hidden');
    const paged = await rig.get('/Observation?_include=Observation:patient&_count=1', jwt);
    assert.deepEqual(keys(paged), ['Observation/o-fine', '+Patient/p1']);
    const next = (paged.body as { link?: { relation: string; url: string }[] }).link?.find((l) => l.relation === 'next')?.url;
    assert.deepEqual(keys(await rig.get(next!, jwt)), ['Observation/panel-shown', '+Patient/p1'], 'every page asks for its own includes');
    assert.deepEqual(rig.fhir.writes(), []);
  });

  it('an include the server does not know fails alike whatever matches; bad include syntax is refused before anything is sent', async () => {
    await rig.reseed([...patients, one(obs('o-hiv', 'p1', hiv)), one(obs('o-fine', 'p1'))]);
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['HIV'] } });
    const hidden = await rig.get('/Observation?_id=o-hiv&_include=Observation:no-such-param', jwt);
    const missing = await rig.get('/Observation?_id=none&_include=Observation:no-such-param', jwt);
    const withoutLinks = (a: Answer) => [a.status, JSON.stringify({ ...a.body, link: undefined })];
    assert.deepEqual(withoutLinks(hidden), withoutLinks(missing));
    assert.equal(hidden.status, 200);
    const shown = await rig.get('/Observation?_include=Observation:no-such-param', jwt);
    assert.equal(shown.status, 400, 'with matches shown the server is asked, and its refusal is a plain 400');
    assert.equal(diagnostics(shown), 'the FHIR server could not apply _include or _revinclude; check their search parameters');
    const before = rig.fhir.requests.length;
    for (const bad of ['_include=patient', '_include=Patient:link', '_include:iterate=Observation:patient', '_revinclude:recurse=Observation:has-member', '_include:bogus=Observation:patient', '_revinclude=Observation:has member']) {
      const answer = await rig.get(`/Observation?${bad}`, jwt);
      assert.equal(answer.status, 400, bad);
      assert.equal(answer.body.resourceType, 'OperationOutcome');
    }
    assert.equal(rig.fhir.requests.length, before, 'nothing reached the server');
    // Any other refusal of a search by the server is the proxy's own plain 400 as well.
    const refused = await rig.get('/Observation?date=not-a-date', jwt);
    if (refused.status !== 200) assert.deepEqual([refused.status, diagnostics(refused)], [400, 'the FHIR server refused this search; check its parameters']);
  });

  it('a create never forwards the id in its body, so it cannot probe which ids exist', async () => {
    await rig.reseed([...patients, one(obs('theirs', 'p2')), one(obs('mine', 'p1'))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.cruds'], patient: 'p1', sub: 'u1' }, undefined, MFA());
    const created: Answer[] = [];
    for (const id of ['theirs', 'mine', 'never-was']) {
      const mark = rig.fhir.requests.length;
      const answer = await rig.send('POST', '/Observation', jwt, { ...obs(id, 'p1'), meta: { versionId: '7', lastUpdated: '2020-01-01T00:00:00Z' } });
      assert.equal(answer.status, 201, `${id}: ${answer.text}`);
      assert.notEqual(answer.body.id, id);
      const sent = rig.fhir.requests.slice(mark).filter((r) => r.method === 'POST');
      assert.equal(sent.length, 1);
      const body = JSON.parse(sent[0]!.body) as { id?: string; meta?: { versionId?: string } };
      assert.deepEqual([body.id, body.meta?.versionId], [undefined, undefined], 'the server assigns the id and version');
      created.push(answer);
    }
    const theirs = (await (await fetch(`${rig.fhir.url}/Observation/theirs`)).json()) as FhirResource;
    assert.equal((theirs.subject as { reference: string }).reference, 'Patient/p2', "the other patient's record is untouched");
  });

  it('a JSON Patch is applied to the current version and the result judged exactly as a PUT of it', async () => {
    await rig.reseed([
      ...patients,
      one({ resourceType: 'Medication', id: 'med-hiv', code: { coding: [{ system: SNOMED, code: '86406008' }] } }),
      one({ resourceType: 'Medication', id: 'med-ok', code: { coding: [{ system: SNOMED, code: '44054006' }] } }),
      one(obs('lab', 'p1', { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }] })),
      one({ resourceType: 'MedicationRequest', id: 'mr', status: 'active', intent: 'order', subject: { reference: 'Patient/p1' }, medicationReference: { reference: 'Medication/med-ok' } }),
    ]);
    const consent = { hiddenLabels: ['HIV'] };
    const wide = await rig.mint({ scopes: ['patient/Observation.cruds', 'patient/MedicationRequest.cruds', 'patient/Medication.rs'], patient: 'p1', sub: 'u1', consent }, undefined, MFA());
    const finalOnly = await rig.mint({ scopes: ['patient/Observation.rus?status=final'], patient: 'p1', sub: 'u1', consent }, undefined, MFA());
    const patch = (path: string, jwt: string, ops: unknown) => rig.send('PATCH', path, jwt, ops, PATCH);
    const refusedWithoutWrite = async (path: string, jwt: string, ops: unknown, status: number, why: RegExp) => {
      const mark = rig.fhir.writes().length;
      const answer = await patch(path, jwt, ops);
      assert.equal(answer.status, status, `${JSON.stringify(ops)}: ${answer.text}`);
      assert.match(diagnostics(answer), why);
      assert.equal(rig.fhir.writes().length, mark, 'nothing was written');
    };
    const forbidden = /this resource cannot be written/;
    await refusedWithoutWrite('/Observation/lab', finalOnly, [{ op: 'replace', path: '/status', value: 'amended' }], 403, forbidden);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'add', path: '/component', value: [{ code: { coding: [{ system: LOINC, code: '7917-8' }] } }] }], 403, forbidden);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'add', path: '/extension', value: [{ url: 'http://example.org/x', valueCodeableConcept: { coding: [{ system: SNOMED, code: '86406008' }] } }] }], 403, forbidden);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'replace', path: '/subject/reference', value: 'Patient/p2' }], 403, /would not belong to the patient/);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'add', path: '/meta/security', value: [{ system: ACT, code: 'HIV' }] }], 403, forbidden);
    await refusedWithoutWrite('/MedicationRequest/mr', wide, [{ op: 'replace', path: '/medicationReference/reference', value: 'Medication/med-hiv' }], 403, forbidden);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'test', path: '/status', value: 'preliminary' }], 422, /a test operation failed/);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'remove', path: '/no/such' }], 422, /does not exist/);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'replace', path: '/id', value: 'other' }], 400, /type or id/);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'frobnicate', path: '/status' }], 400, /not valid/);
    await refusedWithoutWrite('/Observation/lab', wide, [{ op: 'add', path: '/__proto__/polluted', value: 1 }], 422, /cannot be applied/);
    await refusedWithoutWrite('/Observation/lab', wide, Array.from({ length: 1001 }, () => ({ op: 'test', path: '/status', value: 'final' })), 400, /at most 1000 operations/);
    await refusedWithoutWrite('/Observation/lab', wide, [], 400, /non-empty array/);
    await refusedWithoutWrite('/Observation/none', wide, [{ op: 'replace', path: '/status', value: 'amended' }], 404, /not found/);
    assert.equal(({} as { polluted?: unknown }).polluted, undefined);

    // Allowed: sent as the update it amounts to, guarded by the version that was judged.
    const mark = rig.fhir.requests.length;
    const ok = await patch('/Observation/lab', wide, [{ op: 'replace', path: '/status', value: 'amended' }, { op: 'add', path: '/note', value: [{ text: 'checked' }] }]);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.status, 'amended');
    const put = rig.fhir.requests.slice(mark).find((r) => r.method !== 'GET')!;
    assert.deepEqual([put.method, put.url, put.headers['if-match']], ['PUT', '/Observation/lab', 'W/"1"']);
    assert.deepEqual((JSON.parse(put.body) as { note?: unknown }).note, [{ text: 'checked' }]);
    const stale = await patch('/Observation/lab', wide, [{ op: 'replace', path: '/status', value: 'final' }]);
    assert.equal(stale.status, 200, 'the next patch applies to version 2');
    const conflict = await rig.send('PATCH', '/MedicationRequest/mr', wide, [{ op: 'replace', path: '/status', value: 'on-hold' }], PATCH);
    assert.equal(conflict.status, 200, conflict.text);
  });

  it('an id of dots is refused before anything is sent, however it is spelt', async () => {
    await rig.reseed([...patients, one(obs('o1', 'p1')), one(obs('o2', 'p2'))]);
    const jwt = await rig.mint({ scopes: ['patient/*.cruds'], patient: 'p1', sub: 'u1' }, undefined, MFA());
    const mark = rig.fhir.requests.length;
    const cases: [string, string][] = [
      ['GET', '/Observation/..'],
      ['GET', '/Observation/.'],
      ['GET', '/Observation/%2e%2e'],
      ['GET', '/Observation/%2E'],
      ['GET', '/Observation/...'],
      ['GET', '/Observation/o1/_history/..'],
      ['GET', '/Observation/../_history'],
      ['GET', '/Patient/../Observation'],
      ['GET', '/Patient/%2e%2e/$everything'],
      ['DELETE', '/Observation/..'],
    ];
    for (const [method, path] of cases) {
      const answer = await rig.send(method, path, jwt);
      assert.equal(answer.status, 400, `${method} ${path}: ${answer.text}`);
      assert.equal(answer.body.resourceType, 'OperationOutcome');
    }
    const put = await rig.send('PUT', '/Observation/..', jwt, obs('..', 'p1'));
    assert.equal(put.status, 400);
    assert.deepEqual(rig.fhir.requests.slice(mark), [], 'the FHIR server heard nothing');
    assert.equal((await rig.send('GET', '/Observation/o1.v2', jwt)).status, 404, 'dots inside an id are still an id');
  });

  it('a Period that ends before it starts hides the resource under a date range', async () => {
    const world = [
      ...patients,
      one(obs('inverted-wide', 'p1', { effectivePeriod: { start: '2022-06-01', end: '2020-06-01' } })),
      one(obs('inverted-inside', 'p1', { effectivePeriod: { start: '2021-06-20', end: '2021-06-16' } })),
      one(obs('inside', 'p1', { effectivePeriod: { start: '2021-06-16', end: '2021-06-20' } })),
    ];
    const token: OracleToken = { scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: [], start: '2021-06-15', end: '2021-06-30' } };
    assert.deepEqual(await checkWorld(rig, world, token, { counts: [1] }), []);
    const jwt = await rig.mint(token);
    assert.deepEqual(keys(await rig.get('/Observation', jwt)), ['Observation/inside']);
    assert.equal((await rig.get('/Observation/inverted-wide', jwt)).status, 404);
  });

  it('a token bound to a key (cnf) is refused as a bearer token with 401 invalid_token', async () => {
    await rig.reseed([...patients, one(obs('o1', 'p1'))]);
    const token: OracleToken = { scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1' };
    assert.equal((await rig.get('/Observation/o1', await rig.mint(token))).status, 200);
    for (const cnf of [{ jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' }, { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' }]) {
      const jwt = await rig.mint(token, undefined, { cnf });
      const res = await fetch(`${rig.proxyUrl}/Observation/o1`, { headers: { authorization: `Bearer ${jwt}` } });
      assert.equal(res.status, 401, JSON.stringify(cnf));
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
      const dpop = await fetch(`${rig.proxyUrl}/Observation/o1`, { headers: { authorization: `DPoP ${jwt}` } });
      assert.equal(dpop.status, 401, 'the DPoP scheme is not taken either');
    }
  });
});
