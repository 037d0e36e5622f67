/**
 * Regressions for what a review of the fifth review's fixes found (issue 14): a page's drug reads
 * were not charged to its budget, so resources naming many made-up drugs (stored through a token
 * whose consent hides nothing) made one search cost hundreds of upstream reads once a consent hid
 * a label. Against Medplum's FHIR server with real JWTs.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Answer, type Rig } from './oracle/proxy-rig.ts';
import { ACT, MFA, one, patients } from './oracle/rig-fixtures.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const ETH = { meta: { security: [{ system: ACT, code: 'ETH' }] } };
const obs = (id: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2021-06-01', ...extra });
const statement = (id: string, medication: string) => ({ resourceType: 'MedicationStatement', id, status: 'active', subject: { reference: 'Patient/p1' }, medicationReference: { reference: medication } });
const ids = (a: Answer) => ((a.body.entry as { resource: { id: string } }[] | undefined) ?? []).map((e) => e.resource.id);
const drugReads = (rig: Rig, mark: number) => rig.fhir.requests.slice(mark).filter((r) => r.url.startsWith('/Medication')).length;
const panel = { coding: [{ system: 'http://loinc.org', code: 'panel' }] };
const fake = (id: string) => obs(id, { contained: Array.from({ length: 16 }, (_, j) => statement(`c${j}`, `Medication/fake-${id}-${j}`)) });
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
    // The first page is cut where the heavy members begin (at a batch of matches), the next ones in halves.
    assert.ok(sizes.length >= 3 && sizes[0]! >= 90 && sizes[0]! < 150, `pages of ${sizes.join(', ')}`);

    const refused = await rig.get('/Observation?code=http://loinc.org|heavy&_include=Observation:has-member', jwt);
    assert.equal(refused.status, 400, refused.text.slice(0, 200));
    assert.match(String((refused.body.issue as { diagnostics: string }[])[0]!.diagnostics), /too many drugs to judge/);
    const plain = await rig.get('/Observation?code=http://loinc.org|heavy', jwt);
    assert.deepEqual(ids(plain), ['heavy']);
  });

  // What a review of the budget itself found: it was kept in hundredths of a read, but every run
  // of matches judged, and every batch of includes, reads its new drugs in a request of its own.
  it('one page reads drugs within ten requests however many upstream pages it reads, one new drug a page', async () => {
    const world = Array.from({ length: 1200 }, (_, i) => one(obs(`h-${i}`, { ...ETH, ...(i % 100 === 0 ? { contained: [statement('c', `Medication/fake-${i}`)] } : {}) })));
    await rig.reseed([...patients, ...world, one(obs('visible'))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
    const seen: string[] = [];
    let target: string | undefined = '/Observation';
    for (let pages = 0; target && pages < 10; pages += 1) {
      const mark = rig.fhir.requests.length;
      const page = await rig.get(target, jwt);
      assert.equal(page.status, 200, page.text.slice(0, 200));
      assert.ok(drugReads(rig, mark) <= 10, `page ${pages + 1} made ${drugReads(rig, mark)} drug reads`);
      seen.push(...ids(page));
      target = nextOf(page);
    }
    assert.equal(target, undefined);
    assert.deepEqual(seen, ['visible']);
  });

  it("a page's includes read their drugs within ten requests, however the drugs fall into batches", async () => {
    // 1,000 panels; in each hundred, seven have a member naming 16 made-up drugs (112 a hundred).
    const heavy = (i: number) => i % 100 < 7;
    const panels = Array.from({ length: 1000 }, (_, i) => one(obs(`panel-${String(i).padStart(4, '0')}`, { code: panel, ...(heavy(i) ? { hasMember: [{ reference: `Observation/m-${i}` }] } : {}) })));
    const members = Array.from({ length: 1000 }, (_, i) => i)
      .filter(heavy)
      .map((i) => one(fake(`m-${i}`)));
    await rig.reseed([...patients, ...panels, ...members]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
    let shown = 0;
    let target: string | undefined = '/Observation?code=http://loinc.org|panel&_count=1000&_include=Observation:has-member';
    for (let pages = 0; target && pages < 10; pages += 1) {
      const mark = rig.fhir.requests.length;
      const page = await rig.get(target, jwt);
      assert.equal(page.status, 200, page.text.slice(0, 300));
      assert.ok(drugReads(rig, mark) <= 10, `the includes of page ${pages + 1} made ${drugReads(rig, mark)} drug reads`);
      shown += ids(page).length;
      target = nextOf(page);
    }
    assert.equal(target, undefined);
    assert.equal(shown, 1000, 'every panel, and no member (each names made-up drugs)');
  });

  it('a write whose references name more drugs than a page may read is refused as if one were hidden, within ten reads', async () => {
    const results = Array.from({ length: 100 }, (_, i) => one(fake(`r${i}`)));
    await rig.reseed([...patients, ...results, one(obs('plain'))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs', 'patient/DiagnosticReport.crs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } }, undefined, MFA());
    const report = (refs: string[]) => ({ resourceType: 'DiagnosticReport', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2021-06-01', result: refs.map((reference) => ({ reference })) });
    const mark = rig.fhir.requests.length;
    const written = await rig.send('POST', '/DiagnosticReport', jwt, report(results.map((_, i) => `Observation/r${i}`)));
    assert.equal(written.status, 403, written.text.slice(0, 200));
    assert.ok(drugReads(rig, mark) <= 10, `one write made ${drugReads(rig, mark)} drug reads`);
    assert.equal((await rig.send('POST', '/DiagnosticReport', jwt, report(['Observation/plain']))).status, 201);
  });

  it("a page's includes cost the same whether or not a hidden match read some of their drugs first", async () => {
    const pinned = (n: number) => Array.from({ length: n }, (_, k) => statement(`c${k}`, `Medication/m${k}/_history/1`));
    const drugs = Array.from({ length: 10 }, (_, k) => one({ resourceType: 'Medication', id: `m${k}`, code: { text: 'old' } }, { resourceType: 'Medication', id: `m${k}`, code: { text: 'new' } }));
    const search = '/Observation?code=http://loinc.org|panel&_include=Observation:has-member';
    // A visible member naming ten drugs pinned at an older version: an _id read and ten history reads.
    const world = [...patients, ...drugs, one(obs('member', { contained: pinned(10) })), one(obs('panel-v', { code: panel, hasMember: [{ reference: 'Observation/member' }] }))];
    const answers: [number, string][] = [];
    for (const extra of [[], [one(obs('hidden', { code: panel, ...ETH, contained: [statement('c', 'Medication/m0/_history/1')] }))]]) {
      await rig.reseed([...world, ...extra]);
      const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
      const got = await rig.get(search, jwt);
      answers.push([got.status, got.text]);
    }
    assert.equal(answers[0]![0], 400, answers[0]![1].slice(0, 200));
    assert.deepEqual(answers[1], answers[0], 'the hidden match changes nothing');
  });

  it('a drug read by _id stays within the request length the proxy keeps to, whatever ids hidden matches name', async () => {
    const long = (tag: string) => tag.padEnd(64, 'x');
    const planted = Array.from({ length: 20 }, (_, i) => one(obs(`planted-${i}`, { contained: Array.from({ length: 16 }, (_, j) => statement(`c${j}`, `Medication/${long(`f${i}-${j}-`)}`)) })));
    await rig.reseed([...patients, one({ resourceType: 'Medication', id: long('real-'), code: { text: 'drug' } }), ...planted, one(obs('real', { contained: [statement('c', `Medication/${long('real-')}`)] }))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
    const mark = rig.fhir.requests.length;
    const found = await rig.get('/Observation?_count=1000', jwt);
    assert.deepEqual(ids(found), ['real']);
    const longest = Math.max(...rig.fhir.requests.slice(mark).filter((r) => r.url.startsWith('/Medication')).map((r) => r.url.length));
    assert.ok(longest <= 6144, `a drug read of ${longest} characters`);
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

describe('FHIR proxy: a page cut short for its includes', () => {
  let rig: Rig;
  let proxy: { url: string; close: () => Promise<void> };
  const events: { details: Record<string, unknown> }[] = [];
  before(async () => {
    rig = await startRig();
    const tokens = createTokenValidator({ issuer: rig.issuer, jwt: { jwksUri: `${rig.issuer}/jwks` } });
    proxy = await createFhirProxy({ upstream: rig.fhir.url, tokens, audience: false, audit: (e) => void events.push(e as never) }).listen(0, '127.0.0.1');
  });
  after(async () => {
    await proxy?.close();
    await rig?.close();
  });
  const get = async (target: string, jwt: string): Promise<Answer> => {
    const res = await fetch(target.startsWith('http') ? target : `${proxy.url}${target}`, { headers: { authorization: `Bearer ${jwt}`, accept: 'application/fhir+json' } });
    const text = await res.text();
    return { status: res.status, text, body: JSON.parse(text) as Record<string, unknown> };
  };
  const entries = (a: Answer) => (a.body.entry as { resource: { id: string }; search?: { mode?: string } }[] | undefined) ?? [];
  const includes = (a: Answer) => entries(a).filter((e) => e.search?.mode === 'include').map((e) => e.resource.id).sort();
  const matches = (a: Answer) => entries(a).filter((e) => e.search?.mode !== 'include').map((e) => e.resource.id);

  it('brings what the matches it shows include, a match it leaves to the next page too, and audits each hidden match once', async () => {
    const members = (i: number) =>
      i === 0 ? [{ reference: 'Observation/member-ok' }, { reference: 'Observation/panel-149' }] : i < 100 ? [{ reference: 'Observation/member-ok' }] : [{ reference: `Observation/member-${i}-a` }, { reference: `Observation/member-${i}-b` }];
    const panels = Array.from({ length: 150 }, (_, i) => one(obs(`panel-${String(i).padStart(3, '0')}`, { code: panel, hasMember: members(i) })));
    // Five hidden panels after the point where the page is cut.
    const hidden = Array.from({ length: 5 }, (_, k) => one(obs(`panel-120-hidden-${k}`, { code: panel, ...ETH })));
    const heavy = Array.from({ length: 50 }, (_, k) => [one(fake(`member-${k + 100}-a`)), one(fake(`member-${k + 100}-b`))]).flat();
    await rig.reseed([...patients, one(obs('member-ok')), ...panels.slice(0, 121), ...hidden, ...panels.slice(121), ...heavy]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
    const search = '/Observation?code=http://loinc.org|panel&_include=Observation:has-member';

    // The first 90 matches (a batch of them), uncut.
    const plain = await get(`${search}&_count=90`, jwt);
    assert.equal(plain.status, 200, plain.text.slice(0, 300));
    assert.deepEqual(includes(plain), ['member-ok', 'panel-149']);
    events.length = 0;
    const cut = await get(`${search}&_count=150`, jwt);
    assert.equal(cut.status, 200, cut.text.slice(0, 300));
    assert.deepEqual(matches(cut), matches(plain), 'the cut page shows the same 90 matches');
    assert.deepEqual(includes(cut), includes(plain), 'and brings what they include');
    const withheld = [Number(events.at(-1)!.details.withheld)];
    const shown = matches(cut);
    let target = nextOf(cut);
    for (let pages = 1; target && pages < 10; pages += 1) {
      const p = await get(target, jwt);
      assert.equal(p.status, 200, p.text.slice(0, 300));
      withheld.push(Number(events.at(-1)!.details.withheld));
      shown.push(...matches(p));
      target = nextOf(p);
    }
    assert.equal(new Set(shown).size, 150, 'every panel once');
    assert.equal(shown.length, 150);
    assert.equal(withheld.reduce((a, b) => a + b, 0), 5, `withheld per page ${withheld.join(', ')} (5 hidden matches in all)`);
  });
});
