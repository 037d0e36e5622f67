import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  accessFactsFromClaims,
  checkResource,
  decide,
  filterBundle,
  parseFhirRequest,
  type AccessFacts,
  type FhirInteraction,
  type Permit,
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
    const user = decide(parse('GET', '/Practitioner'), facts('user/*.rs', { patient: undefined })) as Permit;
    assert.deepEqual(user.upstreamParams, [], 'user/ scopes are not confined to a patient');
  });

  it('refuses parameters that would count, select by or strip what the proxy checks', () => {
    for (const q of ['_summary=count', '_summary=true', '_elements=code', '_has:Condition:patient:code=x', 'subject.name=x', '_count=0', '_count=abc', '_format=xml', '_contained=true', '_query=x', '_filter=x']) {
      const d = decide(parse('GET', `/Observation?${q}`), facts('patient/Observation.rs'));
      assert.equal(d.effect === 'deny' && d.status, 400, q);
    }
    const ok = decide(parse('GET', '/Observation?_summary=false&_format=json&_pretty=true&_count=10&_include=Observation:subject'), facts('patient/Observation.rs')) as Permit;
    assert.deepEqual(ok.upstreamParams, [['_count', '10'], ['_include', 'Observation:subject'], ['patient', 'p1']]);
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

describe('filterBundle', () => {
  const permit = (scope: string, target = '/Observation') => {
    const d = decide(parse('GET', target), facts(scope, { consent: { consentId: 'c', version: 1, hiddenLabels: [{ system: ACT, code: 'HIV' }] } }), { bases: ['http://up'] });
    assert.equal(d.effect, 'allow');
    return d as Permit;
  };
  const links = {
    self: 'http://proxy/Observation',
    resourceUrl: (u: string) => (u.startsWith('http://up/') ? `http://proxy/${u.slice(10)}` : undefined),
    page: (_r: string, u: string) => (u.startsWith('http://up/') ? `http://proxy/_page?x=${encodeURIComponent(u)}` : undefined),
  };
  const entry = (r: Record<string, unknown>, mode = 'match') => ({ fullUrl: `http://up/${String(r.resourceType)}/${String(r.id)}`, resource: r, search: { mode } });
  const hiv = obs('h', 'p1', { meta: { security: [{ system: ACT, code: 'HIV' }] } });

  it('recomputes the total of a single page from what is kept, and rewrites URLs', () => {
    const { bundle, report } = filterBundle(
      { resourceType: 'Bundle', type: 'searchset', total: 3, link: [{ relation: 'self', url: 'http://up/Observation?patient=p1' }], entry: [entry(obs('a', 'p1')), entry(hiv), entry(obs('b', 'p2')), entry({ resourceType: 'Patient', id: 'p1' }, 'include')] },
      permit('patient/Observation.rs patient/Patient.r'),
      links,
    );
    assert.equal(bundle.total, 1);
    assert.deepEqual((bundle.entry as { fullUrl: string }[]).map((e) => e.fullUrl), ['http://proxy/Observation/a', 'http://proxy/Patient/p1']);
    assert.deepEqual(bundle.link, [{ relation: 'self', url: 'http://proxy/Observation' }]);
    assert.deepEqual(report, { kept: 2, removed: 2, reasons: { security_label: 1, other_patient: 1 } });
  });

  it('drops the total of a paged result and signs its links; drops links elsewhere and deletion entries', () => {
    const { bundle } = filterBundle(
      {
        resourceType: 'Bundle',
        type: 'searchset',
        total: 40,
        link: [{ relation: 'next', url: 'http://up/Observation?page=2' }, { relation: 'last', url: 'http://evil/x' }],
        entry: [entry(obs('a', 'p1')), { request: { method: 'DELETE', url: 'Observation/z' } }],
      },
      permit('patient/Observation.rs'),
      links,
    );
    assert.equal(bundle.total, undefined);
    assert.deepEqual(bundle.link, [{ relation: 'self', url: 'http://proxy/Observation' }, { relation: 'next', url: `http://proxy/_page?x=${encodeURIComponent('http://up/Observation?page=2')}` }]);
    assert.equal((bundle.entry as unknown[]).length, 1);
  });

  it('keeps search outcome entries and drops included resources outside the scopes', () => {
    const { bundle } = filterBundle(
      { resourceType: 'Bundle', type: 'searchset', entry: [entry({ resourceType: 'OperationOutcome', id: 'o' }, 'outcome'), entry({ resourceType: 'Practitioner', id: 'x' }, 'include')] },
      permit('patient/*.rs'),
      links,
    );
    assert.deepEqual((bundle.entry as { resource: { id: string } }[]).map((e) => e.resource.id), ['o']);
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
