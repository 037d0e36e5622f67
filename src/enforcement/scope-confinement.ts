/**
 * The scopes a token really carries at a FHIR server. SMART `user/` scopes reach "what the user
 * may see" (SMART App Launch 2.x, scopes-and-launch-context): for a practitioner that is more than
 * one record, but a patient or a representative may only ever see the record of the patient in
 * context. So unless the token says its user is a Practitioner, every `user/` scope (and any
 * `system/` scope on a token that has a user) is read as the same `patient/` scope. This holds
 * whatever the authorization server granted: a token from before a policy change, or from a
 * misconfigured issuer, cannot reach other patients' data. Pure code.
 */
import type { ResourceScope } from '../smart/scope-grammar.ts';
import type { AccessFacts } from './access-token.ts';

/** FHIR resource types whose users may hold user-level access beyond one patient. */
const USER_LEVEL_TYPES: ReadonlySet<string> = new Set(['Practitioner', 'PractitionerRole']);

export interface ConfinedAccess {
  scopes: ResourceScope[];
  /** The patient whose compartment `patient/` scopes reach: the one in context, else a patient user's own. */
  patient?: string;
}

export function confineToUser(facts: Pick<AccessFacts, 'scopes' | 'sub' | 'patient' | 'fhirUser'>): ConfinedAccess {
  const [userType, userId] = facts.fhirUser?.split('/') ?? [];
  const userLevel = userType !== undefined && USER_LEVEL_TYPES.has(userType);
  const patient = facts.patient ?? (userType === 'Patient' ? userId : undefined);
  const scopes: ResourceScope[] = [];
  for (const scope of facts.scopes) {
    const beyondPatient = scope.context === 'user' || (scope.context === 'system' && facts.sub !== undefined);
    if (!beyondPatient || userLevel) scopes.push(scope);
    else if (patient) scopes.push({ ...scope, context: 'patient' });
    // Neither a practitioner nor a patient to confine to: the scope allows nothing.
  }
  return { scopes, ...(patient ? { patient } : {}) };
}
