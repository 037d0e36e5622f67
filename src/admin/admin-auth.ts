/**
 * Who may use the admin API: a person with the admin role, signed in with the second factor,
 * through an internal (first-party) client allowed the `custos:admin` scope. The bearer token is
 * an access token Custos issued, checked in-process through the provider's own AccessToken model
 * (what introspection would answer, RFC 7662), then against the account and client as they are
 * now. Destructive actions also need that sign-in to be recent (RFC 9470 step-up).
 */
import type { Context, Next } from 'koa';
import type { AccountRepository } from '../accounts/index.ts';
import { ADMIN_SCOPE, type ClientRegistry } from '../clients/index.ts';
import { HttpError } from '../http/errors.ts';
import { ACR_MFA } from '../mfa/index.ts';
import type { ProviderHost } from '../oidc/index.ts';

/** What an admin route knows about its caller. */
export interface AdminCaller {
  accountId: string;
  username: string;
  /** When the caller last signed in (epoch seconds), for re-authentication checks. */
  authTime: number;
  clientId: string;
  ip: string;
}

const REALM = 'custos-admin';

function unauthorized(error: string, description: string, extra = ''): HttpError {
  const params = [`realm="${REALM}"`, ...(error === 'unauthorized' ? [] : [`error="${error}"`, `error_description="${description}"`])];
  return new HttpError(401, error, description, { 'WWW-Authenticate': `Bearer ${params.join(', ')}${extra}` });
}

function forbidden(error: string, description: string): HttpError {
  return new HttpError(403, error, description, { 'WWW-Authenticate': `Bearer realm="${REALM}", error="${error}", error_description="${description}"` });
}

export interface AdminAuthDeps {
  providers: ProviderHost;
  accounts: AccountRepository;
  clients: ClientRegistry;
  /** Seconds: destructive actions need a sign-in at most this old. */
  reauthMaxAge: number;
}

/** The token from `Authorization: Bearer ...` (RFC 6750 section 2.1), or undefined. */
function bearer(ctx: Context): string | undefined {
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(ctx.get('Authorization'));
  return m?.[1];
}

export function adminAuth(deps: AdminAuthDeps) {
  /** Authenticates the caller; refuses with 401 or 403 (RFC 6750 section 3.1) otherwise. */
  async function authenticate(ctx: Context, next: Next) {
    const value = bearer(ctx);
    if (!value) throw unauthorized('unauthorized', 'an admin access token is required');
    const provider = deps.providers.current;
    const token = value.length <= 512 ? await provider.AccessToken.find(value) : undefined;
    if (!token || token.isExpired) {
      // An application's own token (client_credentials) is a valid token of the wrong kind.
      const appToken = value.length <= 512 ? await provider.ClientCredentials.find(value) : undefined;
      if (appToken && !appToken.isExpired) throw forbidden('insufficient_scope', 'the admin API is for people, not for applications acting alone');
      throw unauthorized('invalid_token', 'the access token is not valid');
    }
    const client = token.clientId ? await deps.clients.get(token.clientId) : undefined;
    if (!client || client.status !== 'approved') throw unauthorized('invalid_token', 'the access token is not valid');
    const scopes = new Set(String(token.scope ?? '').split(' '));
    if (!scopes.has(ADMIN_SCOPE)) throw forbidden('insufficient_scope', `the token lacks the ${ADMIN_SCOPE} scope`);
    if (client.category !== 'internal') throw forbidden('insufficient_scope', 'admin tokens come only from internal clients');
    if (!token.accountId) throw forbidden('insufficient_scope', 'the admin API is for people, not for applications acting alone');
    const account = await deps.accounts.findById(token.accountId);
    if (!account || account.disabled || account.role !== 'admin') throw forbidden('insufficient_scope', 'only admin accounts may use the admin API');
    const extra = (token.extra ?? {}) as { acr?: unknown; auth_time?: unknown };
    if (extra.acr !== ACR_MFA) {
      throw unauthorized('insufficient_user_authentication', 'sign in with your second factor', `, acr_values="${ACR_MFA}"`);
    }
    const caller: AdminCaller = {
      accountId: account.id,
      username: account.username,
      authTime: typeof extra.auth_time === 'number' ? extra.auth_time : 0,
      clientId: client.clientId,
      ip: ctx.ip,
    };
    ctx.state.admin = caller;
    await next();
  }

  /** For destructive actions: the sign-in must be recent (RFC 9470 `max_age`). */
  async function recentLogin(ctx: Context, next: Next) {
    const caller = ctx.state.admin as AdminCaller;
    if (Math.floor(Date.now() / 1000) - caller.authTime > deps.reauthMaxAge) {
      throw unauthorized(
        'insufficient_user_authentication',
        'this action needs a recent sign-in; sign in again',
        `, acr_values="${ACR_MFA}", max_age=${deps.reauthMaxAge}`,
      );
    }
    await next();
  }

  return { authenticate, recentLogin };
}
