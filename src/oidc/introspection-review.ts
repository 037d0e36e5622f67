/**
 * What an introspection answer says a token may do, as things are now (RFC 7662 section 2.2:
 * `active` and `scope` describe the token at this moment): the patient's consent behind it, and
 * the account's role and FHIR identity. Both introspection doors, client-authenticated through
 * oidc-provider and Bearer-authenticated for resource servers, answer through this one review, so
 * neither can report what the other has stopped allowing.
 */
import { fhirUserReference, type AccountRepository } from '../accounts/index.ts';
import { isResourceScope, scopesAllowedForRole, splitScopes } from '../smart/index.ts';
import type { ConsentTokens } from './consent-tokens.ts';

export interface IntrospectionReviewDeps {
  consentTokens: ConsentTokens;
  accounts: Pick<AccountRepository, 'findById'>;
  /** The primary FHIR server, for absolute `fhirUser` URLs (as on the tokens). */
  fhirBase: string | undefined;
}

export type IntrospectionReview = (body: Record<string, unknown>, accountId: string | undefined) => Promise<Record<string, unknown>>;

export function introspectionReview(deps: IntrospectionReviewDeps): IntrospectionReview {
  return async function review(body, accountId) {
    const reviewed = await deps.consentTokens.reviewIntrospection(body);
    if (reviewed.active !== true || !accountId) return reviewed;
    const account = await deps.accounts.findById(accountId);
    // Disabling ends an account's grants; a token that outlived that (or its account) is not usable.
    if (!account || account.disabled) return { active: false };
    // A token issued before its account stopped being a practitioner's loses its user/ scopes now,
    // not at the next refresh, and names who the user is now: resource servers confine user/
    // scopes by fhirUser (src/enforcement/scope-confinement.ts).
    if (typeof reviewed.scope === 'string') reviewed.scope = scopesAllowedForRole(reviewed.scope, account.role) || undefined;
    // A patient reaches FHIR data only through a consent (as at issuance, src/oidc/consent-tokens.ts):
    // a token issued while the account had another role, on no consent, keeps no resource scope
    // and no patient in context now that it is a patient's.
    if (account.role === 'patient' && typeof reviewed.consent_id !== 'string') {
      reviewed.scope = splitScopes(reviewed.scope as string | undefined).filter((s) => !isResourceScope(s)).join(' ') || undefined;
      delete reviewed.patient;
    }
    if ('fhirUser' in reviewed) {
      const reference = fhirUserReference(account);
      if (reference && deps.fhirBase) reviewed.fhirUser = `${deps.fhirBase}/${reference}`;
      else delete reviewed.fhirUser;
    }
    return reviewed;
  };
}
