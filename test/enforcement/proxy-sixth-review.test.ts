/**
 * Regressions for what a review of the fifth review's fixes found (issue 14): a page's drug reads
 * were not charged to its budget, so resources naming many made-up drugs (stored through a token
 * whose consent hides nothing) made one search cost hundreds of upstream reads once a consent hid
 * a label. Against Medplum's FHIR server with real JWTs.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Answer, type Rig } from './oracle/proxy-rig.ts';
import { ACT, one, patients } from './oracle/rig-fixtures.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const ETH = { meta: { security: [{ system: ACT, code: 'ETH' }] } };
const obs = (id: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2021-06-01', ...extra });
const statement = (id: string, medication: string) => ({ resourceType: 'MedicationStatement', id, status: 'active', subject: { reference: 'Patient/p1' }, medicationReference: { reference: medication } });
const ids = (a: Answer) => ((a.body.entry as { resource: { id: string } }[] | undefined) ?? []).map((e) => e.resource.id);
const nextOf = (a: Answer) => (a.body.link as { relation: string; url: string }[] | undefined)?.find((l) => l.relation === 'next')?.url;

describe('FHIR proxy: the sixth review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  it('a page charges the drugs its matches name to its budget, and paging still brings every visible match', async () => {
    // 300 Observations, each naming 16 drugs that do not exist (so each is hidden), among them
    // ones the app may see: plain, naming a real drug, and one naming a drug with a hidden label.
    const planted = Array.from({ length: 300 }, (_, i) => one(obs(`planted-${i}`, { contained: Array.from({ length: 16 }, (_, j) => statement(`c${j}`, `Medication/fake-${i}-${j}`)) })));
    const visible = ['plain-a', 'plain-b', 'plain-c', 'real-drug'];
    await rig.reseed([
      ...patients,
      one({ resourceType: 'Medication', id: 'ok', code: { text: 'drug' } }),
      one({ resourceType: 'Medication', id: 'eth', code: { text: 'drug' }, ...ETH }),
      one(obs('plain-a')),
      ...planted.slice(0, 150),
      one(obs('plain-b')),
      one(obs('real-drug', { contained: [statement('c', 'Medication/ok')] })),
      one(obs('labelled-drug', { contained: [statement('c', 'Medication/eth')] })),
      ...planted.slice(150),
      one(obs('plain-c')),
    ]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });

    const seen: string[] = [];
    let target: string | undefined = '/Observation?_count=1000';
    let pages = 0;
    while (target && pages < 20) {
      const mark = rig.fhir.requests.length;
      const page = await rig.get(target, jwt);
      assert.equal(page.status, 200, page.text.slice(0, 200));
      const made = rig.fhir.requests.slice(mark);
      const drugReads = made.filter((r) => r.url.startsWith('/Medication')).length;
      // Ten reads' worth of drugs a page, and the one upstream search page it resumes in.
      assert.ok(drugReads <= 10, `page ${pages + 1} made ${drugReads} drug reads`);
      assert.ok(made.length <= 11, `page ${pages + 1} made ${made.length} upstream requests`);
      seen.push(...ids(page));
      target = nextOf(page);
      pages += 1;
    }
    assert.equal(target, undefined, 'paging comes to an end');
    assert.deepEqual(seen.sort(), visible);
    // 4,800 made-up drugs at most 1,000 a page (a request of 100 is ten per cent of a page's budget).
    assert.ok(pages >= 5 && pages <= 7, `${pages} pages`);
  });

  it("a page's includes have a drug budget too: the matches past it go to the next page, and a match whose includes alone pass it is refused", async () => {
    const panel = { coding: [{ system: 'http://loinc.org', code: 'panel' }] };
    const fake = (id: string) => obs(id, { contained: Array.from({ length: 16 }, (_, j) => statement(`c${j}`, `Medication/fake-${id}-${j}`)) });
    // 150 panels: the first 100 have one cheap member; the last 50 have two members each naming
    // 16 made-up drugs (hidden), 1,600 drugs in all.
    const panels = Array.from({ length: 150 }, (_, i) =>
      one(obs(`panel-${String(i).padStart(3, '0')}`, { code: panel, hasMember: i < 100 ? [{ reference: 'Observation/member-ok' }] : [{ reference: `Observation/member-${i}-a` }, { reference: `Observation/member-${i}-b` }] })),
    );
    const members = Array.from({ length: 50 }, (_, k) => [one(fake(`member-${k + 100}-a`)), one(fake(`member-${k + 100}-b`))]).flat();
    const heavy = Array.from({ length: 70 }, (_, k) => one(fake(`heavy-member-${k}`)));
    await rig.reseed([
      ...patients,
      one(obs('member-ok')),
      ...panels,
      ...members,
      ...heavy,
      one(obs('heavy', { code: { coding: [{ system: 'http://loinc.org', code: 'heavy' }] }, hasMember: heavy.map((_, k) => ({ reference: `Observation/heavy-member-${k}` })) })),
    ]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });

    const shown: string[] = [];
    const sizes: number[] = [];
    let target: string | undefined = '/Observation?code=http://loinc.org|panel&_count=150&_include=Observation:has-member';
    while (target && sizes.length < 10) {
      const mark = rig.fhir.requests.length;
      const page = await rig.get(target, jwt);
      assert.equal(page.status, 200, page.text.slice(0, 200));
      const drugReads = rig.fhir.requests.slice(mark).filter((r) => r.url.startsWith('/Medication')).length;
      assert.ok(drugReads <= 10, `page ${sizes.length + 1} made ${drugReads} drug reads`);
      const matches = ((page.body.entry as { resource: { id: string }; search?: { mode?: string } }[] | undefined) ?? []).filter((e) => e.search?.mode !== 'include');
      const included = ids(page).filter((id) => id.startsWith('member'));
      // Only the visible member comes along, and only with the panels that name it.
      assert.deepEqual(included, matches.some((e) => Number(e.resource.id.slice(6)) < 100) ? ['member-ok'] : []);
      shown.push(...matches.map((e) => e.resource.id));
      sizes.push(matches.length);
      target = nextOf(page);
    }
    assert.equal(target, undefined);
    assert.deepEqual(shown.sort(), panels.map((p) => String(p.versions[0]!.id)).sort(), 'every panel is shown once');
    assert.ok(sizes.length >= 3 && sizes[0] === 100, `pages of ${sizes.join(', ')}`);

    const refused = await rig.get('/Observation?code=http://loinc.org|heavy&_include=Observation:has-member', jwt);
    assert.equal(refused.status, 400, refused.text.slice(0, 200));
    assert.match(String((refused.body.issue as { diagnostics: string }[])[0]!.diagnostics), /too many drugs to judge/);
    const plain = await rig.get('/Observation?code=http://loinc.org|heavy', jwt);
    assert.deepEqual(ids(plain), ['heavy']);
  });

  it('a consent that hides no label reads no drugs, whatever the matches name', async () => {
    await rig.reseed([...patients, ...Array.from({ length: 50 }, (_, i) => one(obs(`o${i}`, { contained: Array.from({ length: 16 }, (_, j) => statement(`c${j}`, `Medication/fake-${i}-${j}`)) })))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    const mark = rig.fhir.requests.length;
    const page = await rig.get('/Observation?_count=1000', jwt);
    assert.equal(page.status, 200);
    assert.equal(ids(page).length, 50);
    assert.deepEqual(rig.fhir.requests.slice(mark).map((r) => r.url.split('?')[0]), ['/Observation']);
  });
});
