/**
 * One place that turns thrown errors into responses: our typed errors as JSON or as a readable
 * page, body-parser failures as 400/413, an unreachable database as 503 `temporarily_unavailable`,
 * and everything unknown as a generic `server_error` whose details go to the log only.
 */
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { DatabaseUnavailableError, isDatabaseUnavailable, UNAVAILABLE_RETRY_AFTER_SECONDS } from '../db/index.ts';
import { HttpError, notFound, problemDetails } from './errors.ts';
import type { Views } from './views.ts';

/** Errors from body parsing and Koa's own `ctx.throw` carry `expose` and a 4xx status. */
function fromExposedError(err: unknown): HttpError | undefined {
  const e = err as { status?: number; statusCode?: number; expose?: boolean; type?: string; error?: unknown; error_description?: unknown };
  const status = e?.status ?? e?.statusCode;
  if (!e?.expose || typeof status !== 'number' || status < 400 || status >= 500) return undefined;
  // oidc-provider's own errors (one thrown from its session save reaches us) carry OAuth fields meant to be shown.
  if (typeof e.error === 'string' && typeof e.error_description === 'string') return new HttpError(status, e.error, e.error_description);
  if (status === 413) return new HttpError(413, 'invalid_request', 'the request body is too large');
  if (status === 415) return new HttpError(415, 'invalid_request', 'unsupported request body type');
  if (e.type === 'entity.parse.failed') return new HttpError(400, 'invalid_request', 'the request body is malformed');
  return new HttpError(status, 'invalid_request', 'the request is malformed');
}

function wantsHtml(ctx: Context): boolean {
  // JSON unless the client prefers HTML (browsers do; `*/*` API clients get JSON).
  return ctx.accepts('json', 'html') === 'html' && !ctx.path.startsWith('/admin/api');
}

export function errorHandler(log: Logger, views: Views) {
  return async function handleErrors(ctx: Context, next: Next) {
    try {
      await next();
      if (ctx.respond !== false && ctx.body === undefined) {
        if (ctx.status === 404) throw notFound();
        if (ctx.status === 405) throw new HttpError(405, 'method_not_allowed', 'this method is not allowed here');
      }
      // Refusals rendered elsewhere (the provider's, a route's own) are not for caches either.
      if (ctx.status >= 400 && !ctx.response.get('Cache-Control')) ctx.set('Cache-Control', 'no-store');
    } catch (err) {
      let httpError = err instanceof HttpError ? err : fromExposedError(err);
      if (!httpError && isDatabaseUnavailable(err)) {
        // Expected while the database is away: no stack, and the client is told when to retry.
        const unavailable = err instanceof DatabaseUnavailableError ? err : new DatabaseUnavailableError(err);
        log.warn({ err: unavailable.cause, method: ctx.method, path: ctx.path }, 'database unavailable');
        httpError = new HttpError(unavailable.status, unavailable.error, unavailable.error_description, {
          'Retry-After': String(UNAVAILABLE_RETRY_AFTER_SECONDS),
        });
      }
      if (!httpError) {
        log.error({ err, method: ctx.method, path: ctx.path }, 'unhandled error');
        httpError = new HttpError(500, 'server_error', 'an unexpected error occurred; please try again later');
      }
      ctx.status = httpError.status;
      ctx.set(httpError.headers);
      ctx.set('Cache-Control', 'no-store');
      if (ctx.path === '/admin/api' || ctx.path.startsWith('/admin/api/')) {
        // The admin API answers with problem details (RFC 9457).
        ctx.body = problemDetails(httpError);
        ctx.type = 'application/problem+json';
      } else if (wantsHtml(ctx)) {
        ctx.type = 'html';
        ctx.body = views.render('error', { title: 'Something went wrong', error: httpError.error, description: httpError.description });
      } else {
        ctx.body = { error: httpError.error, error_description: httpError.description };
      }
    }
  };
}
