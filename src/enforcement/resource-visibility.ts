/**
 * Whether one FHIR resource may be shown (or written) under a token: its type is consented, a
 * granted scope covers it (granular `?category=` constraints included), it belongs to the patient
 * in context for `patient/` scopes, and the consent's visibility limits do not hide it (security
 * labels in `meta.security`, sensitive codes, data dates). Pure code.
 */
import type { Permission, ResourceScope } from '../smart/scope-grammar.ts';
import type { ConsentLimits } from './access-token.ts';
import { CODED_ELEMENTS, DATE_ELEMENTS, PATIENT_LINKS, SCOPE_PARAMETERS, SENSITIVE_CODES, UNDATED_TYPES } from './resource-rules.ts';
import { ACT_CODE_SYSTEM } from '../consent/security-labels.ts';

/** Everything needed to judge a resource, fixed per request by the decision. */
export interface AccessFilter {
  scopes: readonly ResourceScope[];
  /** The patient in context (a FHIR id); `patient/` scopes reach only their compartment. */
  patient?: string | undefined;
  consent?: ConsentLimits | undefined;
  /** Absolute base URLs under which `Patient/<id>` references also count (the upstream's). */
  bases?: readonly string[];
}

export type HiddenReason =
  | 'malformed'
  | 'type_not_consented'
  | 'not_in_scope'
  | 'other_patient'
  | 'security_label'
  | 'sensitive_code'
  | 'outside_period'
  | 'undated';

export type ResourceVerdict = { visible: true } | { visible: false; reason: HiddenReason };

type Json = Record<string, unknown>;
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

/** Is `reference` exactly `Patient/<id>` (optionally versioned, or absolute under a known base)? */
export function refersToPatient(reference: unknown, patient: string, bases: readonly string[] = []): boolean {
  if (!isObject(reference) || typeof reference.reference !== 'string') return false;
  let ref = reference.reference;
  for (const base of bases) if (ref.startsWith(`${base}/`)) ref = ref.slice(base.length + 1);
  return ref === `Patient/${patient}` || ref.startsWith(`Patient/${patient}/_history/`);
}

/** True when the resource belongs to the patient's compartment as far as the proxy can tell. */
export function inPatientCompartment(resource: Json, patient: string, bases: readonly string[] = []): boolean {
  const type = resource.resourceType;
  if (type === 'Patient') return resource.id === patient;
  const link = typeof type === 'string' ? PATIENT_LINKS[type] : undefined;
  if (!link) return false;
  const value = resource[link.element];
  // A list of patients (e.g. a shared document) is not one patient's data.
  return !Array.isArray(value) && refersToPatient(value, patient, bases);
}

function labelHidden(resource: Json, hidden: ConsentLimits['hiddenLabels']): boolean {
  const meta = resource.meta;
  if (!isObject(meta)) return false;
  return asArray(meta.security).some(
    (l) => isObject(l) && hidden.some((h) => h.code === l.code && (l.system === undefined || l.system === h.system)),
  );
}

function sensitiveCodeHidden(resource: Json, hidden: ConsentLimits['hiddenLabels']): boolean {
  const labels = new Set(hidden.filter((h) => h.system === ACT_CODE_SYSTEM).map((h) => h.code));
  if (labels.size === 0) return false;
  const rules = SENSITIVE_CODES.filter((r) => labels.has(r.label));
  for (const element of CODED_ELEMENTS) {
    for (const c of codings(resource[element])) {
      if (typeof c.system !== 'string' || typeof c.code !== 'string') continue;
      const code = c.code;
      if (rules.some((r) => r.systems.includes(c.system as string) && (r.exact ? r.codes.includes(code) : r.codes.some((p) => code.startsWith(p))))) return true;
    }
  }
  return false;
}

function path(resource: Json, dotted: string): unknown {
  let v: unknown = resource;
  for (const part of dotted.split('.')) v = isObject(v) ? v[part] : undefined;
  return v;
}

/** The earliest and latest day a FHIR date, dateTime, instant or Period may stand for. */
function dayRange(value: unknown): { first: string; last: string } | undefined {
  if (typeof value === 'string') {
    const m = /^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?/.exec(value);
    if (!m) return undefined;
    const [, y, mo, d] = m;
    if (d) return { first: `${y}-${mo}-${d}`, last: `${y}-${mo}-${d}` };
    if (mo) return { first: `${y}-${mo}-01`, last: `${y}-${mo}-31` };
    return { first: `${y}-01-01`, last: `${y}-12-31` };
  }
  if (isObject(value)) {
    const start = dayRange(value.start);
    const end = dayRange(value.end);
    if (!start && !end) return undefined;
    // An open-ended period runs on: it cannot be shown as lying inside a range that ends.
    return { first: (start ?? end)!.first, last: end ? end.last : '9999-12-31' };
  }
  return undefined;
}

function outsidePeriod(resource: Json, type: string, period: NonNullable<ConsentLimits['period']>): HiddenReason | undefined {
  if (UNDATED_TYPES.has(type)) return undefined;
  const elements = DATE_ELEMENTS[type];
  if (!elements) return 'undated';
  for (const element of elements) {
    const value = path(resource, element);
    if (value === undefined) continue;
    const range = dayRange(value);
    if (!range) return 'undated';
    if ((period.start && range.first < period.start) || (period.end && range.last > period.end)) return 'outside_period';
    return undefined;
  }
  return 'undated';
}

function consentHides(resource: Json, type: string, consent: ConsentLimits, checkDates: boolean): HiddenReason | undefined {
  if (consent.resourceTypes && !consent.resourceTypes.includes(type)) return 'type_not_consented';
  const parts = [resource, ...asArray(resource.contained).filter(isObject)];
  // A hidden contained resource hides its container: removing it would leave dangling references.
  if (parts.some((p) => labelHidden(p, consent.hiddenLabels))) return 'security_label';
  if (parts.some((p) => sensitiveCodeHidden(p, consent.hiddenLabels))) return 'sensitive_code';
  if (checkDates && consent.period && (consent.period.start || consent.period.end)) return outsidePeriod(resource, type, consent.period);
  return undefined;
}

/**
 * Whether `resource` may be shown (or, for writes, accepted) under `filter` with any of the
 * `needed` permissions. `checkDates: false` for a resource an app writes (the date range limits
 * what it sees, not what it may record).
 */
export function checkResource(resource: unknown, filter: AccessFilter, needed: readonly Permission[], opts: { checkDates?: boolean } = {}): ResourceVerdict {
  if (!isObject(resource) || typeof resource.resourceType !== 'string') return { visible: false, reason: 'malformed' };
  const type = resource.resourceType;
  if (filter.consent) {
    const reason = consentHides(resource, type, filter.consent, opts.checkDates ?? true);
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
