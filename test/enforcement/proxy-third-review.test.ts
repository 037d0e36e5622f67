/**
 * Regressions for what a third adversarial review of the FHIR proxy found (issue 14), each against
 * Medplum's FHIR server with real JWT tokens.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Answer, type Rig } from './oracle/proxy-rig.ts';
import type { FhirResource, SeedHistory } from '../helpers/medplum-fhir-server.ts';

const patients: SeedHistory[] = ['p1', 'p2'].map((id) => ({ versions: [{ resourceType: 'Patient', id }] }));
const one = (...versions: FhirResource[]): SeedHistory => ({ versions });
const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });
const PATCH = 'application/json-patch+json';
const MFA = () => ({ acr: 'urn:custos:acr:mfa', auth_time: Math.floor(Date.now() / 1000) });
const diagnostics = (a: Answer) => String((a.body as { issue?: { diagnostics?: string }[] }).issue?.[0]?.diagnostics);

describe('FHIR proxy: the third review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });
  const seed = async (world: SeedHistory[]) => {
    rig.fhir.reset();
    await rig.fhir.seed(world);
  };

  it('a JSON Patch needs read as well as update: a test operation or the patched resource would show what the token may not read', async () => {
    await seed([...patients, one(obs('lab', 'p1', { valueString: 'secret value', category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }] }))]);
    const updateOnly = await rig.mint({ scopes: ['patient/Observation.u'], patient: 'p1', sub: 'u1' }, undefined, MFA());
    const readsVitals = await rig.mint({ scopes: ['patient/Observation.u', 'patient/Observation.r?category=vital-signs'], patient: 'p1', sub: 'u1' }, undefined, MFA());
    const readsAll = await rig.mint({ scopes: ['patient/Observation.ru'], patient: 'p1', sub: 'u1' }, undefined, MFA());
    const probe = [{ op: 'test', path: '/valueString', value: 'secret value' }];
    const mark = rig.fhir.writes().length;

    const refused = await rig.send('PATCH', '/Observation/lab', updateOnly, probe, PATCH);
    assert.equal(refused.status, 403, refused.text);
    assert.match(diagnostics(refused), /needs read \(r\) as well as update \(u\)/);
    assert.doesNotMatch(refused.text, /secret value/);
    // A read scope that does not cover this resource leaves it as hidden as one that does not exist.
    const [narrow, none] = [await rig.send('PATCH', '/Observation/lab', readsVitals, probe, PATCH), await rig.send('PATCH', '/Observation/none', readsVitals, probe, PATCH)];
    assert.deepEqual([narrow.status, narrow.text], [none.status, none.text]);
    assert.equal(narrow.status, 404);
    assert.equal(rig.fhir.writes().length, mark, 'nothing was written');

    // An update-only token still updates with PUT, which shows it only what it sent.
    const put = await rig.send('PUT', '/Observation/lab', updateOnly, obs('lab', 'p1', { status: 'amended' }));
    assert.equal(put.status, 200, put.text);
    const patched = await rig.send('PATCH', '/Observation/lab', readsAll, [{ op: 'replace', path: '/status', value: 'final' }], PATCH);
    assert.equal(patched.status, 200, patched.text);
  });
});
