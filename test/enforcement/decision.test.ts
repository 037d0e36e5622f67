import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  accessFactsFromClaims,
  checkResource,
  collectPage,
  confineToUser,
  decide,
  judgeEntries,
  judgeEntry,
  pageEntries,
  medicationReferences,
  parseFhirRequest,
  rewriteEntry,
  type AccessFacts,
  type FhirInteraction,
  type Permit,
  type PageEntry,
} from '../../src/enforcement/index.ts';
import { parseResourceScope } from '../../src/smart/index.ts';

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const NOW = Date.parse('2025-06-01T00:00:00Z');

function parse(method: string, target: string): FhirInteraction {
  const [path = '', query = ''] = target.split('?');
  const parsed = parseFhirRequest({ method, path, query: new URLSearchParams(query) });
  assert.ok(parsed.ok, `${method} ${target}: ${parsed.ok ? '' : parsed.reason}`);
  return parsed.interaction;
}

function facts(scope: string, extra: Partial<AccessFacts> = {}): AccessFacts {
  return { scopes: scope.split(' ').map(parseResourceScope), aud: [], patient: 'p1', acr: 'urn:custos:acr:password', ...extra };
}

const obs = (id: string, patient: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Observation',
  id,
  subject: { reference: `Patient/${patient}` },
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
  effectiveDateTime: '2021-05-05',
  ...extra,
});

describe('parseFhirRequest (FHIR R4 RESTful API)', () => {
  it('names each interaction', () => {
    const cases: [string, string, string, string | undefined][] = [
      ['GET', '/metadata', 'capabilities', undefined],
      ['GET', '/Observation/1', 'read', 'Observation'],
      ['GET', '/Observation/1/_history/2', 'vread', 'Observation'],
      ['GET', '/Observation/1/_history', 'history', 'Observation'],
      ['GET', '/Observation/_history', 'history', 'Observation'],
      ['GET', '/Observation?code=x', 'search', 'Observation'],
      ['POST', '/Observation/_search', 'search', 'Observation'],
      ['GET', '/Patient/p1/Observation', 'search', 'Observation'],
      ['POST', '/Observation', 'create', 'Observation'],
      ['PUT', '/Observation/1', 'update', 'Observation'],
      ['PATCH', '/Observation/1', 'patch', 'Observation'],
      ['DELETE', '/Observation/1', 'delete', 'Observation'],
      ['GET', '/Patient/p1/$everything', 'everything', 'Patient'],
    ];
    for (const [method, target, kind, type] of cases) {
      const i = parse(method, target);
      assert.equal(i.kind, kind, `${method} ${target}`);
      assert.equal(i.resourceType, type, `${method} ${target}`);
    }
    assert.deepEqual(parse('GET', '/Patient/p1/Observation').compartment, { type: 'Patient', id: 'p1' });
  });

  it('refuses what it does not understand', () => {
    const cases: [string, string, number][] = [
      ['POST', '/', 400],
      ['GET', '/', 400],
      ['GET', '/_history', 400],
      ['GET', '/$export', 400],
      ['GET', '/Observation/$lastn', 400],
      ['GET', '/Observation/1/$validate', 400],
      ['GET', '/Encounter/1/$everything', 400],
      ['PUT', '/Observation', 400],
      ['DELETE', '/Observation', 400],
      ['GET', '/Observation/a%20b', 400],
      ['GET', '/Observation/%E0%A4%A', 400],
      ['GET', '/lowercase', 404],
      ['POST', '/metadata', 405],
      ['DELETE', '/metadata', 405],
      ['GET', '/Observation/1/_history/2/x', 404],
      ['GET', '/Encounter/1/Observation', 400],
      ['HEAD', '/Observation', 405],
      ['GET', '/Observation/_search', 405],
    ];
    for (const [method, target, status] of cases) {
      const [path = '', query = ''] = target.split('?');
      const parsed = parseFhirRequest({ method, path, query: new URLSearchParams(query) });
      assert.equal(parsed.ok, false, `${method} ${target}`);
      if (!parsed.ok) assert.equal(parsed.status, status, `${method} ${target}: ${parsed.reason}`);
    }
  });
});

describe('decide', () => {
  it('needs the SMART permission for the interaction (v1 read = rs, write = cud)', () => {
    assert.equal(decide(parse('GET', '/Observation/1'), facts('patient/Observation.read')).effect, 'allow');
    assert.equal(decide(parse('GET', '/Observation'), facts('patient/Observation.read')).effect, 'allow');
    assert.equal(decide(parse('GET', '/Observation'), facts('patient/Observation.r')).effect, 'deny', 'r alone does not search');
    assert.equal(decide(parse('GET', '/Observation/1'), facts('patient/Observation.s')).effect, 'deny', 's alone does not read');
    const denied = decide(parse('GET', '/Condition'), facts('patient/Observation.rs'));
    assert.equal(denied.effect, 'deny');
    assert.equal(denied.effect === 'deny' && denied.error, 'insufficient_scope');
    assert.equal(decide(parse('GET', '/Condition'), facts('patient/*.rs')).effect, 'allow');
  });

  it('keeps patient/ searches inside the compartment, adding the patient parameter', () => {
    const d = decide(parse('GET', '/Observation?code=x'), facts('patient/Observation.rs')) as Permit;
    assert.deepEqual(d.upstreamParams, [['code', 'x'], ['patient', 'p1']]);
    const named = decide(parse('GET', '/Observation?subject=Patient/p1'), facts('patient/Observation.rs')) as Permit;
    assert.deepEqual(named.upstreamParams, [['subject', 'Patient/p1']], 'already confined: left as it is');
    const patient = decide(parse('GET', '/Patient?name=x'), facts('patient/Patient.rs')) as Permit;
    assert.deepEqual(patient.upstreamParams, [['name', 'x'], ['_id', 'p1']]);
    for (const target of ['/Observation?patient=p2', '/Observation?patient=p1,p2', '/Observation?subject=Patient/p2', '/Patient/p2', '/Patient?_id=p2', '/Patient/p2/Observation', '/Patient/p2/$everything']) {
      const x = decide(parse('GET', target), facts('patient/*.rs'));
      assert.equal(x.effect === 'deny' && x.status, 403, target);
    }
    const noPatient = decide(parse('GET', '/Observation'), facts('patient/Observation.rs', { patient: undefined }));
    assert.equal(noPatient.effect, 'deny');
    const outside = decide(parse('GET', '/Practitioner'), facts('patient/*.rs'));
    assert.equal(outside.effect === 'deny' && outside.status, 403, 'types the proxy cannot tie to a patient are refused');
    const user = decide(parse('GET', '/Practitioner'), facts('user/*.rs', { patient: undefined, sub: 'd', fhirUser: 'Practitioner/d1' })) as Permit;
    assert.deepEqual(user.upstreamParams, [], "a practitioner's user/ scopes are not confined to a patient");
    const nobody = decide(parse('GET', '/Practitioner'), facts('user/*.rs', { patient: undefined, sub: 'x' }));
    assert.equal(nobody.effect === 'deny' && nobody.status, 403, 'user/ scopes of a user who is neither practitioner nor patient allow nothing');
  });

  it('refuses parameters that would count, select by or strip what the proxy checks', () => {
    for (const q of ['_summary=count', '_summary=true', '_elements=code', '_has:Condition:patient:code=x', 'subject.name=x', '_count=0', '_count=abc', '_count=1001', '_format=xml', '_contained=true', '_query=x', '_filter=x']) {
      const d = decide(parse('GET', `/Observation?${q}`), facts('patient/Observation.rs'));
      assert.equal(d.effect === 'deny' && d.status, 400, q);
    }
    const ok = decide(parse('GET', '/Observation?_summary=false&_format=json&_pretty=true&_count=10&_include=Observation:subject'), facts('patient/Observation.rs')) as Permit;
    assert.deepEqual(ok.upstreamParams, [['_include', 'Observation:subject'], ['patient', 'p1']], 'the proxy pages itself: _count is not passed on');
    assert.equal(ok.pageSize, 10);
    assert.equal((decide(parse('GET', '/Observation'), facts('patient/Observation.rs')) as Permit).pageSize, 50);
    const typeHistory = decide(parse('GET', '/Observation/_history'), facts('patient/Observation.rs'));
    assert.equal(typeHistory.effect === 'deny' && typeHistory.status, 400, 'history across a type is refused');
    assert.equal(decide(parse('GET', '/Observation/1?_elements=id'), facts('patient/Observation.rs')).effect, 'deny');
  });

  it('challenges writes made with a password-level login (RFC 9470), with the required acr_values', () => {
    const weak = decide(parse('POST', '/Observation'), facts('patient/Observation.c'), {}, NOW / 1000);
    assert.equal(weak.effect, 'deny');
    assert.equal(weak.effect === 'deny' && weak.status, 401);
    assert.match(weak.effect === 'deny' ? weak.wwwAuthenticate! : '', /error="insufficient_user_authentication".*acr_values="urn:custos:acr:mfa"/);
    assert.equal(decide(parse('POST', '/Observation'), facts('patient/Observation.c', { acr: 'urn:custos:acr:mfa' })).effect, 'allow');
    assert.equal(decide(parse('POST', '/Observation'), facts('patient/Observation.c'), { writeAcrValues: [] }).effect, 'allow');
    const old = decide(parse('DELETE', '/Observation/1'), facts('patient/Observation.d', { acr: 'urn:custos:acr:mfa', authTime: NOW / 1000 - 3600 }), { writeMaxAge: 300 }, NOW / 1000);
    assert.match(old.effect === 'deny' ? old.wwwAuthenticate! : '', /max_age=300/);
    assert.equal(decide(parse('GET', '/Observation/1'), facts('patient/Observation.r')).effect, 'allow', 'reads need no step-up');
  });

  it('refuses types the consent does not share, Bundles and Binaries', () => {
    const consent = { consentId: 'c', version: 1, hiddenLabels: [], resourceTypes: ['Observation'] };
    assert.equal(decide(parse('GET', '/Condition'), facts('patient/*.rs', { consent })).effect, 'deny');
    assert.equal(decide(parse('GET', '/Observation'), facts('patient/*.rs', { consent })).effect, 'allow');
    assert.equal(decide(parse('GET', '/Bundle/1'), facts('patient/*.rs')).effect, 'deny');
    assert.equal(decide(parse('GET', '/Binary/1'), facts('patient/*.rs')).effect, 'deny');
  });
});

describe('checkResource', () => {
  const filter = (scope: string, consent?: AccessFacts['consent']) => ({ scopes: scope.split(' ').map(parseResourceScope), patient: 'p1', consent, bases: ['http://fhir.test'] });
  const hiding = (extra: Partial<NonNullable<AccessFacts['consent']>> = {}) => ({ consentId: 'c', version: 1, hiddenLabels: [{ system: ACT, code: 'PSY' }, { system: ACT, code: 'ETH' }], ...extra });

  it('shows a resource of the patient within the scope, and nothing of another patient', () => {
    assert.deepEqual(checkResource(obs('1', 'p1'), filter('patient/Observation.rs'), ['r']), { visible: true });
    assert.deepEqual(checkResource(obs('1', 'p2'), filter('patient/Observation.rs'), ['r']), { visible: false, reason: 'other_patient' });
    assert.deepEqual(checkResource(obs('1', 'p1', { subject: { reference: 'http://fhir.test/Patient/p1' } }), filter('patient/Observation.rs'), ['r']), { visible: true });
    assert.deepEqual(checkResource(obs('1', 'p1', { subject: { reference: 'http://elsewhere/Patient/p1' } }), filter('patient/Observation.rs'), ['r']).visible, false);
    assert.deepEqual(checkResource(obs('1', 'p2'), filter('user/Observation.rs'), ['r']), { visible: true }, 'user/ scopes are not about one patient');
    assert.deepEqual(checkResource({ resourceType: 'Condition', id: 'x', subject: { reference: 'Patient/p1' } }, filter('patient/Observation.rs'), ['r']), { visible: false, reason: 'not_in_scope' });
    assert.deepEqual(checkResource('nonsense', filter('patient/*.rs'), ['r']), { visible: false, reason: 'malformed' });
  });

  it('matches granular scopes on category, code and status, and nothing on constraints it cannot evaluate', () => {
    const lab = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    assert.equal(checkResource(obs('1', 'p1'), filter(lab), ['r']).visible, true);
    assert.equal(checkResource(obs('1', 'p1', { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }] }), filter(lab), ['r']).visible, false);
    assert.equal(checkResource(obs('1', 'p1'), filter('patient/Observation.rs?category=laboratory'), ['r']).visible, true, 'a bare code matches any system');
    assert.equal(checkResource(obs('1', 'p1', { status: 'final' }), filter('patient/Observation.rs?status=final'), ['r']).visible, true);
    assert.equal(checkResource(obs('1', 'p1'), filter('patient/Observation.rs?performer=x'), ['r']).visible, false);
  });

  it('hides labelled, sensitively coded and out-of-range data', () => {
    const labelled = obs('1', 'p1', { meta: { security: [{ system: ACT, code: 'PSY' }] } });
    assert.deepEqual(checkResource(labelled, filter('patient/*.rs', hiding()), ['r']), { visible: false, reason: 'security_label' });
    assert.equal(checkResource(labelled, filter('patient/*.rs', hiding({ hiddenLabels: [{ system: ACT, code: 'HIV' }] })), ['r']).visible, true);
    const contained = obs('1', 'p1', { contained: [{ resourceType: 'Medication', id: 'm', meta: { security: [{ system: ACT, code: 'ETH' }] } }] });
    assert.deepEqual(checkResource(contained, filter('patient/*.rs', hiding()), ['r']), { visible: false, reason: 'security_label' });
    const f10 = { resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/p1' }, code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F10.20' }] }, recordedDate: '2021-01-01' };
    assert.deepEqual(checkResource(f10, filter('patient/*.rs', hiding()), ['r']), { visible: false, reason: 'sensitive_code' });
    const period = hiding({ hiddenLabels: [], period: { start: '2021-01-01', end: '2021-12-31' } });
    assert.equal(checkResource(obs('1', 'p1'), filter('patient/*.rs', period), ['r']).visible, true);
    assert.deepEqual(checkResource(obs('1', 'p1', { effectiveDateTime: '2020-12-31T23:00:00Z' }), filter('patient/*.rs', period), ['r']), { visible: false, reason: 'outside_period' });
    assert.deepEqual(checkResource(obs('1', 'p1', { effectiveDateTime: '2021' }), filter('patient/*.rs', period), ['r']).visible, true, 'a year inside the range');
    assert.deepEqual(checkResource(obs('1', 'p1', { effectiveDateTime: undefined, effectivePeriod: { start: '2021-03-01' } }), filter('patient/*.rs', period), ['r']), { visible: false, reason: 'outside_period' }, 'an open period runs past the end');
    assert.deepEqual(checkResource(obs('1', 'p1', { effectiveDateTime: undefined }), filter('patient/*.rs', period), ['r']), { visible: false, reason: 'undated' });
    assert.equal(checkResource({ resourceType: 'Patient', id: 'p1' }, filter('patient/*.rs', period), ['r']).visible, true);
    assert.deepEqual(checkResource(obs('1', 'p1', { effectiveDateTime: '2019-01-01' }), filter('patient/*.cruds', period), ['c'], { checkDates: false }).visible, true, 'writes are not limited by dates');
  });
});

describe('checkResource: labels, codes, contained resources and dates in every form FHIR allows', () => {
  const filter = (scope: string, consent?: AccessFacts['consent']) => ({ scopes: scope.split(' ').map(parseResourceScope), patient: 'p1', consent, bases: ['http://fhir.test'] });
  const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
  const hiding = (...labels: [string, string][]) => ({ consentId: 'c', version: 1, hiddenLabels: labels.map(([system, code]) => ({ system, code })) });
  const hidden = (r: Record<string, unknown>, consent: AccessFacts['consent'], opts = {}) => checkResource(r, filter('patient/*.rs', consent), ['r'], opts);
  const labelled = (system: string | undefined, code: string) => obs('l', 'p1', { meta: { security: [{ ...(system ? { system } : {}), code }] } });

  it('matches a label in any case and under every name of its code system', () => {
    const hiv = hiding([ACT, 'HIV']);
    for (const system of [ACT, 'urn:oid:2.16.840.1.113883.5.4', 'http://hl7.org/fhir/v3/ActCode', 'HTTP://terminology.hl7.org/CodeSystem/v3-ActCode/', undefined]) {
      for (const code of ['HIV', 'hiv', 'Hiv']) assert.deepEqual(hidden(labelled(system, code), hiv), { visible: false, reason: 'security_label' }, `${system} ${code}`);
    }
    assert.equal(hidden(labelled('http://example.org/other-labels', 'HIV'), hiv).visible, true, 'a code of another system is another label');
    assert.equal(hidden(labelled(ACT, 'PSY'), hiv).visible, true);
  });

  it('hides very restricted data when restricted data is hidden', () => {
    assert.equal(hidden(labelled('urn:oid:2.16.840.1.113883.5.25', 'V'), hiding([CONF, 'R'])).visible, false);
    assert.equal(hidden(labelled(CONF, 'R'), hiding([CONF, 'V'])).visible, true, 'hiding V leaves R shown');
  });

  it('finds sensitive codes anywhere in the resource, under OIDs, with or without the ICD-10 dot', () => {
    const psy = hiding([ACT, 'PSY']);
    const icd = (system: string, code: string) => ({ coding: [{ system, code }] });
    const cases: Record<string, unknown>[] = [
      { code: icd('http://hl7.org/fhir/sid/icd-10-cm', 'f32.1') },
      { code: icd('urn:oid:2.16.840.1.113883.6.90', 'F321') },
      { code: icd('urn:oid:2.16.840.1.113883.6.3', 'F20') },
      { component: [{ code: icd('http://snomed.info/sct', '35489007') }] },
      { interpretation: [icd('http://snomed.info/sct', '35489007')] },
      { valueCodeableConcept: icd('urn:oid:2.16.840.1.113883.6.96', '35489007') },
      { extension: [{ url: 'http://example.org/x', valueCoding: { system: 'http://hl7.org/fhir/sid/icd-10', code: 'F41.1' } }] },
    ];
    for (const extra of cases) assert.deepEqual(hidden(obs('o', 'p1', extra), psy), { visible: false, reason: 'sensitive_code' }, JSON.stringify(extra));
    const condition = (extra: Record<string, unknown>) => ({ resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/p1' }, recordedDate: '2021-01-01', ...extra });
    assert.equal(hidden(condition({ evidence: [{ code: [icd('http://hl7.org/fhir/sid/icd-10-cm', 'F33.0')] }] }), psy).visible, false);
    assert.equal(hidden(condition({ stage: [{ summary: icd('http://hl7.org/fhir/sid/icd-10-cm', 'F31') }] }), psy).visible, false);
    assert.equal(hidden(obs('o', 'p1', { code: icd('http://hl7.org/fhir/sid/icd-10-cm', 'E11.9') }), psy).visible, true, 'diabetes is not mental health');
    assert.equal(hidden(obs('o', 'p1', { code: icd('http://hl7.org/fhir/sid/icd-10-cm', 'F32.1') }), hiding([ACT, 'HIV'])).visible, true, 'only hidden categories count');
    assert.equal(hidden(obs('o', 'p1', { code: icd('http://hl7.org/fhir/sid/icd-10-cm', 'O98.71') }), hiding([ACT, 'HIV'])).visible, false, 'O98.7 written with its dot');
  });

  it('judges a prescription by the Medication it references, and hides it when that cannot be read', () => {
    const rx = { resourceType: 'MedicationRequest', id: 'rx', subject: { reference: 'Patient/p1' }, authoredOn: '2021-01-01', medicationReference: { reference: 'http://fhir.test/Medication/m1' } };
    assert.deepEqual(medicationReferences(rx, ['http://fhir.test']), ['Medication/m1']);
    const hiv = hiding([ACT, 'HIV']);
    const med = (extra: Record<string, unknown>) => new Map([['Medication/m1', { resourceType: 'Medication', id: 'm1', ...extra }]]);
    assert.equal(hidden(rx, hiv, { medications: med({ code: { coding: [{ system: 'http://snomed.info/sct', code: '86406008' }] } }) }).visible, false);
    assert.equal(hidden(rx, hiv, { medications: med({ meta: { security: [{ system: ACT, code: 'hiv' }] } }) }).visible, false);
    assert.equal(hidden(rx, hiv, { medications: med({}) }).visible, true);
    assert.deepEqual(hidden(rx, hiv, { medications: new Map([['Medication/m1', null]]) }), { visible: false, reason: 'unverifiable_reference' });
    assert.deepEqual(hidden(rx, hiv), { visible: false, reason: 'unverifiable_reference' });
    assert.equal(hidden(rx, hiding()).visible, true, 'nothing hidden: nothing to look up');
    const local = { ...rx, medicationReference: { reference: '#m' }, contained: [{ resourceType: 'Medication', id: 'm', code: { coding: [{ system: 'http://snomed.info/sct', code: '86406008' }] } }] };
    assert.deepEqual(medicationReferences(local), []);
    assert.equal(hidden(local, hiv).visible, false, 'a contained Medication is part of the resource');
  });

  it('hides a resource holding a contained resource about someone else', () => {
    const f = filter('patient/*.rs');
    const other = obs('o', 'p1', { contained: [{ resourceType: 'Observation', id: 'x', subject: { reference: 'Patient/p2' } }] });
    assert.deepEqual(checkResource(other, f, ['r']), { visible: false, reason: 'other_patient' });
    assert.equal(checkResource(obs('o', 'p1', { contained: [{ resourceType: 'Patient', id: 'x' }] }), f, ['r']).visible, false);
    assert.equal(checkResource(obs('o', 'p1', { contained: [{ resourceType: 'Observation', id: 'x', subject: { reference: 'Patient/p1' } }] }), f, ['r']).visible, true);
    assert.equal(checkResource(obs('o', 'p1', { contained: [{ resourceType: 'Practitioner', id: 'x' }, { resourceType: 'Observation', id: 'y', subject: { reference: '#x' } }] }), f, ['r']).visible, true);
    assert.equal(checkResource(other, filter('user/*.rs'), ['r']).visible, true, 'a practitioner sees across patients');
  });

  it('reads dates conservatively: offsets, open periods, timings, times without offsets', () => {
    const y2021 = { consentId: 'c', version: 1, hiddenLabels: [], period: { start: '2021-01-01', end: '2021-12-31' } };
    const at = (extra: Record<string, unknown>) => hidden(obs('o', 'p1', { effectiveDateTime: undefined, ...extra }), y2021).visible;
    assert.equal(at({ effectiveDateTime: '2021-12-31T20:00:00-05:00' }), false, 'already 2022 in UTC');
    assert.equal(at({ effectiveDateTime: '2021-01-01T02:00:00+05:00' }), false, 'still 2020 in UTC');
    assert.equal(at({ effectiveDateTime: '2021-06-01T12:00:00Z' }), true);
    assert.equal(at({ effectiveDateTime: '2021-06-01T12:00:00' }), false, 'a time without an offset cannot be placed');
    assert.equal(at({ effectiveDateTime: '2021-02' }), true);
    assert.equal(hidden(obs('o', 'p1', { effectiveDateTime: '2021-02' }), { ...y2021, period: { end: '2021-02-28' } }).visible, true, 'February 2021 ends on the 28th');
    assert.equal(at({ effectivePeriod: { end: '2021-05-01' } }), false, 'an open start runs from before the range');
    assert.equal(at({ effectivePeriod: { start: '2021-03-01', end: '2021-05-01' } }), true);
    assert.equal(at({ effectivePeriod: {} }), false);
    assert.equal(at({ effectivePeriod: { start: '2022-06-01', end: '2020-06-01' } }), false, 'an inverted period is unreadable, not a window around the range');
    assert.equal(at({ effectivePeriod: { start: '2021-05-01', end: '2021-03-01' } }), false, 'even with both ends inside the range');
    assert.equal(at({ effectiveTiming: { repeat: { boundsPeriod: { start: '2022-01-01', end: '2020-01-01' } } } }), false);
    assert.equal(at({ effectivePeriod: { start: '2021-03-01T10:00:00Z', end: '2021-03-01T10:00:00Z' } }), true, 'an instant-long period is fine');
    assert.equal(at({ effectiveTiming: { event: ['2021-03-01', '2021-04-01T10:00:00Z'] } }), true);
    assert.equal(at({ effectiveTiming: { event: ['2021-03-01', '2022-01-02'] } }), false);
    assert.equal(at({ effectiveTiming: { repeat: { boundsPeriod: { start: '2021-03-01' } } } }), false, 'an open-ended schedule');
    assert.equal(at({ effectiveTiming: { repeat: { boundsPeriod: { start: '2021-03-01', end: '2021-04-01' } } } }), true);
    assert.equal(at({ effectiveTiming: { code: { text: 'BID' } } }), false, 'a timing with no dates is undated');
  });
});

describe('confineToUser (SMART user/ scopes reach what the user may see)', () => {
  const scopes = (s: string) => s.split(' ').map(parseResourceScope);
  const contexts = (c: { scopes: { raw: string; context: string }[] }) => c.scopes.map((s) => `${s.context}:${s.raw}`);

  it('keeps user/ scopes for a practitioner, reads them as patient/ scopes for anyone else', () => {
    assert.deepEqual(contexts(confineToUser({ scopes: scopes('user/*.rs'), sub: 'a', fhirUser: 'Practitioner/d1', patient: 'p1' })), ['user:user/*.rs']);
    const patient = confineToUser({ scopes: scopes('user/Observation.rs patient/Patient.r'), sub: 'a', fhirUser: 'Patient/p1' });
    assert.deepEqual(contexts(patient), ['patient:user/Observation.rs', 'patient:patient/Patient.r']);
    assert.equal(patient.patient, 'p1', 'a patient user without a launch context is their own patient');
    assert.equal(confineToUser({ scopes: scopes('user/*.rs'), sub: 'a', fhirUser: 'Patient/p1', patient: 'p2' }).patient, 'p2', 'a representative acts for the patient in context');
    assert.deepEqual(contexts(confineToUser({ scopes: scopes('user/*.rs'), sub: 'a' })), [], 'no fhirUser and no patient: nothing');
    assert.deepEqual(contexts(confineToUser({ scopes: scopes('system/*.rs'), sub: 'a', fhirUser: 'Patient/p1' })), ['patient:system/*.rs'], 'system/ scopes on a user token too');
    assert.deepEqual(contexts(confineToUser({ scopes: scopes('system/*.rs') })), ['system:system/*.rs'], 'a backend service keeps its system/ scopes');
  });

  it('makes decide keep a patient user inside their compartment', () => {
    const patientUser = facts('user/*.rs', { sub: 'a', fhirUser: 'Patient/p1', patient: undefined });
    assert.equal(decide(parse('GET', '/Patient/p2'), patientUser).effect, 'deny');
    const search = decide(parse('GET', '/Observation'), patientUser);
    assert.equal(search.effect, 'allow');
    assert.deepEqual((search as Permit).addedCompartment, ['patient', 'p1']);
    assert.equal(decide(parse('GET', '/Patient/p2'), facts('user/*.rs', { sub: 'a', fhirUser: 'Practitioner/d1' })).effect, 'allow');
  });
});

describe('judgeEntries and collectPage (pages of visible matches only)', () => {
  const permit = (scope: string, target = '/Observation') => {
    const d = decide(parse('GET', target), facts(scope, { consent: { consentId: 'c', version: 1, hiddenLabels: [{ system: ACT, code: 'HIV' }] } }), { bases: ['http://up'] });
    assert.equal(d.effect, 'allow');
    return d as Permit;
  };
  const entry = (r: Record<string, unknown>, mode = 'match') => ({ fullUrl: `http://up/${String(r.resourceType)}/${String(r.id)}`, resource: r, search: { mode } });
  const hiv = (id: string) => obs(id, 'p1', { meta: { security: [{ system: ACT, code: 'HIV' }] } });

  it('judges matches and includes, hides other patients, deletions and foreign versions, drops upstream outcomes', () => {
    const judged = judgeEntries(
      { resourceType: 'Bundle', entry: [entry(obs('a', 'p1')), entry(hiv('h')), entry(obs('b', 'p2')), entry({ resourceType: 'Patient', id: 'p1' }, 'include'), entry({ resourceType: 'OperationOutcome', id: 'o' }, 'outcome')] },
      permit('patient/Observation.rs patient/Patient.r'),
    );
    assert.deepEqual(judged.map((j) => [j.role, j.verdict.visible ? 'shown' : j.verdict.reason]), [['match', 'shown'], ['match', 'security_label'], ['match', 'other_patient'], ['include', 'shown']]);
    const history = judgeEntries({ resourceType: 'Bundle', entry: [{ resource: obs('a', 'p1') }, { request: { method: 'DELETE', url: 'Observation/a' } }, { resource: obs('z', 'p1') }] }, permit('patient/Observation.rs', '/Observation/a/_history'));
    assert.deepEqual(history.map((j) => (j.verdict.visible ? 'shown' : j.verdict.reason)), ['shown', 'malformed', 'malformed']);
  });

  it('rewrites upstream URLs and drops absolute ones elsewhere', () => {
    const rewrite = (u: string) => (u.startsWith('http://up/') ? `http://proxy/${u.slice(10)}` : undefined);
    assert.deepEqual(rewriteEntry({ fullUrl: 'http://up/Observation/a', response: { status: '200', location: 'http://up/Observation/a/_history/2' } }, rewrite), { fullUrl: 'http://proxy/Observation/a', response: { status: '200', location: 'http://proxy/Observation/a/_history/2' } });
    assert.deepEqual(rewriteEntry({ fullUrl: 'http://evil/Observation/a', response: { location: 'http://evil/x', status: '200' } }, rewrite), { response: { status: '200' } });
    assert.deepEqual(rewriteEntry({ fullUrl: 'urn:uuid:1' }, rewrite), { fullUrl: 'urn:uuid:1' });
  });

  /** An upstream server holding `resources` in pages of `size`, paged by `?page=n`. */
  function upstream(resources: Record<string, unknown>[], size: number) {
    const fetched: string[] = [];
    const page = (n: number) => ({
      resourceType: 'Bundle',
      entry: resources.slice(n * size, (n + 1) * size).map((r) => entry(r)),
      link: (n + 1) * size < resources.length ? [{ relation: 'next', url: `/Observation?page=${n + 1}` }] : [],
    });
    return {
      fetched,
      fetch: async (url: string) => {
        fetched.push(url);
        return { bundle: page(Number(new URLSearchParams(url.split('?')[1]).get('page') ?? 0)) };
      },
      nextOf: (b: Record<string, unknown>) => (b.link as { url: string }[])[0]?.url,
    };
  }
  const ids = (p: { matches: Record<string, unknown>[] }) => p.matches.map((e) => (e.resource as { id: string }).id);
  /** Judging under `p`, where a match needs the reads `reads` names (by id; none by default), each one upstream read. */
  const judging = (p: Permit, reads: Record<string, string[]> = {}, maxReads = 2) => ({
    entries: (b: Record<string, unknown>) => pageEntries(b, p),
    plan: () => {
      const planned = new Set<string>();
      return { add: (e: PageEntry) => (reads[String(e.resource?.id)] ?? []).reduce((n, key) => planned.add(key).size, planned.size) };
    },
    maxReads,
    judge: async (entries: PageEntry[]) => entries.map((e) => judgeEntry(e, p)),
  });

  it('fills every page with visible matches and links a next page only when one more exists', async () => {
    const data = [obs('1', 'p1'), hiv('h1'), hiv('h2'), obs('2', 'p1'), hiv('h3'), obs('3', 'p1'), hiv('h4'), hiv('h5')];
    const p = permit('patient/Observation.rs', '/Observation?_count=1');
    const up = upstream(data, 3);
    const pages: string[][] = [];
    let from = { url: '/Observation?page=0', skip: 0 };
    for (let n = 0; n < 10; n += 1) {
      const got = await collectPage({ from, pageSize: p.pageSize, maxScanned: 100, fetch: up.fetch, ...judging(p), nextOf: up.nextOf });
      assert.ok(!('failure' in got));
      pages.push(ids(got));
      if (!got.next) break;
      from = got.next;
    }
    assert.deepEqual(pages, [['1'], ['2'], ['3']], 'three visible matches, one per page, and no empty page after the last');
  });

  it('answers the same for hidden matches as for none', async () => {
    const p = permit('patient/Observation.rs', '/Observation?_count=2');
    const run = async (data: Record<string, unknown>[]) => {
      const up = upstream(data, 2);
      const got = await collectPage({ from: { url: '/Observation?page=0', skip: 0 }, pageSize: p.pageSize, maxScanned: 100, fetch: up.fetch, ...judging(p), nextOf: up.nextOf });
      assert.ok(!('failure' in got));
      return { ids: ids(got), next: Boolean(got.next) };
    };
    assert.deepEqual(await run([obs('1', 'p1'), obs('2', 'p1'), hiv('h1'), hiv('h2'), hiv('h3')]), await run([obs('1', 'p1'), obs('2', 'p1')]));
  });

  it('stops after its scan budget with a link to go on, and passes failures through', async () => {
    const p = permit('patient/Observation.rs', '/Observation?_count=5');
    const up = upstream([hiv('h1'), hiv('h2'), hiv('h3'), hiv('h4'), obs('1', 'p1')], 2);
    const got = await collectPage({ from: { url: '/Observation?page=0', skip: 0 }, pageSize: p.pageSize, maxScanned: 2, fetch: up.fetch, ...judging(p), nextOf: up.nextOf });
    assert.ok(!('failure' in got));
    assert.deepEqual([ids(got), got.next], [[], { url: '/Observation?page=1', skip: 0 }]);
    const failed = await collectPage({ from: { url: '/x', skip: 0 }, pageSize: 1, maxScanned: 2, fetch: async () => ({ failure: 'down' }), ...judging(p), nextOf: () => undefined });
    assert.deepEqual(failed, { failure: 'down' });
  });

  it('ends a page early when judging its matches would read more than its budget, and goes on from there', async () => {
    const p = permit('patient/Observation.rs', '/Observation?_count=10');
    const data = [obs('1', 'p1'), hiv('h1'), hiv('h2'), obs('2', 'p1'), hiv('h3'), obs('3', 'p1')];
    // Each match needs one read of its own, except that h2 needs what h1 does, and 3 needs three.
    const costs = { '1': ['a'], h1: ['b'], h2: ['b'], '2': ['c'], h3: ['d'], '3': ['e', 'f', 'g'] };
    const up = upstream(data, 4);
    const pages: [string[], unknown][] = [];
    let from = { url: '/Observation?page=0', skip: 0 };
    for (let n = 0; n < 10; n += 1) {
      const got = await collectPage({ from, pageSize: p.pageSize, maxScanned: 100, ...judging(p, costs), fetch: up.fetch, nextOf: up.nextOf });
      assert.ok(!('failure' in got));
      pages.push([ids(got), got.next]);
      if (!got.next) break;
      from = got.next;
    }
    assert.deepEqual(pages, [
      // 1, h1 and h2 need two reads together; 2 would make a third.
      [['1'], { url: '/Observation?page=0', skip: 3 }],
      // 2 and h3 need two; 3 alone needs more than a page may make, so it starts the next page.
      [['2'], { url: '/Observation?page=1', skip: 1 }],
      [['3'], undefined],
    ]);
  });
});

describe('accessFactsFromClaims', () => {
  const details = (extra: Record<string, unknown> = {}) => [{ type: 'urn:custos:consent', consent_id: 'c1', consent_version: 2, patient: 'Patient/p1', hidden_security_labels: [{ system: ACT, code: 'HIV' }], ...extra }];

  it('reads scopes, patient, level and consent limits', () => {
    const v = accessFactsFromClaims(
      { scope: 'openid patient/Observation.rs patient/bogus launch/patient', patient: 'p1', acr: 'urn:custos:acr:mfa', auth_time: 100, aud: 'https://fhir', client_id: 'app', authorization_details: details({ period: { start: '2020-01-01' }, resource_types: ['Observation'], expires_at: '2030-01-01T00:00:00Z' }) },
      NOW,
    );
    assert.ok(v.active);
    assert.deepEqual(v.facts.scopes.map((s) => s.raw), ['patient/Observation.rs'], 'malformed scopes grant nothing');
    assert.equal(v.facts.patient, 'p1');
    assert.deepEqual(v.facts.aud, ['https://fhir']);
    assert.deepEqual(v.facts.consent?.period, { start: '2020-01-01' });
    assert.deepEqual(v.facts.consent?.resourceTypes, ['Observation']);
    assert.equal(accessFactsFromClaims({ scope: 'patient/Observation.rs', authorization_details: details() }, NOW).active && 'p1', 'p1', 'the patient may come from the consent alone');
  });

  it('refuses contradictions, malformed limits and an expired consent', () => {
    const bad: Record<string, unknown>[] = [
      { patient: 'p2', authorization_details: details() },
      { authorization_details: details({ expires_at: '2020-01-01T00:00:00Z' }) },
      { authorization_details: details({ period: { start: 'last year' } }) },
      { authorization_details: details({ hidden_security_labels: 'HIV' }) },
      { authorization_details: [...details(), ...details()] },
      { authorization_details: 'x' },
      { patient: '../x' },
    ];
    for (const claims of bad) assert.equal(accessFactsFromClaims({ scope: 'patient/*.rs', ...claims }, NOW).active, false, JSON.stringify(claims));
  });
});
