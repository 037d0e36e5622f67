/**
 * Tokens obey the patient's consent as it is now: every access token (at code exchange and at
 * every refresh) is checked against the consent and carries its id, version and visibility
 * limits (RFC 9396 `authorization_details`); introspection re-evaluates the consent, so a revoked
 * or expired consent makes tokens inactive at once and a narrowed one narrows their scope.
 */
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { AccountRepository } from '../accounts/index.ts';
import { consentDetails, effectiveStatus, type Consent, type ConsentService } from '../consent/index.ts';
import { isResourceScope, splitScopes, type LaunchRepository } from '../smart/index.ts';

export interface ConsentTokenDeps {
  consents: ConsentService;
  accounts: AccountRepository;
  /** Where each grant's launch context (its patient) is kept. */
  launches: LaunchRepository;
  /** Custos's own clients (the account pages) need no consent record. */
  firstPartyClients: readonly string[];
}

function detailsOf(consent: Consent, locations: string[]) {
  const v = consent.current;
  return consentDetails({
    consentId: consent.id,
    version: v.version,
    patientFhirId: consent.patientFhirId,
    limits: v.limits,
    expiresAt: v.expiresAt,
    locations,
  });
}

export function consentTokens(deps: ConsentTokenDeps) {
  const { consents } = deps;

  /**
   * Consent claims for a token about to be issued; refuses it (`invalid_grant`) when a patient's
   * consent does not allow it any more.
   */
  /** The consent for a grant: the account's, for the app, about the grant's patient. */
  async function consentFor(accountId: string, clientId: string, grantId: string | undefined) {
    const patient = grantId ? (await deps.launches.forGrant(grantId))?.patient : undefined;
    return consents.forGrant(accountId, clientId, patient);
  }

  async function claims(ctx: KoaContextWithOIDC, token: { accountId?: string; clientId?: string; grantId?: string }): Promise<Record<string, unknown> | undefined> {
    const { accountId, clientId } = token;
    if (!accountId || !clientId || deps.firstPartyClients.includes(clientId)) return undefined;
    const found = await consentFor(accountId, clientId, token.grantId);
    if (!found) {
      // Practitioners and admins act under their organisation's rules; a patient always has a consent.
      const account = await deps.accounts.findById(accountId);
      if (account?.role === 'patient') throw new errors.InvalidGrant('the patient has not consented to this app');
      return undefined;
    }
    if (found.status !== 'active') {
      throw new errors.InvalidGrant(found.status === 'revoked' ? "the patient's consent for this app was revoked" : "the patient's consent for this app has expired");
    }
    const locations = Object.keys(ctx.oidc.entities.Grant?.resources ?? {});
    return {
      consent_id: found.consent.id,
      consent_version: found.consent.current.version,
      authorization_details: [detailsOf(found.consent, locations)],
    };
  }

  /**
   * Whether an existing grant may be reused without asking: not when the patient's consent has
   * ended (or never existed), so the consent page asks again instead of issuing a code whose
   * tokens would be refused.
   */
  async function grantStillConsented(grant: { accountId?: string; clientId?: string; jti: string }): Promise<boolean> {
    const { accountId, clientId } = grant;
    if (!accountId || !clientId || deps.firstPartyClients.includes(clientId)) return true;
    const found = await consentFor(accountId, clientId, grant.jti);
    if (found) return found.status === 'active';
    return (await deps.accounts.findById(accountId))?.role !== 'patient';
  }

  /** RFC 9396 section 7: the token response names the authorization details the token carries. */
  function decorateTokenResponse(ctx: KoaContextWithOIDC): void {
    const body = ctx.body as Record<string, unknown> | undefined;
    const at = ctx.oidc.entities.AccessToken as { extra?: Record<string, unknown> } | undefined;
    if (ctx.status !== 200 || !body || !at?.extra?.authorization_details) return;
    body.authorization_details = at.extra.authorization_details;
  }

  /** The introspection response as the consent allows it now (the body is changed in place). */
  async function reviewIntrospection(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (body.active !== true || typeof body.consent_id !== 'string') return body;
    const consent = await consents.repo.find(body.consent_id);
    if (!consent || effectiveStatus(consent.current, consents.clock()) !== 'active') return { active: false };
    const allowed = new Set(consent.current.scopes);
    const scope = splitScopes(body.scope as string | undefined).filter((s) => !isResourceScope(s) || allowed.has(s));
    body.scope = scope.join(' ') || undefined;
    body.consent_version = consent.current.version;
    const aud = body.aud;
    body.authorization_details = [detailsOf(consent, typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.map(String) : [])];
    return body;
  }

  return { claims, grantStillConsented, decorateTokenResponse, reviewIntrospection };
}

export type ConsentTokens = ReturnType<typeof consentTokens>;
