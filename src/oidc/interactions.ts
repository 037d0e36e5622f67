/**
 * Our login and consent pages: the interaction endpoints oidc-provider redirects the browser to
 * (OpenID Connect Core 1.0 section 3.1.2.3-4). Forms are CSRF-protected and rendered server-side.
 */
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import { errors, type Provider } from 'oidc-provider';
import type { ProviderHost } from './provider-host.ts';
import type { Logger } from 'pino';
import type { AccountRepository } from '../accounts/index.ts';
import { HttpError, badRequest } from '../http/errors.ts';
import { csrfToken, verifyCsrf, CSRF_FIELD } from '../http/csrf.ts';
import type { Views } from '../http/views.ts';

interface InteractionDeps {
  providers: ProviderHost;
  accounts: AccountRepository;
  views: Views;
  log: Logger;
  issuer: string;
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

const expired = () =>
  new HttpError(
    400,
    'invalid_request',
    'This sign-in request has expired or was opened in another browser. Go back to the app and start again.',
  );

/** Human descriptions of the identity scopes; resource scopes are described by the SMART issue. */
const SCOPE_DESCRIPTIONS: Record<string, string> = {
  openid: 'Confirm your identity',
  profile: 'See your name and username',
  email: 'See your email address',
  fhirUser: 'Know which patient or practitioner record is yours',
  offline_access: 'Keep access while you are away, until you revoke it',
};

export function interactionRoutes(deps: InteractionDeps): Router {
  const { providers, accounts, views } = deps;
  const router = new Router({ prefix: '/interaction/:uid' });
  const secure = deps.issuer.startsWith('https://');
  const origin = new URL(deps.issuer).origin;
  const forms = [bodyParser({ enableTypes: ['form'], formLimit: '16kb' }), verifyCsrf(origin)];

  async function details(ctx: Context): Promise<Details> {
    try {
      const d = await providers.current.interactionDetails(ctx.req, ctx.res);
      if (d.uid !== ctx.params.uid) throw expired();
      return d;
    } catch (err) {
      if (err instanceof errors.SessionNotFound || err instanceof HttpError) throw expired();
      throw err;
    }
  }

  async function clientName(d: Details): Promise<string> {
    const client = await providers.current.Client.find(String(d.params.client_id));
    return client?.clientName ?? String(d.params.client_id);
  }

  function page(ctx: Context, template: string, data: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = views.render(template, { ...data, csrfField: CSRF_FIELD, csrfToken: ctx.state.csrfToken, uid: ctx.params.uid });
  }

  async function showLogin(ctx: Context, d: Details, extra: Record<string, unknown> = {}, status = 200) {
    page(ctx, 'login', { title: 'Sign in', client: await clientName(d), username: '', ...extra }, status);
  }

  async function showConsent(ctx: Context, d: Details) {
    const prompt = d.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    const scopes = [
      ...(prompt.missingOIDCScope ?? []),
      ...Object.values(prompt.missingResourceScopes ?? {}).flat(),
    ].map((scope) => ({ scope, description: SCOPE_DESCRIPTIONS[scope] ?? scope }));
    page(ctx, 'consent', { title: 'Allow access?', client: await clientName(d), scopes });
  }

  router.get('/', csrfToken({ secure }), async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name === 'login') return showLogin(ctx, d);
    if (d.prompt.name === 'consent') return showConsent(ctx, d);
    throw badRequest(`unsupported interaction "${d.prompt.name}"`);
  });

  router.post('/login', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'login') throw badRequest('this sign-in step is already complete; go back to the app and start again');
    const body = ctx.request.body as Record<string, unknown>;
    const username = typeof body.username === 'string' ? body.username.trim().slice(0, 64) : '';
    const password = typeof body.password === 'string' ? body.password.slice(0, 256) : '';
    const account = username && password ? await accounts.verifyCredentials(username, password) : undefined;
    if (!account) {
      // One message and one status whether the account exists, is disabled, or the password is wrong.
      deps.log.info({ event: 'login.failure', uid: d.uid }, 'login failed');
      return showLogin(ctx, d, { username, error: 'The username or password is incorrect.' }, 401);
    }
    deps.log.info({ event: 'login.success', sub: account.id, uid: d.uid }, 'login succeeded');
    await providers.current.interactionFinished(
      ctx.req,
      ctx.res,
      { login: { accountId: account.id, amr: ['pwd'], acr: 'urn:custos:acr:pwd', remember: true } },
      { mergeWithLastSubmission: false },
    );
    ctx.respond = false;
  });

  router.post('/confirm', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'consent' || !d.session?.accountId) throw badRequest('there is nothing to approve for this request');
    const prompt = d.prompt.details as {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
    };
    const { Grant } = providers.current;
    const grant = d.grantId
      ? await Grant.find(d.grantId)
      : new Grant({ accountId: d.session.accountId, clientId: String(d.params.client_id) });
    if (!grant) throw expired();
    if (prompt.missingOIDCScope) grant.addOIDCScope(prompt.missingOIDCScope.join(' '));
    if (prompt.missingOIDCClaims) grant.addOIDCClaims(prompt.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    deps.log.info({ event: 'consent.granted', sub: d.session.accountId, client: d.params.client_id }, 'consent granted');
    await providers.current.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    ctx.respond = false;
  });

  router.post('/abort', csrfToken({ secure }), ...forms, async (ctx) => {
    await details(ctx);
    await providers.current.interactionFinished(
      ctx.req,
      ctx.res,
      { error: 'access_denied', error_description: 'the user denied the request' },
      { mergeWithLastSubmission: false },
    );
    ctx.respond = false;
  });

  return router;
}
