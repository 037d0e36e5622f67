/**
 * Whether the current session is strong enough for an authorization request: the level the
 * request needs (acr_values, MFA policy) against the level the session was authenticated at.
 */
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { AccountRepository } from '../accounts/index.ts';
import { levelOf, requiredLevel, type MfaPolicy } from '../mfa/index.ts';

export function sessionLevelTooLow(accounts: AccountRepository, policy: MfaPolicy) {
  return async function levelTooLow(ctx: KoaContextWithOIDC): Promise<boolean> {
    const session = ctx.oidc.session;
    // No session at all is oidc-provider's own `no_session` check.
    if (!session?.accountId) return false;
    const params = ctx.oidc.params as Record<string, unknown>;
    const account = await accounts.findById(session.accountId);
    const needed = requiredLevel(
      {
        acrValues: params.acr_values as string | undefined,
        scope: params.scope as string | undefined,
        role: account?.role,
        clientMinimumAcr: ctx.oidc.client?.metadata().minimum_acr as string | undefined,
      },
      policy,
    );
    return levelOf(session.acr) < needed.level;
  };
}
