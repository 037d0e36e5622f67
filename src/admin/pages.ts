/**
 * The admin pages (`/admin`): the client list, one client, and its life-cycle and secret
 * actions, server-rendered. An admin signs in through Custos itself (a first-party public client,
 * `custos-admin`, with PKCE), always with the second factor; destructive actions also need that
 * sign-in to be recent. Every form carries a CSRF token; the actions call the same registry the
 * API and the CLI use.
 */
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { createHash, randomBytes } from 'node:crypto';
import type { Context, Next } from 'koa';
import { z } from 'zod';
import { accountSessions, type AccountSession } from '../account/index.ts';
import type { AccountRepository } from '../accounts/index.ts';
import {
  CLIENT_STATUSES,
  ClientStateError,
  LIFECYCLE,
  MAX_SECRET_GRACE,
  type ClientRegistry,
  type LifecycleAction,
} from '../clients/index.ts';
import { csrfToken, verifyCsrf, CSRF_FIELD } from '../http/csrf.ts';
import { HttpError, badRequest, conflict, notFound } from '../http/errors.ts';
import type { Views } from '../http/views.ts';
import { ACR_MFA } from '../mfa/index.ts';

export const ADMIN_CLIENT_ID = 'custos-admin';
const PAGE_SIZE = 50;
const PENDING = 'custos_admin_login';

interface AdminPagesDeps {
  issuer: string;
  selfUrl: () => string;
  accounts: AccountRepository;
  clients: ClientRegistry;
  views: Views;
  idleTimeout: number;
  lifetime: number;
  reauthMaxAge: number;
  staleDays: number;
}

const DESTRUCTIVE: ReadonlySet<string> = new Set(['suspend', 'retire', 'secret']);

export function adminPages(deps: AdminPagesDeps): Router {
  const router = new Router({ prefix: '/admin' });
  const secure = deps.issuer.startsWith('https://');
  const sessions = accountSessions({ secure, idleTimeout: deps.idleTimeout, lifetime: deps.lifetime, cookie: 'custos_admin', path: '/admin' });
  const callback = `${deps.issuer}/admin/callback`;
  const forms = [bodyParser({ enableTypes: ['form'], formLimit: '4kb' }), verifyCsrf(new URL(deps.issuer).origin)];
  const csrf = csrfToken({ secure });

  function render(ctx: Context, template: string, data: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = deps.views.render(template, { csrfField: CSRF_FIELD, csrfToken: ctx.state.csrfToken, wide: true, ...data });
  }

  /** Sends the browser to sign in with the second factor; `fresh` also asks for a new login. */
  function signIn(ctx: Context, opts: { fresh?: boolean; username?: string; back?: string } = {}) {
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(16).toString('base64url');
    const back = opts.back && /^\/admin(\/[A-Za-z0-9_\-/]*)?$/.test(opts.back) ? opts.back : '/admin/clients';
    ctx.cookies.set(PENDING, `${state}.${verifier}.${Buffer.from(back).toString('base64url')}`, {
      httpOnly: true,
      sameSite: 'lax',
      secure,
      signed: true,
      path: '/admin',
      maxAge: 600_000,
    });
    const params: Record<string, string> = {
      client_id: ADMIN_CLIENT_ID,
      response_type: 'code',
      redirect_uri: callback,
      scope: 'openid',
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      acr_values: ACR_MFA,
    };
    if (opts.fresh) params.max_age = String(deps.reauthMaxAge);
    if (opts.username) params.login_hint = opts.username;
    ctx.redirect(`${deps.issuer}/auth?${new URLSearchParams(params)}`);
  }

  /** An admin signed in with the second factor, or a redirect to sign in, or 403. */
  async function requireAdmin(ctx: Context, next: Next) {
    const session = sessions.current(ctx);
    if (!session) return signIn(ctx, { back: ctx.method === 'GET' ? ctx.path : undefined });
    const account = await deps.accounts.findById(session.sub);
    if (!account || account.disabled || account.role !== 'admin' || session.acr !== ACR_MFA) {
      sessions.end(ctx);
      throw new HttpError(403, 'forbidden', 'these pages are for admin accounts signed in with two-step verification');
    }
    ctx.state.adminSession = session;
    ctx.state.adminUsername = account.username;
    await next();
  }

  /** True when the sign-in is recent enough for a destructive action; otherwise asks for a new one. */
  function recentEnough(ctx: Context, back: string): boolean {
    const s = ctx.state.adminSession as AccountSession;
    if (Math.floor(Date.now() / 1000) - s.authTime <= deps.reauthMaxAge) return true;
    signIn(ctx, { fresh: true, username: ctx.state.adminUsername as string, back });
    return false;
  }

  const by = (ctx: Context) => ({ actor: (ctx.state.adminSession as AccountSession).sub, ip: ctx.ip });

  router.get('/callback', async (ctx) => {
    const [state, verifier, back] = ctx.cookies.get(PENDING, { signed: true })?.split('.') ?? [];
    ctx.cookies.set(PENDING, null, { path: '/admin', secure });
    if (typeof ctx.query.error === 'string') throw badRequest('sign-in was cancelled or refused; open the admin pages to try again');
    if (!state || !verifier || ctx.query.state !== state || typeof ctx.query.code !== 'string') {
      throw badRequest('this sign-in did not start in this browser; open the admin pages again');
    }
    const res = await fetch(`${deps.selfUrl()}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: ctx.query.code, redirect_uri: callback, client_id: ADMIN_CLIENT_ID, code_verifier: verifier }),
    });
    const body = (await res.json()) as { id_token?: string };
    if (!res.ok || !body.id_token) throw badRequest('sign-in could not be completed; open the admin pages again');
    // Straight from our own token endpoint over a direct connection: no signature to doubt here.
    const claims = JSON.parse(Buffer.from(body.id_token.split('.')[1] ?? '', 'base64url').toString()) as { sub: string; acr: string; amr?: string[]; auth_time: number };
    sessions.start(ctx, { sub: claims.sub, acr: claims.acr, amr: claims.amr ?? [], authTime: claims.auth_time });
    ctx.redirect(back ? Buffer.from(back, 'base64url').toString() : '/admin/clients');
  });

  router.get('/', (ctx) => ctx.redirect('/admin/clients'));

  const listQuery = z.object({
    status: z.enum(CLIENT_STATUSES).optional().catch(undefined),
    q: z.string().max(100).optional().catch(undefined),
    cursor: z.string().max(500).optional().catch(undefined),
  });

  router.get('/clients', csrf, requireAdmin, async (ctx) => {
    const q = listQuery.parse(ctx.query);
    let page;
    try {
      page = await deps.clients.search({ status: q.status, q: q.q || undefined, sort: 'name', limit: PAGE_SIZE, cursor: q.cursor });
    } catch {
      throw badRequest('that page link is not valid; start from the first page');
    }
    const now = Date.now();
    const next = page.nextCursor ? `/admin/clients?${new URLSearchParams({ ...(q.status ? { status: q.status } : {}), ...(q.q ? { q: q.q } : {}), cursor: page.nextCursor })}` : undefined;
    render(ctx, 'admin-clients', {
      title: 'Clients',
      username: ctx.state.adminUsername,
      statuses: CLIENT_STATUSES,
      filter: { status: q.status ?? '', q: q.q ?? '' },
      clients: page.clients.map((c) => ({
        id: c.clientId,
        name: c.name,
        status: c.status,
        category: c.category,
        verified: c.verified,
        type: c.type,
        lastUsed: c.lastUsedAt?.toISOString().slice(0, 10) ?? 'never',
        stale: now - (c.lastUsedAt ?? c.createdAt).getTime() > deps.staleDays * 86_400_000,
      })),
      next,
    });
  });

  async function showClient(ctx: Context, extra: Record<string, unknown> = {}, status = 200) {
    const c = await deps.clients.get(String(ctx.params.id));
    if (!c) throw notFound('there is no such client');
    const usage = (await deps.clients.usage([c.clientId])).get(c.clientId);
    const actions = (Object.keys(LIFECYCLE) as LifecycleAction[]).filter(
      (a) => c.origin !== 'system' && (LIFECYCLE[a].from as readonly string[]).includes(c.status),
    );
    render(
      ctx,
      'admin-client',
      {
        title: c.name,
        username: ctx.state.adminUsername,
        client: {
          id: c.clientId,
          name: c.name,
          status: c.status,
          category: c.category,
          verified: c.verified,
          type: c.type,
          origin: c.origin,
          owner: c.metadata.owner,
          contacts: c.metadata.contacts ?? [],
          redirectUris: c.metadata.redirect_uris,
          scope: c.metadata.scope ?? '',
          grantTypes: c.metadata.grant_types,
          createdAt: c.createdAt.toISOString(),
          lastUsedAt: c.lastUsedAt?.toISOString() ?? 'never',
          tokensLastDay: usage?.tokensLastDay ?? 0,
          tokensLast30Days: usage?.tokensLast30Days ?? 0,
          previousSecretExpiresAt: c.previousSecretExpiresAt?.toISOString(),
          hasSecret: c.type === 'confidential' && c.metadata.token_endpoint_auth_method !== 'private_key_jwt',
          editable: c.origin !== 'system' && c.status !== 'retired',
        },
        actions: actions.map((a) => ({ action: a, label: LABELS[a], danger: DESTRUCTIVE.has(a) })),
        maxGrace: MAX_SECRET_GRACE,
        ...extra,
      },
      status,
    );
  }

  router.get('/clients/:id', csrf, requireAdmin, (ctx) => showClient(ctx, { notice: NOTICES[String(ctx.query.done)] }));

  for (const action of Object.keys(LIFECYCLE) as LifecycleAction[]) {
    router.post(`/clients/:id/${action}`, csrf, requireAdmin, ...forms, async (ctx) => {
      const back = `/admin/clients/${String(ctx.params.id)}`;
      if (DESTRUCTIVE.has(action) && !recentEnough(ctx, back)) return;
      const reason = String((ctx.request.body as Record<string, unknown>).reason ?? '').trim().slice(0, 500);
      try {
        await deps.clients.transition(String(ctx.params.id), action, by(ctx), reason ? { reason } : {});
      } catch (err) {
        if (err instanceof ClientStateError) throw conflict(err.message);
        throw err;
      }
      ctx.redirect(`${back}?done=${action}`);
    });
  }

  router.post('/clients/:id/secret', csrf, requireAdmin, ...forms, async (ctx) => {
    const back = `/admin/clients/${String(ctx.params.id)}`;
    if (!recentEnough(ctx, back)) return;
    const grace = Number((ctx.request.body as Record<string, unknown>).grace_seconds ?? 0);
    if (!Number.isInteger(grace) || grace < 0 || grace > MAX_SECRET_GRACE) {
      return showClient(ctx, { error: `The grace period must be a whole number of seconds from 0 to ${MAX_SECRET_GRACE}.` }, 400);
    }
    let rotated;
    try {
      rotated = await deps.clients.rotateSecret(String(ctx.params.id), grace, by(ctx));
    } catch (err) {
      if (err instanceof ClientStateError) throw conflict(err.message);
      throw err;
    }
    render(ctx, 'admin-secret', {
      title: 'New client secret',
      username: ctx.state.adminUsername,
      clientId: rotated.client.clientId,
      name: rotated.client.name,
      secret: rotated.clientSecret,
      previousExpiresAt: rotated.client.previousSecretExpiresAt?.toISOString(),
    });
  });

  router.post('/logout', csrf, ...forms, async (ctx) => {
    sessions.end(ctx);
    ctx.redirect(`${deps.issuer}/session/end`);
  });

  return router;
}

const LABELS: Record<LifecycleAction, string> = {
  approve: 'Approve',
  suspend: 'Suspend and revoke all tokens',
  reactivate: 'Reactivate',
  retire: 'Retire for good',
};

const NOTICES: Record<string, string> = {
  approve: 'The client is approved: it can get tokens now.',
  suspend: 'The client is suspended; every grant and token it held is revoked.',
  reactivate: 'The client is approved again. Its old tokens stay revoked.',
  retire: 'The client is retired.',
};
