/**
 * Whether one FHIR resource may be shown (or written) under a token: its type is consented, a
 * granted scope covers it (granular `?category=` constraints included), it belongs to the patient
 * in context for `patient/` scopes (and holds no contained resource about someone else), and the
 * consent's visibility limits do not hide it: security labels in `meta.security` (any case, any
 * name of the label's code system), sensitive codes anywhere in the resource or in the Medication
 * it references, and data dates (offsets, open periods and timings read conservatively). Pure code.
 */
import type { Permission, ResourceScope } from '../smart/scope-grammar.ts';
import type { ConsentLimits } from './access-token.ts';
import { RESOURCE_TYPE } from './fhir-request.ts';
import { DATE_ELEMENTS, LABEL_SYSTEM_ALIASES, MAX_NESTING, MEDICATION_REFERENCE_TYPES, PATIENT_LINKS, SCOPE_PARAMETERS, SENSITIVE_CODES, STRICTER_LABELS, UNDATED_TYPES } from './resource-rules.ts';

/** Everything needed to judge a resource, fixed per request by the decision. */
export interface AccessFilter {
  scopes: readonly ResourceScope[];
  /** The patient in context (a FHIR id); `patient/` scopes reach only their compartment. */
  patient?: string | undefined;
  consent?: ConsentLimits | undefined;
  /** Absolute base URLs under which `Patient/<id>` references also count (the upstream's). */
  bases?: readonly string[];
}

/**
 * Medications a resource refers to, as fetched by the caller: the resource, or `null` when it
 * could not be read. A reference missing from the lookup counts as unreadable.
 */
export type ReferencedMedications = ReadonlyMap<string, Record<string, unknown> | null>;

export type HiddenReason =
  | 'malformed'
  | 'type_not_consented'
  | 'not_in_scope'
  | 'other_patient'
  | 'security_label'
  | 'sensitive_code'
  | 'outside_period'
  | 'undated'
  | 'unverifiable_reference'
  | 'unsupported_type';

export type ResourceVerdict = { visible: true } | { visible: false; reason: HiddenReason };

type Json = Record<string, unknown>;
const UNSERVED_TYPES = new Set(['Bundle', 'Binary']);
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const asArray = (v: unknown): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function codings(value: unknown): { system?: unknown; code?: unknown }[] {
  return asArray(value).flatMap((cc) => (isObject(cc) ? asArray(cc.coding).filter(isObject) : []));
}

/** SMART granular constraints use FHIR token syntax: `system|code`, `code`, `system|`, `|code`. */
function tokenMatches(value: unknown, token: string): boolean {
  const bar = token.indexOf('|');
  const system = bar < 0 ? undefined : token.slice(0, bar);
  const code = bar < 0 ? token : token.slice(bar + 1);
  return codings(value).some((c) => {
    if (system !== undefined && system !== '' && c.system !== system) return false;
    if (system === '' && c.system !== undefined) return false;
    return code === '' || c.code === code;
  });
}

function matchesConstraints(resource: Json, scope: ResourceScope): boolean {
  return scope.query.every(([name, value]) => {
    const param = SCOPE_PARAMETERS[name];
    // A constraint the proxy cannot evaluate lets nothing through.
    if (!param) return false;
    const element = resource[param.element];
    return param.kind === 'code' ? element === value : tokenMatches(element, value);
  });
}

/**
 * Every literal reference in a resource (`reference` strings of Reference elements, however deep),
 * but not those to contained resources (`#...`).
 */
export function* literalReferences(value: unknown): Generator<string> {
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (Array.isArray(v)) stack.push(...v);
    else if (isObject(v)) {
      if (typeof v.reference === 'string' && !v.reference.startsWith('#')) yield v.reference;
      for (const child of Object.values(v)) if (typeof child === 'object' && child !== null) stack.push(child);
    }
  }
}

/**
 * A reference as `Type/id[/_history/v]` when it points at the server (relative, or absolute under
 * one of `bases`); undefined when it points elsewhere (another server, a `urn:`), which the
 * server cannot resolve against its own data.
 */
export function relativeReference(ref: string, bases: readonly string[]): string | undefined {
  const rel = relative(ref, bases);
  if (/^[a-z][a-z0-9+.-]*:/i.test(rel)) return undefined;
  return rel;
}

/** Strips a known base from an absolute reference, leaving `Type/id[/_history/v]`. */
function relative(ref: string, bases: readonly string[]): string {
  for (const base of bases) if (ref.startsWith(`${base}/`)) return ref.slice(base.length + 1);
  return ref;
}

/** Is `reference` exactly `Patient/<id>` (optionally versioned, or absolute under a known base)? */
export function refersToPatient(reference: unknown, patient: string, bases: readonly string[] = []): boolean {
  if (!isObject(reference) || typeof reference.reference !== 'string') return false;
  const ref = relative(reference.reference, bases);
  return ref === `Patient/${patient}` || ref.startsWith(`Patient/${patient}/_history/`);
}

/**
 * True when a contained resource is about someone other than `patient`: any contained Patient (it
 * cannot be shown to be this one), or a compartment resource whose patient is not this one nor a
 * reference inside the container.
 */
function containsAnotherPerson(resource: Json, patient: string, bases: readonly string[]): boolean {
  return asArray(resource.contained).some((c) => {
    if (!isObject(c)) return true;
    if (c.resourceType === 'Patient') return true;
    const link = typeof c.resourceType === 'string' ? PATIENT_LINKS[c.resourceType] : undefined;
    if (!link || c[link.element] === undefined) return false;
    const value = c[link.element];
    if (isObject(value) && typeof value.reference === 'string' && value.reference.startsWith('#')) return false;
    return Array.isArray(value) || !refersToPatient(value, patient, bases);
  });
}

/** True when the resource belongs to the patient's compartment as far as the proxy can tell. */
export function inPatientCompartment(resource: Json, patient: string, bases: readonly string[] = []): boolean {
  const type = resource.resourceType;
  if (containsAnotherPerson(resource, patient, bases)) return false;
  if (type === 'Patient') return resource.id === patient;
  const link = typeof type === 'string' ? PATIENT_LINKS[type] : undefined;
  if (!link) return false;
  const value = resource[link.element];
  // A list of patients (e.g. a shared document) is not one patient's data.
  return !Array.isArray(value) && refersToPatient(value, patient, bases);
}

const normalSystem = (system: string) => system.trim().toLowerCase().replace(/\/+$/, '');

/** The hidden labels as `normalised system|CODE` keys, with every alias and every stricter label. */
function hiddenLabelKeys(hidden: ConsentLimits['hiddenLabels']): { keys: Set<string>; codes: Set<string> } {
  const keys = new Set<string>();
  const codes = new Set<string>();
  for (const label of hidden) {
    const systems = [label.system, ...(LABEL_SYSTEM_ALIASES[label.system] ?? [])].map(normalSystem);
    for (const code of [label.code, ...(STRICTER_LABELS[label.code] ?? [])]) {
      codes.add(code.toUpperCase());
      for (const system of systems) keys.add(`${system}|${code.toUpperCase()}`);
    }
  }
  return { keys, codes };
}

function labelHidden(resource: Json, hidden: ReturnType<typeof hiddenLabelKeys>): boolean {
  const meta = resource.meta;
  if (!isObject(meta)) return false;
  return asArray(meta.security).some((l) => {
    if (!isObject(l) || typeof l.code !== 'string') return false;
    const code = l.code.trim().toUpperCase();
    // A label without a system is read as the patient's label of that code; so is one whose
    // system is null or blank, which servers drop on storing it (leaving it without one).
    if (l.system === undefined || l.system === null || (typeof l.system === 'string' && l.system.trim() === '')) return hidden.codes.has(code);
    return typeof l.system === 'string' && hidden.keys.has(`${normalSystem(l.system)}|${code}`);
  });
}

const TOO_DEEP = Symbol('too deep');

/** Every Coding in a resource, however deep (components, evidence, stages, extensions, contained). */
function* allCodings(value: unknown, depth = 0): Generator<{ system: string; code: string } | typeof TOO_DEEP> {
  // Real resources nest a few dozen levels at most; past that the walk stops and says so, because
  // what it did not read cannot be cleared.
  if (depth > MAX_NESTING) {
    yield TOO_DEEP;
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) yield* allCodings(v, depth + 1);
    return;
  }
  if (!isObject(value)) return;
  if (typeof value.system === 'string' && typeof value.code === 'string') yield { system: value.system, code: value.code };
  for (const v of Object.values(value)) if (typeof v === 'object' && v !== null) yield* allCodings(v, depth + 1);
}

const SENSITIVE_RULES = SENSITIVE_CODES.map((r) => ({
  ...r,
  systems: new Set(r.systems.map(normalSystem)),
  codes: r.codes.map((c) => c.toUpperCase().replace(/\./g, '')),
}));

function sensitiveCodeHidden(resource: Json, hiddenCodes: ReadonlySet<string>): boolean {
  const rules = SENSITIVE_RULES.filter((r) => hiddenCodes.has(r.label));
  if (rules.length === 0) return false;
  for (const c of allCodings(resource)) {
    if (c === TOO_DEEP) return true;
    const system = normalSystem(c.system);
    // ICD-10 codes are written with or without their dot, in either case.
    const code = c.code.trim().toUpperCase().replace(/\./g, '');
    if (rules.some((r) => r.systems.has(system) && (r.exact ? r.codes.includes(code) : r.codes.some((p) => code.startsWith(p))))) return true;
  }
  return false;
}

/** Distinct drugs one resource (with its contained ones) may name and still be judged. */
export const MAX_DRUG_REFERENCES = 16;

/**
 * The Medication references of a resource (and of the resources it contains) that point outside
 * it, as relative `Medication/<id>[/_history/<v>]` strings, or as given when they point elsewhere.
 */
export function medicationReferences(resource: unknown, bases: readonly string[] = []): string[] {
  if (!isObject(resource)) return [];
  const refs: string[] = [];
  for (const part of [resource, ...asArray(resource.contained).filter(isObject)]) {
    if (typeof part.resourceType !== 'string' || !MEDICATION_REFERENCE_TYPES.has(part.resourceType)) continue;
    const ref = part.medicationReference;
    if (ref === undefined) continue;
    // Anything but one Reference (a list, a string) names drugs that cannot be looked up.
    if (!isObject(ref)) {
      refs.push('');
      continue;
    }
    if (typeof ref.reference !== 'string') {
      // A reference by identifier only cannot be looked up.
      refs.push('');
      continue;
    }
    if (!ref.reference.startsWith('#')) refs.push(relative(ref.reference, bases));
  }
  return refs;
}

const lastDayOfMonth = (y: string, m: string) => String(new Date(Date.UTC(Number(y), Number(m), 0)).getUTCDate()).padStart(2, '0');

const DATE_TIME = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

interface DayRange {
  first: string;
  last: string;
}

/**
 * The days a FHIR date, dateTime or instant may stand for. A time of day counts on the day written
 * and on its UTC day, so an offset never carries it across a limit; a time without an offset
 * cannot be placed at all.
 */
function dayRangeOfString(value: string): DayRange | undefined {
  const m = DATE_TIME.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, hh, , , tz] = m;
  if (!mo) return { first: `${y}-01-01`, last: `${y}-12-31` };
  if (!d) return { first: `${y}-${mo}-01`, last: `${y}-${mo}-${lastDayOfMonth(y!, mo)}` };
  const local = `${y}-${mo}-${d}`;
  if (!hh) return { first: local, last: local };
  if (!tz) return undefined;
  const instant = new Date(value);
  if (Number.isNaN(instant.getTime())) return undefined;
  const utc = instant.toISOString().slice(0, 10);
  return utc < local ? { first: utc, last: local } : { first: local, last: utc };
}

function dayRangeOfPeriod(value: Json): DayRange | undefined {
  if (value.start === undefined && value.end === undefined) return undefined;
  const start = value.start === undefined ? undefined : typeof value.start === 'string' ? dayRangeOfString(value.start) : undefined;
  const end = value.end === undefined ? undefined : typeof value.end === 'string' ? dayRangeOfString(value.end) : undefined;
  if ((value.start !== undefined && !start) || (value.end !== undefined && !end)) return undefined;
  // A period ending before it starts has no days to compare, and taking either end alone would
  // let a crafted one slip through the window; like any other unreadable date it is hidden.
  if (start && end && start.first > end.last) return undefined;
  // An open period runs from the beginning of time, or on without end.
  return { first: start?.first ?? '0000-01-01', last: end?.last ?? '9999-12-31' };
}

/** Parts of `Timing.repeat` that say when in a day, never on which days: they move no limit. */
const TIME_OF_DAY_ONLY = new Set(['id', 'extension', 'when', 'timeOfDay']);

/**
 * The days of a Timing: its events and its repeat's `boundsPeriod` together. A repeat that runs
 * on from its events without bounds (a count, a frequency) cannot be placed, so it is unreadable.
 */
function dayRangeOfTiming(value: Json): DayRange | undefined {
  const ranges: (DayRange | undefined)[] = asArray(value.event).map((e) => (typeof e === 'string' ? dayRangeOfString(e) : undefined));
  const repeat = value.repeat;
  if (repeat !== undefined) {
    if (!isObject(repeat)) return undefined;
    if (isObject(repeat.boundsPeriod)) ranges.push(dayRangeOfPeriod(repeat.boundsPeriod));
    else if (ranges.length === 0 || Object.keys(repeat).some((k) => !TIME_OF_DAY_ONLY.has(k))) return undefined;
  }
  if (ranges.length === 0 || ranges.some((r) => !r)) return undefined;
  return {
    first: ranges.reduce((a, r) => (r!.first < a ? r!.first : a), '9999-12-31'),
    last: ranges.reduce((a, r) => (r!.last > a ? r!.last : a), '0000-01-01'),
  };
}

function dayRange(element: string, value: unknown): DayRange | undefined {
  if (typeof value === 'string') return dayRangeOfString(value);
  if (!isObject(value)) return undefined;
  return element.endsWith('Timing') ? dayRangeOfTiming(value) : dayRangeOfPeriod(value);
}

function path(resource: Json, dotted: string): unknown {
  let v: unknown = resource;
  for (const part of dotted.split('.')) v = isObject(v) ? v[part] : undefined;
  return v;
}

function outsidePeriod(resource: Json, type: string, period: NonNullable<ConsentLimits['period']>): HiddenReason | undefined {
  if (UNDATED_TYPES.has(type)) return undefined;
  const elements = DATE_ELEMENTS[type];
  if (!elements) return 'undated';
  for (const element of elements) {
    const value = path(resource, element);
    if (value === undefined) continue;
    // The first element present dates the resource; one that cannot be read hides it.
    const range = dayRange(element, value);
    if (!range) return 'undated';
    if ((period.start && range.first < period.start) || (period.end && range.last > period.end)) return 'outside_period';
    return undefined;
  }
  return 'undated';
}

function hiddenByLabelsOrCodes(resource: Json, hidden: ReturnType<typeof hiddenLabelKeys>): HiddenReason | undefined {
  const parts = [resource, ...asArray(resource.contained).filter(isObject)];
  // A hidden contained resource hides its container: removing it would leave dangling references.
  if (parts.some((p) => labelHidden(p, hidden))) return 'security_label';
  if (sensitiveCodeHidden(resource, hidden.codes)) return 'sensitive_code';
  return undefined;
}

/**
 * Contained clinical records (a Condition inside a DiagnosticReport) are records of their own type
 * and date, judged as such; contained reference data (a Medication, a Practitioner) is part of its
 * container and goes with it.
 */
function containedRecordHidden(resource: Json, consent: ConsentLimits, opts: CheckOptions): HiddenReason | undefined {
  for (const c of asArray(resource.contained)) {
    if (!isObject(c) || typeof c.resourceType !== 'string') return 'malformed';
    if (UNDATED_TYPES.has(c.resourceType)) continue;
    if (consent.resourceTypes && !consent.resourceTypes.includes(c.resourceType)) return 'type_not_consented';
    if ((opts.checkDates ?? true) && consent.period && (consent.period.start || consent.period.end)) {
      const reason = outsidePeriod(c, c.resourceType, consent.period);
      if (reason) return reason;
    }
  }
  return undefined;
}

function consentHides(resource: Json, type: string, filter: AccessFilter, consent: ConsentLimits, opts: CheckOptions): HiddenReason | undefined {
  if (consent.resourceTypes && !consent.resourceTypes.includes(type)) return 'type_not_consented';
  const contained = containedRecordHidden(resource, consent, opts);
  if (contained) return contained;
  if (consent.hiddenLabels.length > 0) {
    const hidden = hiddenLabelKeys(consent.hiddenLabels);
    const reason = hiddenByLabelsOrCodes(resource, hidden);
    if (reason) return reason;
    const drugs = medicationReferences(resource, filter.bases);
    // Each drug is read upstream before judging: a resource naming more than a prescription and
    // its contained ones ever would is one whose drugs are not all read, so it cannot be cleared.
    if (new Set(drugs).size > MAX_DRUG_REFERENCES) return 'unverifiable_reference';
    for (const ref of drugs) {
      // A prescription pinned to an old version of its drug is judged with the drug as it is now
      // too: a label added since covers it, as it covers the drug's own past versions.
      const pinned = /^Medication\/([^/]+)\/_history\//.exec(ref);
      for (const key of pinned ? [ref, `Medication/${pinned[1]}`] : [ref]) {
        const medication = opts.medications?.get(key);
        // The drug decides what a prescription reveals: one that cannot be read cannot be cleared.
        if (!medication) return 'unverifiable_reference';
        const why = hiddenByLabelsOrCodes(medication, hidden);
        if (why) return why;
      }
    }
  }
  if ((opts.checkDates ?? true) && consent.period && (consent.period.start || consent.period.end)) return outsidePeriod(resource, type, consent.period);
  return undefined;
}

export interface CheckOptions {
  /** `false` for a resource an app writes (the date range limits what it sees, not what it may record). */
  checkDates?: boolean;
  /** The Medications the resource refers to (see {@link medicationReferences}), read by the caller. */
  medications?: ReferencedMedications;
}

/**
 * Whether `resource` may be shown (or, for writes, accepted) under `filter` with any of the
 * `needed` permissions.
 */
export function checkResource(resource: unknown, filter: AccessFilter, needed: readonly Permission[], opts: CheckOptions = {}): ResourceVerdict {
  if (!isObject(resource) || typeof resource.resourceType !== 'string') return { visible: false, reason: 'malformed' };
  // Refused at the request too (decision.ts): a Bundle may hold anything, unchecked, and a Binary
  // names no patient or labels. An include or `$everything` brings them no more than a read does.
  if (UNSERVED_TYPES.has(resource.resourceType)) return { visible: false, reason: 'unsupported_type' };
  // FHIR forbids contained resources that contain others (dom-2); nothing below looks that deep.
  // Every part must name a real type: the rules are looked up by it.
  if (!RESOURCE_TYPE.test(resource.resourceType)) return { visible: false, reason: 'malformed' };
  if (asArray(resource.contained).some((c) => !isObject(c) || typeof c.resourceType !== 'string' || !RESOURCE_TYPE.test(c.resourceType) || c.contained !== undefined)) {
    return { visible: false, reason: 'malformed' };
  }
  const type = resource.resourceType;
  if (filter.consent) {
    const reason = consentHides(resource, type, filter, filter.consent, opts);
    if (reason) return { visible: false, reason };
  }
  let otherPatient = false;
  for (const scope of filter.scopes) {
    if (scope.resourceType !== '*' && scope.resourceType !== type) continue;
    if (!needed.some((p) => scope.permissions.has(p))) continue;
    if (!matchesConstraints(resource, scope)) continue;
    if (scope.context === 'patient' && !(filter.patient && inPatientCompartment(resource, filter.patient, filter.bases))) {
      otherPatient = true;
      continue;
    }
    return { visible: true };
  }
  return { visible: false, reason: otherPatient ? 'other_patient' : 'not_in_scope' };
}
