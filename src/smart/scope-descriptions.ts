/**
 * Plain-language descriptions of scopes for the consent page.
 */
import { isResourceScope, parseResourceScope, type Permission } from './scope-grammar.ts';

const STATIC: Record<string, string> = {
  openid: 'Confirm your identity',
  profile: 'See your name and username',
  email: 'See your email address',
  fhirUser: 'Know which patient or practitioner record is yours',
  launch: 'Know the context it was launched in',
  'launch/patient': 'Know which patient record is being used',
  'launch/encounter': 'Know the current encounter',
  offline_access: 'Keep access while you are away, until access ends or you revoke it',
  online_access: 'Keep access while you are signed in',
};

const VERBS: Record<Permission, string> = { c: 'add to', r: 'read', u: 'update', d: 'delete', s: 'search' };

/** Splits a FHIR resource type into words ("MedicationRequest" -> "medication request"). */
function words(type: string): string {
  return type.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
}

export function describeScope(scope: string): string {
  if (STATIC[scope]) return STATIC[scope];
  if (!isResourceScope(scope)) return scope;
  try {
    const s = parseResourceScope(scope);
    const verbs = [...s.permissions].map((p) => VERBS[p]);
    const action = verbs.length > 1 ? `${verbs.slice(0, -1).join(', ')} and ${verbs.at(-1)}` : verbs[0]!;
    const what = s.resourceType === '*' ? 'all records' : `${words(s.resourceType)} records`;
    const whose = s.context === 'patient' ? 'your' : s.context === 'user' ? 'the' : 'all';
    const limited = s.query.length ? ` (only ${s.query.map(([, v]) => v.split('|').pop()).join(', ')})` : '';
    const sentence = `${action} ${whose} ${what}${limited}`;
    return sentence.charAt(0).toUpperCase() + sentence.slice(1);
  } catch {
    return scope;
  }
}
