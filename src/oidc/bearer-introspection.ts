/**
 * SMART token introspection for a resource server that authenticates with a Bearer token it holds
 * for that purpose (a client-credentials token with `custos:introspect`), not with its client
 * credentials. Requests with client authentication go on to oidc-provider's own endpoint; this
 * answers the same RFC 7662 response, through the same review (./introspection-review.ts).
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type { AuditTrail } from '../audit/index.ts';
import { badRequest } from '../http/errors.ts';
import type { ProviderHost } from './provider-host.ts';
import { INTROSPECT_SCOPE } from './provider.ts';
import { clientTokenAuth } from './client-token-auth.ts';
import type { IntrospectionReview } from './introspection-review.ts';
import { formBody } from '../http/request-body.ts';

export interface BearerIntrospectionDeps {
  providers: ProviderHost;
  reviewIntrospection: IntrospectionReview;
  audit: AuditTrail;
}

interface IntrospectableToken {
  kind: string;
  isValid: boolean;
  accountId?: string;
  clientId?: string;
  grantId?: string;
  scope?: string;
  exp?: number;
  iat?: number;
  sid?: string;
  aud?: string | string[];
  tokenType?: string;
  extra?: Record<string, unknown>;
}

export function bearerIntrospectionRoutes(deps: BearerIntrospectionDeps): Router {
  const router = new Router();
  const authenticate = clientTokenAuth(deps.providers, INTROSPECT_SCOPE);

  async function find(value: string, hint: unknown): Promise<IntrospectableToken | undefined> {
    const { AccessToken, ClientCredentials, RefreshToken } = deps.providers.current;
    const found = (await Promise.all([AccessToken.find(value), ClientCredentials.find(value), RefreshToken.find(value)])) as (IntrospectableToken | undefined)[];
    if (hint === 'refresh_token') found.reverse();
    return found.find(Boolean);
  }

  const parseForm = formBody({ limit: '8kb' });

  async function introspect(ctx: Context) {
    if (!ctx.is('application/x-www-form-urlencoded')) throw badRequest('the request body must be application/x-www-form-urlencoded');
    const body = ctx.request.body as Record<string, unknown>;
    if (typeof body.token !== 'string' || body.token.length === 0 || body.token.length > 4096) throw badRequest('token is required');
    const provider = deps.providers.current;
    let response: Record<string, unknown> = { active: false };
    const token = await find(body.token, body.token_type_hint);
    const grant = token?.grantId ? await provider.Grant.find(token.grantId) : undefined;
    const grantOk = !token?.grantId || (grant && grant.clientId === token.clientId && grant.accountId === token.accountId);
    if (token?.isValid && grantOk) {
      response = {
        ...token.extra,
        active: true,
        client_id: token.clientId,
        exp: token.exp,
        iat: token.iat,
        iss: provider.issuer,
        ...(token.accountId ? { sub: token.accountId } : {}),
        ...(token.aud ? { aud: token.aud } : {}),
        ...(token.scope ? { scope: token.scope } : {}),
        ...(token.kind !== 'RefreshToken' ? { token_type: 'Bearer' } : {}),
      };
      response = await deps.reviewIntrospection(response, token.accountId);
    }
    await deps.audit.record({
      type: 'token.introspected',
      outcome: 'success',
      actor: `client:${String(ctx.state.callerClientId)}`,
      clientId: token?.clientId ?? String(ctx.state.callerClientId),
      ip: ctx.ip,
      patientId: typeof response.patient === 'string' ? response.patient : undefined,
      details: {
        resource_server: String(ctx.state.callerClientId),
        active: response.active === true,
        // As the other door records it: the consent's access log in the portal is found by it.
        consent_id: typeof response.consent_id === 'string' ? response.consent_id : undefined,
        by: 'bearer',
      },
    });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = response;
  }

  router.post('/token/introspection', async (ctx, next) => {
    // Client-authenticated callers are oidc-provider's: pass them on untouched (body unread).
    if (!/^Bearer\s/i.test(ctx.get('Authorization'))) return next();
    await authenticate(ctx, () => parseForm(ctx, () => introspect(ctx)));
  });

  return router;
}
