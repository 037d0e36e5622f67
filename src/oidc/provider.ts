/**
 * The oidc-provider instance: every default that matters for a healthcare authorization server
 * set explicitly (see shared/OIDC-PROVIDER-NOTES.md for why each one is here).
 */
import Provider, { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { JWK } from 'jose';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import { DatabaseUnavailableError, UNAVAILABLE_RETRY_AFTER_SECONDS } from '../db/index.ts';
import type { AccountRepository } from '../accounts/index.ts';
import { fhirUserReference } from '../accounts/index.ts';
import { ADMIN_SCOPE, EHR_LAUNCH_SCOPE, INTROSPECT_SCOPE, type ClientRegistry } from '../clients/index.ts';
import type { Views } from '../http/views.ts';
import { createOutboundFetch } from '../http/outbound-fetch.ts';
import { createKnexAdapter } from './adapter.ts';
import { refreshTargetCheck, smartExtraParams, smartResourceIndicators } from './smart-resources.ts';
import type { SmartLaunch } from './smart-launch.ts';
import type { ConsentTokens } from './consent-tokens.ts';
import type { IntrospectionReview } from './introspection-review.ts';
import { tokenAudit } from './token-audit.ts';
import type { AuditTrail } from '../audit/index.ts';
import { createFhirServers, STATIC_SCOPES } from '../smart/index.ts';
import { ACR_VALUES } from '../mfa/index.ts';

// EHR_LAUNCH_SCOPE: creating launch contexts (`POST /smart/launch`); INTROSPECT_SCOPE: a resource
// server introspecting other clients' tokens; ADMIN_SCOPE: the admin API (src/admin).
export { EHR_LAUNCH_SCOPE, INTROSPECT_SCOPE, ADMIN_SCOPE };

const MAX_ASSERTION_LIFETIME = 300;

export interface ProviderDeps {
  config: Config;
  db: Knex;
  accounts: AccountRepository;
  clients: ClientRegistry;
  launch: SmartLaunch;
  consentTokens: ConsentTokens;
  /** Introspection answers as the consent and the account are now (both introspection doors). */
  reviewIntrospection: IntrospectionReview;
  audit: AuditTrail;
  /** Counts a request against a client's rate limit; the seconds to wait when over it. */
  clientRateLimit?: (clientId: string) => Promise<number>;
  /** Decides whether the session's authentication level is enough for the request. */
  levelCheck: (ctx: KoaContextWithOIDC) => Promise<boolean>;
  views: Views;
  log: Logger;
}

export const COOKIE_NAMES = { session: 'custos_session', interaction: 'custos_interaction', resume: 'custos_resume' } as const;

/** The longest lifetime of anything we sign: how long a replaced key must stay published. */
export function signedTokenMaxLifetime(config: Config): number {
  const CLOCK_TOLERANCE = 60;
  return Math.max(config.ttl.idToken, config.ttl.accessToken) + CLOCK_TOLERANCE;
}

// One connection pool for every provider instance (the provider is rebuilt when keys change).
const outboundFetch = createOutboundFetch();

/** How long instances take to notice new signing keys, at most (see `signingKeyRefresh`). */
export function rotationTiming(config: Config) {
  return {
    activateAfterSeconds: 2 * config.signingKeyRefreshInterval + 5,
    maxSignedLifetimeSeconds: signedTokenMaxLifetime(config),
  };
}

/** The client's own lifetime for a token, when it has a shorter one than the server's. */
function clientTtl(client: { metadata(): Record<string, unknown> } | undefined, field: string, cap: number): number {
  const own = client?.metadata()[field];
  return typeof own === 'number' && own > 0 ? Math.min(own, cap) : cap;
}

export function buildProvider(deps: ProviderDeps, signingKeys: JWK[]): Provider {
  const { config, accounts, clients, views } = deps;
  const fhirServers = createFhirServers(config.fhirBaseUrls);
  const { launch } = deps;
  const secure = config.issuer.startsWith('https://');
  const cookieOptions = { httpOnly: true, sameSite: 'lax' as const, secure, signed: true };
  const longCookieOptions = secure ? { ...cookieOptions, sameSite: 'none' as const } : cookieOptions;

  const audited = tokenAudit(deps.audit);
  const checkRefreshTarget = refreshTargetCheck(fhirServers);
  const roleOf = async (id: string) => (await accounts.findById(id))?.role;

  const configuration: Configuration = {
    adapter: createKnexAdapter(deps.db, clients, (write, kind, payload) => audited.issued(write, kind, payload)),
    clients: [],
    jwks: { keys: structuredClone(signingKeys) as NonNullable<Configuration['jwks']>['keys'] },
    cookies: {
      names: COOKIE_NAMES,
      keys: [...config.secrets.cookieKeys],
      long: longCookieOptions,
      short: cookieOptions,
    },
    claims: {
      // How the user authenticated goes in every ID token (acr, RFC 8176 amr, auth_time).
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['name', 'preferred_username'],
      email: ['email'],
      fhirUser: ['fhirUser'],
    },
    scopes: [...STATIC_SCOPES, EHR_LAUNCH_SCOPE, INTROSPECT_SCOPE, ADMIN_SCOPE],
    // RFC 7591 registration is our own route (clients live in our registry, see src/admin/dcr-routes.ts).
    discovery: { registration_endpoint: `${config.issuer}/register` },
    acrValues: [...ACR_VALUES],
    async findAccount(_ctx, sub) {
      const account = await accounts.findById(sub);
      if (!account || account.disabled) return undefined;
      return {
        accountId: account.id,
        async claims() {
          const fhirUser = fhirUserReference(account);
          return {
            sub: account.id,
            name: account.displayName ?? undefined,
            preferred_username: account.username,
            email: account.email ?? undefined,
            // SMART: fhirUser is an absolute URL of the user's resource on the FHIR server.
            fhirUser: fhirUser && fhirServers.primary ? `${fhirServers.primary}/${fhirUser}` : undefined,
          };
        },
      };
    },
    // Client jwks_uri fetches reach public addresses only (SSRF); see http/outbound-fetch.ts.
    fetch: outboundFetch as Configuration['fetch'],
    features: {
      devInteractions: { enabled: false },
      // oidc-provider would bind tokens to DPoP keys, but our own resource-side checks (bearer
      // introspection, the admin API, custos/enforcement) do not verify proofs yet, so a bound
      // token would be honoured there without one. Off until DPoP is supported end to end.
      dPoP: { enabled: false },
      introspection: {
        enabled: true,
        // A client may introspect its own tokens; a resource server (a confidential client whose
        // registration includes custos:introspect) may introspect any token (SMART token-introspection).
        async allowedPolicy(_ctx, client, token) {
          if (token.clientId === client.clientId) return true;
          const ceiling = String(client.metadata().scope_ceiling ?? '').split(' ');
          return client.clientAuthMethod !== 'none' && ceiling.includes(INTROSPECT_SCOPE);
        },
      },
      revocation: {
        enabled: true,
        // RFC 7009 section 2.1: a client may revoke only tokens issued to it.
        async allowedPolicy(_ctx, client, token) {
          if (token.clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        },
      },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.type = 'html';
          ctx.body = views.render('logout', { title: 'Sign out', form, host: ctx.host });
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = views.render('logged-out', { title: 'Signed out', clientName: ctx.oidc.client?.clientName });
        },
      },
      userinfo: { enabled: true },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      resourceIndicators: smartResourceIndicators(config, fhirServers, roleOf),
    },
    // CORS on the provider's endpoints only for browser apps (public clients) from the origin of
    // one of their redirect URIs; confidential clients are servers and never need it.
    clientBasedCORS(_ctx, origin, client) {
      if (origin === 'null' || client.clientAuthMethod !== 'none') return false;
      const allowed = client.metadata().allowed_origins as string[] | undefined;
      if (allowed?.includes(origin)) return true;
      return client.redirectUris?.some((uri) => URL.parse(uri)?.origin === origin) ?? false;
    },
    extraParams: smartExtraParams(fhirServers, launch.launchParam),
    async loadExistingGrant(ctx) {
      const grant = await launch.loadExistingGrant(ctx);
      // A grant whose consent has ended is not reused: the patient is asked again.
      if (grant && !(await deps.consentTokens.grantStillConsented(grant))) return undefined;
      return grant;
    },
    // Launch context and how the user signed in, then the consent that allows the token (which
    // refuses it when the patient's consent no longer does).
    async extraTokenClaims(ctx, token) {
      const context = await launch.extraTokenClaims(ctx, token as { grantId?: string; accountId?: string });
      const consent = await deps.consentTokens.claims(ctx, token as { accountId?: string; clientId?: string; grantId?: string });
      return context || consent ? { ...context, ...consent } : undefined;
    },
    // Refresh tokens for offline_access (lasting REFRESH_TOKEN_TTL) and for online_access (ending
    // with the user's session, which expiresWithSession's default already does).
    async issueRefreshToken(_ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && (code.scopes.has('offline_access') || code.scopes.has('online_access'));
    },
    // The client's full scope ceiling, SMART resource scopes included (see the client registry).
    // Admin-set limits (minimum_acr, shorter token lifetimes, extra CORS origins), and the secret a
    // rotation replaced while its grace period lasts.
    extraClientMetadata: {
      properties: [
        'scope_ceiling',
        'minimum_acr',
        'allowed_origins',
        'launch_modes',
        'access_token_ttl',
        'refresh_token_ttl',
        'client_secret_previous',
        'client_secret_previous_expires_at',
      ],
    },
    // SMART Backend Services / client-confidential-asymmetric: an assertion lives at most five
    // minutes, and a `jku` header may only point at the client's registered jwks_uri (the
    // provider does not fetch keys from `jku`, but a mismatch is a forgery signal worth refusing).
    async assertJwtClientAuthClaimsAndHeader(_ctx, claims, header, client) {
      const now = Math.floor(Date.now() / 1000);
      if (typeof claims.exp === 'number' && claims.exp - now > MAX_ASSERTION_LIFETIME) {
        throw new errors.InvalidClientAuth('client_assertion exp must be at most 5 minutes in the future');
      }
      if (header.jku !== undefined && header.jku !== client.jwksUri) {
        throw new errors.InvalidClientAuth('client_assertion jku does not match the registered jwks_uri');
      }
    },
    responseTypes: ['code'],
    formats: {
      customizers: {
        // oidc-provider writes `authorization_details` only from its own RAR feature; put the
        // consent's entry (RFC 9396) into JWT access tokens ourselves.
        async jwt(_ctx, token, jwt) {
          const details = (token as { extra?: Record<string, unknown> }).extra?.authorization_details;
          if (details) jwt.payload.authorization_details = details;
        },
      },
    },
    // SMART's authorize-post: the session cookie must then be SameSite=None, which needs https.
    enableHttpPostMethods: secure,
    pkce: { required: () => true },
    // Every refresh rotates; presenting a rotated one again revokes the whole grant (RFC 9700 4.14.2).
    // oidc-provider rotates before it checks the target and issues the access token, so what
    // could still refuse the request is checked here first: a refused refresh consumes nothing.
    async rotateRefreshToken(ctx) {
      checkRefreshTarget(ctx);
      const token = ctx.oidc.entities.RefreshToken;
      if (token) await deps.consentTokens.claims(ctx, token);
      return true;
    },
    allowOmittingSingleRegisteredRedirectUri: false,
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS256', 'RS384', 'PS256', 'PS384', 'ES256', 'ES384'],
      idTokenSigningAlgValues: ['RS256', 'ES256'],
      userinfoSigningAlgValues: ['RS256', 'ES256'],
      introspectionSigningAlgValues: ['ES256', 'RS256'],
      authorizationSigningAlgValues: ['ES256', 'RS256'],
      requestObjectSigningAlgValues: ['RS256', 'RS384', 'PS256', 'ES256', 'ES384'],
    },
    ttl: {
      // A client may have shorter lifetimes than the server's, never longer.
      AccessToken: (_ctx, _token, client) => clientTtl(client, 'access_token_ttl', config.ttl.accessToken),
      AuthorizationCode: config.ttl.authorizationCode,
      // SMART Backend Services: client-credentials tokens live at most five minutes.
      ClientCredentials: (_ctx, _token, client) => clientTtl(client, 'access_token_ttl', Math.min(config.ttl.accessToken, 300)),
      IdToken: config.ttl.idToken,
      RefreshToken: (_ctx, _token, client) => clientTtl(client, 'refresh_token_ttl', config.ttl.refreshToken),
      Interaction: config.ttl.interaction,
      Session: config.ttl.session,
      Grant: config.ttl.grant,
      PushedAuthorizationRequest: 60,
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
      policy: launch.interactionPolicyWithPicker(deps.levelCheck),
    },
    async renderError(ctx: KoaContextWithOIDC, out, error) {
      // The error page for the browser; details stay in the log, never in the page.
      deps.log.info({ err: error, route: ctx.oidc?.route }, 'authorization error shown to the user');
      ctx.type = 'html';
      ctx.set('Cache-Control', 'no-store');
      ctx.body = views.render('error', {
        title: 'This request cannot be completed',
        error: out.error,
        description: out.error_description ?? 'the request is not valid',
      });
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.proxy = config.trustProxy;

  // Client secrets are stored as keyed hashes; compare the presented secret against the hash.
  // (Symmetric algorithms that would need the plain secret are not enabled.)
  // After a rotation the replaced secret keeps working until its grace period ends.
  // Per-client rate limits: the client is known only once oidc-provider has parsed the request
  // and looks it up (client_id may be in the body), so count right there.
  if (deps.clientRateLimit) {
    const limit = deps.clientRateLimit;
    const ClientModel = provider.Client as unknown as { find(id: string, ...rest: unknown[]): Promise<unknown> };
    const find = ClientModel.find.bind(ClientModel);
    ClientModel.find = async (id: string, ...rest: unknown[]) => {
      const wait = typeof id === 'string' ? await limit(id) : 0;
      if (wait > 0) {
        const err = new errors.CustomOIDCProviderError('temporarily_unavailable', `too many requests from this client; retry after ${wait} seconds`);
        throw Object.assign(err, { status: 429, statusCode: 429 });
      }
      return find(id, ...rest);
    };
  }

  provider.Client.prototype.compareClientSecret = function compareClientSecret(
    this: { clientSecret?: string; metadata(): Record<string, unknown> },
    actual: string,
  ) {
    if (this.clientSecret && clients.verifySecret(this.clientSecret, actual)) return Promise.resolve(true);
    const previous = this.metadata().client_secret_previous;
    const until = this.metadata().client_secret_previous_expires_at;
    const live = typeof previous === 'string' && typeof until === 'number' && until > Date.now() / 1000;
    return Promise.resolve(live && clients.verifySecret(previous, actual));
  };

  provider.use(async (ctx, next) => {
    await next();
    // The provider answered `temporarily_unavailable` for a DatabaseUnavailableError: say when to retry.
    if (ctx.status === 503) {
      ctx.set('Retry-After', String(UNAVAILABLE_RETRY_AFTER_SECONDS));
      deps.log.warn({ route: ctx.oidc?.route, method: ctx.method, path: ctx.path }, 'database unavailable');
    }
    const oidcCtx = ctx as KoaContextWithOIDC;
    if (ctx.oidc?.route === 'token') {
      await launch.decorateTokenResponse(oidcCtx);
      deps.consentTokens.decorateTokenResponse(oidcCtx);
      // Usage figures for the client inventory: one per token response.
      const clientId = oidcCtx.oidc.client?.clientId;
      if (ctx.status === 200 && clientId) await clients.recordTokenIssued(clientId);
    }
    if (ctx.oidc?.route === 'introspection') {
      const body = ctx.body as Record<string, unknown> | undefined;
      const token = oidcCtx.oidc.entities.AccessToken ?? oidcCtx.oidc.entities.RefreshToken;
      if (ctx.status === 200 && body) ctx.body = await deps.reviewIntrospection(body, token?.accountId);
      await audited.afterIntrospection(oidcCtx);
    }
    if (ctx.oidc?.route === 'revocation') await audited.afterRevocation(oidcCtx);
  });

  // The provider answers clients with safe, generic errors; the specifics go to our log only.
  provider.on('server_error', (ctx: KoaContextWithOIDC, err: Error) => {
    deps.log.error({ err, route: ctx.oidc?.route }, 'provider server error');
  });
  const logRefusal = (event: string) => (ctx: KoaContextWithOIDC, err: Error & { error_detail?: string }) => {
    deps.log.info({ event, error: err.message, detail: err.error_detail, client: ctx.oidc?.client?.clientId }, 'request refused');
  };
  provider.on('grant.error', logRefusal('grant.error'));
  const auditRefusal = (route: string) => (ctx: KoaContextWithOIDC, err: Error & { error?: string }) => {
    // Nothing refused the request: the database is away, so it could not be written down anyway.
    if (err instanceof DatabaseUnavailableError) return;
    audited.refused(ctx, route, err).catch((e: unknown) => deps.log.error({ err: e }, 'could not audit a refused request'));
  };
  provider.on('grant.error', auditRefusal('token'));
  provider.on('introspection.error', auditRefusal('introspection'));
  provider.on('revocation.error', auditRefusal('revocation'));
  provider.on('authorization.error', logRefusal('authorization.error'));
  provider.on('introspection.error', logRefusal('introspection.error'));
  provider.on('revocation.error', logRefusal('revocation.error'));
  provider.on('userinfo.error', logRefusal('userinfo.error'));

  return provider;
}
