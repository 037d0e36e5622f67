/**
 * Regressions for what a fifth adversarial review of the FHIR proxy found (issue 14): the cost of
 * judging drugs, written references the proxy cannot judge, false refusals of legitimate writes,
 * paging links longer than a request may be, and a `_search` spelt another way. Against Medplum's
 * FHIR server with real JWTs; each case also shows what still works.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Answer, type Rig } from './oracle/proxy-rig.ts';
import { ACT, MFA, PATCH, diagnostics, one, patients } from './oracle/rig-fixtures.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const ETH = { meta: { security: [{ system: ACT, code: 'ETH' }] } };
const obs = (id: string, patient = 'p1', extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, effectiveDateTime: '2021-06-01', ...extra });
const statement = (id: string, medication: string) => ({ resourceType: 'MedicationStatement', id, status: 'active', subject: { reference: 'Patient/p1' }, medicationReference: { reference: medication } });
const ids = (a: Answer) => ((a.body.entry as { resource: { id: string } }[] | undefined) ?? []).map((e) => e.resource.id).sort();
const nextOf = (a: Answer) => (a.body.link as { relation: string; url: string }[] | undefined)?.find((l) => l.relation === 'next')?.url;

/** Every literal `Type/id` reference in a body, as a server that checks references on write reads them. */
function references(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) references(x, out);
  else if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.reference === 'string' && /^[A-Z][A-Za-z]+\/[^/]+$/.test(o.reference)) out.push(o.reference);
    for (const x of Object.values(o)) references(x, out);
  }
  return out;
}

describe('FHIR proxy: the fifth review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  describe('judging drugs costs what the drugs that exist cost, not what a resource names', () => {
    it('a write pinning thousands of made-up drug versions is refused without reading them', async () => {
      await rig.reseed([...patients, one({ resourceType: 'Medication', id: 'm', code: { text: 'drug' } })]);
      const jwt = await rig.mint({ scopes: ['patient/Observation.crus'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } }, undefined, MFA());
      const contained = Array.from({ length: 3000 }, (_, i) => statement(`c${i}`, `Medication/m/_history/${i + 10}`));
      const mark = rig.fhir.requests.length;
      const created = await rig.send('POST', '/Observation', jwt, obs('x', 'p1', { contained }));
      assert.equal(created.status, 403, created.text);
      assert.ok(rig.fhir.requests.length - mark <= 5, `one write made ${rig.fhir.requests.length - mark} upstream requests`);
    });

    it('a stored resource pinning many versions is hidden, and costs one history read per drug', async () => {
      const many = Array.from({ length: 3000 }, (_, i) => statement(`c${i}`, `Medication/m/_history/${i + 10}`));
      // Sixteen pins of made-up versions of one drug: judged, with one read of its history.
      const few = Array.from({ length: 16 }, (_, i) => statement(`c${i}`, `Medication/m/_history/${i + 10}`));
      await rig.reseed([
        ...patients,
        one({ resourceType: 'Medication', id: 'm', code: { text: 'drug' } }, { resourceType: 'Medication', id: 'm', code: { text: 'drug, renamed' } }),
        one(obs('planted', 'p1', { contained: many })),
        one(obs('sixteen', 'p1', { contained: few })),
        one(obs('old-version', 'p1', { contained: [statement('c', 'Medication/m/_history/1')] })),
        one(obs('plain')),
      ]);
      const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
      const mark = rig.fhir.requests.length;
      const search = await rig.get('/Observation', jwt);
      const made = rig.fhir.requests.slice(mark);
      assert.equal(search.status, 200);
      // The made-up versions cannot be read, so what pins them is hidden; a real old version is read.
      assert.deepEqual(ids(search), ['old-version', 'plain']);
      assert.ok(made.length <= 4, `one search made ${made.length} upstream requests: ${made.map((r) => r.url).join(' ')}`);
    });

    it('a drug pinned at an older version that carries a hidden label still hides what names it', async () => {
      await rig.reseed([
        ...patients,
        one({ resourceType: 'Medication', id: 'm', code: { text: 'drug' }, ...ETH }, { resourceType: 'Medication', id: 'm', code: { text: 'drug' } }),
        one({ ...statement('pinned-labelled', 'Medication/m/_history/1') } as FhirResource),
        one({ ...statement('pinned-current', 'Medication/m/_history/2') } as FhirResource),
        one({ ...statement('current', 'Medication/m') } as FhirResource),
      ]);
      const jwt = await rig.mint({ scopes: ['patient/MedicationStatement.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } });
      assert.deepEqual(ids(await rig.get('/MedicationStatement', jwt)), ['current', 'pinned-current']);
    });
  });

  describe('written references', () => {
    it('a reference to patient data of a type the proxy cannot judge is refused alike, hidden or missing, on a server that checks references', async () => {
      await rig.reseed([
        ...patients,
        one({ resourceType: 'EpisodeOfCare', id: 'eoc-p2', status: 'active', patient: { reference: 'Patient/p2' } }),
        one({ resourceType: 'Communication', id: 'comm-eth', status: 'completed', subject: { reference: 'Patient/p1' }, ...ETH }),
        one({ resourceType: 'Practitioner', id: 'dr' }),
      ]);
      const upstream = rig.fhir.url;
      // As HAPI (by default) and Medplum (checkReferencesOnWrite) do.
      const checking: typeof fetch = async (input, init) => {
        if (init?.method === 'POST' || init?.method === 'PUT') {
          for (const ref of references(JSON.parse(String(init.body)))) {
            if ((await fetch(`${upstream}/${ref}`)).status !== 200) {
              return new Response(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: `Invalid reference ${ref}` }] }), { status: 400, headers: { 'content-type': 'application/fhir+json' } });
            }
          }
        }
        return fetch(input, init);
      };
      const tokens = createTokenValidator({ issuer: rig.issuer, jwt: { jwksUri: `${rig.issuer}/jwks` } });
      const proxy = createFhirProxy({ upstream, publicUrl: rig.proxyUrl, tokens, fetch: checking });
      const { url, close } = await proxy.listen(0);
      try {
        const jwt = await rig.mint({ scopes: ['patient/Observation.crs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } }, undefined, MFA());
        const write = async (focus: string) => {
          const r = await fetch(`${url}/Observation`, { method: 'POST', headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(obs('new', 'p1', { focus: [{ reference: focus }] })) });
          const body = (await r.json()) as { issue?: { diagnostics?: string }[] };
          return [r.status, body.issue?.[0]?.diagnostics];
        };
        const refused = [403, 'this resource cannot be written: it is outside what the patient shared with this app'];
        for (const ref of ['EpisodeOfCare/eoc-p2', 'EpisodeOfCare/none', 'Communication/comm-eth', 'Communication/none', 'Foo/1']) assert.deepEqual(await write(ref), refused, ref);
        // Reference data is not patient data: a reference to it is the server's to check.
        assert.equal((await write('Practitioner/dr'))[0], 201);
      } finally {
        await close();
      }
    });

    it('more references to patient data than are checked is its own 400, counted from the body, not a consent refusal', async () => {
      const results = Array.from({ length: 101 }, (_, i) => obs(`r${i}`));
      await rig.reseed([...patients, ...results.map((r) => one(r))]);
      const jwt = await rig.mint({ scopes: ['patient/Observation.rs', 'patient/DiagnosticReport.crs'], patient: 'p1', sub: 'u1' }, undefined, MFA());
      const report = (refs: string[]) => ({ resourceType: 'DiagnosticReport', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2021-06-01', result: refs.map((reference) => ({ reference })) });
      assert.equal((await rig.send('POST', '/DiagnosticReport', jwt, report(results.slice(0, 100).map((r) => `Observation/${r.id}`)))).status, 201);
      const readable = await rig.send('POST', '/DiagnosticReport', jwt, report(results.map((r) => `Observation/${r.id}`)));
      const missing = await rig.send('POST', '/DiagnosticReport', jwt, report(results.map((_, i) => `Observation/none${i}`)));
      for (const answer of [readable, missing]) {
        assert.equal(answer.status, 400, answer.text);
        assert.equal(diagnostics(answer), 'a resource written through this server may refer to at most 100 resources of patient data');
      }
    });
  });

  it('a patch that tests, then shrinks a resource stored larger than the body limit, applies', async () => {
    await rig.reseed([...patients, one(obs('huge', 'p1', { valueString: 'z'.repeat(1_100_000) }))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.cruds'], patient: 'p1', sub: 'u1' }, undefined, MFA());
    const grow = await rig.send('PATCH', '/Observation/huge', jwt, [{ op: 'add', path: '/note', value: [{ text: 'more' }] }], PATCH);
    assert.equal(grow.status, 413, 'growing it further is still too large');
    const tested = await rig.send('PATCH', '/Observation/huge', jwt, [{ op: 'test', path: '/status', value: 'final' }, { op: 'remove', path: '/valueString' }], PATCH);
    assert.equal(tested.status, 200, tested.text.slice(0, 300));
    assert.equal((await rig.get('/Observation/huge', jwt)).body.valueString, undefined);
  });

  describe('paging links', () => {
    it('every search the proxy accepts pages with links the proxy accepts; longer ones are 414 up front', async () => {
      await rig.reseed([...patients, one(obs('o1')), one(obs('o2'))]);
      const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
      const first = await rig.get(`/Observation?_count=1&code:not=${'x'.repeat(3400)}`, jwt);
      assert.equal(first.status, 200, first.text.slice(0, 200));
      assert.deepEqual(ids(first), ['o1']);
      const next = nextOf(first);
      assert.ok(next);
      const second = await rig.get(next, jwt);
      assert.equal(second.status, 200, `a next link of ${next.length} characters: ${second.text.slice(0, 100)}`);
      assert.deepEqual(ids(second), ['o2']);
      // Too long to page through: refused whether or not there would be a next page.
      for (const count of ['1', '10']) {
        const long = await rig.get(`/Observation?_count=${count}&code:not=${'x'.repeat(5000)}`, jwt);
        assert.equal(long.status, 414, long.text.slice(0, 200));
        assert.match(diagnostics(long), /too long to page through/);
      }
    });

    it('a next link holds the search once: it is not much longer than the request', async () => {
      await rig.reseed([...patients, one(obs('o1')), one(obs('o2'))]);
      const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
      const path = `/Observation?_count=1&code:not=${'x'.repeat(2000)}`;
      const next = nextOf(await rig.get(path, jwt));
      assert.ok(next && next.length < 1.4 * path.length + 1200, `a ${path.length}-character search has a ${next?.length}-character link`);
    });
  });

  it('a POST _search spelt %5Fsearch applies its form body, as the plain form does, and pages', async () => {
    await rig.reseed([...patients, one(obs('o1', 'p1', { code: { text: 'a' } })), one(obs('o2', 'p1', { code: { text: 'b' } })), one(obs('o3', 'p1', { code: { text: 'b' } }))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    const form = 'application/x-www-form-urlencoded';
    for (const path of ['/Observation/_search', '/Observation/%5Fsearch', '/Observation/%5fsearch/']) {
      const found = await rig.send('POST', `${path}?_count=1`, jwt, '_id=o2,o3', form);
      assert.equal(found.status, 200, `${path}: ${found.text.slice(0, 200)}`);
      assert.deepEqual(ids(found), ['o2'], path);
      const next = nextOf(found);
      assert.ok(next, path);
      assert.deepEqual(ids(await rig.get(next, jwt)), ['o3'], path);
      assert.equal((await rig.send('POST', path, jwt, '_id=o2,o3', 'text/plain')).status, 415, path);
    }
  });
});
