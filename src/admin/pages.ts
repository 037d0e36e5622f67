/**
 * The admin pages (`/admin`): the client list, one client, registering and editing clients, its
 * life-cycle and secret actions, accounts (disable, enable, reset the second factor) and the audit
 * trail, server-rendered. An admin signs in through Custos itself (a first-party public client,
 * `custos-admin`, with PKCE), always with the second factor; destructive actions also need that
 * sign-in to be recent. Every form carries a CSRF token; the actions call the same registry the
 * API and the CLI use.
 */
import Router from '@koa/router';
import { createHash, randomBytes } from 'node:crypto';
import type { Context, Next } from 'koa';
import { z } from 'zod';
import { accountSessions, type AccountSession } from '../account/index.ts';
import { ROLES, type AccountRepository } from '../accounts/index.ts';
import { InvalidCursorError, type AuditTrail } from '../audit/index.ts';
import {
  CLIENT_STATUSES,
  ClientNotFoundError,
  ClientStateError,
  LIFECYCLE,
  MAX_SECRET_GRACE,
  type ClientRegistry,
  type LifecycleAction,
  type RegisteredClient,
} from '../clients/index.ts';
import { csrfToken, verifyCsrf, CSRF_FIELD } from '../http/csrf.ts';
import { HttpError, badRequest, conflict, notFound } from '../http/errors.ts';
import type { Views } from '../http/views.ts';
import { ACR_MFA, type MfaRepository } from '../mfa/index.ts';
import { AccountNotFoundError, AccountStateError, InvalidAccountCursorError, searchAccounts, type AccountAdmin } from './account-admin.ts';
import { accountListQuery, auditQuery } from './api-schemas.ts';
import { auditBundle } from './audit-fhir.ts';
import {
  EMPTY_FORM,
  createBodyOf,
  fieldLabels,
  formSections,
  formValuesOf,
  patchBodyOf,
  problemList,
  problemsOf,
  readForm,
  type ClientFormValues,
  type FormProblems,
} from './client-form.ts';
import { formBody } from '../http/request-body.ts';

export const ADMIN_CLIENT_ID = 'custos-admin';
const PAGE_SIZE = 50;
const PENDING = 'custos_admin_login';

interface AdminPagesDeps {
  issuer: string;
  selfUrl: () => string;
  accounts: AccountRepository;
  accountAdmin: AccountAdmin;
  mfa: MfaRepository;
  audit: AuditTrail;
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
  const forms = [formBody({ limit: '4kb' }), verifyCsrf(new URL(deps.issuer).origin)];
  const csrf = csrfToken({ secure });
  // The client form carries more than the small action forms (redirect URIs, an inline JWKS).
  const clientForms = [formBody({ limit: '64kb' }), verifyCsrf(new URL(deps.issuer).origin)];
  const labels = fieldLabels();

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
          authMethod: c.metadata.token_endpoint_auth_method,
          keys: c.metadata.jwks_uri ?? (c.metadata.jwks ? `${c.metadata.jwks.keys.length} inline key(s)` : undefined),
          allowedOrigins: c.metadata.allowed_origins ?? [],
          launchModes: c.metadata.launch_modes === undefined ? 'not restricted' : c.metadata.launch_modes.length ? c.metadata.launch_modes.join(', ') : 'none',
          minimumAcr: c.metadata.minimum_acr ?? 'server policy',
          accessTokenTtl: c.metadata.access_token_ttl,
          refreshTokenTtl: c.metadata.refresh_token_ttl,
          links: (['logo_uri', 'policy_uri', 'tos_uri', 'client_uri'] as const).flatMap((k) => (c.metadata[k] ? [{ name: k, url: c.metadata[k] }] : [])),
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

  interface FormPage {
    heading: string;
    lead?: string;
    action: string;
    submit: string;
    cancel: string;
    values: ClientFormValues;
    problems: FormProblems;
  }

  /** The client form; with problems, a 400 that says what to fix next to each field. */
  function renderForm(ctx: Context, page: FormPage) {
    const summary = problemList(page.problems).map((p) => ({ ...p, label: labels[p.field] ?? p.field }));
    render(
      ctx,
      'admin-client-form',
      {
        title: page.heading,
        username: ctx.state.adminUsername,
        heading: page.heading,
        lead: page.lead,
        action: page.action,
        submit: page.submit,
        cancel: page.cancel,
        sections: formSections(page.values, page.problems),
        summary,
      },
      summary.length ? 400 : 200,
    );
  }

  const newForm = { heading: 'Register a client', action: '/admin/clients', submit: 'Register the client', cancel: '/admin/clients', lead: 'The client is approved at once. A client with a secret gets it on the next page, once.' };

  router.get('/clients/new', csrf, requireAdmin, (ctx) => renderForm(ctx, { ...newForm, values: EMPTY_FORM, problems: {} }));

  // The same schema and registry as POST /admin/api/clients: the same rules, the same messages.
  router.post('/clients', csrf, requireAdmin, ...clientForms, async (ctx) => {
    const read = readForm(ctx.request.body as Record<string, unknown>);
    const { body, problems } = createBodyOf(read.values, read.problems);
    if (!body) return renderForm(ctx, { ...newForm, values: read.values, problems });
    const { category, verified, ...metadata } = body;
    let created;
    try {
      created = await deps.clients.create(metadata, { category, verified, by: by(ctx), origin: 'admin' });
    } catch (err) {
      if (err instanceof z.ZodError) return renderForm(ctx, { ...newForm, values: read.values, problems: problemsOf(err) });
      throw err;
    }
    render(ctx, 'admin-client-created', {
      title: 'Client registered',
      username: ctx.state.adminUsername,
      clientId: created.client.clientId,
      name: created.client.name,
      type: created.client.type,
      secret: created.clientSecret,
    });
  });

  /** A client an admin may edit here: not Custos's own, not retired. */
  async function editable(ctx: Context) {
    const c = await deps.clients.get(String(ctx.params.id));
    if (!c) throw notFound('there is no such client');
    if (c.origin === 'system') throw conflict("Custos's own clients are not edited here");
    if (c.status === 'retired') throw conflict('a retired client cannot be changed');
    return c;
  }

  const editForm = (id: string, name: string) => ({
    heading: `Edit ${name}`,
    action: `/admin/clients/${id}/edit`,
    submit: 'Save the changes',
    cancel: `/admin/clients/${id}`,
    lead: 'A client cannot switch between a secret and no secret (public, or keys): register a new client for that.',
  });

  router.get('/clients/:id/edit', csrf, requireAdmin, async (ctx) => {
    const c = await editable(ctx);
    renderForm(ctx, { ...editForm(c.clientId, c.name), values: formValuesOf(c), problems: {} });
  });

  // The same schema and registry as PATCH /admin/api/clients/{id}.
  router.post('/clients/:id/edit', csrf, requireAdmin, ...clientForms, async (ctx) => {
    const c = await editable(ctx);
    const read = readForm(ctx.request.body as Record<string, unknown>);
    const { body, problems } = patchBodyOf(read.values, read.problems);
    if (!body) return renderForm(ctx, { ...editForm(c.clientId, c.name), values: read.values, problems });
    const { category, verified, ...patch } = body as Record<string, unknown> & { category?: RegisteredClient['category']; verified?: boolean };
    try {
      await deps.clients.update(c.clientId, patch, { category, verified }, by(ctx));
    } catch (err) {
      if (err instanceof z.ZodError) return renderForm(ctx, { ...editForm(c.clientId, c.name), values: read.values, problems: problemsOf(err) });
      if (err instanceof ClientStateError) throw conflict(err.message);
      if (err instanceof ClientNotFoundError) throw notFound('there is no such client');
      throw err;
    }
    ctx.redirect(`/admin/clients/${c.clientId}?done=edit`);
  });

  router.get('/clients/:id', csrf, requireAdmin, (ctx) => showClient(ctx, { notice: NOTICES[String(ctx.query.done)] }));

  for (const action of Object.keys(LIFECYCLE) as LifecycleAction[]) {
    router.post(`/clients/:id/${action}`, csrf, requireAdmin, ...forms, async (ctx) => {
      const back = `/admin/clients/${String(ctx.params.id)}`;
      if (DESTRUCTIVE.has(action) && !recentEnough(ctx, back)) return;
      const reason = String((ctx.request.body as Record<string, unknown>).reason ?? '').trim().slice(0, 500);
      try {
        await deps.clients.transition(String(ctx.params.id), action, by(ctx), reason ? { reason } : {});
      } catch (err) {
        if (err instanceof ClientNotFoundError) throw notFound('there is no such client');
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
      if (err instanceof ClientNotFoundError) throw notFound('there is no such client');
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

  /** Only the query parameters a page knows, blanks dropped (an empty filter means "any"). */
  function pageQuery(ctx: Context, keys: readonly string[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const key of keys) {
      const v = ctx.query[key];
      if (typeof v === 'string' && v.trim() !== '') out[key] = v.trim();
    }
    return out;
  }

  const problemText = (err: z.ZodError) =>
    err.issues.map((i) => `${FILTER_LABELS[String(i.path[0])] ?? String(i.path[0])}: ${i.message}`).join('; ');

  router.get('/accounts', csrf, requireAdmin, async (ctx) => {
    const raw = pageQuery(ctx, ['q', 'role', 'disabled', 'limit', 'cursor']);
    const parsed = accountListQuery.safeParse(raw);
    const filter = { q: raw.q ?? '', role: raw.role ?? '', disabled: raw.disabled ?? '' };
    const data = { title: 'Accounts', username: ctx.state.adminUsername, roles: ROLES, filter, accounts: [] as unknown[], next: undefined as string | undefined };
    if (!parsed.success) return render(ctx, 'admin-accounts', { ...data, error: `The filters have a problem. ${problemText(parsed.error)}` }, 400);
    let page;
    try {
      page = await searchAccounts(deps.accounts, parsed.data);
    } catch (err) {
      if (err instanceof InvalidAccountCursorError) return render(ctx, 'admin-accounts', { ...data, error: 'That page link is not valid; start from the first page.' }, 400);
      throw err;
    }
    const { cursor: _cursor, ...kept } = raw;
    render(ctx, 'admin-accounts', {
      ...data,
      accounts: page.accounts.map((a) => ({
        id: a.id,
        username: a.username,
        displayName: a.displayName ?? '',
        role: a.role,
        fhirId: a.fhirPatientId ?? a.fhirPractitionerId ?? '',
        disabled: a.disabled,
        createdAt: a.createdAt.toISOString().slice(0, 10),
      })),
      next: page.nextCursor ? `/admin/accounts?${new URLSearchParams({ ...kept, cursor: page.nextCursor })}` : undefined,
    });
  });

  async function showAccount(ctx: Context, extra: Record<string, unknown> = {}, status = 200) {
    const a = await deps.accounts.findById(String(ctx.params.id));
    if (!a) throw notFound('there is no such account');
    const factors = await deps.mfa.status(a.id);
    render(
      ctx,
      'admin-account',
      {
        title: a.username,
        username: ctx.state.adminUsername,
        account: {
          id: a.id,
          username: a.username,
          displayName: a.displayName ?? '-',
          email: a.email ?? '-',
          role: a.role,
          fhirId: a.fhirPatientId ?? a.fhirPractitionerId ?? '-',
          disabled: a.disabled,
          createdAt: a.createdAt.toISOString(),
          totp: factors.totp,
          recoveryCodesLeft: factors.recoveryCodesLeft,
          self: a.id === (ctx.state.adminSession as AccountSession).sub,
        },
        auditLink: `/admin/audit?${new URLSearchParams(a.fhirPatientId ? { patient: a.fhirPatientId } : { actor: a.id })}`,
        ...extra,
      },
      status,
    );
  }

  router.get('/accounts/:id', csrf, requireAdmin, (ctx) => showAccount(ctx, { notice: ACCOUNT_NOTICES[String(ctx.query.done)] }));

  const accountActions = {
    disable: { destructive: true, run: (id: string, ctx: Context) => deps.accountAdmin.disable(id, by(ctx)) },
    enable: { destructive: false, run: (id: string, ctx: Context) => deps.accountAdmin.enable(id, by(ctx)) },
    'mfa-reset': { destructive: true, run: (id: string, ctx: Context) => deps.accountAdmin.resetMfa(id, by(ctx)) },
  } as const;
  for (const [action, spec] of Object.entries(accountActions)) {
    router.post(`/accounts/:id/${action}`, csrf, requireAdmin, ...forms, async (ctx) => {
      const id = String(ctx.params.id);
      const back = `/admin/accounts/${id}`;
      // The same rule as the API: disabling and resetting a factor need a recent sign-in.
      if (spec.destructive && !recentEnough(ctx, back)) return;
      try {
        await spec.run(id, ctx);
      } catch (err) {
        if (err instanceof AccountNotFoundError) throw notFound('there is no such account');
        if (err instanceof AccountStateError) return showAccount(ctx, { error: `${err.message.charAt(0).toUpperCase()}${err.message.slice(1)}.` }, 409);
        throw err;
      }
      ctx.redirect(`${back}?done=${action}`);
    });
  }

  const AUDIT_KEYS = ['actor', 'client_id', 'patient', 'type', 'from', 'to', 'limit', 'cursor'] as const;

  /** The audit filters as the API's query: the page's UTC date-times get their `Z`. */
  function auditFilters(ctx: Context) {
    const raw = pageQuery(ctx, AUDIT_KEYS);
    const query: Record<string, string> = { ...raw };
    for (const key of ['from', 'to'] as const) {
      if (raw[key] && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(raw[key])) query[key] = `${raw[key].length === 16 ? `${raw[key]}:00` : raw[key]}Z`;
    }
    const parsed = auditQuery.safeParse(query);
    return { raw, parsed };
  }

  const filterOf = (q: z.output<typeof auditQuery>) => ({
    actor: q.actor,
    clientId: q.client_id,
    patientId: q.patient,
    type: q.type,
    from: q.from ? new Date(q.from) : undefined,
    to: q.to ? new Date(q.to) : undefined,
  });

  router.get('/audit', csrf, requireAdmin, async (ctx) => {
    const { raw, parsed } = auditFilters(ctx);
    const { cursor: _cursor, ...kept } = raw;
    const data = {
      title: 'Audit trail',
      username: ctx.state.adminUsername,
      filter: { actor: '', client_id: '', patient: '', type: '', from: '', to: '', ...kept },
      events: [] as unknown[],
      next: undefined as string | undefined,
      fhirLink: `/admin/audit/fhir${Object.keys(kept).length ? `?${new URLSearchParams(kept)}` : ''}`,
    };
    if (!parsed.success) return render(ctx, 'admin-audit', { ...data, error: `The filters have a problem. ${problemText(parsed.error)}` }, 400);
    let page;
    try {
      page = await deps.audit.list(filterOf(parsed.data), { limit: parsed.data.limit, cursor: parsed.data.cursor });
    } catch (err) {
      if (err instanceof InvalidCursorError) return render(ctx, 'admin-audit', { ...data, error: 'That page link is not valid; start from the newest events.' }, 400);
      throw err;
    }
    render(ctx, 'admin-audit', {
      ...data,
      events: page.events.map((e) => ({
        at: e.occurredAt.toISOString().replace('T', ' ').slice(0, 19),
        type: e.type,
        outcome: e.outcome,
        actor: e.actor ?? '',
        clientId: e.clientId ?? '',
        patientId: e.patientId ?? '',
        ip: e.ip ?? '',
        details: Object.keys(e.details).length ? JSON.stringify(e.details) : '',
      })),
      next: page.nextCursor ? `/admin/audit?${new URLSearchParams({ ...kept, cursor: page.nextCursor })}` : undefined,
    });
  });

  // The same events as FHIR R4 AuditEvents, like GET /admin/api/audit/fhir, for a signed-in admin.
  router.get('/audit/fhir', requireAdmin, async (ctx) => {
    const { raw, parsed } = auditFilters(ctx);
    if (!parsed.success) throw badRequest(`The filters have a problem. ${problemText(parsed.error)}`);
    let page;
    try {
      page = await deps.audit.list(filterOf(parsed.data), { limit: parsed.data.limit, cursor: parsed.data.cursor });
    } catch (err) {
      if (err instanceof InvalidCursorError) throw badRequest('that page link is not valid; start from the newest events');
      throw err;
    }
    const self = `${deps.issuer}${ctx.path}${ctx.querystring ? `?${ctx.querystring}` : ''}`;
    const next = page.nextCursor ? `${deps.issuer}${ctx.path}?${new URLSearchParams({ ...raw, cursor: page.nextCursor })}` : undefined;
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'application/fhir+json';
    ctx.body = auditBundle(page.events, deps.issuer, self, next);
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

const ACCOUNT_NOTICES: Record<string, string> = {
  disable: 'The account is disabled; its sessions, grants and tokens are ended.',
  enable: 'The account is enabled again.',
  'mfa-reset': 'Every second factor and recovery code of the account is removed; the user is told at their next visit.',
};

const FILTER_LABELS: Record<string, string> = {
  q: 'Search',
  role: 'Role',
  disabled: 'Status',
  cursor: 'Page',
  limit: 'Page size',
  actor: 'Actor',
  client_id: 'Client',
  patient: 'Patient',
  type: 'Type',
  from: 'From',
  to: 'To',
};

const NOTICES: Record<string, string> = {
  approve: 'The client is approved: it can get tokens now.',
  suspend: 'The client is suspended; every grant and token it held is revoked.',
  reactivate: 'The client is approved again. Its old tokens stay revoked.',
  retire: 'The client is retired.',
  edit: 'The changes are saved.',
};
