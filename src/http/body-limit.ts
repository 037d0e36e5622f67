/**
 * Refuses request bodies over a size cap with 413 before anything reads them. Our own routes also
 * cap what their parsers read; this covers the provider's endpoints, whose parser would answer a
 * plain 400.
 */
import type { Context, Next } from 'koa';
import { payloadTooLarge } from './errors.ts';

export function limitBodySize(maxBytes: number) {
  return async function rejectOversizedBody(ctx: Context, next: Next) {
    const length = ctx.request.length;
    if (length !== undefined && length > maxBytes) {
      // Stop reading: the client may be streaming a huge body.
      ctx.set('Connection', 'close');
      throw payloadTooLarge();
    }
    await next();
  };
}
