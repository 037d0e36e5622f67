/**
 * What a client may be registered with: a strict subset of RFC 7591 client metadata, validated
 * before anything is stored. Unknown or unsupported fields are refused, never silently dropped.
 */
import { z } from 'zod';
import { findUnstorableText } from '../db/index.ts';
import { ACR_VALUES } from '../mfa/index.ts';
import { isResourceScope, parseResourceScope, STATIC_SCOPES } from '../smart/index.ts';

export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'] as const;
export const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials'] as const;

/** Custos's own scopes: creating EHR launches, introspecting any token, the admin API. */
export const EHR_LAUNCH_SCOPE = 'custos:ehr-launch';
export const INTROSPECT_SCOPE = 'custos:introspect';
export const ADMIN_SCOPE = 'custos:admin';
export const CUSTOS_SCOPES = [EHR_LAUNCH_SCOPE, INTROSPECT_SCOPE, ADMIN_SCOPE] as const;

/** SMART launch modes a client may use (App Launch 2.2: EHR launch, standalone launch). */
export const LAUNCH_MODES = ['ehr', 'standalone'] as const;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

/** Exact redirect URIs (RFC 9700 section 2.1): https, or http only on a loopback host; no fragment. */
export const redirectUri = z.string().max(2000).superRefine((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not an absolute URL` });
    return;
  }
  if (url.hash || value.includes('#')) ctx.addIssue({ code: 'custom', message: `"${value}" must not contain a fragment` });
  if (url.username || url.password) ctx.addIssue({ code: 'custom', message: `"${value}" must not contain credentials` });
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
    ctx.addIssue({ code: 'custom', message: `"${value}" must use https (http is allowed only for loopback addresses)` });
  } else if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    ctx.addIssue({ code: 'custom', message: `"${value}" must use https` });
  }
});

/** An origin for browser (CORS) requests: https, or http on loopback; no path, query or fragment. */
export const allowedOrigin = z.string().max(300).superRefine((value, ctx) => {
  const url = URL.parse(value);
  if (!url || url.origin === 'null' || url.origin !== value) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not an origin (scheme://host[:port], nothing after)` });
  } else if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
    ctx.addIssue({ code: 'custom', message: `"${value}" must use https (http is allowed only for loopback addresses)` });
  } else if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    ctx.addIssue({ code: 'custom', message: `"${value}" must use https` });
  }
});

const httpsUrl = z.url({ protocol: /^https$/ }).max(2000);

/** RFC 7517 section 4: JWK members are strings, string arrays (`key_ops`, `x5c`) or, from WebCrypto, `ext`. */
const jwk = z.object({ kty: z.string().max(16) }).catchall(z.union([z.string().max(8192), z.boolean(), z.array(z.string().max(8192)).max(10)]));

/** Scope strings: space-separated tokens of printable ASCII without quotes or backslash (RFC 6749 3.3). */
const scope = z
  .string()
  .max(4000)
  .regex(/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/, 'must be space-separated scope tokens')
  .superRefine((value, ctx) => {
    for (const token of value.split(' ')) {
      const problem = scopeProblem(token);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }
  });

/**
 * Why `token` cannot be part of a scope ceiling, or undefined when it can: a known static scope,
 * one of Custos's own, or a resource scope in the SMART grammar (App Launch 2.2 section 3.0.2).
 */
export function scopeProblem(token: string): string | undefined {
  if ((STATIC_SCOPES as readonly string[]).includes(token) || (CUSTOS_SCOPES as readonly string[]).includes(token)) return undefined;
  if (!isResourceScope(token)) return `"${token}" is not a scope Custos knows`;
  try {
    parseResourceScope(token);
    return undefined;
  } catch (err) {
    return `"${token}" is not a valid SMART scope: ${(err as Error).message}`;
  }
}

export const clientMetadataSchema = z
  .object({
    client_name: z.string().trim().min(1).max(200),
    redirect_uris: z.array(redirectUri).max(20).default([]),
    post_logout_redirect_uris: z.array(redirectUri).max(20).optional(),
    grant_types: z.array(z.enum(GRANT_TYPES)).min(1).default(['authorization_code']),
    response_types: z.array(z.literal('code')).optional(),
    token_endpoint_auth_method: z.enum(AUTH_METHODS).default('client_secret_basic'),
    token_endpoint_auth_signing_alg: z.enum(['RS256', 'RS384', 'ES256', 'ES384', 'PS256', 'PS384']).optional(),
    scope: scope.optional(),
    jwks: z.object({ keys: z.array(jwk).min(1).max(10) }).strict().optional(),
    jwks_uri: httpsUrl.optional(),
    client_uri: httpsUrl.optional(),
    logo_uri: httpsUrl.optional(),
    policy_uri: httpsUrl.optional(),
    tos_uri: httpsUrl.optional(),
    contacts: z.array(z.email()).max(10).optional(),
    /** Set by admins only (never through dynamic registration): the weakest login this app accepts. */
    minimum_acr: z.enum(ACR_VALUES).optional(),
    /** Who runs the app (an organisation or team); `contacts` says how to reach them. */
    owner: z.string().trim().min(1).max(200).optional(),
    /** Extra browser origins allowed to call the token endpoint (besides the redirect URIs' origins). */
    allowed_origins: z.array(allowedOrigin).max(20).optional(),
    launch_modes: z.array(z.enum(LAUNCH_MODES)).max(2).optional(),
    /** Shorter token lifetimes for this client; never longer than the server's (checked by the registry). */
    access_token_ttl: z.number().int().min(30).max(3600).optional(),
    refresh_token_ttl: z.number().int().min(300).max(5 * 365 * 86400).optional(),
  })
  .strict()
  .superRefine((m, ctx) => {
    const unstorable = findUnstorableText(m);
    if (unstorable) {
      ctx.addIssue({ code: 'custom', path: unstorable.slice(0, 1), message: 'must not contain a NUL character or an unpaired surrogate' });
      return;
    }
    const grants = new Set(m.grant_types);
    const isPublic = m.token_endpoint_auth_method === 'none';
    if (new Set(m.grant_types).size !== m.grant_types.length) {
      ctx.addIssue({ code: 'custom', path: ['grant_types'], message: 'must not repeat a grant type' });
    }
    if (grants.has('authorization_code') && m.redirect_uris.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['redirect_uris'], message: 'at least one redirect URI is required for authorization_code' });
    }
    if (!grants.has('authorization_code') && m.redirect_uris.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['redirect_uris'], message: 'redirect URIs are only used with authorization_code' });
    }
    if (grants.has('refresh_token') && !grants.has('authorization_code')) {
      ctx.addIssue({ code: 'custom', path: ['grant_types'], message: 'refresh_token requires authorization_code' });
    }
    if (isPublic && grants.has('client_credentials')) {
      ctx.addIssue({ code: 'custom', path: ['grant_types'], message: 'client_credentials needs a confidential client (not token_endpoint_auth_method "none")' });
    }
    if (m.launch_modes?.length && !grants.has('authorization_code')) {
      ctx.addIssue({ code: 'custom', path: ['launch_modes'], message: 'SMART launches need authorization_code' });
    }
    if (m.launch_modes && new Set(m.launch_modes).size !== m.launch_modes.length) {
      ctx.addIssue({ code: 'custom', path: ['launch_modes'], message: 'must not repeat a launch mode' });
    }
    if (m.refresh_token_ttl !== undefined && !grants.has('refresh_token')) {
      ctx.addIssue({ code: 'custom', path: ['refresh_token_ttl'], message: 'only for clients with the refresh_token grant' });
    }
    if (m.token_endpoint_auth_method === 'private_key_jwt') {
      if (!m.jwks === !m.jwks_uri) {
        ctx.addIssue({ code: 'custom', path: ['jwks'], message: 'private_key_jwt needs exactly one of jwks or jwks_uri' });
      }
    } else if (m.jwks || m.jwks_uri) {
      ctx.addIssue({ code: 'custom', path: ['jwks'], message: 'jwks and jwks_uri are only used with private_key_jwt' });
    }
  });

export type ClientMetadataInput = z.input<typeof clientMetadataSchema>;
export type ClientMetadata = z.output<typeof clientMetadataSchema>;

/**
 * What kind of client this is, in the words admins use: a browser or mobile app without a secret,
 * a server-side app with a secret or with keys, or a backend service (client_credentials only).
 */
export type ClientType = 'public' | 'confidential' | 'confidential_keys' | 'backend_service';

export function clientTypeOf(m: ClientMetadata): ClientType {
  if (m.token_endpoint_auth_method === 'none') return 'public';
  if (m.grant_types.length === 1 && m.grant_types[0] === 'client_credentials') return 'backend_service';
  return m.token_endpoint_auth_method === 'private_key_jwt' ? 'confidential_keys' : 'confidential';
}

export function needsSecret(m: ClientMetadata): boolean {
  return m.token_endpoint_auth_method === 'client_secret_basic' || m.token_endpoint_auth_method === 'client_secret_post';
}
