/**
 * Consent records: one per patient, app and acting person, versioned. A change never edits a
 * version; it appends the next one. Pure types and rules; storage is in the repository.
 */
import type { VisibilityLimits } from './visibility.ts';

export const CONSENT_STATUSES = ['active', 'revoked', 'expired'] as const;
export type ConsentStatus = (typeof CONSENT_STATUSES)[number];

/** Why a version was written. */
export type ConsentChange = 'granted' | 'extended' | 'narrowed' | 'limits_changed' | 'revoked';

export interface ConsentVersion {
  version: number;
  /** As stored: active or revoked. Expiry is a matter of time (see {@link effectiveStatus}). */
  status: 'active' | 'revoked';
  scopes: string[];
  limits: VisibilityLimits;
  expiresAt: Date | null;
  /** The authentication level of the login that made this change. */
  acr: string | null;
  /** The account that made this change (the patient, a representative, or an admin). */
  changedBy: string;
  change: ConsentChange;
  createdAt: Date;
}

export interface Consent {
  id: string;
  /** The account of the patient whose data this is. */
  patientAccountId: string;
  patientFhirId: string | null;
  clientId: string;
  /** The person who acts: the patient, or a representative acting for them. */
  actorAccountId: string;
  createdAt: Date;
  current: ConsentVersion;
}

export function effectiveStatus(version: Pick<ConsentVersion, 'status' | 'expiresAt'>, now: Date): ConsentStatus {
  if (version.status === 'revoked') return 'revoked';
  return version.expiresAt && version.expiresAt.getTime() <= now.getTime() ? 'expired' : 'active';
}

/** The expiry choices offered to a patient, in days, none longer than the longest allowed. */
export function expiryChoices(maxSeconds: number): number[] {
  const maxDays = Math.floor(maxSeconds / 86400);
  const days = [1, 7, 30, 90, 365].filter((d) => d <= maxDays);
  return days.length ? days : [Math.max(1, maxDays)];
}
