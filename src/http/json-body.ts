/**
 * JSON request bodies for our own routes (never in front of the provider's). Whatever goes wrong
 * while reading one is the caller's mistake and says so: 400 for malformed JSON or a bare scalar,
 * 413 when too large, and 400 for text PostgreSQL cannot store (NUL, unpaired surrogates), which
 * would otherwise fail the INSERT as a server error.
 */
import { bodyParser } from '@koa/bodyparser';
import type { Middleware } from 'koa';
import { findUnstorableText } from '../db/index.ts';
import { HttpError } from './errors.ts';

export function jsonBody(opts: { limit: string }): Middleware {
  const parse = bodyParser({ enableTypes: ['json'], jsonLimit: opts.limit, jsonStrict: true });
  return async function readJsonBody(ctx, next) {
    let parsed = false;
    try {
      await parse(ctx, async () => {
        parsed = true;
      });
    } catch (err) {
      // co-body marks its parse failures with status 400 but not `expose`, so they must be mapped here.
      if ((err as { status?: number }).status === 413) throw new HttpError(413, 'invalid_request', 'the request body is too large');
      throw new HttpError(400, 'invalid_request', 'the request body is not valid JSON (an object or array)');
    }
    if (!parsed) return;
    const where = findUnstorableText(ctx.request.body);
    if (where) {
      const pointer = where.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('').slice(0, 200);
      throw new HttpError(400, 'invalid_request', `the request body contains a NUL character or an unpaired surrogate (at "${pointer}")`);
    }
    await next();
  };
}
