/**
 * Prometheus metrics (prom-client): requests and latency by route, tokens by grant type, login
 * failures, lockouts, consent changes and rate-limit refusals. Served at /metrics only when
 * METRICS_TOKEN is configured, and only to a caller presenting it: never public by default.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AuditEventInput } from '../audit/index.ts';

export interface Metrics {
  registry: Registry;
  /** Times and counts each request by its route pattern (never the raw path: ids would explode the series). */
  middleware(ctx: Context, next: Next): Promise<void>;
  /** Turns audit events into counters, so every audited security event is also measured. */
  observe(event: AuditEventInput): void;
  rateLimited(limit: string): void;
}

/** The route label: the router's pattern, the provider's route name, or a coarse bucket. */
function routeOf(ctx: Context): string {
  const pattern = (ctx as Context & { _matchedRoute?: string })._matchedRoute;
  if (typeof pattern === 'string') return pattern;
  const oidcRoute = (ctx as Context & { oidc?: { route?: string } }).oidc?.route;
  if (oidcRoute) return `oidc:${oidcRoute}`;
  return ctx.status === 404 ? 'unmatched' : 'other';
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'custos_process_' });
  const requests = new Counter({ name: 'custos_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'], registers: [registry] });
  const latency = new Histogram({
    name: 'custos_http_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['route', 'method'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const tokens = new Counter({ name: 'custos_tokens_issued_total', help: 'Access tokens issued, by grant type', labelNames: ['grant_type'], registers: [registry] });
  const loginFailures = new Counter({ name: 'custos_login_failures_total', help: 'Failed login steps', labelNames: ['step'], registers: [registry] });
  const lockouts = new Counter({ name: 'custos_login_lockouts_total', help: 'Login steps refused while throttled', labelNames: ['step'], registers: [registry] });
  const consent = new Counter({ name: 'custos_consent_changes_total', help: 'Consent changes by kind', labelNames: ['type'], registers: [registry] });
  const limited = new Counter({ name: 'custos_rate_limited_total', help: 'Requests refused by a rate limit', labelNames: ['limit'], registers: [registry] });

  return {
    registry,
    async middleware(ctx, next) {
      const end = latency.startTimer();
      try {
        await next();
      } finally {
        const route = routeOf(ctx);
        end({ route, method: ctx.method });
        requests.inc({ route, method: ctx.method, status: String(ctx.status) });
      }
    },
    observe(event) {
      const step = String(event.details?.step ?? 'password');
      if (event.type === 'token.issued' || event.type === 'token.refreshed') tokens.inc({ grant_type: String(event.details?.grant_type ?? 'unknown') });
      else if (event.type === 'login.failure') loginFailures.inc({ step });
      else if (event.type === 'login.throttled') lockouts.inc({ step });
      else if (event.type.startsWith('consent.') && event.type !== 'consent.read') consent.inc({ type: event.type.slice('consent.'.length) });
    },
    rateLimited(limit) {
      limited.inc({ limit });
    },
  };
}

/** GET /metrics for a scraper holding METRICS_TOKEN; 404 when metrics are not configured. */
export function metricsRoutes(metrics: Metrics, token: string | undefined): Router {
  const router = new Router();
  const expected = token ? createHash('sha256').update(token).digest() : undefined;
  router.get('/metrics', async (ctx) => {
    if (!expected) {
      ctx.status = 404;
      ctx.body = { error: 'not_found', error_description: 'the requested resource does not exist' };
      return;
    }
    const presented = /^Bearer (.+)$/.exec(ctx.get('Authorization'))?.[1] ?? '';
    if (!timingSafeEqual(createHash('sha256').update(presented).digest(), expected)) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', 'Bearer realm="custos-metrics"');
      ctx.body = { error: 'invalid_token', error_description: 'a valid metrics token is required' };
      return;
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
  return router;
}
