/**
 * The Koa context of the request being served, reachable from code that oidc-provider calls
 * without one (for example while it looks up a client).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context, Next } from 'koa';

const storage = new AsyncLocalStorage<Context>();

export function requestContextMiddleware() {
  return (ctx: Context, next: Next) => storage.run(ctx, next);
}

export function currentRequest(): Context | undefined {
  return storage.getStore();
}
