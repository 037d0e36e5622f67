/**
 * Deterministic regressions for the findings of the outside review of the FHIR proxy (issue 14),
 * each against Medplum's FHIR server (test/helpers/medplum-fhir-server.ts) with real JWT tokens,
 * each checked in full by the differential check (every read, vread, history and search compared
 * with the oracle written from /work/visibility-spec.md) and by explicit assertions.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Rig } from './oracle/proxy-rig.ts';
import { checkWorld } from './oracle/differential.ts';
import { ACT, CONF, ICD10, SNOMED, LOINC } from './oracle/worlds.ts';
import type { FhirResource, SeedHistory } from '../helpers/medplum-fhir-server.ts';
import type { OracleToken } from './oracle/visibility-oracle.ts';

const patients: SeedHistory[] = ['p1', 'p2'].map((id) => ({ versions: [{ resourceType: 'Patient', id }] }));
const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });
const doc = (id: string, patient: string): FhirResource => ({ resourceType: 'DocumentReference', id, status: 'current', content: [{ attachment: { contentType: 'text/plain' } }], subject: { reference: `Patient/${patient}` } });
const one = (...versions: FhirResource[]): SeedHistory => ({ versions });
const concept = (system: string, code: string) => ({ coding: [{ system, code }] });
const consent = (c: NonNullable<OracleToken['consent']>): OracleToken => ({ scopes: ['patient/*.rs'], patient: 'p1', fhirUser: 'Patient/p1', sub: 'u1', consent: c });

describe('FHIR proxy regressions against Medplum', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });
  const differential = async (histories: SeedHistory[], token: OracleToken, counts = [1, 2]) => {
    const problems = await checkWorld(rig, histories, token, { counts });
    assert.deepEqual(problems, []);
  };
  const same = async (jwt: string, a: string, b: string) => {
    const [x, y] = [await rig.get(a, jwt), await rig.get(b, jwt)];
    assert.deepEqual([x.status, x.text], [y.status, y.text], `${a} answers as ${b}`);
    return x;
  };

  it("a patient's token with a user/ scope cannot read another patient's Observation, DocumentReference or Patient", async () => {
    const world = [...patients, one(obs('o1', 'p1')), one(obs('o2', 'p2')), one(doc('d2', 'p2')), one(doc('d1', 'p1'))];
    const token: OracleToken = { scopes: ['user/*.rs'], patient: 'p1', fhirUser: 'Patient/p1', sub: 'u1' };
    await differential(world, token);
    const jwt = await rig.mint(token);
    assert.equal((await same(jwt, '/Observation/o2', '/Observation/nope')).status, 404);
    assert.equal((await same(jwt, '/DocumentReference/d2', '/DocumentReference/nope')).status, 404);
    assert.equal((await same(jwt, '/Patient/p2', '/Patient/nope')).status, 403);
    assert.equal((await rig.get('/Observation/o1', jwt)).status, 200);
    // With no patient claim the fhirUser's Patient confines it.
    await differential(world, { scopes: ['user/*.rs'], fhirUser: 'Patient/p2', sub: 'u2' });
  });

  it('_count=1 paging reveals no hidden count: no total across pages, full pages, only visible matches', async () => {
    const label = { meta: { security: [{ system: ACT, code: 'HIV' }] } };
    const world = [...patients, one(obs('o1', 'p1', label)), one(obs('o2', 'p1')), one(obs('o3', 'p1', label)), one(obs('o4', 'p1')), one(obs('o5', 'p1', label))];
    const token = consent({ hiddenLabels: ['HIV'] });
    await differential(world, token, [1, 2, 3]);
    const jwt = await rig.mint(token);
    const first = (await rig.get('/Observation?_count=1', jwt)).body as { total?: number; entry?: unknown[]; link?: { relation: string; url: string }[] };
    assert.equal(first.total, undefined);
    assert.equal(first.entry?.length, 1);
    const next = first.link?.find((l) => l.relation === 'next')?.url;
    assert.ok(next?.startsWith(`${rig.proxyUrl}/`));
    const last = (await rig.get(next!, jwt)).body as { total?: number; entry?: unknown[]; link?: { relation: string }[] };
    assert.deepEqual([last.total, last.entry?.length, last.link?.some((l) => l.relation === 'next')], [undefined, 1, false]);
  });

  it('a hidden id answers as a nonexistent one: read, vread, _history and an _id search', async () => {
    const world = [...patients, one(obs('o1', 'p1', { meta: { security: [{ system: CONF, code: 'V' }] } })), one(obs('o2', 'p2'))];
    const token = consent({ hiddenLabels: ['R'] });
    await differential(world, token);
    const jwt = await rig.mint(token);
    for (const id of ['o1', 'o2']) {
      assert.equal((await same(jwt, `/Observation/${id}`, '/Observation/nope')).status, 404);
      await same(jwt, `/Observation/${id}/_history/1`, '/Observation/nope/_history/1');
      await same(jwt, `/Observation/${id}/_history`, '/Observation/nope/_history');
      const [a, b] = [await rig.get(`/Observation?_id=${id}`, jwt), await rig.get('/Observation?_id=nope', jwt)];
      assert.deepEqual([a.status, a.body.total, a.body.entry], [b.status, b.body.total, b.body.entry]);
      assert.equal(a.body.total, 0);
    }
  });

  it('old versions of a resource now hidden, now about another patient or deleted are not returned', async () => {
    const world = [
      ...patients,
      one(obs('moved', 'p1'), obs('moved', 'p2')),
      one(obs('labelled', 'p1'), obs('labelled', 'p1', { meta: { security: [{ code: 'psy' }] } })),
      { versions: [obs('gone', 'p1')], deleted: true },
      one(obs('back', 'p2'), obs('back', 'p1')),
    ];
    const token = consent({ hiddenLabels: ['PSY'] });
    await differential(world, token);
    const jwt = await rig.mint(token);
    for (const id of ['moved', 'labelled', 'gone']) await same(jwt, `/Observation/${id}/_history/1`, '/Observation/nope/_history/1');
    // Still visible now: its own past about another patient stays hidden, its own history lists only v2.
    await same(jwt, '/Observation/back/_history/1', '/Observation/nope/_history/1');
    const history = (await rig.get('/Observation/back/_history', jwt)).body as { entry?: { resource?: { meta?: { versionId?: string } } }[] };
    assert.deepEqual(history.entry?.map((e) => e.resource?.meta?.versionId), ['2']);
  });

  it("a contained resource about another patient hides its container", async () => {
    const world = [
      ...patients,
      one(obs('c1', 'p1', { contained: [{ resourceType: 'Patient', id: 'x' }] })),
      one(obs('c2', 'p1', { contained: [obs('inner', 'p2')] })),
      one(obs('c3', 'p1', { contained: [{ ...obs('inner', 'p1'), subject: { reference: '#' } }] })),
      one(obs('c4', 'p1', { contained: [obs('inner', 'p1')] })),
    ];
    await differential(world, { scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1' });
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1' });
    const ids = ((await rig.get('/Observation', jwt)).body.entry as { resource: { id: string } }[]).map((e) => e.resource.id);
    assert.deepEqual(ids, ['c3', 'c4']);
  });

  it('date edges: effectiveTiming, a Period open at the start, an offset that crosses the day boundary', async () => {
    const world = [
      ...patients,
      one(obs('timing-in', 'p1', { effectiveTiming: { event: ['2021-06-15', '2021-06-20T10:00:00Z'] } })),
      one(obs('timing-out', 'p1', { effectiveTiming: { event: ['2021-06-15', '2021-07-01'] } })),
      one(obs('bounds', 'p1', { effectiveTiming: { repeat: { boundsPeriod: { start: '2021-06-16' } } } })),
      one(obs('open-start', 'p1', { effectivePeriod: { end: '2021-06-20' } })),
      one(obs('crosses', 'p1', { effectiveDateTime: '2021-06-30T23:30:00-05:00' })),
      one(obs('crosses-back', 'p1', { effectiveDateTime: '2021-06-15T01:00:00+09:00' })),
      one(obs('no-offset', 'p1', { effectiveDateTime: '2021-06-20T12:00:00' })),
      one(obs('month', 'p1', { effectiveDateTime: '2021-06' })),
      one(obs('undated', 'p1')),
      one({ resourceType: 'Condition', id: 'cond', subject: { reference: 'Patient/p1' }, recordedDate: '2021-06-20', onsetPeriod: { start: '2020-01-01' } }),
    ];
    const token = consent({ hiddenLabels: [], start: '2021-06-15', end: '2021-06-30' });
    await differential(world, token, [2]);
    const jwt = await rig.mint(token);
    const ids = ((await rig.get('/Observation', jwt)).body.entry as { resource: { id: string } }[]).map((e) => e.resource.id);
    // A whole month, an open end or start, an offset into July or into June 14th: outside.
    assert.deepEqual(ids, ['timing-in']);
    await differential(world, consent({ hiddenLabels: [], start: '2021-06-01' }), [3]);
    await differential(world, consent({ hiddenLabels: [], end: '2021-06-15' }), [3]);
  });

  it('labels and codes in every form: case, ActCode OID, old URL, ICD under OID, component, interpretation, evidence, stage, medicationReference', async () => {
    const world = [
      ...patients,
      one({ resourceType: 'Medication', id: 'med-hiv', code: concept('http://snomed.info/sct/', '86406008') }),
      one({ resourceType: 'Medication', id: 'med-ok', code: concept(SNOMED, '44054006') }),
      one(obs('lbl-oid', 'p1', { meta: { security: [{ system: 'urn:oid:2.16.840.1.113883.5.4', code: 'hiv' }] } })),
      one(obs('lbl-old', 'p1', { meta: { security: [{ system: 'http://hl7.org/fhir/v3/ActCode', code: 'Eth' }] } })),
      one(obs('lbl-unrelated', 'p1', { meta: { security: [{ system: 'http://example.org/labels', code: 'HIV' }] } })),
      one(obs('icd-oid', 'p1', { code: concept('urn:oid:2.16.840.1.113883.6.90', 'b20.1') })),
      one(obs('component', 'p1', { component: [{ code: concept('urn:oid:2.16.840.1.113883.6.1', '7917-8') }] })),
      one(obs('interpretation', 'p1', { interpretation: [concept(ICD10, 'F10.2')] })),
      one(obs('value', 'p1', { valueCodeableConcept: concept(LOINC, '4548-4') })),
      one({ resourceType: 'Condition', id: 'evidence', subject: { reference: 'Patient/p1' }, code: { text: 'x' }, evidence: [{ code: [concept(ICD10, 'F321')] }] }),
      one({ resourceType: 'Condition', id: 'stage', subject: { reference: 'Patient/p1' }, code: { text: 'x' }, stage: [{ summary: concept('urn:oid:2.16.840.1.113883.6.96', '66214007') }] }),
      one({ resourceType: 'Condition', id: 'fine', subject: { reference: 'Patient/p1' }, code: concept(ICD10, 'E11.9') }),
      one({ resourceType: 'MedicationRequest', id: 'mr-hiv', status: 'active', intent: 'order', subject: { reference: 'Patient/p1' }, medicationReference: { reference: 'Medication/med-hiv' } }),
      one({ resourceType: 'MedicationRequest', id: 'mr-ok', status: 'active', intent: 'order', subject: { reference: 'Patient/p1' }, medicationReference: { reference: 'Medication/med-ok' } }),
      one({ resourceType: 'MedicationRequest', id: 'mr-missing', status: 'active', intent: 'order', subject: { reference: 'Patient/p1' }, medicationReference: { reference: 'Medication/none' } }),
    ];
    const token = consent({ hiddenLabels: ['ETH', 'PSY', 'HIV'] });
    await differential(world, token, [2]);
    const jwt = await rig.mint(token);
    const ids = async (type: string) => ((await rig.get(`/${type}`, jwt)).body.entry as { resource: { id: string } }[] | undefined)?.map((e) => e.resource.id) ?? [];
    assert.deepEqual(await ids('Observation'), ['lbl-unrelated', 'value']);
    assert.deepEqual(await ids('Condition'), ['fine']);
    assert.deepEqual(await ids('MedicationRequest'), ['mr-ok']);
  });

  it('a search parameter the proxy does not know goes to the server, whose answer is still filtered; nothing is written', async () => {
    await rig.reseed([...patients, one(obs('o1', 'p1')), one(obs('o2', 'p2'))]);
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1' });
    const answer = await rig.get('/Observation?no-such-parameter=1', jwt);
    assert.ok(answer.status < 500, answer.text);
    const shown = ((answer.body.entry as { resource: { id: string } }[] | undefined) ?? []).map((e) => e.resource.id);
    assert.ok(!shown.includes('o2'), "another patient's data never comes back");
    assert.deepEqual(rig.fhir.writes(), []);
  });

  it("a patient/ scope on a token without a patient in context reaches only the patient user's own record", async () => {
    await rig.reseed([...patients, one(obs('o1', 'p1')), one(obs('o2', 'p2'))]);
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], fhirUser: 'Patient/p1', sub: 'u1' });
    assert.equal((await rig.get('/Observation/o1', jwt)).status, 200);
    assert.equal((await rig.get('/Observation/o2', jwt)).status, 404);
    const practitioner = await rig.mint({ scopes: ['patient/*.rs'], fhirUser: 'Practitioner/d1', sub: 'u2' });
    assert.equal((await rig.get('/Observation/o1', practitioner)).status, 403, 'a practitioner needs a patient in context for patient/ scopes');
  });
});
