/**
 * What a validated access token says, whichever way it was validated (RFC 7662 introspection or a
 * signed JWT, RFC 9068): its SMART scopes, the patient in context, how the user authenticated
 * (RFC 9470 `acr`, `auth_time`) and the consent's visibility limits, which Custos puts in an RFC 9396
 * `authorization_details` entry of type `urn:custos:consent` (see src/consent/visibility.ts).
 */
import { isResourceScope, parseResourceScope, type ResourceScope } from '../smart/scope-grammar.ts';
import { CONSENT_DETAILS_TYPE } from '../consent/visibility.ts';
import { FHIR_ID, RESOURCE_TYPE } from './fhir-request.ts';

export interface SecurityLabelRef {
  system: string;
  code: string;
}

/** The consent's limits, as the token carries them. */
export interface ConsentLimits {
  consentId: string;
  version: number;
  hiddenLabels: SecurityLabelRef[];
  /** Data dates, YYYY-MM-DD, both ends included. */
  period?: { start?: string; end?: string };
  /** Only these resource types when present. */
  resourceTypes?: string[];
  expiresAt?: Date;
}

export interface AccessFacts {
  scopes: ResourceScope[];
  clientId?: string;
  sub?: string;
  /** The FHIR Patient id in context (SMART `patient`), for `patient/` scopes. */
  patient?: string;
  /** Who the user is on the FHIR server, relative (`Patient/123`, `Practitioner/9`): SMART `fhirUser`. */
  fhirUser?: string;
  acr?: string;
  authTime?: number;
  /** Seconds since the epoch. */
  exp?: number;
  aud: string[];
  consent?: ConsentLimits;
}

export type TokenVerdict = { active: true; facts: AccessFacts } | { active: false; reason: string };

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function consentFrom(details: unknown): { limits?: ConsentLimits; patient?: string; error?: string } {
  if (details === undefined) return {};
  if (!Array.isArray(details)) return { error: 'authorization_details is not an array' };
  const entries = details.filter((d): d is Record<string, unknown> => typeof d === 'object' && d !== null && (d as { type?: unknown }).type === CONSENT_DETAILS_TYPE);
  if (entries.length === 0) return {};
  if (entries.length > 1) return { error: 'the token carries more than one consent' };
  const e = entries[0]!;
  const consentId = str(e.consent_id);
  const version = num(e.consent_version);
  if (!consentId || version === undefined) return { error: 'the consent entry has no id or version' };
  const labels = e.hidden_security_labels ?? [];
  if (!Array.isArray(labels) || !labels.every((l) => typeof l?.system === 'string' && typeof l?.code === 'string')) {
    return { error: 'the consent entry has malformed hidden_security_labels' };
  }
  const limits: ConsentLimits = { consentId, version, hiddenLabels: labels.map((l: SecurityLabelRef) => ({ system: l.system, code: l.code })) };
  if (e.period !== undefined) {
    const p = e.period as { start?: unknown; end?: unknown } | null;
    const start = p?.start;
    const end = p?.end;
    if (typeof p !== 'object' || p === null || (start !== undefined && !(typeof start === 'string' && DATE.test(start))) || (end !== undefined && !(typeof end === 'string' && DATE.test(end)))) {
      return { error: 'the consent entry has a malformed period' };
    }
    limits.period = { ...(start ? { start: start as string } : {}), ...(end ? { end: end as string } : {}) };
  }
  if (e.resource_types !== undefined) {
    if (!Array.isArray(e.resource_types) || !e.resource_types.every((t) => typeof t === 'string')) return { error: 'the consent entry has malformed resource_types' };
    limits.resourceTypes = e.resource_types as string[];
  }
  if (e.expires_at !== undefined) {
    const at = typeof e.expires_at === 'string' ? new Date(e.expires_at) : undefined;
    if (!at || Number.isNaN(at.getTime())) return { error: 'the consent entry has a malformed expires_at' };
    limits.expiresAt = at;
  }
  let patient: string | undefined;
  if (e.patient !== undefined) {
    const m = typeof e.patient === 'string' ? /^Patient\/(.+)$/.exec(e.patient) : null;
    if (!m?.[1] || !FHIR_ID.test(m[1])) return { error: 'the consent entry names a malformed patient' };
    patient = m[1];
  }
  return { limits, ...(patient ? { patient } : {}) };
}

/** `Type/id` from a `fhirUser` claim, which SMART makes an absolute URL (a relative one is taken too). */
function fhirUserReference(claim: string): string | undefined {
  const parts = claim.replace(/\/+$/, '').split('/');
  const [type, id] = parts.slice(-2);
  return type && id && RESOURCE_TYPE.test(type) && FHIR_ID.test(id) ? `${type}/${id}` : undefined;
}

/**
 * Turns introspection output or JWT claims into {@link AccessFacts}. The claims must already be
 * known to be authentic and active; this refuses a token whose claims contradict themselves or
 * whose consent has run out at `now` (milliseconds).
 */
export function accessFactsFromClaims(claims: Record<string, unknown>, now: number): TokenVerdict {
  // A sender-constrained token (RFC 9449 DPoP `jkt`, RFC 8705 `x5t#S256`) is only worth its binding
  // when the proof is checked, which this library does not do: taking it as a bearer token would
  // let whoever copied it use it.
  if (claims.cnf !== undefined) return { active: false, reason: 'the token is bound to a key (cnf) and cannot be used as a bearer token' };
  const scopes: ResourceScope[] = [];
  for (const s of (str(claims.scope) ?? '').split(' ')) {
    if (!isResourceScope(s)) continue;
    try {
      scopes.push(parseResourceScope(s));
    } catch {
      // A scope this grammar does not know grants nothing.
    }
  }
  const consent = consentFrom(claims.authorization_details);
  if (consent.error) return { active: false, reason: consent.error };
  const launchPatient = str(claims.patient);
  if (launchPatient !== undefined && !FHIR_ID.test(launchPatient)) return { active: false, reason: 'the patient in context is not a FHIR id' };
  if (launchPatient && consent.patient && launchPatient !== consent.patient) {
    return { active: false, reason: 'the patient in context is not the patient who consented' };
  }
  if (consent.limits?.expiresAt && consent.limits.expiresAt.getTime() <= now) return { active: false, reason: 'the consent has expired' };
  const fhirUserClaim = str(claims.fhirUser);
  const fhirUser = fhirUserClaim === undefined ? undefined : fhirUserReference(fhirUserClaim);
  if (fhirUserClaim !== undefined && !fhirUser) return { active: false, reason: 'the fhirUser claim is not a FHIR resource URL' };
  const aud = claims.aud;
  const patient = launchPatient ?? consent.patient;
  const facts: AccessFacts = {
    scopes,
    aud: typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.filter((a): a is string => typeof a === 'string') : [],
    ...(str(claims.client_id) ? { clientId: str(claims.client_id) } : {}),
    ...(str(claims.sub) ? { sub: str(claims.sub) } : {}),
    ...(patient ? { patient } : {}),
    ...(fhirUser ? { fhirUser } : {}),
    ...(str(claims.acr) ? { acr: str(claims.acr) } : {}),
    ...(num(claims.auth_time) !== undefined ? { authTime: num(claims.auth_time) } : {}),
    ...(num(claims.exp) !== undefined ? { exp: num(claims.exp) } : {}),
    ...(consent.limits ? { consent: consent.limits } : {}),
  };
  return { active: true, facts };
}
