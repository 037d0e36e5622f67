/**
 * Which SMART scope contexts a user may hold (SMART App Launch 2.x, scopes-and-launch-context).
 * `user/` scopes reach everything the user may see, which for a practitioner is more than one
 * record; a patient (or a representative, or an administrator, who has no clinical access here)
 * may only ever see one patient's record, so their tokens carry `patient/` scopes only. Pure code.
 */
import type { Role } from '../accounts/index.ts';
import { isResourceScope, parseResourceScope, type ScopeContext } from './scope-grammar.ts';

function contextOf(scope: string): ScopeContext | undefined {
  try {
    return parseResourceScope(scope).context;
  } catch {
    return undefined;
  }
}

/** The resource-scope contexts a user of `role` may be granted (`system` is for backend services only). */
export function scopeContextsForRole(role: Role | undefined): ScopeContext[] {
  return role === 'practitioner' ? ['patient', 'user'] : ['patient'];
}

/** The resource scopes of `scopes` (a space-separated string) that `role` may hold, in order. */
export function scopesAllowedForRole(scopes: string, role: Role | undefined): string {
  const contexts = new Set(scopeContextsForRole(role));
  return scopes
    .split(' ')
    .filter((s) => s && (!isResourceScope(s) || contexts.has(contextOf(s)!)))
    .join(' ');
}
