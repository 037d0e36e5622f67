/**
 * The Koa application: our middleware and routes first, then oidc-provider mounted at the root.
 */
import Koa from 'koa';
import type Router from '@koa/router';
import type { Logger } from 'pino';
import { errorHandler } from './error-handler.ts';
import { securityHeaders } from './security-headers.ts';
import { limitBodySize } from './body-limit.ts';
import { requestContextMiddleware } from './request-context.ts';
import { requireValidOrigin } from './request-origin.ts';
import { refuseUnstorableUrlText } from './request-text.ts';
import { trustedProxiesOnly } from './trusted-proxies.ts';
import type { Views } from './views.ts';

export interface AppDeps {
  /** The provider's middleware, mounted at the root after our routes. */
  provider: Koa.Middleware;
  routers: Router[];
  views: Views;
  log: Logger;
  cookieKeys: readonly string[];
  https: boolean;
  trustProxy: boolean;
  /** With a list, forwarded headers count only from these proxies (addresses or CIDR ranges). */
  trustedProxies?: readonly string[] | undefined;
  /** Outermost, so it sees every request's final status (metrics). */
  outer?: Koa.Middleware[];
  /** After the error handler and body limit, before every route (rate limits). */
  guards?: Koa.Middleware[];
}

/** The provider's own body parser stops at 56 KiB; anything larger is refused up front. */
const MAX_BODY_BYTES = 56 * 1024;

export function createApp(deps: AppDeps): Koa {
  const app = new Koa({ proxy: deps.trustProxy });
  // Cookies set through this app's context (ours and the provider's) are signed with these keys.
  app.keys = [...deps.cookieKeys];
  app.silent = true;
  if (deps.trustProxy && deps.trustedProxies) app.use(trustedProxiesOnly(deps.trustedProxies));
  for (const m of deps.outer ?? []) app.use(m);
  app.use(errorHandler(deps.log, deps.views));
  app.use(securityHeaders({ https: deps.https }));
  app.use(requireValidOrigin());
  app.use(refuseUnstorableUrlText());
  app.use(limitBodySize(MAX_BODY_BYTES));
  app.use(requestContextMiddleware());
  for (const m of deps.guards ?? []) app.use(m);
  for (const router of deps.routers) {
    app.use(router.routes());
    app.use(router.allowedMethods({ throw: false }));
  }
  app.use(deps.provider);
  return app;
}
