/**
 * A consent as a FHIR R4 `Consent` resource (scope patient-privacy): permit the app to access the
 * granted data, within the data period and record types, with deny provisions for every hidden
 * sensitive category. The id is the consent's; `meta.versionId` is its version.
 */
import { isResourceScope, parseResourceScope } from '../smart/index.ts';
import { effectiveStatus, type Consent } from './consent-record.ts';
import { securityLabel } from './security-labels.ts';

export interface FhirConsentInput {
  consent: Consent;
  clientName: string;
  /** Where client ids live, so the app can be named by identifier. */
  issuer: string;
  now: Date;
}

export function toFhirConsent({ consent, clientName, issuer, now }: FhirConsentInput): Record<string, unknown> {
  const v = consent.current;
  const status = effectiveStatus(v, now) === 'active' ? 'active' : 'inactive';
  const patient = consent.patientFhirId ? { reference: `Patient/${consent.patientFhirId}` } : undefined;
  const types =
    v.limits.resourceTypes ??
    [...new Set(v.scopes.filter(isResourceScope).map((s) => parseResourceScope(s).resourceType))].filter((t) => t !== '*');
  const reads = v.scopes.filter(isResourceScope).some((s) => parseResourceScope(s).permissions.has('r') || parseResourceScope(s).permissions.has('s'));
  const writes = v.scopes.filter(isResourceScope).some((s) => ['c', 'u', 'd'].some((p) => parseResourceScope(s).permissions.has(p as 'c')));
  const dataPeriod = v.limits.from || v.limits.until ? { ...(v.limits.from ? { start: v.limits.from } : {}), ...(v.limits.until ? { end: v.limits.until } : {}) } : undefined;
  return {
    resourceType: 'Consent',
    id: consent.id,
    meta: { versionId: String(v.version), lastUpdated: v.createdAt.toISOString() },
    status,
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy', display: 'Privacy Consent' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] }],
    ...(patient ? { patient } : {}),
    dateTime: v.createdAt.toISOString(),
    ...(patient ? { performer: [patient] } : {}),
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN', display: 'opt-in' }] },
    provision: {
      type: 'permit',
      period: { start: consent.createdAt.toISOString(), ...(v.expiresAt ? { end: v.expiresAt.toISOString() } : {}) },
      actor: [
        {
          role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP', display: 'information recipient' }] },
          reference: { identifier: { system: `${issuer}/clients`, value: consent.clientId }, display: clientName },
        },
      ],
      action: [
        ...(reads ? [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] }] : []),
        ...(writes ? [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'correct' }] }] : []),
      ],
      ...(dataPeriod ? { dataPeriod } : {}),
      ...(types.length ? { class: types.map((code) => ({ system: 'http://hl7.org/fhir/resource-types', code })) } : {}),
      ...(v.limits.hiddenLabels.length
        ? {
            provision: [
              {
                type: 'deny',
                securityLabel: v.limits.hiddenLabels.map((code) => {
                  const l = securityLabel(code);
                  return { system: l.system, code, display: l.label };
                }),
              },
            ],
          }
        : {}),
    },
  };
}
