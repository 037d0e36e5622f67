/**
 * Scope negotiation: what an app gets is what it asked for, limited by the scope ceiling its
 * registration allows and by what the user approved. The result may be narrower than asked, or
 * empty. Granted scopes keep the exact text the app asked for whenever they are granted whole.
 */
import { intersect, isResourceScope, parseResourceScope, type ResourceScope } from './scope-grammar.ts';

/** Scopes that are not resource scopes (SMART App Launch 2.2, scopes-and-launch-context). */
export const STATIC_SCOPES = [
  'openid',
  'fhirUser',
  'profile',
  'email',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
] as const;

export interface Negotiation {
  granted: string[];
  /** Requested scopes granted in no part, for the log and the consent page. */
  rejected: string[];
}

export interface NegotiationInput {
  requested: readonly string[];
  /** The client's registered scope ceiling. Resource scopes there may use wildcards. */
  ceiling: readonly string[];
  /** Which requested scopes the user approved; all of them when absent. */
  approved?: readonly string[];
  /** Contexts allowed by the grant type: patient and user for a user's authorization, system for backend services. */
  contexts: ReadonlyArray<ResourceScope['context']>;
}

/** Splits a space-separated scope parameter into distinct scopes, in order. */
export function splitScopes(scope: string | undefined): string[] {
  return [...new Set((scope ?? '').split(' ').filter(Boolean))];
}

/**
 * Negotiates the granted scopes. Throws ScopeSyntaxError for a malformed resource scope so the
 * caller can answer `invalid_scope` naming it.
 */
export function negotiate(input: NegotiationInput): Negotiation {
  const ceilingStatic = new Set(input.ceiling.filter((s) => !isResourceScope(s)));
  const ceilingResources = input.ceiling.filter(isResourceScope).map(parseResourceScope);
  const approved = input.approved ? new Set(input.approved) : undefined;
  const granted: string[] = [];
  const rejected: string[] = [];

  for (const scope of input.requested) {
    if (approved && !approved.has(scope)) {
      rejected.push(scope);
      continue;
    }
    if (!isResourceScope(scope)) {
      if ((STATIC_SCOPES as readonly string[]).includes(scope) && ceilingStatic.has(scope)) granted.push(scope);
      else rejected.push(scope);
      continue;
    }
    const wanted = parseResourceScope(scope);
    if (!input.contexts.includes(wanted.context)) {
      rejected.push(scope);
      continue;
    }
    const parts = ceilingResources.map((allowed) => intersect(wanted, allowed)).filter((p) => p !== undefined);
    if (parts.some((p) => p === wanted)) {
      granted.push(scope);
    } else if (parts.length > 0) {
      for (const p of parts) if (!granted.includes(p.raw)) granted.push(p.raw);
    } else {
      rejected.push(scope);
    }
  }
  return { granted, rejected };
}
