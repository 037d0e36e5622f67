/**
 * A URL carrying `%00` decodes to a NUL, which PostgreSQL refuses as a query parameter: every
 * search, filter and lookup that passed it on answered 500. Such a request is refused up front
 * (400), for our routes and the provider's alike. Request bodies are checked by their parsers.
 */
import type { Context, Next } from 'koa';
import { findUnstorableText } from '../db/index.ts';
import { HttpError } from './errors.ts';

export function refuseUnstorableUrlText() {
  return async function checkUrlText(ctx: Context, next: Next) {
    if (ctx.path.includes('%00') || (ctx.querystring && findUnstorableText(ctx.query))) {
      throw new HttpError(400, 'invalid_request', 'the request contains a NUL character or an unpaired surrogate');
    }
    await next();
  };
}
