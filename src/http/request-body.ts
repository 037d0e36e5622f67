/**
 * Request bodies for our own routes (never in front of the provider's): forms for the pages and
 * JSON for the APIs. Whatever goes wrong while reading one is the caller's mistake and says so:
 * 413 when too large, 400 when malformed, and 400 for text PostgreSQL cannot store (NUL, unpaired
 * surrogates), which would otherwise surface as a server error from the first query using it.
 */
import { bodyParser } from '@koa/bodyparser';
import type { Middleware } from 'koa';
import { findUnstorableText } from '../db/index.ts';
import { HttpError } from './errors.ts';

const tooLarge = () => new HttpError(413, 'invalid_request', 'the request body is too large');

/**
 * Runs `parse` (a bodyparser for one type), turning its failures into `refuse(status)`, then
 * refuses a body holding unstorable text with `unstorable(path)`.
 */
function readBody(parse: Middleware, refuse: (status: number | undefined) => HttpError, unstorable: (path: (string | number)[]) => HttpError): Middleware {
  return async function readRequestBody(ctx, next) {
    let parsed = false;
    try {
      await parse(ctx, async () => {
        parsed = true;
      });
    } catch (err) {
      // co-body marks its parse failures with a status but not `expose`, so they are mapped here.
      throw refuse((err as { status?: number }).status);
    }
    if (!parsed) return;
    const where = findUnstorableText(ctx.request.body);
    if (where) throw unstorable(where);
    await next();
  };
}

/** application/x-www-form-urlencoded, for our pages and form-posting endpoints. */
export function formBody(opts: { limit: string }): Middleware {
  return readBody(
    bodyParser({ enableTypes: ['form'], formLimit: opts.limit }),
    (status) =>
      status === 413
        ? tooLarge()
        : status === 415
          ? new HttpError(415, 'invalid_request', 'unsupported request body encoding')
          : new HttpError(400, 'invalid_request', 'the form is malformed'),
    () => new HttpError(400, 'invalid_request', 'the form contains a NUL character or an unpaired surrogate'),
  );
}

/** JSON objects or arrays (never a bare scalar), for the APIs; a refusal names where the bad text is. */
export function jsonBody(opts: { limit: string }): Middleware {
  return readBody(
    bodyParser({ enableTypes: ['json'], jsonLimit: opts.limit, jsonStrict: true }),
    (status) => (status === 413 ? tooLarge() : new HttpError(400, 'invalid_request', 'the request body is not valid JSON (an object or array)')),
    (where) => {
      const pointer = where.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('').slice(0, 200);
      return new HttpError(400, 'invalid_request', `the request body contains a NUL character or an unpaired surrogate (at "${pointer}")`);
    },
  );
}
