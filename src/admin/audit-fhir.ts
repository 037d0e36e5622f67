/**
 * Audit events as FHIR R4 AuditEvent resources (https://hl7.org/fhir/R4/auditevent.html), in a
 * searchset Bundle, for export to a SIEM or a FHIR server that keeps the record. Pure mapping.
 */
import type { AuditEvent } from '../audit/index.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const EVENT_TYPE = 'urn:custos:audit-event-type';
const ACTION = { C: 'C', R: 'R', U: 'U', D: 'D', E: 'E' } as const;

/** AuditEvent.outcome (R4): 0 success, 4 minor failure, 8 serious failure. */
const OUTCOME = { success: '0', failure: '4', denied: '8' } as const;

/** R4 AuditEvent.action from the verb our event type ends with. */
function actionOf(type: string): string {
  const verb = type.split('.').at(-1) ?? '';
  if (verb === 'created' || verb === 'issued' || verb.endsWith('_issued')) return ACTION.C;
  if (verb === 'retired' || verb === 'deleted') return ACTION.D;
  if (/updated|linked|rotated|approved|suspended|reactivated|disabled|enabled|reset|granted|revoked/.test(verb)) return ACTION.U;
  return ACTION.E;
}

export function toFhirAuditEvent(event: AuditEvent, issuer: string) {
  const login = event.type.startsWith('login.') || event.type.startsWith('mfa.');
  const entity: Record<string, unknown>[] = [];
  if (event.clientId) {
    entity.push({
      what: { identifier: { system: `${issuer}/clients`, value: event.clientId } },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
    });
  }
  if (event.patientId) {
    entity.push({
      what: { reference: `Patient/${event.patientId}` },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
    });
  }
  const details = Object.entries(event.details);
  if (details.length) {
    entity.push({
      what: { display: 'event details' },
      detail: details.map(([type, value]) => ({ type, valueString: typeof value === 'string' ? value : JSON.stringify(value) })),
    });
  }
  return {
    resourceType: 'AuditEvent',
    id: event.id,
    type: login
      ? { system: DCM, code: '110114', display: 'User Authentication' }
      : { system: DCM, code: '110100', display: 'Application Activity' },
    subtype: [{ system: EVENT_TYPE, code: event.type }],
    action: actionOf(event.type),
    recorded: event.occurredAt.toISOString(),
    outcome: OUTCOME[event.outcome],
    agent: [
      {
        who: event.actor ? { identifier: { system: `${issuer}/actors`, value: event.actor } } : { display: 'unknown' },
        requestor: true,
        ...(event.ip ? { network: { address: event.ip, type: '2' } } : {}),
      },
    ],
    source: {
      site: issuer,
      observer: { display: 'Custos authorization server' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }],
    },
    ...(entity.length ? { entity } : {}),
  };
}

/** A searchset Bundle (R4) of events, with a `next` link when there are more. */
export function auditBundle(events: readonly AuditEvent[], issuer: string, selfUrl: string, nextUrl?: string) {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    timestamp: new Date().toISOString(),
    link: [{ relation: 'self', url: selfUrl }, ...(nextUrl ? [{ relation: 'next', url: nextUrl }] : [])],
    entry: events.map((e) => ({ fullUrl: `urn:custos:audit-event:${e.id}`, resource: toFhirAuditEvent(e, issuer), search: { mode: 'match' } })),
  };
}
