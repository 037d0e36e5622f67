/**
 * Regressions for what a fourth adversarial review of the FHIR proxy found (issue 14), on the read
 * side of labels, codes, dates and record types, each against Medplum's FHIR server with real JWTs.
 * Each case also shows what stays visible, so a proxy that hid everything would fail too.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Rig } from './oracle/proxy-rig.ts';
import { ACT, one, patients } from './oracle/rig-fixtures.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const HIV_LABEL = { meta: { security: [{ system: ACT, code: 'HIV' }] } };
const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });
const prescription = (id: string, medication: string): FhirResource => ({ resourceType: 'MedicationRequest', id, status: 'active', intent: 'order', subject: { reference: 'Patient/p1' }, medicationReference: { reference: medication } });
const ids = (b: Record<string, unknown>) => ((b.entry as { resource: { id: string } }[] | undefined) ?? []).map((e) => e.resource.id).sort();

describe('FHIR proxy: the fourth review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  it('a prescription pinned to an old version of its drug is judged with the drug as it is now too', async () => {
    await rig.reseed([
      ...patients,
      // Version 1 is unlabelled; the current version 2 is labelled HIV.
      one({ resourceType: 'Medication', id: 'med', code: { text: 'drug' } }, { resourceType: 'Medication', id: 'med', code: { text: 'drug' }, ...HIV_LABEL }),
      // Version 1 labelled, the current one not: the pinned version still decides.
      one({ resourceType: 'Medication', id: 'was', code: { text: 'drug' }, ...HIV_LABEL }, { resourceType: 'Medication', id: 'was', code: { text: 'drug' } }),
      one({ resourceType: 'Medication', id: 'plain', code: { text: 'drug' } }, { resourceType: 'Medication', id: 'plain', code: { text: 'drug, renamed' } }),
      one(prescription('pinned-now-labelled', 'Medication/med/_history/1')),
      one(prescription('current-labelled', 'Medication/med')),
      one(prescription('pinned-labelled', 'Medication/was/_history/1')),
      one(prescription('pinned-missing-version', 'Medication/plain/_history/9')),
      one(prescription('pinned-plain', 'Medication/plain/_history/1')),
    ]);
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['HIV'] } });
    const search = await rig.get('/MedicationRequest', jwt);
    assert.equal(search.status, 200, search.text);
    assert.deepEqual(ids(search.body), ['pinned-plain']);
    const [pinned, missing] = [await rig.get('/MedicationRequest/pinned-now-labelled', jwt), await rig.get('/MedicationRequest/none', jwt)];
    assert.deepEqual([pinned.status, pinned.text], [missing.status, missing.text]);
  });

  it('$everything of a Patient the app may not see answers as that of one that does not exist', async () => {
    await rig.reseed([...patients, one({ resourceType: 'Practitioner', id: 'dr1' }), one({ resourceType: 'Patient', id: 'p3', meta: { security: [{ system: CONF, code: 'R' }] } }), one(obs('o1', 'p1'))]);
    // Medplum's in-memory router has no $everything: this answers it as servers that have one do,
    // 404 for an unknown patient, else the Patient and its Observations.
    const upstream = rig.fhir.url;
    const everything: typeof fetch = async (input, init) => {
      const m = /\/Patient\/([^/?]+)\/\$everything/.exec(String(input));
      if (!m) return fetch(input, init);
      const json = { 'content-type': 'application/fhir+json' };
      const patient = await fetch(`${upstream}/Patient/${m[1]}`);
      if (patient.status !== 200) return new Response(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }), { status: 404, headers: json });
      const found = (await (await fetch(`${upstream}/Observation?patient=${m[1]}`)).json()) as { entry?: unknown[] };
      return new Response(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: [{ resource: await patient.json() }, ...(found.entry ?? [])] }), { status: 200, headers: json });
    };
    const tokens = createTokenValidator({ issuer: rig.issuer, jwt: { jwksUri: `${rig.issuer}/jwks` } });
    const proxy = createFhirProxy({ upstream, publicUrl: rig.proxyUrl, tokens, fetch: everything });
    const { url, close } = await proxy.listen(0);
    try {
      const jwt = await rig.mint({ scopes: ['user/Patient.rs', 'user/Observation.rs'], fhirUser: 'Practitioner/dr1', sub: 'd1', consent: { hiddenLabels: ['R'] } });
      const get = async (path: string) => {
        const r = await fetch(url + path, { headers: { authorization: `Bearer ${jwt}` } });
        return { status: r.status, text: await r.text() };
      };
      const [hidden, missing, shown] = [await get('/Patient/p3/$everything'), await get('/Patient/nope/$everything'), await get('/Patient/p1/$everything')];
      assert.deepEqual([hidden.status, hidden.text], [missing.status, missing.text]);
      assert.equal(missing.status, 404, missing.text);
      assert.equal(shown.status, 200, shown.text);
      assert.deepEqual(ids(JSON.parse(shown.text) as Record<string, unknown>), ['o1', 'p1']);
    } finally {
      await close();
    }
  });

  it("a Timing is dated by its events and its repeat together, and a repeat that runs on without bounds dates nothing", async () => {
    await rig.reseed([
      ...patients,
      one(obs('bounds-past-range', 'p1', { effectiveTiming: { event: ['2021-06-20'], repeat: { boundsPeriod: { start: '2021-06-20', end: '2023-01-01' } } } })),
      one(obs('counted', 'p1', { effectiveTiming: { event: ['2021-06-20'], repeat: { frequency: 1, period: 1, periodUnit: 'd', count: 400 } } })),
      one(obs('bounds-in-range', 'p1', { effectiveTiming: { event: ['2021-06-20'], repeat: { boundsPeriod: { start: '2021-06-20', end: '2021-06-25' }, frequency: 2, period: 1, periodUnit: 'd' } } })),
      one(obs('mornings', 'p1', { effectiveTiming: { event: ['2021-06-20', '2021-06-21'], repeat: { when: ['MORN'] } } })),
    ]);
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: [], start: '2021-06-15', end: '2021-06-30' } });
    const r = await rig.get('/Observation', jwt);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(r.body), ['bounds-in-range', 'mornings']);
  });

  it('a sensitive code deeper than the walk reads hides the resource instead of passing unseen', async () => {
    const nest = (depth: number, inner: Record<string, unknown>) => {
      let ext = inner;
      for (let i = 0; i < depth; i++) ext = { url: 'http://example.org/x', extension: [ext] };
      return [ext];
    };
    const code = (c: string) => ({ url: 'http://example.org/x', valueCodeableConcept: { coding: [{ system: ICD10, code: c }] } });
    await rig.reseed([...patients, one(obs('deep-hiv', 'p1', { extension: nest(40, code('B20')) })), one(obs('deep-plain', 'p1', { extension: nest(40, code('J45')) })), one(obs('shallow-plain', 'p1', { extension: nest(5, code('J45')) }))]);
    const hides = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['HIV'] } });
    // What the walk could not read cannot be cleared, whatever it holds.
    assert.deepEqual(ids((await rig.get('/Observation', hides)).body), ['shallow-plain']);
    const hidesNothing = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: [] } });
    assert.deepEqual(ids((await rig.get('/Observation', hidesNothing)).body), ['deep-hiv', 'deep-plain', 'shallow-plain']);
  });

  it('a contained clinical record is judged by its own type and date; contained reference data goes with its container', async () => {
    const report = (id: string, contained: Record<string, unknown>[]): FhirResource => ({ resourceType: 'DiagnosticReport', id, status: 'final', code: { text: id }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2021-06-20', contained });
    await rig.reseed([
      ...patients,
      one(report('old-condition', [{ resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/p1' }, code: { text: 'condition from 2010' }, recordedDate: '2010-01-01' }])),
      one(report('recent-observation', [{ resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2021-06-19' }])),
      one(report('old-observation', [{ resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2019-06-19' }])),
      one(report('performer', [{ resourceType: 'Practitioner', id: 'pr', name: [{ family: 'Lab' }] }])),
    ]);
    const typesAndDates = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: [], resourceTypes: ['DiagnosticReport', 'Observation'], start: '2021-06-01' } });
    const r = await rig.get('/DiagnosticReport', typesAndDates);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(r.body), ['performer', 'recent-observation']);
    const reportsOnly = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: [], resourceTypes: ['DiagnosticReport'] } });
    assert.deepEqual(ids((await rig.get('/DiagnosticReport', reportsOnly)).body), ['performer']);
  });

  it('a resource whose contained resource contains another (which FHIR forbids) is not shown', async () => {
    await rig.reseed([
      ...patients,
      one(obs('nested', 'p1', { contained: [{ ...obs('in', 'p1'), subject: { reference: '#' }, contained: [{ ...obs('in2', 'p1'), ...HIV_LABEL }] }] })),
      one(obs('flat', 'p1', { contained: [{ ...obs('in', 'p1'), subject: { reference: '#' } }] })),
    ]);
    for (const hiddenLabels of [['HIV'], []]) {
      const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels } });
      assert.deepEqual(ids((await rig.get('/Observation', jwt)).body), ['flat'], `hiding [${hiddenLabels}]`);
    }
  });
});
