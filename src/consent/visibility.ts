/**
 * Data-visibility limits: what stays hidden from an app even inside the scopes it was granted.
 * They travel with every token as an RFC 9396 `authorization_details` entry of our own type so a
 * resource server (or `custos fhir-proxy`) can enforce them.
 */
import { z } from 'zod';
import { SENSITIVE_LABELS, securityLabel, sortLabels, type SensitiveLabel } from './security-labels.ts';

/** The RFC 9396 `type` of the entry Custos puts in `authorization_details`. */
export const CONSENT_DETAILS_TYPE = 'urn:custos:consent';

const isoDate = z.iso.date({ error: 'dates are written YYYY-MM-DD' });
const resourceType = z.string().regex(/^[A-Z][A-Za-z]{1,63}$/, { error: 'a resource type is a FHIR type name such as Observation' });

export const visibilityLimitsSchema = z
  .object({
    /** Sensitive categories the app never sees. */
    hiddenLabels: z.array(z.enum(SENSITIVE_LABELS)).max(SENSITIVE_LABELS.length).default([]),
    /** Only data dated on or after this day. */
    from: isoDate.optional(),
    /** Only data dated on or before this day. */
    until: isoDate.optional(),
    /** Only these resource types; every type the scopes allow when absent. */
    resourceTypes: z.array(resourceType).min(1).max(50).optional(),
  })
  .strict()
  .refine((l) => !l.from || !l.until || l.from <= l.until, { error: '"from" must not be after "until"', path: ['until'] })
  .transform((l) => ({
    ...l,
    hiddenLabels: sortLabels(l.hiddenLabels),
    ...(l.resourceTypes ? { resourceTypes: [...new Set(l.resourceTypes)].sort() } : {}),
  }));

export type VisibilityLimits = z.output<typeof visibilityLimitsSchema>;

/**
 * True when `next` shows the app something `current` hid: a label no longer hidden, a date
 * range moved earlier or later or dropped at either end, a type list that gained a type or was
 * dropped. Widening what an app sees needs step-up, whichever limit it loosens.
 */
export function widensSensitiveAccess(current: VisibilityLimits, next: VisibilityLimits): boolean {
  const stillHidden = new Set(next.hiddenLabels);
  if (current.hiddenLabels.some((l) => !stillHidden.has(l))) return true;
  // ISO dates compare as strings; an end that is gone is the widest end of all.
  if (current.from && (!next.from || next.from < current.from)) return true;
  if (current.until && (!next.until || next.until > current.until)) return true;
  if (current.resourceTypes) {
    const allowed = new Set(current.resourceTypes);
    if (!next.resourceTypes || next.resourceTypes.some((t) => !allowed.has(t))) return true;
  }
  return false;
}

/** Labels shared with the app (not hidden): what needs a strong login to grant. */
export function sharedSensitiveLabels(limits: VisibilityLimits): SensitiveLabel[] {
  const hidden = new Set(limits.hiddenLabels);
  return SENSITIVE_LABELS.filter((l) => !hidden.has(l));
}

export interface ConsentDetailsEntry {
  type: typeof CONSENT_DETAILS_TYPE;
  /** RFC 9396 common field: the FHIR server(s) the limits apply at. */
  locations?: string[];
  consent_id: string;
  consent_version: number;
  patient?: string;
  hidden_security_labels: { system: string; code: string }[];
  period?: { start?: string; end?: string };
  resource_types?: string[];
  expires_at?: string;
}

/** The `authorization_details` entry for a consent version (documented in the README). */
export function consentDetails(input: {
  consentId: string;
  version: number;
  patientFhirId?: string | null | undefined;
  limits: VisibilityLimits;
  expiresAt?: Date | null | undefined;
  locations?: string[] | undefined;
}): ConsentDetailsEntry {
  const { limits } = input;
  return {
    type: CONSENT_DETAILS_TYPE,
    ...(input.locations?.length ? { locations: input.locations } : {}),
    consent_id: input.consentId,
    consent_version: input.version,
    ...(input.patientFhirId ? { patient: `Patient/${input.patientFhirId}` } : {}),
    hidden_security_labels: limits.hiddenLabels.map((code) => {
      const { system } = securityLabel(code);
      return { system, code };
    }),
    ...(limits.from || limits.until ? { period: { ...(limits.from ? { start: limits.from } : {}), ...(limits.until ? { end: limits.until } : {}) } } : {}),
    ...(limits.resourceTypes ? { resource_types: limits.resourceTypes } : {}),
    ...(input.expiresAt ? { expires_at: input.expiresAt.toISOString() } : {}),
  };
}
