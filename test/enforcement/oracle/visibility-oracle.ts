/**
 * An independent reading of /work/visibility-spec.md ("What the FHIR proxy shows"), written from
 * the text alone for the differential test: given the facts a token carries and the upstream's
 * current resources, it says whether a resource, or a version of one, may be shown. It shares no
 * code or tables with src/enforcement on purpose; a disagreement between the two is the finding.
 */

export type Json = Record<string, unknown>;

/**
 * Settled (issue 14): a token that names no patient in context but whose user is a Patient reaches
 * that patient's own record with `patient/` scopes too, as with the `user/` ones (README, "Whose data
 * a user may see"). False would read such a `patient/` scope as allowing nothing.
 */
export const PATIENT_SCOPES_FALL_BACK_TO_FHIRUSER = true;
export type Permission = 'r' | 's';

/** The token facts the contract speaks of (spec: "Token facts"). */
export interface OracleToken {
  scopes: readonly string[];
  sub?: string;
  patient?: string;
  /** Relative, e.g. `Patient/p1` or `Practitioner/d1`. */
  fhirUser?: string;
  consent?: { hiddenLabels: readonly string[]; start?: string; end?: string; resourceTypes?: readonly string[] };
}

interface Scope {
  context: 'patient' | 'user' | 'system';
  type: string;
  perms: Set<string>;
  constraints: [string, string][];
}

/** Spec rule 3: the element of each type that names its patient. */
const PATIENT_LINK: Record<string, string> = {
  Observation: 'subject',
  Condition: 'subject',
  DocumentReference: 'subject',
  MedicationRequest: 'subject',
  Encounter: 'subject',
  AllergyIntolerance: 'patient',
  Immunization: 'patient',
};

/** Spec rule 7: the elements that date a resource, first present one wins. */
const DATE_PATHS: Record<string, string[][]> = {
  Observation: [['effectiveDateTime'], ['effectivePeriod'], ['effectiveInstant'], ['effectiveTiming'], ['issued']],
  Condition: [['recordedDate'], ['onsetDateTime'], ['onsetPeriod']],
  DocumentReference: [['date'], ['context', 'period']],
  MedicationRequest: [['authoredOn']],
  Encounter: [['period']],
};
const UNDATED = new Set(['Patient', 'Device', 'Practitioner', 'PractitionerRole', 'Organization', 'Location', 'Medication', 'RelatedPerson']);
const MEDICATION_USERS = new Set(['MedicationRequest', 'MedicationAdministration', 'MedicationDispense', 'MedicationStatement']);

const ACT_CODE_LABELS = new Set(['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS']);
const ACT_CODE_SYSTEMS = ['http://terminology.hl7.org/CodeSystem/v3-ActCode', 'urn:oid:2.16.840.1.113883.5.4', 'http://hl7.org/fhir/v3/ActCode'];
const CONFIDENTIALITY_SYSTEMS = ['http://terminology.hl7.org/CodeSystem/v3-Confidentiality', 'urn:oid:2.16.840.1.113883.5.25', 'http://hl7.org/fhir/v3/Confidentiality'];

const ICD_SYSTEMS = ['http://hl7.org/fhir/sid/icd-10', 'urn:oid:2.16.840.1.113883.6.3', 'http://hl7.org/fhir/sid/icd-10-cm', 'urn:oid:2.16.840.1.113883.6.90'];
const SNOMED_SYSTEMS = ['http://snomed.info/sct', 'urn:oid:2.16.840.1.113883.6.96'];
const LOINC_SYSTEMS = ['http://loinc.org', 'urn:oid:2.16.840.1.113883.6.1'];
const range = (letter: string, from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `${letter}${String(from + i).padStart(2, '0')}`);
const ICD_PREFIXES: Record<string, string[]> = {
  ETH: range('F', 10, 19),
  PSY: ['F0', 'F2', 'F3', 'F4', 'F5', 'F6', 'F7', 'F8', 'F9'],
  HIV: [...range('B', 20, 24), 'Z21', 'R75', 'O987'],
  STD: range('A', 50, 64),
};
const SNOMED_CODES: Record<string, string[]> = {
  HIV: ['86406008', '165816005', '91947003'],
  ETH: ['66214007', '7200002', '191816009'],
  PSY: ['74732009', '35489007', '13746004', '58214004'],
};
const LOINC_CODES: Record<string, string[]> = { HIV: ['75622-1', '7917-8', '5221-7', '20447-9', '25836-8'] };

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const normSystem = (s: string) => s.toLowerCase().replace(/\/+$/, '');
const inSystems = (system: string, systems: readonly string[]) => systems.some((s) => normSystem(s) === normSystem(system));

/** SMART v1 (`read`, `write`, `*`) and v2 (`cruds`) permissions, granular `?k=v` constraints. */
export function parseScope(text: string): Scope | undefined {
  const m = /^(patient|user|system)\/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$/.exec(text);
  if (!m) return undefined;
  const [, context, type, perm, query] = m as unknown as [string, Scope['context'], string, string, string | undefined];
  let perms: string;
  if (perm === 'read') perms = 'rs';
  else if (perm === 'write') perms = 'cud';
  else if (perm === '*') perms = 'cruds';
  else if (/^c?r?u?d?s?$/.test(perm)) perms = perm;
  else return undefined;
  const constraints = query ? [...new URLSearchParams(query)] : [];
  return { context, type, perms: new Set(perms), constraints };
}

function codings(value: unknown): Json[] {
  const concepts = Array.isArray(value) ? value : [value];
  return concepts.flatMap((c) => (isObject(c) && Array.isArray(c.coding) ? c.coding.filter(isObject) : []));
}

function tokenMatches(resource: Json, name: string, value: string): boolean {
  if (name === 'status') return resource.status === value;
  const element = name === 'code' && resource.resourceType === 'MedicationRequest' ? resource.medicationCodeableConcept : resource[name];
  const bar = value.indexOf('|');
  return codings(element).some((c) => {
    if (bar < 0) return c.code === value;
    const system = value.slice(0, bar);
    const code = value.slice(bar + 1);
    if (system === '') return c.system === undefined && c.code === code;
    return c.system === system && (code === '' || c.code === code);
  });
}

/** The patient id a reference names (relative, versioned, or absolute under the upstream base). */
function referencedPatient(reference: unknown, upstream: string): string | undefined {
  if (typeof reference !== 'string') return undefined;
  const rel = reference.startsWith(`${upstream}/`) ? reference.slice(upstream.length + 1) : reference;
  const m = /^Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(rel);
  return m?.[1];
}

function referencedMedication(reference: string, upstream: string): string | undefined {
  const rel = reference.startsWith(`${upstream}/`) ? reference.slice(upstream.length + 1) : reference;
  return /^Medication\/([A-Za-z0-9\-.]{1,64})$/.exec(rel)?.[1];
}

// ---- dates (spec rule 7) ----
type DayRange = { first: string; last: string };
const DATE_RE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;
const pad = (n: number, w = 2) => String(n).padStart(w, '0');

function dayRangeOfDate(value: unknown): DayRange | undefined {
  if (typeof value !== 'string') return undefined;
  const m = DATE_RE.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, hh, , , offset] = m;
  if (!mo) return { first: `${y}-01-01`, last: `${y}-12-31` };
  const month = Number(mo);
  if (month < 1 || month > 12) return undefined;
  const days = new Date(Date.UTC(Number(y), month, 0)).getUTCDate();
  if (!d) return { first: `${y}-${mo}-01`, last: `${y}-${mo}-${pad(days)}` };
  if (Number(d) < 1 || Number(d) > days) return undefined;
  const local = `${y}-${mo}-${d}`;
  if (hh === undefined) return { first: local, last: local };
  if (!offset) return undefined;
  const instant = new Date(value);
  if (Number.isNaN(instant.getTime())) return undefined;
  const utc = instant.toISOString().slice(0, 10);
  return local <= utc ? { first: local, last: utc } : { first: utc, last: local };
}

function dayRangeOfPeriod(period: unknown): DayRange | undefined {
  if (!isObject(period)) return undefined;
  if (period.start === undefined && period.end === undefined) return undefined;
  const start = period.start === undefined ? { first: '0000-01-01', last: '0000-01-01' } : dayRangeOfDate(period.start);
  const end = period.end === undefined ? { first: '9999-12-31', last: '9999-12-31' } : dayRangeOfDate(period.end);
  if (!start || !end) return undefined;
  // FHIR's per-1 invariant: a period that ends before it starts is malformed, so it dates nothing.
  if (end.last < start.first) return undefined;
  return { first: start.first, last: end.last };
}

/**
 * A Timing spans its events and its repeat's boundsPeriod. A repeat without bounds that does more
 * than name times of day (a count, a frequency, an offset in minutes) carries on past the events
 * to no known day.
 */
function dayRangeOfTiming(timing: unknown): DayRange | undefined {
  if (!isObject(timing)) return undefined;
  const ranges: (DayRange | undefined)[] = [];
  if (timing.event !== undefined) {
    if (!Array.isArray(timing.event) || timing.event.length === 0) return undefined;
    ranges.push(...timing.event.map(dayRangeOfDate));
  }
  if (timing.repeat !== undefined) {
    if (!isObject(timing.repeat)) return undefined;
    if (timing.repeat.boundsPeriod !== undefined) ranges.push(dayRangeOfPeriod(timing.repeat.boundsPeriod));
    else if (ranges.length === 0 || Object.keys(timing.repeat).some((k) => !['when', 'timeOfDay', 'id', 'extension'].includes(k))) return undefined;
  }
  if (ranges.length === 0 || ranges.some((r) => !r)) return undefined;
  const firsts = ranges.map((r) => r!.first).sort();
  const lasts = ranges.map((r) => r!.last).sort();
  return { first: firsts[0]!, last: lasts.at(-1)! };
}

/** The day range that dates a resource, or undefined when it has none the spec can read. */
export function datedRange(resource: Json): DayRange | undefined {
  for (const path of DATE_PATHS[resource.resourceType as string] ?? []) {
    let value: unknown = resource;
    for (const key of path) value = isObject(value) ? value[key] : undefined;
    if (value === undefined) continue;
    const last = path.at(-1)!;
    if (/Period$/.test(last) || last === 'period') return dayRangeOfPeriod(value);
    if (/Timing$/.test(last)) return dayRangeOfTiming(value);
    return dayRangeOfDate(value);
  }
  return undefined;
}

export interface Oracle {
  /** Spec "A resource R is visible", for permission r (read) or s (search match). */
  visible(resource: Json, need: Permission): boolean;
  /** vread / history entry: the version and the current version both visible (spec "Versions"). */
  versionVisible(version: Json, current: Json | undefined): boolean;
  /**
   * The patient a search of `type` is confined to when EVERY scope that could allow it is
   * patient-confined (spec rule 3), else undefined. The test uses it only to ask the upstream
   * which resources are in that patient's compartment as the upstream indexes it.
   */
  searchCompartment(type: string): string | undefined;
}

/**
 * @param currentOf the upstream's current version of a resource (undefined: deleted or never existed)
 * @param upstream the FHIR server's base URL, under which absolute references count as local
 */
export function createOracle(token: OracleToken, currentOf: (type: string, id: string) => Json | undefined, upstream: string): Oracle {
  const scopes = token.scopes.map(parseScope).filter((s): s is Scope => s !== undefined);
  const fhirUserType = token.fhirUser?.split('/')[0];
  const fhirUserPatient = fhirUserType === 'Patient' ? token.fhirUser!.split('/')[1] : undefined;
  const practitioner = fhirUserType === 'Practitioner' || fhirUserType === 'PractitionerRole';
  const hidden = new Set((token.consent?.hiddenLabels ?? []).map((l) => l.toUpperCase()));
  if (hidden.has('R')) hidden.add('V');
  const period = token.consent && (token.consent.start || token.consent.end) ? token.consent : undefined;

  /** undefined: not confined; null: confined to nobody; else the patient id. */
  function confinement(scope: Scope): string | undefined | null {
    if (scope.context === 'patient') return token.patient ?? (PATIENT_SCOPES_FALL_BACK_TO_FHIRUSER ? (fhirUserPatient ?? null) : null);
    if (scope.context === 'system' && token.sub === undefined) return undefined;
    if (practitioner) return undefined;
    return token.patient ?? fhirUserPatient ?? null;
  }

  function inCompartment(resource: Json, patient: string): boolean {
    const type = resource.resourceType as string;
    if (type === 'Patient') {
      if (resource.id !== patient) return false;
    } else {
      const link = PATIENT_LINK[type];
      const value = link ? resource[link] : undefined;
      if (!isObject(value) || referencedPatient(value.reference, upstream) !== patient) return false;
    }
    const contained = Array.isArray(resource.contained) ? resource.contained.filter(isObject) : [];
    return contained.every((c) => {
      if (c.resourceType === 'Patient') return false;
      const link = PATIENT_LINK[c.resourceType as string];
      if (!link || c[link] === undefined) return true;
      const ref = isObject(c[link]) ? (c[link] as Json).reference : undefined;
      if (typeof ref === 'string' && ref.startsWith('#')) return true;
      return referencedPatient(ref, upstream) === patient;
    });
  }

  function labelHidden(coding: Json): boolean {
    if (typeof coding.code !== 'string') return false;
    const code = coding.code.toUpperCase();
    if (!hidden.has(code)) return false;
    // No system, or one servers drop on storing (null, blank), reads as the patient's own label.
    if (coding.system === undefined || coding.system === null || (typeof coding.system === 'string' && coding.system.trim() === '')) return true;
    if (typeof coding.system !== 'string') return false;
    return inSystems(coding.system, ACT_CODE_LABELS.has(code) ? ACT_CODE_SYSTEMS : CONFIDENTIALITY_SYSTEMS);
  }

  function sensitiveCode(system: string, code: string): boolean {
    const categories = ['ETH', 'PSY', 'HIV', 'STD'].filter((c) => hidden.has(c));
    if (categories.length === 0) return false;
    if (inSystems(system, ICD_SYSTEMS)) {
      const c = code.toUpperCase().replace(/\./g, '');
      return categories.some((cat) => ICD_PREFIXES[cat]!.some((p) => c.startsWith(p)));
    }
    if (inSystems(system, SNOMED_SYSTEMS)) return categories.some((cat) => SNOMED_CODES[cat]?.includes(code) ?? false);
    if (inSystems(system, LOINC_SYSTEMS)) return categories.some((cat) => LOINC_CODES[cat]?.includes(code) ?? false);
    return false;
  }

  function anySensitiveCoding(node: unknown): boolean {
    if (Array.isArray(node)) return node.some(anySensitiveCoding);
    if (!isObject(node)) return false;
    if (typeof node.system === 'string' && typeof node.code === 'string' && sensitiveCode(node.system, node.code)) return true;
    return Object.values(node).some(anySensitiveCoding);
  }

  /** Rules 4 and 5: hidden labels on R or its contained resources, sensitive codes anywhere. */
  function labelledOrSensitive(resource: Json): boolean {
    if (hidden.size === 0) return false;
    const holders = [resource, ...(Array.isArray(resource.contained) ? resource.contained.filter(isObject) : [])];
    for (const h of holders) {
      const security = isObject(h.meta) && Array.isArray(h.meta.security) ? h.meta.security.filter(isObject) : [];
      if (security.some(labelHidden)) return true;
    }
    return anySensitiveCoding(resource);
  }

  function medicationHides(resource: Json): boolean {
    if (hidden.size === 0 || !MEDICATION_USERS.has(resource.resourceType as string)) return false;
    if (resource.medicationReference === undefined) return false;
    const ref = isObject(resource.medicationReference) ? resource.medicationReference.reference : undefined;
    // A drug named any other way (a list, an identifier only) cannot be looked up, so it hides.
    if (typeof ref !== 'string') return true;
    if (ref.startsWith('#')) return false;
    const id = referencedMedication(ref, upstream);
    const medication = id ? currentOf('Medication', id) : undefined;
    return !medication || labelledOrSensitive(medication);
  }

  function datesHide(resource: Json): boolean {
    if (!period || UNDATED.has(resource.resourceType as string)) return false;
    const r = datedRange(resource);
    if (!r) return true;
    return (period.start !== undefined && r.first < period.start) || (period.end !== undefined && r.last > period.end);
  }

  /** A contained clinical record is a record of its type and date; reference data goes with R. */
  function containedRecordHides(resource: Json): boolean {
    const contained = Array.isArray(resource.contained) ? resource.contained : [];
    return contained.some((c) => {
      if (!isObject(c)) return true;
      if (c.contained !== undefined) return true; // dom-2: contained resources contain nothing
      if (UNDATED.has(c.resourceType as string)) return false;
      if (token.consent?.resourceTypes && !token.consent.resourceTypes.includes(c.resourceType as string)) return true;
      return datesHide(c);
    });
  }

  function visible(resource: Json, need: Permission): boolean {
    const type = resource.resourceType as string;
    if (type === 'Bundle' || type === 'Binary') return false;
    if (token.consent?.resourceTypes && !token.consent.resourceTypes.includes(type)) return false;
    const allowed = scopes.some((scope) => {
      if (scope.type !== '*' && scope.type !== type) return false;
      if (!scope.perms.has(need)) return false;
      if (!scope.constraints.every(([k, v]) => tokenMatches(resource, k, v))) return false;
      const patient = confinement(scope);
      if (patient === null) return false;
      return patient === undefined || inCompartment(resource, patient);
    });
    if (!allowed) return false;
    if (labelledOrSensitive(resource)) return false;
    if (medicationHides(resource)) return false;
    if (containedRecordHides(resource)) return false;
    return !datesHide(resource);
  }

  return {
    visible,
    searchCompartment(type) {
      // Scopes confined to nobody allow nothing, so they do not widen the search either.
      const patients = scopes.filter((s) => (s.type === '*' || s.type === type) && s.perms.has('s')).map(confinement).filter((p) => p !== null);
      if (patients.length === 0) return undefined;
      return patients.every((p) => typeof p === 'string') ? (patients[0] as string) : undefined;
    },
    versionVisible(version, current) {
      return current !== undefined && visible(current, 'r') && visible(version, 'r');
    },
  };
}
