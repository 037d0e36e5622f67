/**
 * Regressions for what a review of the sealed paging links found (issue 14): the proxy follows
 * the FHIR server's paging by position only, sending its own checked parameters on every upstream
 * page, so nothing an app smuggles into a server's `next` link reaches the server, and a link's
 * length follows the request alone. Against Medplum's FHIR server, with real JWTs.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Rig } from './oracle/proxy-rig.ts';
import { one } from './oracle/rig-fixtures.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';
import { nextUpstreamPage } from '../../src/enforcement/upstream-paging.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const cat = (code: string) => ({ category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code }] }] });
const obs = (id: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: 'Patient/p1' }, ...extra });
const patient = one({ resourceType: 'Patient', id: 'p1' });
type Page = { entry?: { resource: { id: string } }[]; link: { relation: string; url: string }[] };
const nextOf = (b: unknown) => (b as Page).link.find((l) => l.relation === 'next')?.url;
const idsOf = (b: unknown) => ((b as Page).entry ?? []).map((e) => e.resource.id);

describe('FHIR proxy: paging by position only', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });
  const visible = (n: number) => Array.from({ length: n }, (_, i) => one(obs(`v${String(i).padStart(3, '0')}`, cat('vital-signs'))));

  it('reads a long result across upstream pages, asking each with the checked parameters and a position', async () => {
    await rig.reseed([patient, ...visible(250)]);
    const token = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    const mark = rig.fhir.requests.length;
    const got: string[] = [];
    let answer = await rig.get('/Observation?_sort=_id&_count=50', token);
    for (let page = 0; ; page++) {
      assert.equal(answer.status, 200, answer.text);
      got.push(...idsOf(answer.body));
      const next = nextOf(answer.body);
      if (!next || page > 10) break;
      answer = await rig.get(next, token);
    }
    assert.deepEqual(got, Array.from({ length: 250 }, (_, i) => `v${String(i).padStart(3, '0')}`));
    const searches = rig.fhir.requests.slice(mark).filter((r) => r.url.startsWith('/Observation?'));
    assert.ok(searches.length >= 3, 'more than one upstream page was read');
    for (const r of searches) {
      const names = [...new URLSearchParams(r.url.split('?')[1]).keys()].sort();
      assert.deepEqual(names.filter((n) => n !== '_offset'), ['_count', '_sort', 'patient'], r.url);
    }
  });

  it("sends nothing a server's next link adds: only its position is taken", async () => {
    await rig.reseed([patient, ...visible(150)]);
    // A server that writes into its next links what it was never asked (or copies raw what was).
    const tampering: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!/\/Observation\?/.test(String(input))) return res;
      const bundle = (await res.json()) as { link?: { relation: string; url: string }[] };
      for (const l of bundle.link ?? []) if (l.relation === 'next') l.url += '&_elements=id&_summary=true&_has:Observation:has-member:code=x&patient=p2';
      return new Response(JSON.stringify(bundle), { status: res.status, headers: res.headers });
    };
    const tokens = createTokenValidator({ issuer: rig.issuer, jwt: { jwksUri: `${rig.issuer}/jwks` } });
    const proxy = createFhirProxy({ upstream: rig.fhir.url, publicUrl: rig.proxyUrl, tokens, fetch: tampering });
    const { url, close } = await proxy.listen(0);
    try {
      const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
      const get = async (path: string) => (await fetch(path.startsWith('http') ? path : url + path, { headers: { authorization: `Bearer ${jwt}` } })).json() as Promise<Page>;
      const mark = rig.fhir.requests.length;
      const first = await get('/Observation?_count=100');
      const second = await get(nextOf(first)!.replace(rig.proxyUrl, url));
      assert.equal(idsOf(first).length + idsOf(second).length, 150);
      for (const r of rig.fhir.requests.slice(mark)) {
        assert.doesNotMatch(r.url, /_elements|_summary|_has|patient=p2/, r.url);
      }
    } finally {
      await close();
    }
  });

  it('refuses, at the request, values a server might copy raw into its links', async () => {
    await rig.reseed([patient, ...visible(3)]);
    const token = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    const mark = rig.fhir.requests.length;
    for (const [query, why] of [
      [`_total=${encodeURIComponent('none&_has:Observation:has-member:code=x')}`, /_total must be none, estimate or accurate/],
      [`_sort=${encodeURIComponent('_id&_elements=id')}`, /_sort must be a comma-separated list/],
      [`${encodeURIComponent('code&_summary')}=true`, /is not a FHIR search parameter name/],
    ] as const) {
      const a = await rig.get(`/Observation?${query}`, token);
      assert.equal(a.status, 400, `${query}: ${a.text}`);
      assert.match(a.text, why);
    }
    assert.equal(rig.fhir.requests.length, mark, 'nothing reached the server');
    for (const fine of ['_total=accurate', '_sort=-date,_id', 'code:not=x']) assert.equal((await rig.get(`/Observation?${fine}`, token)).status, 200, fine);
  });

  it('a next link is as long whether or not hidden matches pushed the next page onto another upstream page', async () => {
    const token = await rig.mint({ scopes: ['patient/Observation.rs?category=vital-signs'], patient: 'p1', sub: 'u1' });
    // code:not with a value nothing has: everything matches; its 400 spaces are written `+` by the
    // proxy and `%20` by Medplum, which once made the upstream's own link outgrow the padding.
    const q = `/Observation?_sort=_id&_count=100&code:not=${encodeURIComponent(`${'x '.repeat(400)}y`)}`;
    const lengths: number[] = [];
    for (const world of [visible(101), [one(obs('a-hidden', cat('laboratory'))), ...visible(101)]]) {
      await rig.reseed([patient, ...world]);
      const a = await rig.get(q, token);
      assert.equal(a.status, 200, a.text);
      assert.equal(idsOf(a.body).length, 100);
      lengths.push(nextOf(a.body)!.length);
    }
    assert.equal(lengths[0], lengths[1], `link lengths ${lengths}`);
  });

  it("pages through a long history the same way", async () => {
    await rig.reseed([patient, one(...Array.from({ length: 130 }, (_, i) => obs('long', { valueInteger: i })))]);
    const token = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    let answer = await rig.get('/Observation/long/_history?_count=50', token);
    let versions = 0;
    for (let page = 0; page < 10; page++) {
      assert.equal(answer.status, 200, answer.text);
      versions += idsOf(answer.body).length;
      const next = nextOf(answer.body);
      if (!next) break;
      answer = await rig.get(next, token);
    }
    assert.equal(versions, 130);
  });

  it('takes a position from the paging forms servers use, and nothing from a link to another search', () => {
    const sent: [string, string][] = [['patient', 'p1'], ['_count', '100']];
    assert.deepEqual(nextUpstreamPage('/Observation?patient=Patient%2Fp1&_count=100&_offset=100', '/Observation', sent), { path: '/Observation?patient=p1&_count=100&_offset=100' });
    // HAPI keeps the search and pages from its base.
    assert.deepEqual(nextUpstreamPage('?_getpages=abc-123&_getpagesoffset=100&_count=100&_bundletype=searchset', '/Observation', sent), {
      path: '?_getpages=abc-123&_getpagesoffset=100&_bundletype=searchset&_count=100',
    });
    assert.ok('refused' in nextUpstreamPage('/Patient?_offset=100', '/Observation', sent), 'another search');
    assert.ok('refused' in nextUpstreamPage('/Observation?patient=p1&_count=100&_has:X:y:z=1', '/Observation', sent), 'no position it understands');
  });
});
