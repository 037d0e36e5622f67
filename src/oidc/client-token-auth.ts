/**
 * Bearer authentication for our own APIs called by other servers: the token must be a live
 * client-credentials token issued by Custos holding `scope` (RFC 6750 errors and challenges).
 */
import type { Context, Next } from 'koa';
import { HttpError } from '../http/errors.ts';
import type { ProviderHost } from './provider-host.ts';

export function clientTokenAuth(providers: ProviderHost, scope: string) {
  return async function authenticate(ctx: Context, next: Next) {
    const match = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(ctx.get('Authorization'));
    if (!match) throw new HttpError(401, 'invalid_token', 'a Bearer access token is required', { 'WWW-Authenticate': `Bearer realm="custos", scope="${scope}"` });
    const token = await providers.current.ClientCredentials.find(match[1]!);
    if (!token || token.isExpired) {
      throw new HttpError(401, 'invalid_token', 'the access token is invalid or expired', { 'WWW-Authenticate': 'Bearer realm="custos", error="invalid_token"' });
    }
    if (!token.scopes.has(scope)) {
      throw new HttpError(403, 'insufficient_scope', `the access token lacks the ${scope} scope`, {
        'WWW-Authenticate': `Bearer realm="custos", error="insufficient_scope", scope="${scope}"`,
      });
    }
    ctx.state.callerClientId = token.clientId;
    await next();
  };
}
