/**
 * Regressions for what a fresh review of "hidden answers as missing" found (issue 14): an upstream
 * page that is only read when hidden matches exist must not fail where the first one succeeds, a
 * written reference must not tell a hidden resource from a missing one, and names from the data
 * must not reach the rule tables' prototypes. Against Medplum's FHIR server, with real JWTs.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRig, type Answer, type Rig } from './oracle/proxy-rig.ts';
import { ACT, MFA, one, patients } from './oracle/rig-fixtures.ts';
import type { FhirResource } from '../helpers/medplum-fhir-server.ts';

const obs = (id: string, patient: string, extra: Record<string, unknown> = {}): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: `Patient/${patient}` }, effectiveDateTime: '2021-06-01', ...extra });
const ids = (a: Answer) => ((a.body.entry as { resource: { id: string } }[] | undefined) ?? []).map((e) => e.resource.id).sort();

describe('FHIR proxy: hidden answers as missing, a fresh review', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  it('refuses, before sending anything, a search too long for every upstream page to be asked for', async () => {
    await rig.reseed([...patients, one(obs('o1', 'p1'))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1' });
    const mark = rig.fhir.requests.length;
    const long = await rig.get(`/Observation?code=${'x'.repeat(6000)}`, jwt);
    assert.equal(long.status, 414, long.text.slice(0, 200));
    assert.match(long.text, /too long to pass on/);
    const posted = await rig.send('POST', '/Observation/_search', jwt, `code=${'x'.repeat(6000)}`, 'application/x-www-form-urlencoded');
    assert.equal(posted.status, 414, 'a POST _search is sent as a GET, so it is held to the same length');
    assert.equal(rig.fhir.requests.length, mark, 'nothing reached the server');
    assert.equal((await rig.get(`/Observation?code=${'x'.repeat(3000)},o1`, jwt)).status, 200, 'a long search that fits goes through');
  });

  it('refuses a write that refers to patient data the app may not read, missing and hidden alike', async () => {
    await rig.reseed([
      ...patients,
      one(obs('mine', 'p1')),
      one(obs('theirs', 'p2')),
      one(obs('labelled', 'p1', { meta: { security: [{ system: ACT, code: 'ETH' }] } })),
    ]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.crs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: ['ETH'] } }, undefined, MFA());
    const mark = rig.fhir.writes().length;
    const withMember = (target: string) => rig.send('POST', '/Observation', jwt, obs('new', 'p1', { hasMember: [{ reference: target }] }));
    const [theirs, labelled, missing, unparsable] = [await withMember('Observation/theirs'), await withMember('Observation/labelled'), await withMember('Observation/none'), await withMember('Observation?code=x')];
    for (const answer of [theirs, labelled, unparsable]) assert.deepEqual([answer.status, answer.text], [missing.status, missing.text]);
    assert.equal(missing.status, 403, missing.text);
    assert.match(missing.text, /outside what the patient shared with this app/);
    assert.equal(rig.fhir.writes().length, mark, 'nothing was written');
    // What the app may read it may refer to; reference data is not patient data, and is not checked.
    assert.equal((await withMember('Observation/mine')).status, 201);
    assert.equal((await rig.send('POST', '/Observation', jwt, obs('new', 'p1', { performer: [{ reference: 'Practitioner/anyone' }] }))).status, 201);
  });

  it('a contained resource typed as a prototype key is malformed, not a crash', async () => {
    await rig.reseed([...patients, ...['toString', 'constructor', '__proto__', 'hasOwnProperty'].map((type, i) => one(obs(`odd-${i}`, 'p1', { contained: [{ resourceType: type, id: 'c' }] }))), one(obs('plain', 'p1'))]);
    const jwt = await rig.mint({ scopes: ['patient/Observation.rs'], patient: 'p1', sub: 'u1', consent: { hiddenLabels: [], start: '2020-01-01' } });
    const search = await rig.get('/Observation', jwt);
    assert.equal(search.status, 200, search.text);
    assert.deepEqual(ids(search), ['plain']);
    const [odd, none] = [await rig.get('/Observation/odd-0', jwt), await rig.get('/Observation/none', jwt)];
    assert.deepEqual([odd.status, odd.text], [none.status, none.text]);
  });
});
