import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startMedplumFhirServer, type MedplumFhirServer } from '../helpers/medplum-fhir-server.ts';

type Bundle = { resourceType: string; type: string; total?: number; link?: { relation: string; url: string }[]; entry?: { fullUrl?: string; search?: { mode: string }; request?: { method: string }; resource?: { resourceType: string; id: string; meta?: { versionId?: string } } }[] };

/** The Medplum-backed FHIR server the differential tests run against answers like a FHIR server. */
describe('Medplum FHIR server harness', () => {
  let fhir: MedplumFhirServer;
  const get = async (path: string) => {
    const res = await fetch(`${fhir.url}${path}`, { headers: { accept: 'application/fhir+json' } });
    return { status: res.status, type: res.headers.get('content-type'), etag: res.headers.get('etag'), body: (await res.json()) as Record<string, unknown> };
  };
  const obs = (id: string, patient: string, extra: Record<string, unknown> = {}) => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });

  before(async () => {
    fhir = await startMedplumFhirServer();
  });
  after(async () => {
    await fhir?.close();
  });
  beforeEach(async () => {
    fhir.reset();
    await fhir.seed([
      { versions: [{ resourceType: 'Patient', id: 'p1' }] },
      { versions: [obs('o1', 'p1'), obs('o1', 'p2', { status: 'amended' }), obs('o1', 'p1', { status: 'corrected' })] },
      { versions: [obs('o2', 'p1')] },
      { versions: [obs('o3', 'p1', { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }] })] },
      { versions: [obs('o4', 'p2')], deleted: true },
      { versions: [obs('o5', 'p1')] },
    ]);
  });

  it('reads and vreads with the chosen ids and version ids', async () => {
    const read = await get('/Observation/o1');
    assert.equal(read.status, 200);
    assert.match(read.type ?? '', /^application\/fhir\+json/);
    assert.equal(read.etag, 'W/"3"');
    assert.deepEqual([read.body.id, (read.body.meta as { versionId: string }).versionId, read.body.status], ['o1', '3', 'corrected']);
    const v2 = await get('/Observation/o1/_history/2');
    assert.equal(v2.status, 200);
    assert.deepEqual(v2.body.subject, { reference: 'Patient/p2' });
    assert.equal((await get('/Observation/o1/_history/9')).status, 404);
    const missing = await get('/Observation/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.resourceType, 'OperationOutcome');
  });

  it('keeps deleted resources as Medplum does: 410 Gone, history with a tombstone', async () => {
    assert.equal((await get('/Observation/o4')).status, 410);
    const history = await get('/Observation/o4/_history');
    assert.equal(history.status, 200);
    const entries = (history.body as Bundle).entry ?? [];
    assert.deepEqual(entries.map((e) => [e.request?.method, e.resource?.meta?.versionId]), [['DELETE', undefined], ['PUT', '1']]);
    assert.equal((await get('/Observation/nope/_history')).status, 404);
  });

  it('lists instance history newest first, the same way every time', async () => {
    for (let i = 0; i < 3; i++) {
      const history = (await get('/Observation/o1/_history')).body as Bundle;
      assert.equal(history.type, 'history');
      assert.deepEqual(history.entry?.map((e) => e.resource?.meta?.versionId), ['3', '2', '1']);
      assert.ok(history.entry?.every((e) => e.fullUrl === `${fhir.url}/Observation/o1`));
    }
  });

  it('searches by patient, subject, _id and category, with absolute fullUrls', async () => {
    const ids = async (q: string) => ((await get(`/Observation?${q}`)).body as Bundle).entry?.map((e) => e.resource?.id) ?? [];
    assert.deepEqual(await ids('patient=p1'), ['o1', 'o2', 'o3', 'o5']);
    assert.deepEqual(await ids('subject=Patient/p1'), ['o1', 'o2', 'o3', 'o5']);
    assert.deepEqual(await ids('_id=o2,o4,o5'), ['o2', 'o5']);
    assert.deepEqual(await ids('category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory'), ['o3']);
    const bundle = (await get('/Observation?_id=o3&_include=Observation:patient')).body as Bundle;
    assert.deepEqual(bundle.entry?.map((e) => [e.resource?.resourceType, e.search?.mode, e.fullUrl]), [
      ['Observation', 'match', `${fhir.url}/Observation/o3`],
      ['Patient', 'include', `${fhir.url}/Patient/p1`],
    ]);
  });

  it('pages with _count through absolute next links to the end', async () => {
    let next: string | undefined = `${fhir.url}/Observation?_count=3`;
    const pages: (string | undefined)[][] = [];
    while (next) {
      assert.ok(next.startsWith(`${fhir.url}/Observation?`), next);
      const res = await fetch(next);
      const bundle = (await res.json()) as Bundle;
      assert.equal(bundle.total, 4);
      pages.push(bundle.entry?.map((e) => e.resource?.id) ?? []);
      next = bundle.link?.find((l) => l.relation === 'next')?.url;
    }
    assert.deepEqual(pages, [['o1', 'o2', 'o3'], ['o5']]);
    const first = (await get('/Observation')).body as Bundle;
    assert.equal(first.entry?.length, 4);
    assert.equal(first.link?.find((l) => l.relation === 'next'), undefined);
  });

  it('creates, updates to a new version and deletes, and records what it received', async () => {
    const created = await fetch(`${fhir.url}/Observation`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'n' } }) });
    assert.equal(created.status, 201);
    const body = (await created.json()) as { id: string; meta: { versionId: string } };
    assert.equal(created.headers.get('location'), `${fhir.url}/Observation/${body.id}/_history/${body.meta.versionId}`);
    const stale = await fetch(`${fhir.url}/Observation/o2`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json', 'if-match': 'W/"7"' }, body: JSON.stringify(obs('o2', 'p1', { status: 'amended' })) });
    assert.equal(stale.status, 412);
    const updated = await fetch(`${fhir.url}/Observation/o2`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json', 'if-match': 'W/"1"' }, body: JSON.stringify(obs('o2', 'p1', { status: 'amended' })) });
    assert.equal(updated.status, 200);
    assert.equal(((await get('/Observation/o2/_history')).body as Bundle).entry?.length, 2);
    assert.equal((await fetch(`${fhir.url}/Observation/o2`, { method: 'DELETE' })).status, 200);
    assert.equal((await get('/Observation/o2')).status, 410);
    assert.deepEqual(fhir.writes().map((r) => `${r.method} ${r.url}`), ['POST /Observation', 'PUT /Observation/o2', 'PUT /Observation/o2', 'DELETE /Observation/o2']);
  });

  it('refuses what Medplum refuses: chained parameters, type-level history', async () => {
    assert.equal((await get('/Observation?subject.name=x')).status, 400);
    assert.equal((await get('/Observation/_history')).status, 404);
  });
});
