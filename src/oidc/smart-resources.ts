/**
 * SMART App Launch on oidc-provider's resource indicators (RFC 8707): the `aud` parameter names
 * the FHIR server, the token is issued for it, and its scopes are negotiated with the SMART
 * grammar against the client's registered ceiling.
 */
import { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import { negotiate, splitScopes, isResourceScope, scopeContextsForRole, scopesAllowedForRole, ScopeSyntaxError, type FhirServers } from '../smart/index.ts';
import type { Role } from '../accounts/index.ts';

/** The role of an account, or undefined when there is no such account. */
export type RoleOf = (accountId: string) => Promise<Role | undefined>;

type ResourceIndicators = NonNullable<NonNullable<Configuration['features']>['resourceIndicators']>;
type ExtraParamValidator = (ctx: KoaContextWithOIDC, value: string | undefined) => Promise<void>;

/** The request parameters oidc-provider has assembled so far (always present on these routes). */
const paramsOf = (ctx: KoaContextWithOIDC) => ctx.oidc.params as Record<string, unknown>;
const stringParam = (ctx: KoaContextWithOIDC, name: string) => {
  const v = paramsOf(ctx)[name];
  return typeof v === 'string' ? v : undefined;
};

/** Errors on `aud` are shown to the user and never redirected to the app (SMART App Launch 2.2). */
function notRedirected<T extends Error & { allow_redirect?: boolean }>(err: T): T {
  err.allow_redirect = false;
  return err;
}

/** True when the request asks for FHIR data or a launch context, so it needs a FHIR audience. */
function needsFhirAudience(scopes: string[]): boolean {
  return scopes.some((s) => isResourceScope(s) || s === 'launch' || s.startsWith('launch/'));
}

/** Backend services tokens live at most five minutes (SMART Backend Services). */
const BACKEND_SERVICES_MAX_TTL = 300;

/**
 * The SMART `aud` parameter. In a pushed or signed request object `aud` is the JWT audience (this
 * issuer), not a FHIR server; there the FHIR server travels as `resource` (RFC 8707).
 */
function smartAud(ctx: KoaContextWithOIDC): string | undefined {
  const aud = stringParam(ctx, 'aud');
  const fromRequestObject = 'PushedAuthorizationRequest' in ctx.oidc.entities || ctx.oidc.trusted !== undefined;
  return fromRequestObject && aud === ctx.oidc.issuer ? undefined : aud;
}

function originalScope(ctx: KoaContextWithOIDC): string | undefined {
  const source = (ctx.method === 'POST' ? ctx.oidc.body : ctx.query) as Record<string, unknown> | undefined;
  const scope = source?.scope;
  return typeof scope === 'string' ? scope : undefined;
}

/**
 * oidc-provider drops `offline_access` unless the request also says `prompt=consent`; SMART apps
 * rarely do. Put both back, so the patient is asked (and told) about access while away.
 */
function restoreOfflineAccess(ctx: KoaContextWithOIDC): void {
  const params = paramsOf(ctx);
  if (!ctx.oidc.client?.grantTypeAllowed('refresh_token')) return;
  if (!splitScopes(originalScope(ctx)).includes('offline_access')) return;
  const scopes = splitScopes(stringParam(ctx, 'scope'));
  const prompts = new Set(splitScopes(stringParam(ctx, 'prompt')));
  if (prompts.has('none')) return;
  if (!scopes.includes('offline_access')) params.scope = [...scopes, 'offline_access'].join(' ');
  prompts.add('consent');
  params.prompt = [...prompts].join(' ');
}

/**
 * Replaces the request's resource scopes with the negotiated ones (which may be narrower than
 * asked, or none), so what the user is asked to approve and what the code carries agree.
 * Runs after oidc-provider resolved the resource server through `getResourceServerInfo`.
 */
function applyNegotiatedScopes(ctx: KoaContextWithOIDC): void {
  const servers = Object.values(ctx.oidc.resourceServers ?? {});
  // oidc-provider already refused statics outside a ceiling that has some; a ceiling with resource
  // scopes only reaches it as no ceiling at all, so apply ours here too.
  const ceiling = ctx.oidc.client?.metadata().scope_ceiling as string | undefined;
  const allowed = ceiling === undefined ? undefined : new Set(splitScopes(ceiling));
  const statics = splitScopes(stringParam(ctx, 'scope')).filter((s) => !isResourceScope(s) && (!allowed || allowed.has(s)));
  const negotiated = servers.flatMap((server) => [...server.scopes]);
  paramsOf(ctx).scope = [...statics, ...negotiated].join(' ') || undefined;
}

export function smartExtraParams(fhirServers: FhirServers, launch: ExtraParamValidator): Record<string, ExtraParamValidator | null> {
  return {
    async aud(ctx) {
      const value = smartAud(ctx);
      if (value !== undefined) {
        if (!fhirServers.find(value)) {
          throw notRedirected(new errors.InvalidRequest('aud must be the base URL of a FHIR server protected by this server'));
        }
        const resource = paramsOf(ctx).resource;
        if (resource !== undefined && fhirServers.find(String(resource)) !== fhirServers.find(value)) {
          throw notRedirected(new errors.InvalidTarget('aud and resource name different servers'));
        }
      }
      applyNegotiatedScopes(ctx);
      restoreOfflineAccess(ctx);
    },
    launch,
  };
}

export function smartResourceIndicators(config: Config, fhirServers: FhirServers, roleOf: RoleOf): ResourceIndicators {
  return {
    enabled: true,
    async defaultResource(ctx) {
      const route = ctx.oidc.route;
      if (route === 'authorization' || route === 'pushed_authorization_request') {
        const aud = smartAud(ctx);
        const scopes = splitScopes(stringParam(ctx, 'scope'));
        checkSyntax(scopes);
        if (aud) return fhirServers.find(aud);
        if (needsFhirAudience(scopes)) {
          throw notRedirected(new errors.InvalidRequest('aud is required: the base URL of the FHIR server the app wants to use'));
        }
        return undefined;
      }
      if (route === 'token' && stringParam(ctx, 'grant_type') === 'client_credentials') {
        // Backend services asking for FHIR data get a token for the (primary) FHIR server;
        // Custos's own API scopes need no audience.
        return splitScopes(stringParam(ctx, 'scope')).some(isResourceScope) ? fhirServers.primary : undefined;
      }
      return undefined;
    },
    // SMART apps never send `resource` to the token endpoint: use the server granted at authorization.
    async useGrantedResource() {
      return true;
    },
    async getResourceServerInfo(ctx, resourceIndicator, client) {
      const audience = fhirServers.find(resourceIndicator);
      if (!audience) throw new errors.InvalidTarget('unknown resource server');
      const ceiling = splitScopes(client.metadata().scope_ceiling as string | undefined);
      // RFC 9068 JWT access tokens are signed RS256, which every resource server can verify.
      const common =
        config.accessTokenFormat === 'jwt'
          ? { audience, accessTokenFormat: 'jwt' as const, jwt: { sign: { alg: 'RS256' as const } } }
          : { audience, accessTokenFormat: 'opaque' as const };
      const { route } = ctx.oidc;

      if (route === 'token' && stringParam(ctx, 'grant_type') === 'client_credentials') {
        const requested = splitScopes(stringParam(ctx, 'scope'));
        const scope = grantedScope(requested, ceiling, ['system']);
        // As at authorization: the token carries the negotiated (possibly narrowed) scopes.
        paramsOf(ctx).scope = [...requested.filter((s) => !isResourceScope(s)), ...splitScopes(scope)].join(' ');
        return { ...common, scope, accessTokenTTL: Math.min(config.ttl.accessToken, BACKEND_SERVICES_MAX_TTL) };
      }
      if (route === 'token') {
        // Code exchange and refresh: what was granted at authorization, nothing more, and only
        // what the account's role allows now (a grant may predate a change of role, or of this rule).
        const grant = ctx.oidc.entities.Grant;
        const granted = grant?.resources?.[resourceIndicator];
        const role = grant?.accountId ? await roleOf(grant.accountId) : undefined;
        return { ...common, scope: typeof granted === 'string' ? scopesAllowedForRole(granted, role) : '', accessTokenTTL: config.ttl.accessToken };
      }
      // Before sign-in nobody is known and every user context is negotiated; once the user is
      // known (the authorization resumes after login) only what their role allows is offered.
      const accountId = ctx.oidc.session?.accountId;
      const contexts = accountId ? scopeContextsForRole(await roleOf(accountId)) : (['patient', 'user'] as const);
      const scope = grantedScope(splitScopes(stringParam(ctx, 'scope')), ceiling, [...contexts]);
      return { ...common, scope, accessTokenTTL: config.ttl.accessToken };
    },
  };
}

/**
 * The checks oidc-provider would make on a refresh's target after it has already rotated (and so
 * consumed) the refresh token, made first: a `resource` (RFC 8707 section 2.2) that is several
 * values, was not granted, or names no FHIR server of ours is `invalid_target` with nothing
 * written, so a refused request leaves the refresh token and its grant usable (RFC 6749 section
 * 5.2). Runs from `rotateRefreshToken`, the one hook between the token's lookup and its rotation.
 */
export function refreshTargetCheck(fhirServers: FhirServers) {
  return function checkRefreshTarget(ctx: KoaContextWithOIDC): void {
    const token = ctx.oidc.entities.RefreshToken;
    if (!token) return;
    const asked = paramsOf(ctx).resource as string | string[] | undefined;
    const values = asked === undefined ? [] : Array.isArray(asked) ? asked : [asked];
    if (values.length > 1) throw new errors.InvalidTarget('only a single resource indicator value must be requested/resolved during Access Token Request');
    const resource = values[0] ?? token.resource;
    if (values.length === 1 && !token.resourceIndicators.has(values[0])) throw new errors.InvalidTarget('the resource was not granted to this refresh token');
    if (typeof resource === 'string' && !fhirServers.find(resource)) throw new errors.InvalidTarget('unknown resource server');
  };
}

function checkSyntax(scopes: string[]): void {
  grantedScope(scopes, [], ['patient', 'user', 'system']);
}

/** The resource scopes negotiated for a request, as oidc-provider's allowed-scope string. */
function grantedScope(requested: string[], ceiling: string[], contexts: Array<'patient' | 'user' | 'system'>): string {
  try {
    const { granted } = negotiate({ requested, ceiling, contexts });
    return granted.filter(isResourceScope).join(' ');
  } catch (err) {
    if (err instanceof ScopeSyntaxError) throw new errors.InvalidScope(err.message, err.scope);
    throw err;
  }
}
