/**
 * Regressions for what a third adversarial review of the FHIR proxy found (issue 14), each against
 * Medplum's FHIR server with real JWT tokens.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Rig } from './oracle/proxy-rig.ts';
import { diagnostics, MFA, one, PATCH, patients } from './oracle/rig-fixtures.ts';
import type { FhirResource, SeedHistory } from '../helpers/medplum-fhir-server.ts';

const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });

describe('FHIR proxy: the third review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  it('a JSON Patch needs read as well as update: a test operation or the patched resource would show what the token may not read', async () => {
    await rig.reseed([...patients, one(obs('lab', 'p1', { valueString: 'secret value', category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }] }))]);
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

  it('a paging link is sealed: it does not say, by its content or its length, how many hidden matches lie before the next page', async () => {
    const vital = { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }] };
    const lab = { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }] };
    const hidden = Array.from({ length: 15 }, (_, i) => one(obs(`m${String(i).padStart(2, '0')}`, 'p1', lab)));
    const token = await rig.mint({ scopes: ['patient/Observation.rs?category=vital-signs'], patient: 'p1', sub: 'u1' });
    const firstPage = async (world: SeedHistory[]) => {
      await rig.reseed(world);
      const answer = await rig.get('/Observation?_sort=_id&_count=1', token);
      assert.equal(answer.status, 200, answer.text);
      const body = answer.body as { entry?: { resource: { id: string } }[]; link: { relation: string; url: string }[] };
      const next = body.link.find((l) => l.relation === 'next')?.url;
      assert.ok(next, 'one more visible match, so a next link');
      const second = await rig.get(next, token);
      assert.equal(second.status, 200, second.text);
      return { ids: [...(body.entry ?? []), ...((second.body as typeof body).entry ?? [])].map((e) => e.resource.id), next, second };
    };
    const withHidden = await firstPage([...patients, one(obs('a', 'p1', vital)), ...hidden, one(obs('z', 'p1', vital))]);
    const without = await firstPage([...patients, one(obs('a', 'p1', vital)), one(obs('z', 'p1', vital))]);
    assert.deepEqual(withHidden.ids, ['a', 'z']);
    assert.deepEqual(without.ids, ['a', 'z']);
    assert.equal(withHidden.next.length, without.next.length, 'the links are as long');
    for (const link of [withHidden.next, without.next]) {
      const sealed = new URL(link).searchParams.get('page')!;
      const decoded = Buffer.from(sealed, 'base64url').toString('latin1');
      assert.doesNotMatch(decoded, /_offset|"k"|Observation|vital/, 'nothing in the link is readable');
      // A link changed anywhere is not one the proxy gave out.
      const flipped = `${sealed.slice(0, 20)}${sealed[20] === 'A' ? 'B' : 'A'}${sealed.slice(21)}`;
      const tampered = await rig.get(link.replace(sealed, flipped), token);
      assert.equal(tampered.status, 400, tampered.text);
      assert.match(diagnostics(tampered), /not one this server gave out/);
    }
    // Under another token the link is refused, and says nothing either.
    const other = await rig.mint({ scopes: ['patient/Observation.rs?category=vital-signs'], patient: 'p1', sub: 'u2' });
    assert.equal((await rig.get(without.next, other)).status, 403);
  });

  it('a refused write says the same whatever in a referenced Medication the app cannot read decided it', async () => {
    const SNOMED = 'http://snomed.info/sct';
    await rig.reseed([
      ...patients,
      one({ resourceType: 'Medication', id: 'med-labelled', meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' }] }, code: { text: 'x' } }),
      one({ resourceType: 'Medication', id: 'med-coded', code: { coding: [{ system: SNOMED, code: '86406008' }] } }),
    ]);
    const jwt = await rig.mint({ scopes: ['patient/MedicationRequest.cruds', 'patient/Medication.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['HIV'] } }, undefined, MFA());
    const prescribe = (medication: string) =>
      rig.send('POST', '/MedicationRequest', jwt, { resourceType: 'MedicationRequest', status: 'active', intent: 'order', subject: { reference: 'Patient/p1' }, medicationReference: { reference: `Medication/${medication}` } });
    const mark = rig.fhir.writes().length;
    const [labelled, coded, missing] = [await prescribe('med-labelled'), await prescribe('med-coded'), await prescribe('med-none')];
    for (const answer of [labelled, coded]) assert.deepEqual([answer.status, answer.text], [missing.status, missing.text]);
    assert.equal(missing.status, 403, missing.text);
    assert.match(diagnostics(missing), /cannot be written: it is outside what the patient shared with this app/);
    assert.equal(rig.fhir.writes().length, mark, 'nothing was written');
  });

  it('a paging link holds at another instance given the same secret, and only then', async () => {
    const vital = { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }] };
    await rig.reseed([...patients, one(obs('a', 'p1', vital)), one(obs('b', 'p1', vital))]);
    const token = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    const nextOf = async () => {
      const first = await rig.get('/Observation?_sort=_id&_count=1', token);
      assert.equal(first.status, 200, first.text);
      return (first.body as { link: { relation: string; url: string }[] }).link.find((l) => l.relation === 'next')!.url;
    };
    const secret = Buffer.from('a paging secret shared by the instances');
    try {
      rig.replaceProxy({ pageKey: secret });
      const link = await nextOf();
      rig.replaceProxy({ pageKey: Buffer.from(secret) });
      const elsewhere = await rig.get(link, token);
      assert.equal(elsewhere.status, 200, elsewhere.text);
      assert.deepEqual((elsewhere.body as { entry: { resource: { id: string } }[] }).entry.map((e) => e.resource.id), ['b']);
      rig.replaceProxy({ pageKey: Buffer.from('another secret, another deployment') });
      assert.equal((await rig.get(link, token)).status, 400, 'sealed with another key, it is no link of this server');
    } finally {
      rig.replaceProxy();
    }
  });
});
