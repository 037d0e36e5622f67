/**
 * Regressions for what a review of includes and `$everything` found (issue 14): what an include
 * brings is judged as a read of it would be (type, current version, the scope a revinclude's
 * search needs), and the server's own messages never reach the app. Against Medplum's FHIR
 * server, with servers that behave otherwise played by a wrapped `fetch`.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Rig, type Answer } from './oracle/proxy-rig.ts';
import { ACT, one } from './oracle/rig-fixtures.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const HIV = { meta: { security: [{ system: ACT, code: 'HIV' }] } };
const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, ...extra });
type Bundle = { entry?: { search?: { mode?: string }; resource: Record<string, unknown> & { resourceType: string; id: string } }[] };
const keys = (a: { body: unknown }) => ((a.body as Bundle).entry ?? []).map((e) => `${e.search?.mode === 'include' ? '+' : ''}${e.resource.resourceType}/${e.resource.id}`);
const JSON_HEADERS = { 'content-type': 'application/fhir+json' };

describe('FHIR proxy: the include review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  /** A second proxy in front of the same Medplum, with `fetch` wrapped to act as another server would. */
  async function withProxy(wrap: (upstream: string) => typeof fetch, run: (get: (jwt: string, path: string) => Promise<Answer>) => Promise<void>) {
    const upstream = rig.fhir.url;
    const tokens = createTokenValidator({ issuer: rig.issuer, jwt: { jwksUri: `${rig.issuer}/jwks` } });
    const proxy = createFhirProxy({ upstream, publicUrl: rig.proxyUrl, tokens, fetch: wrap(upstream) });
    const { url, close } = await proxy.listen(0);
    try {
      await run(async (jwt, path) => {
        const r = await fetch(url + path.replace(rig.proxyUrl, ''), { headers: { authorization: `Bearer ${jwt}` } });
        const text = await r.text();
        let body: Record<string, unknown> = {};
        try {
          body = JSON.parse(text) as Record<string, unknown>;
        } catch {
          // status and text tell
        }
        return { status: r.status, text, body };
      });
    } finally {
      await close();
    }
  }

  it('Bundle and Binary resources, refused when asked for, are not brought along by _include or _revinclude', async () => {
    await rig.reseed([
      one({ resourceType: 'Patient', id: 'p1' }),
      one({ resourceType: 'Practitioner', id: 'dr1' }),
      one({ resourceType: 'Binary', id: 'bin', contentType: 'text/plain', data: 'SElWIHBvc2l0aXZl' }),
      // A document Bundle whose entry is an Observation the patient hid (HIV label).
      one({
        resourceType: 'Bundle', id: 'doc', type: 'document', identifier: { system: 'urn:x', value: '1' }, timestamp: '2021-01-01T00:00:00Z',
        entry: [
          { fullUrl: 'urn:uuid:c', resource: { resourceType: 'Composition', id: 'c1', status: 'final', type: { text: 'x' }, subject: { reference: 'Patient/p1' }, date: '2021-01-01', author: [{ reference: 'Practitioner/dr1' }], title: 't' } },
          { fullUrl: 'urn:uuid:o', resource: obs('hiv-result', 'p1', HIV) },
        ],
      }),
      one({ resourceType: 'Composition', id: 'c1', status: 'final', type: { text: 'x' }, subject: { reference: 'Patient/p1' }, date: '2021-01-01', author: [{ reference: 'Practitioner/dr1' }], title: 't', section: [{ entry: [{ reference: 'Binary/bin' }] }] }),
      one({ resourceType: 'List', id: 'l1', status: 'current', mode: 'working', subject: { reference: 'Patient/p1' }, entry: [{ item: { reference: 'Binary/bin' } }, { item: { reference: 'Bundle/doc' } }] }),
    ]);
    const jwt = await rig.mint({ scopes: ['user/*.rs'], fhirUser: 'Practitioner/dr1', sub: 'd1', consent: { hiddenLabels: ['HIV'] } });
    // Asked for directly, both are refused whatever the scopes.
    assert.equal((await rig.get('/Bundle/doc', jwt)).status, 403);
    assert.equal((await rig.get('/Binary/bin', jwt)).status, 403);
    const list = await rig.get('/List?_include=List:item', jwt);
    const composition = await rig.get('/Composition?_include=Composition:entry', jwt);
    const revinclude = await rig.get('/Composition?_revinclude=Bundle:composition', jwt);
    const leaked = ((list.body as Bundle).entry ?? []).find((e) => e.resource.resourceType === 'Bundle')?.resource;
    assert.deepEqual(
      { list: keys(list), composition: keys(composition), revinclude: keys(revinclude), hiddenObservationInside: JSON.stringify(leaked ?? {}).includes('hiv-result') },
      { list: ['List/l1'], composition: ['Composition/c1'], revinclude: ['Composition/c1'], hiddenObservationInside: false },
    );
  });

  it('an included version is shown only while the resource as it is now may be (a server that honours versioned references)', async () => {
    await rig.reseed([
      one({ resourceType: 'Patient', id: 'p1' }),
      one({ resourceType: 'Patient', id: 'p2' }),
      // Labelled HIV since version 1; moved to another patient since version 1.
      one(obs('labelled', 'p1'), obs('labelled', 'p1', HIV)),
      one(obs('moved', 'p1'), obs('moved', 'p2')),
      one(obs('plain', 'p1')),
      one(obs('panel', 'p1', { hasMember: [{ reference: 'Observation/labelled/_history/1' }, { reference: 'Observation/moved/_history/1' }, { reference: 'Observation/plain/_history/1' }] })),
    ]);
    // Medplum ignores versioned references in _include; servers that "include resources and resource
    // versions referenced" (Azure/1up) answer with that version. This does so on top of Medplum.
    const versioned = (upstream: string): typeof fetch => async (input, init) => {
      const res = await fetch(input, init);
      const url = new URL(String(input));
      if (!url.searchParams.getAll('_include').includes('Observation:has-member')) return res;
      const bundle = (await res.json()) as Bundle;
      for (const e of [...(bundle.entry ?? [])]) {
        for (const m of (e.resource.hasMember as { reference: string }[] | undefined) ?? []) {
          if (!m.reference.includes('/_history/')) continue;
          const v = await fetch(`${upstream}/${m.reference}`);
          if (v.status === 200) bundle.entry!.push({ search: { mode: 'include' }, resource: (await v.json()) as Bundle['entry'] extends (infer T)[] | undefined ? T extends { resource: infer R } ? R : never : never });
        }
      }
      return new Response(JSON.stringify(bundle), { status: 200, headers: JSON_HEADERS });
    };
    const jwt = await rig.mint({ scopes: ['patient/*.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['HIV'] } });
    await withProxy(versioned, async (get) => {
      // A vread of those versions is 404, as the README says: the resources as they are now are hidden.
      assert.equal((await get(jwt, '/Observation/labelled/_history/1')).status, 404);
      assert.equal((await get(jwt, '/Observation/moved/_history/1')).status, 404);
      const r = await get(jwt, '/Observation?_id=panel&_include=Observation:has-member');
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(keys(r), ['Observation/panel', '+Observation/plain'], 'a version that is the current one is shown');
    });
  });

  it("$everything drops the server's own outcome entries, as a search does", async () => {
    await rig.reseed([one({ resourceType: 'Patient', id: 'p1' }), one({ resourceType: 'Practitioner', id: 'dr1' }), one(obs('o1', 'p1'))]);
    const everything = (upstream: string): typeof fetch => async (input, init) => {
      const m = /\/Patient\/([^/?]+)\/\$everything/.exec(String(input));
      if (!m) return fetch(input, init);
      const patient = await fetch(`${upstream}/Patient/${m[1]}`);
      if (patient.status !== 200) return new Response('{"resourceType":"OperationOutcome","issue":[]}', { status: 404, headers: JSON_HEADERS });
      const found = (await (await fetch(`${upstream}/Observation?patient=${m[1]}`)).json()) as Bundle;
      const outcome = { search: { mode: 'outcome' }, resource: { resourceType: 'OperationOutcome', id: 'oo', issue: [{ severity: 'information', code: 'suppressed', diagnostics: '2 resources labelled HIV were left out' }] } };
      return new Response(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: [{ resource: await patient.json() }, ...(found.entry ?? []), outcome] }), { status: 200, headers: JSON_HEADERS });
    };
    const jwt = await rig.mint({ scopes: ['user/*.rs'], fhirUser: 'Practitioner/dr1', sub: 'd1', consent: { hiddenLabels: ['HIV'] } });
    await withProxy(everything, async (get) => {
      const r = await get(jwt, '/Patient/p1/$everything');
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(keys(r), ['Patient/p1', 'Observation/o1']);
    });
  });

  it('a token that may read but not search Observations cannot list them through _revinclude', async () => {
    await rig.reseed([one({ resourceType: 'Patient', id: 'p1' }), one(obs('o1', 'p1')), one(obs('o2', 'p1'))]);
    const jwt = await rig.mint({ scopes: ['patient/Patient.rs', 'patient/Observation.r'], patient: 'p1', sub: 'u1' });
    assert.equal((await rig.get('/Observation', jwt)).status, 403, 'a search of Observations is refused');
    assert.equal((await rig.get('/Observation/o1', jwt)).status, 200, 'a read is allowed');
    const r = await rig.get('/Patient?_revinclude=Observation:subject', jwt);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(keys(r), ['Patient/p1'], 'a revinclude is a search of Observations');
    // An include follows a reference the app already sees: read is enough for it.
    const searcher = await rig.mint({ scopes: ['patient/Patient.rs', 'patient/Observation.s'], patient: 'p1', sub: 'u1' });
    assert.deepEqual(keys(await rig.get('/Patient?_revinclude=Observation:subject', searcher)).sort(), ['+Observation/o1', '+Observation/o2', 'Patient/p1']);
    const reader = await rig.mint({ scopes: ['patient/Patient.r', 'patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    assert.deepEqual(keys(await rig.get('/Observation?_id=o1&_include=Observation:subject', reader)), ['Observation/o1', '+Patient/p1']);
  });
});
