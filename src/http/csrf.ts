/**
 * CSRF protection for our own forms (double-submit token in a signed, SameSite=Strict cookie,
 * plus an Origin check). oidc-provider's own endpoints are not covered: they carry their own
 * state and PKCE protections.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { HttpError } from './errors.ts';

const refused = (why: string) => new HttpError(403, 'invalid_request', why);

const COOKIE = 'custos_csrf';
export const CSRF_FIELD = '_csrf';

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Issues a token for pages that render forms; exposes it as `ctx.state.csrfToken`. */
export function csrfToken(opts: { secure: boolean }) {
  return async function issueCsrfToken(ctx: Context, next: Next) {
    let token = ctx.cookies.get(COOKIE, { signed: true });
    if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) {
      token = randomBytes(32).toString('base64url');
      ctx.cookies.set(COOKIE, token, { httpOnly: true, sameSite: 'strict', secure: opts.secure, signed: true, path: '/' });
    }
    ctx.state.csrfToken = token;
    await next();
  };
}

/**
 * Refuses a form post whose token does not match the cookie, or that the browser says came from
 * another site. Under `Referrer-Policy: no-referrer` browsers send `Origin: null` even for our own
 * forms, so `null` proves nothing either way; Fetch Metadata (`Sec-Fetch-Site`) does.
 */
export function verifyCsrf(expectedOrigin: string) {
  return async function checkCsrf(ctx: Context, next: Next) {
    const origin = ctx.get('Origin');
    const site = ctx.get('Sec-Fetch-Site');
    if ((origin && origin !== 'null' && origin !== expectedOrigin) || site === 'cross-site' || site === 'same-site') {
      throw refused('This form was submitted from another site, so it was not accepted.');
    }
    const cookie = ctx.cookies.get(COOKIE, { signed: true });
    const body = ctx.request.body as Record<string, unknown> | undefined;
    const field = body?.[CSRF_FIELD];
    if (!cookie || typeof field !== 'string' || !sameToken(cookie, field)) {
      throw refused('This form has expired or was not submitted from this site. Go back, reload the page and try again.');
    }
    await next();
  };
}
