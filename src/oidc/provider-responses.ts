/**
 * Where oidc-provider's answers fall short of the rest of the server's:
 * - A method an endpoint does not serve falls through the provider and would end as 404, as if
 *   the path did not exist. RFC 9110 section 15.5.6 wants 405 with an Allow header for an existing
 *   resource, as our own routers answer; OPTIONS that is not a CORS preflight (the provider answers
 *   those) lists the methods, as @koa/router does.
 * - Some answers to POSTs (a successful RFC 7009 revocation) carry no Cache-Control; every answer
 *   of an OAuth endpoint is marked no-store.
 */
import type { Context, Next } from 'koa';

const READ = ['HEAD', 'GET'];

/**
 * The methods each provider endpoint serves with our configuration (default routes, see
 * provider.ts). `httpPost` mirrors `enableHttpPostMethods`: POST at the authorization and
 * end-session endpoints.
 */
export function providerEndpointMethods(opts: { httpPost: boolean }): (path: string) => readonly string[] | undefined {
  const withPost = opts.httpPost ? [...READ, 'POST'] : READ;
  const table = new Map<string, readonly string[]>([
    ['/.well-known/openid-configuration', READ],
    ['/.well-known/oauth-authorization-server', READ],
    ['/jwks', READ],
    ['/auth', withPost],
    ['/token', ['POST']],
    ['/me', [...READ, 'POST']],
    ['/token/introspection', ['POST']],
    ['/token/revocation', ['POST']],
    ['/request', ['POST']],
    ['/session/end', withPost],
    ['/session/end/confirm', ['POST']],
    ['/session/end/success', READ],
  ]);
  // Where the browser comes back to after an interaction.
  const resume = /^\/auth\/[^/]+$/;
  return (path) => table.get(path) ?? (resume.test(path) ? READ : undefined);
}

/** Wraps the provider's middleware (see above). */
export function completeProviderResponses(
  provider: (ctx: Context, next: Next) => Promise<void>,
  methodsOf: (path: string) => readonly string[] | undefined,
) {
  return async function providerResponses(ctx: Context, next: Next) {
    await provider(ctx, next);
    if (ctx.method === 'POST' && !ctx.response.get('Cache-Control')) ctx.set('Cache-Control', 'no-store');
    if (ctx.status !== 404 || ctx.body != null) return;
    const allowed = methodsOf(ctx.path);
    if (!allowed || allowed.includes(ctx.method)) return;
    ctx.set('Allow', allowed.join(', '));
    if (ctx.method === 'OPTIONS') {
      ctx.status = 200;
      ctx.body = '';
      return;
    }
    // The error handler renders a body-less 405 in the one error format.
    ctx.status = 405;
  };
}
