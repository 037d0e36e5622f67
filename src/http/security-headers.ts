/**
 * Strict response headers on every route, ours and the provider's: a CSP without inline script
 * that forbids framing, nosniff, no referrer, and HSTS when served over https.
 */
import helmet from 'helmet';
import type { Context, Next } from 'koa';
import type { IncomingMessage, ServerResponse } from 'node:http';

export function securityHeaders(opts: { https: boolean }) {
  const apply = helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        'default-src': ["'self'"],
        'script-src': ["'self'"],
        'style-src': ["'self'"],
        // Client logos are https images hosted by the client.
        'img-src': ["'self'", 'data:', 'https:'],
        'connect-src': ["'self'"],
        'font-src': ["'self'"],
        'object-src': ["'none'"],
        'base-uri': ["'none'"],
        'frame-ancestors': ["'none'"],
        // No form-action: browsers apply it to the redirect back to the client after a form post.
      },
    },
    strictTransportSecurity: opts.https ? { maxAge: 31536000, includeSubDomains: true } : false,
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginEmbedderPolicy: false,
    xFrameOptions: { action: 'deny' },
  });
  return async function setSecurityHeaders(ctx: Context, next: Next) {
    await new Promise<void>((resolve, reject) => {
      apply(ctx.req as IncomingMessage, ctx.res as ServerResponse, (err?: unknown) => (err ? reject(err) : resolve()));
    });
    ctx.remove('X-Powered-By');
    await next();
  };
}
