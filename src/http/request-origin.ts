/**
 * oidc-provider builds its endpoint URLs (discovery, end-session forms, redirects) from the
 * request's protocol and host, which behind a trusted proxy come from X-Forwarded-Proto and
 * X-Forwarded-Host. A host that is not one (`a b`, `[::1`, a port over 65535) made those URL
 * constructions throw, a 500; another scheme (`ftp`) made discovery advertise ftp:// endpoints.
 * Both are refused here, before any route runs.
 */
import type { Context, Next } from 'koa';
import { HttpError } from './errors.ts';

export function requireValidOrigin() {
  return async function checkRequestOrigin(ctx: Context, next: Next) {
    const protocol = ctx.protocol;
    const url = protocol === 'http' || protocol === 'https' ? URL.parse(`${protocol}://${ctx.host}`) : null;
    if (!url || !url.hostname || url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
      throw new HttpError(400, 'invalid_request', 'the Host header (or X-Forwarded-Host and X-Forwarded-Proto) does not name an http or https origin');
    }
    await next();
  };
}
