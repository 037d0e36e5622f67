/**
 * Validates bearer tokens for a resource server: by RFC 7662 introspection at Custos (as a
 * confidential client with `custos:introspect`, client_secret_basic), or, for JWT access tokens
 * (RFC 9068), by signature against Custos's JWKS. Answers are cached briefly and in bounded number,
 * so a revoked consent stops a token within the cache's time-to-live.
 */
import { createHash } from 'node:crypto';
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { accessFactsFromClaims, type TokenVerdict } from './access-token.ts';

export interface TokenValidatorOptions {
  /** Custos's issuer URL. */
  issuer: string;
  /** RFC 7662: the resource server's client credentials; `endpoint` defaults to `<issuer>/token/introspection`. */
  introspection?: { clientId: string; clientSecret: string; endpoint?: string };
  /** RFC 9068 JWT access tokens, verified against `jwksUri` (default `<issuer>/jwks`). */
  jwt?: { jwksUri?: string };
  cache?: {
    /** At most this many answers are kept (the oldest goes first). Default 1000. */
    maxEntries?: number;
    /** An answer is reused for at most this many seconds (and never past the token's expiry). Default 5. */
    ttlSeconds?: number;
  };
  /** Milliseconds since the epoch; tests pass a controllable one. */
  clock?: () => number;
  fetch?: typeof fetch;
  /** How long to wait for Custos, in milliseconds. Default 5000. */
  timeoutMs?: number;
}

/**
 * Custos could not be asked (network error, timeout, 5xx, a refusal of the resource server's own
 * credentials, an answer that is not JSON): the request cannot be decided. A token Custos says is
 * not an active access token is a verdict instead, never this.
 */
export class TokenServiceUnavailable extends Error {
  override name = 'TokenServiceUnavailable';
}

export interface TokenValidator {
  validate(token: string): Promise<TokenVerdict>;
  /** Entries currently cached. */
  readonly cacheSize: number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
// RFC 6750 b64token, with a generous length cap.
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * OAuth errors (RFC 6749 section 5.2) with which an introspection endpoint refuses the token
 * rather than the resource server: oidc-provider answers `unsupported_token_type` for any JWT
 * (an ID token, a JWT access token) because it introspects opaque tokens only. Such a token is
 * simply not one this server can accept (RFC 6750 `invalid_token`). Every other refusal
 * (`invalid_client` and the like) says the proxy's own credentials or Custos are wrong, which
 * retrying another token would not fix.
 */
const TOKEN_REFUSALS = new Set(['invalid_request', 'unsupported_token_type', 'invalid_token', 'invalid_grant']);

/** The OAuth error of a 400 answer when it refuses the token itself, else undefined. */
async function tokenRefusal(res: Response): Promise<string | undefined> {
  try {
    const body = (await res.json()) as unknown;
    const error = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as { error?: unknown }).error : undefined;
    return typeof error === 'string' && TOKEN_REFUSALS.has(error) ? error : undefined;
  } catch {
    return undefined;
  }
}

export function createTokenValidator(opts: TokenValidatorOptions): TokenValidator {
  const issuer = opts.issuer.replace(/\/+$/, '');
  const clock = opts.clock ?? Date.now;
  const doFetch = opts.fetch ?? fetch;
  const maxEntries = opts.cache?.maxEntries ?? 1000;
  const ttlMs = (opts.cache?.ttlSeconds ?? 5) * 1000;
  const timeoutMs = opts.timeoutMs ?? 5000;
  if (!opts.introspection && !opts.jwt) throw new Error('a token validator needs introspection credentials or a JWKS');
  const cache = new Map<string, { verdict: TokenVerdict; until: number }>();
  const inFlight = new Map<string, Promise<TokenVerdict>>();
  let jwks: JWTVerifyGetKey | undefined;

  async function introspect(token: string): Promise<TokenVerdict> {
    const cfg = opts.introspection;
    if (!cfg) return { active: false, reason: 'opaque tokens cannot be checked without introspection credentials' };
    const basic = Buffer.from(`${encodeURIComponent(cfg.clientId)}:${encodeURIComponent(cfg.clientSecret)}`).toString('base64');
    let res: Response;
    try {
      res = await doFetch(cfg.endpoint ?? `${issuer}/token/introspection`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new TokenServiceUnavailable(`introspection failed: ${(err as Error).message}`);
    }
    if (res.status === 400) {
      const refusal = await tokenRefusal(res);
      if (refusal) return { active: false, reason: `introspection refused the token (${refusal})` };
    }
    if (!res.ok) throw new TokenServiceUnavailable(`introspection answered ${res.status}`);
    let body: Record<string, unknown>;
    try {
      body = (await res.json()) as Record<string, unknown>;
    } catch {
      throw new TokenServiceUnavailable('introspection answered with something other than JSON');
    }
    if (typeof body !== 'object' || body === null) throw new TokenServiceUnavailable('introspection answered with something other than an object');
    if (body.active !== true) return { active: false, reason: 'the token is not active' };
    if (body.iss !== undefined && body.iss !== issuer) return { active: false, reason: 'the token was issued by another server' };
    // Refresh tokens introspect without a token_type; DPoP-bound tokens need a proof this does not check.
    if (typeof body.token_type !== 'string' || body.token_type.toLowerCase() !== 'bearer') return { active: false, reason: 'not a bearer access token' };
    if (typeof body.exp === 'number' && body.exp * 1000 <= clock()) return { active: false, reason: 'the token has expired' };
    return accessFactsFromClaims(body, clock());
  }

  async function verifyJwt(token: string): Promise<TokenVerdict> {
    jwks ??= createRemoteJWKSet(new URL(opts.jwt?.jwksUri ?? `${issuer}/jwks`));
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer, currentDate: new Date(clock()), typ: 'at+jwt' });
      return accessFactsFromClaims(payload as Record<string, unknown>, clock());
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (code === 'ERR_JWKS_TIMEOUT' || code === 'ERR_JOSE_GENERIC' || (err as Error).name === 'TypeError') {
        throw new TokenServiceUnavailable(`the JWKS could not be fetched: ${(err as Error).message}`);
      }
      return { active: false, reason: 'the token signature or claims are not valid' };
    }
  }

  function remember(key: string, verdict: TokenVerdict): void {
    let until = clock() + ttlMs;
    if (verdict.active && verdict.facts.exp !== undefined) until = Math.min(until, verdict.facts.exp * 1000);
    cache.delete(key);
    cache.set(key, { verdict, until });
    while (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
  }

  return {
    get cacheSize() {
      return cache.size;
    },
    async validate(token) {
      if (token.length > 8192 || !B64TOKEN.test(token)) return { active: false, reason: 'the token is malformed' };
      // Keyed by a hash so the cache never holds the tokens themselves.
      const key = createHash('sha256').update(token).digest('base64url');
      const hit = cache.get(key);
      if (hit && hit.until > clock()) return hit.verdict;
      if (hit) cache.delete(key);
      const pending = inFlight.get(key);
      if (pending) return pending;
      const work = (opts.jwt && JWT_SHAPE.test(token) ? verifyJwt(token) : introspect(token)).then((verdict) => {
        remember(key, verdict);
        return verdict;
      });
      inFlight.set(key, work);
      try {
        return await work;
      } finally {
        inFlight.delete(key);
      }
    },
  };
}
