/**
 * Random worlds for the differential test: patients, a practitioner, Medications and clinical
 * resources in several versions (some deleted), with security labels, sensitive codes, dates and
 * contained resources in every form /work/visibility-spec.md lists; and random token facts.
 */
import fc from 'fast-check';
import type { FhirResource, SeedHistory } from '../../helpers/medplum-fhir-server.ts';
import type { OracleToken } from './visibility-oracle.ts';

export const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
export const OBS_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
export const ICD10 = 'http://hl7.org/fhir/sid/icd-10';
export const ICD10CM_OID = 'urn:oid:2.16.840.1.113883.6.90';
export const SNOMED = 'http://snomed.info/sct';
export const LOINC = 'http://loinc.org';

type Coding = { system?: string; code: string };

/** Labels in every form: systems in case, OID, old URL, trailing slash, none, unrelated; codes in case. */
export const LABELS: Coding[] = [
  { system: ACT, code: 'PSY' },
  { system: 'urn:oid:2.16.840.1.113883.5.4', code: 'hiv' },
  { system: 'http://hl7.org/fhir/v3/ActCode', code: 'ETH' },
  { code: 'STD' },
  { system: 'http://example.org/labels', code: 'HIV' },
  { system: CONF, code: 'R' },
  { system: 'urn:oid:2.16.840.1.113883.5.25', code: 'V' },
  { system: 'http://hl7.org/fhir/v3/Confidentiality/', code: 'r' },
  { code: 'N' },
  { system: 'HTTP://TERMINOLOGY.HL7.ORG/CodeSystem/v3-ActCode', code: 'SEX' },
  { system: ACT, code: 'sdv' },
  { system: ACT, code: 'GDIS' },
  // R is a Confidentiality code: under the ActCode system it is no label the spec knows.
  { system: ACT, code: 'R' },
];

/** Codes in every form: ICD-10 with and without dot, lower case, under OID; SNOMED; LOINC; look-alikes. */
export const CODES: Coding[] = [
  { system: ICD10, code: 'F32.1' },
  { system: ICD10, code: 'F321' },
  { system: ICD10, code: 'f10.2' },
  { system: ICD10CM_OID, code: 'B20' },
  { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'O98.7' },
  { system: 'urn:oid:2.16.840.1.113883.6.3', code: 'a51.0' },
  { system: ICD10, code: 'F01.5' },
  { system: ICD10, code: 'E11.9' },
  { system: ICD10, code: 'R74' },
  { system: SNOMED, code: '86406008' },
  { system: 'urn:oid:2.16.840.1.113883.6.96', code: '66214007' },
  { system: 'http://snomed.info/sct/', code: '35489007' },
  { system: SNOMED, code: '44054006' },
  { system: LOINC, code: '75622-1' },
  { system: 'urn:oid:2.16.840.1.113883.6.1', code: '7917-8' },
  { system: 'HTTP://LOINC.ORG', code: '5221-7' },
  { system: LOINC, code: '4548-4' },
  { system: 'http://example.org/codes', code: 'F32' },
];

export const CLINICAL = ['Observation', 'Condition', 'DocumentReference', 'MedicationRequest', 'Encounter'] as const;
export type ClinicalType = (typeof CLINICAL)[number];
export const ALL_TYPES = ['Patient', 'Practitioner', 'Medication', ...CLINICAL] as const;

/** Dates in every form, around the consent bounds below. */
const DATE_TIMES = [
  '2021',
  '2021-06',
  '2021-06-15',
  '2021-06-16',
  '2020-12-31',
  '2022-01-01',
  '2021-06-15T23:30:00-05:00',
  '2021-06-16T01:00:00+09:00',
  '2021-06-15T12:00:00',
  '2021-06-15T12:00:00Z',
  '2020-12-31T22:00:00-03:00',
  '2021-12-31T23:59:59.500+00:00',
];
const INSTANTS = ['2021-06-15T23:30:00-05:00', '2021-06-16T01:00:00+09:00', '2021-06-15T12:00:00Z', '2021-06-15T12:00:00', '2020-12-31T22:00:00-03:00'];
export const CONSENT_DAYS = ['2021-01-01', '2021-06-15', '2021-06-16', '2021-06-30', '2021-12-31', '2022-01-01'];
const dateTime = fc.constantFrom(...DATE_TIMES);
const period = fc.oneof(
  fc.record({ start: dateTime }),
  fc.record({ end: dateTime }),
  fc.record({ start: fc.constantFrom('2021-06-15', '2021-01-01T00:00:00Z'), end: fc.constantFrom('2021-06-16', '2021-06-30T10:00:00+02:00') }),
  // Any two dates, so some periods end before they start.
  fc.record({ start: dateTime, end: dateTime }),
  fc.constant({}),
);
const timing = fc.oneof(
  fc.record({ event: fc.array(dateTime, { minLength: 1, maxLength: 3 }) }),
  period.map((p) => ({ repeat: { boundsPeriod: p } })),
  fc.constant({ code: { text: 'BID' } }),
);
const instant = fc.constantFrom(...INSTANTS);

/** The date elements each type may carry (several may be present: the first one dates it). */
const DATE_ELEMENTS: Record<ClinicalType, [string, fc.Arbitrary<unknown>][]> = {
  Observation: [
    ['effectiveDateTime', dateTime],
    ['effectivePeriod', period],
    ['effectiveInstant', instant],
    ['effectiveTiming', timing],
    ['issued', instant],
  ],
  Condition: [
    ['recordedDate', dateTime],
    ['onsetDateTime', dateTime],
    ['onsetPeriod', period],
  ],
  DocumentReference: [
    ['date', instant],
    ['context.period', period],
  ],
  MedicationRequest: [['authoredOn', dateTime]],
  Encounter: [['period', period]],
};
/** Only one effective[x] / onset[x] may be present in valid FHIR; the test keeps to that. */
const CHOICE_GROUP = (element: string) => /^(effective|onset)/.exec(element)?.[1] ?? element;

/** Where a type carries codes (slot names used by {@link build}). */
const CODE_SLOTS: Record<ClinicalType, string[]> = {
  Observation: ['code', 'category', 'component', 'interpretation', 'value'],
  Condition: ['code', 'category', 'evidence', 'stage'],
  DocumentReference: ['type', 'category'],
  MedicationRequest: ['medication', 'reasonCode'],
  Encounter: ['type', 'reasonCode'],
};

const CONTAINED_KINDS = 7;

export interface VersionSpec {
  /** Patient index; -1: no subject. */
  subject: number;
  /** 0 relative, 1 versioned, 2 absolute under the upstream base. */
  refForm: number;
  labels: number[];
  codes: { slot: number; code: number }[];
  dates: [string, unknown][];
  contained: number[];
  category: number;
  /** MedicationRequest: -1 a CodeableConcept, else Medication index (3: one that does not exist, 4: a contained one). */
  medication: number;
}

export interface ResourceSpec {
  type: ClinicalType;
  versions: VersionSpec[];
  deleted: boolean;
}

export interface WorldSpec {
  patients: { labels: number[] }[];
  medications: { labels: number[]; code: number }[];
  resources: ResourceSpec[];
}

const labelIdx = fc.uniqueArray(fc.nat({ max: LABELS.length - 1 }), { maxLength: 2 });
const someLabels = fc.oneof({ weight: 3, arbitrary: fc.constant([] as number[]) }, { weight: 2, arbitrary: labelIdx });

function versionSpec(type: ClinicalType): fc.Arbitrary<VersionSpec> {
  const dates = DATE_ELEMENTS[type];
  return fc.record({
    subject: fc.oneof({ weight: 1, arbitrary: fc.constant(-1) }, { weight: 8, arbitrary: fc.nat({ max: 3 }) }),
    refForm: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, 2) }),
    labels: someLabels,
    codes: fc.array(fc.record({ slot: fc.nat({ max: CODE_SLOTS[type].length - 1 }), code: fc.nat({ max: CODES.length - 1 }) }), { maxLength: 2 }),
    dates: fc.subarray(dates.map((d) => d[0])).chain((names) => {
      const seen = new Set<string>();
      const kept = names.filter((n) => (seen.has(CHOICE_GROUP(n)) ? false : (seen.add(CHOICE_GROUP(n)), true)));
      return fc.tuple(...kept.map((n) => dates.find((d) => d[0] === n)![1].map((v) => [n, v] as [string, unknown])));
    }),
    contained: fc.oneof({ weight: 4, arbitrary: fc.constant([] as number[]) }, { weight: 1, arbitrary: fc.uniqueArray(fc.nat({ max: CONTAINED_KINDS - 1 }), { minLength: 1, maxLength: 2 }) }),
    category: fc.nat({ max: 2 }),
    medication: fc.integer({ min: -1, max: 4 }),
  });
}

const resourceSpec: fc.Arbitrary<ResourceSpec> = fc.constantFrom(...CLINICAL).chain((type) =>
  fc.record({
    type: fc.constant(type),
    versions: fc.array(versionSpec(type), { minLength: 1, maxLength: 3 }),
    deleted: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  }),
);

export const worldSpec: fc.Arbitrary<WorldSpec> = fc.record({
  patients: fc.array(fc.record({ labels: fc.oneof({ weight: 4, arbitrary: fc.constant([] as number[]) }, { weight: 1, arbitrary: labelIdx }) }), { minLength: 2, maxLength: 4 }),
  medications: fc.array(fc.record({ labels: someLabels, code: fc.nat({ max: CODES.length - 1 }) }), { minLength: 3, maxLength: 3 }),
  resources: fc.array(resourceSpec, { minLength: 4, maxLength: 9 }),
});

const concept = (c: Coding) => ({ coding: [c] });
const PREFIX: Record<ClinicalType, string> = { Observation: 'obs', Condition: 'cond', DocumentReference: 'doc', MedicationRequest: 'mr', Encounter: 'enc' };

export interface World {
  histories: SeedHistory[];
  patientIds: string[];
}

/** The seedable world: ids `p1..`, `d1`, `m1..m3`, `obs-1`, `cond-2`, ... */
export function buildWorld(spec: WorldSpec, upstream: string): World {
  const patientIds = spec.patients.map((_, i) => `p${i + 1}`);
  const pid = (i: number) => patientIds[i % patientIds.length]!;
  const labelled = (labels: number[]) => (labels.length ? { meta: { security: labels.map((l) => ({ ...LABELS[l]! })) } } : {});
  const histories: SeedHistory[] = [];
  spec.patients.forEach((p, i) => histories.push({ versions: [{ resourceType: 'Patient', id: pid(i), ...labelled(p.labels), name: [{ family: `Patient${i + 1}` }] }] }));
  histories.push({ versions: [{ resourceType: 'Practitioner', id: 'd1', name: [{ family: 'Doctor' }] }] });
  spec.medications.forEach((m, i) => histories.push({ versions: [{ resourceType: 'Medication', id: `m${i + 1}`, ...labelled(m.labels), code: concept(CODES[m.code]!) }] }));

  spec.resources.forEach((r, n) => {
    const id = `${PREFIX[r.type]}-${n + 1}`;
    histories.push({ versions: r.versions.map((v) => build(r.type, id, v, pid, upstream, labelled)), deleted: r.deleted });
  });
  return { histories, patientIds };
}

function build(type: ClinicalType, id: string, v: VersionSpec, pid: (i: number) => string, upstream: string, labelled: (l: number[]) => object): FhirResource {
  const subjectId = v.subject < 0 ? undefined : pid(v.subject);
  const ref = subjectId === undefined ? undefined : [`Patient/${subjectId}`, `Patient/${subjectId}/_history/1`, `${upstream}/Patient/${subjectId}`][v.refForm]!;
  const r: FhirResource = { resourceType: type, id, ...labelled(v.labels) };
  const slot = (name: string) => v.codes.filter((c) => CODE_SLOTS[type][c.slot] === name).map((c) => ({ ...CODES[c.code]! }));
  const withCodes = (name: string, base: Coding[]) => ({ coding: [...base, ...slot(name)] });
  const categoryCoding: Coding[] = [[{ system: OBS_CATEGORY, code: 'laboratory' }], [{ system: OBS_CATEGORY, code: 'vital-signs' }], []][v.category]!;
  switch (type) {
    case 'Observation':
      Object.assign(r, { status: 'final', code: withCodes('code', [{ system: LOINC, code: '4548-4' }]) });
      if (categoryCoding.length || slot('category').length) r.category = [withCodes('category', categoryCoding)];
      if (slot('component').length) r.component = [{ code: withCodes('component', []) }];
      if (slot('interpretation').length) r.interpretation = [withCodes('interpretation', [])];
      if (slot('value').length) r.valueCodeableConcept = withCodes('value', []);
      break;
    case 'Condition':
      r.code = withCodes('code', [{ system: SNOMED, code: '44054006' }]);
      if (slot('category').length) r.category = [withCodes('category', [])];
      if (slot('evidence').length) r.evidence = [{ code: [withCodes('evidence', [])] }];
      if (slot('stage').length) r.stage = [{ summary: withCodes('stage', []) }];
      break;
    case 'DocumentReference':
      Object.assign(r, { status: 'current', content: [{ attachment: { contentType: 'text/plain', title: id } }] });
      r.type = withCodes('type', [{ system: LOINC, code: '34133-9' }]);
      if (slot('category').length) r.category = [withCodes('category', [])];
      break;
    case 'MedicationRequest':
      Object.assign(r, { status: 'active', intent: 'order' });
      if (v.medication < 0 || slot('medication').length) r.medicationCodeableConcept = withCodes('medication', [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '197361' }]);
      else r.medicationReference = { reference: v.medication === 4 ? '#c-med' : v.medication === 3 ? 'Medication/m-gone' : `Medication/m${v.medication + 1}` };
      if (slot('reasonCode').length) r.reasonCode = [withCodes('reasonCode', [])];
      break;
    case 'Encounter':
      Object.assign(r, { status: 'finished', class: { system: ACT, code: 'AMB' } });
      if (slot('type').length) r.type = [withCodes('type', [])];
      if (slot('reasonCode').length) r.reasonCode = [withCodes('reasonCode', [])];
      break;
  }
  if (ref) r.subject = { reference: ref };
  for (const [element, value] of v.dates) {
    if (element === 'context.period') r.context = { period: value };
    else r[element] = value;
  }
  const contained = v.contained.map((k) => containedResource(k, subjectId, pid));
  if (r.medicationReference && (r.medicationReference as { reference: string }).reference === '#c-med' && !contained.some((c) => c.id === 'c-med')) {
    contained.push({ resourceType: 'Medication', id: 'c-med', code: concept({ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '197361' }) });
  }
  if (contained.length) r.contained = contained;
  return r;
}

function containedResource(kind: number, subject: string | undefined, pid: (i: number) => string): FhirResource {
  const other = subject === pid(0) ? pid(1) : pid(0);
  switch (kind) {
    case 0:
      return { resourceType: 'Patient', id: 'c-pat', name: [{ family: 'Someone' }] };
    case 1:
      return { resourceType: 'Observation', id: 'c-obs', status: 'final', code: { text: 'c' }, subject: { reference: '#' } };
    case 2:
      return { resourceType: 'Observation', id: 'c-obs', status: 'final', code: { text: 'c' }, subject: { reference: `Patient/${other}` } };
    case 3:
      return { resourceType: 'Observation', id: 'c-obs', status: 'final', code: { text: 'c' }, subject: { reference: `Patient/${subject ?? other}` } };
    case 4:
      return { resourceType: 'Medication', id: 'c-med', meta: { security: [{ system: ACT, code: 'HIV' }] } };
    case 5:
      return { resourceType: 'Medication', id: 'c-med', code: concept({ system: ICD10, code: 'F20.0' }) };
    default:
      return { resourceType: 'Condition', id: 'c-cond', code: { text: 'no subject' } };
  }
}

export const SCOPES = [
  'patient/*.read',
  'patient/*.rs',
  'patient/Observation.rs',
  `patient/Observation.rs?category=${OBS_CATEGORY}|laboratory`,
  'user/*.rs',
  'user/Observation.read',
  'system/*.rs',
  'patient/Condition.r',
  'patient/Encounter.s',
];
const HIDEABLE = ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'];

export const tokenSpec: fc.Arbitrary<OracleToken> = fc
  .record({
    patient: fc.oneof({ weight: 3, arbitrary: fc.constant('p1') }, { weight: 1, arbitrary: fc.constantFrom(undefined, 'p2') }),
    fhirUser: fc.constantFrom(undefined, 'Patient/p1', 'Patient/p2', 'Practitioner/d1'),
    sub: fc.oneof({ weight: 5, arbitrary: fc.constant('user-1') }, { weight: 1, arbitrary: fc.constant(undefined) }),
    scopes: fc.uniqueArray(fc.constantFrom(...SCOPES), { minLength: 1, maxLength: 3 }),
    consent: fc.option(
      fc.record({
        hiddenLabels: fc.subarray(HIDEABLE),
        days: fc.subarray(CONSENT_DAYS, { maxLength: 2 }),
        both: fc.boolean(),
        resourceTypes: fc.option(fc.subarray([...ALL_TYPES], { minLength: 1 }), { nil: undefined, freq: 3 }),
      }),
      { nil: undefined, freq: 4 },
    ),
  })
  .map(({ consent, ...t }) => {
    const token: OracleToken = { scopes: t.scopes };
    if (t.patient) token.patient = t.patient;
    if (t.fhirUser) token.fhirUser = t.fhirUser;
    if (t.sub) token.sub = t.sub;
    if (consent) {
      const [a, b] = [...consent.days].sort();
      const c: NonNullable<OracleToken['consent']> & { start?: string; end?: string } = { hiddenLabels: consent.hiddenLabels };
      if (a && b) Object.assign(c, { start: a, end: b });
      else if (a) Object.assign(c, consent.both ? { start: a } : { end: a });
      if (consent.resourceTypes) Object.assign(c, { resourceTypes: consent.resourceTypes });
      token.consent = c;
    }
    return token;
  });
