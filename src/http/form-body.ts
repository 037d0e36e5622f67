/**
 * Form bodies (application/x-www-form-urlencoded) for our own pages and endpoints, never in front
 * of the provider's. A field holding NUL (`%00`) is refused with 400: PostgreSQL cannot store or
 * even compare it, so it would otherwise surface as a server error from the first query using it.
 */
import { bodyParser } from '@koa/bodyparser';
import type { Middleware } from 'koa';
import { findUnstorableText } from '../db/index.ts';
import { HttpError } from './errors.ts';

export function formBody(opts: { limit: string }): Middleware {
  const parse = bodyParser({ enableTypes: ['form'], formLimit: opts.limit });
  return async function readFormBody(ctx, next) {
    let parsed = false;
    try {
      await parse(ctx, async () => {
        parsed = true;
      });
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status === 413) throw new HttpError(413, 'invalid_request', 'the request body is too large');
      if (status === 415) throw new HttpError(415, 'invalid_request', 'unsupported request body encoding');
      throw new HttpError(400, 'invalid_request', 'the form is malformed');
    }
    if (!parsed) return;
    if (findUnstorableText(ctx.request.body)) throw new HttpError(400, 'invalid_request', 'the form contains a NUL character or an unpaired surrogate');
    await next();
  };
}
