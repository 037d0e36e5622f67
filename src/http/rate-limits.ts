/**
 * Request rate limits (OWASP API4, unrestricted resource consumption): per client IP on the OAuth
 * and API endpoints and, separately, on the pages; per client on the token, introspection,
 * revocation and PAR endpoints. Over a limit: 429 with Retry-After, one audit event per window
 * (so a flood cannot flood the trail), and a metric. If the counter store fails, requests go
 * through and the failure is logged: an outage of Redis must not take the server down with it.
 */
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { AuditTrail } from '../audit/index.ts';
import { HttpError } from './errors.ts';
import type { LimiterStore } from './limiter-store.ts';
import { currentRequest } from './request-context.ts';

export interface RateLimitSettings {
  /** Requests per minute; 0 turns the limit off. */
  oauthPerIp: number;
  perClient: number;
  pagesPerIp: number;
}

export type LimitName = 'oauth_ip' | 'pages_ip' | 'client';

type RequestClass = 'oauth' | 'pages' | undefined;

const OAUTH_PATHS = [/^\/token(\/|$)/, /^\/request$/, /^\/register(\/|$)/, /^\/me$/, /^\/admin\/api(\/|$)/, /^\/fhir\//, /^\/smart\/launch$/];
const PAGE_PATHS = [/^\/auth(\/|$)/, /^\/interaction\//, /^\/account(\/|$)/, /^\/admin(\/|$)/, /^\/session\//, /^\/demo(\/|$)/];
/** Where a client authenticates: these count against the client's own limit too. */
const CLIENT_LIMITED = [/^\/token(\/introspection|\/revocation)?$/, /^\/request$/];

function classify(path: string): RequestClass {
  if (OAUTH_PATHS.some((p) => p.test(path))) return 'oauth';
  if (PAGE_PATHS.some((p) => p.test(path))) return 'pages';
  return undefined;
}

export interface RequestRateLimits {
  middleware(ctx: Context, next: Next): Promise<void>;
  /**
   * Counts a request against `clientId`'s limit when the current request is one where clients
   * authenticate; returns the seconds to wait when over it (0 when it may go on).
   */
  checkClient(clientId: string): Promise<number>;
}

export function requestRateLimits(deps: {
  store: LimiterStore;
  limits: RateLimitSettings;
  audit: AuditTrail;
  log: Logger;
  onLimited?: (limit: LimitName) => void;
}): RequestRateLimits {
  const minute = (points: number, name: string): RateLimiterAbstract | undefined =>
    points > 0 ? deps.store.make(name, { points, duration: 60, inMemoryBlockOnConsumed: points, inMemoryBlockDuration: 5 }) : undefined;
  const limiters: Record<LimitName, RateLimiterAbstract | undefined> = {
    oauth_ip: minute(deps.limits.oauthPerIp, 'oauth-ip'),
    pages_ip: minute(deps.limits.pagesPerIp, 'pages-ip'),
    client: minute(deps.limits.perClient, 'client'),
  };
  const pointsOf: Record<LimitName, number> = { oauth_ip: deps.limits.oauthPerIp, pages_ip: deps.limits.pagesPerIp, client: deps.limits.perClient };

  /** Seconds to wait, or 0. Audits only the first refusal of each window. */
  async function consume(limit: LimitName, key: string, ctx: Context, clientId?: string): Promise<number> {
    const limiter = limiters[limit];
    if (!limiter) return 0;
    try {
      await limiter.consume(key);
      return 0;
    } catch (res) {
      if (!(res instanceof RateLimiterRes)) {
        deps.log.warn({ err: res, limit }, 'rate-limit store unavailable; request allowed');
        return 0;
      }
      const wait = Math.max(1, Math.ceil(res.msBeforeNext / 1000));
      deps.onLimited?.(limit);
      if (res.consumedPoints === pointsOf[limit] + 1) {
        await deps.audit
          .record({ type: 'rate_limit.exceeded', outcome: 'denied', clientId, ip: ctx.ip, details: { limit, path: ctx.path.slice(0, 200), retry_after: wait } })
          .catch((err: unknown) => deps.log.warn({ err }, 'could not audit a rate-limit refusal'));
      }
      return wait;
    }
  }

  return {
    async middleware(ctx, next) {
      const kind = classify(ctx.path);
      if (kind) {
        const wait = await consume(kind === 'oauth' ? 'oauth_ip' : 'pages_ip', ctx.ip, ctx);
        if (wait > 0) {
          throw new HttpError(429, 'temporarily_unavailable', `too many requests; try again in ${wait} seconds`, { 'Retry-After': String(wait) });
        }
      }
      await next();
    },

    async checkClient(clientId) {
      const ctx = currentRequest();
      if (!ctx || ctx.method !== 'POST' || !CLIENT_LIMITED.some((p) => p.test(ctx.path))) return 0;
      // The provider may look up other clients while serving this request (a token's owner at
      // introspection): only the first lookup is the caller.
      if (ctx.state.clientRateChecked) return 0;
      ctx.state.clientRateChecked = true;
      const wait = await consume('client', clientId, ctx, clientId);
      if (wait > 0) ctx.set('Retry-After', String(wait));
      return wait;
    },
  };
}
