/**
 * The account pages: a person's own view of their sign-in security. They sign in through Custos
 * itself (a first-party public client with PKCE), so the same login, second factor and step-up
 * rules apply. Changing a factor needs a login at most five minutes old, and, when the account
 * already has a factor, one made with it.
 */
import Router from '@koa/router';
import { createHash, randomBytes } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { AccountRepository } from '../accounts/index.ts';
import type { AuditTrail } from '../audit/index.ts';
import { badRequest } from '../http/errors.ts';
import { csrfToken, verifyCsrf, CSRF_FIELD } from '../http/csrf.ts';
import type { Views } from '../http/views.ts';
import { ACR_MFA, levelOf, type MfaRepository } from '../mfa/index.ts';
import { enrolmentView } from '../oidc/second-factor.ts';
import { accountSessions, type AccountSession } from './account-session.ts';
import { connectedApps } from './connected-apps.ts';
import type { ClientRegistry } from '../clients/index.ts';
import type { ConsentService } from '../consent/index.ts';
import { formBody } from '../http/request-body.ts';

export const ACCOUNT_CLIENT_ID = 'custos-account';
/** Sensitive changes need a login at most this old (seconds). */
export const FRESH_LOGIN = 300;

interface AccountDeps {
  issuer: string;
  /** Where this process answers HTTP itself, for the code exchange (no hairpin through a proxy). */
  selfUrl: () => string;
  accounts: AccountRepository;
  mfa: MfaRepository;
  views: Views;
  log: Logger;
  audit: AuditTrail;
  consents: ConsentService;
  clients: ClientRegistry;
  idleTimeout: number;
  lifetime: number;
}

const PENDING = 'custos_account_login';

export function accountRoutes(deps: AccountDeps): Router {
  const router = new Router({ prefix: '/account' });
  const secure = deps.issuer.startsWith('https://');
  const sessions = accountSessions({ secure, idleTimeout: deps.idleTimeout, lifetime: deps.lifetime });
  const callback = `${deps.issuer}/account/callback`;
  const forms = [formBody({ limit: '4kb' }), verifyCsrf(new URL(deps.issuer).origin)];
  const issuerName = new URL(deps.issuer).host;

  function render(ctx: Context, template: string, data: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = deps.views.render(template, { csrfField: CSRF_FIELD, csrfToken: ctx.state.csrfToken, ...data });
  }

  /** Sends the browser to sign in; `stepUp` asks for a fresh login, with the factor when there is one. */
  async function signIn(ctx: Context, opts: { stepUp?: boolean; sub?: string; username?: string; returnTo?: string } = {}) {
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(16).toString('base64url');
    const back = Buffer.from(safeReturn(opts.returnTo)).toString('base64url');
    ctx.cookies.set(PENDING, `${state}.${verifier}.${back}`, { httpOnly: true, sameSite: 'lax', secure, signed: true, path: '/account', maxAge: 600_000 });
    const params: Record<string, string> = {
      client_id: ACCOUNT_CLIENT_ID,
      response_type: 'code',
      redirect_uri: callback,
      scope: 'openid',
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    };
    if (opts.username) params.login_hint = opts.username;
    if (opts.stepUp) {
      params.max_age = String(FRESH_LOGIN);
      if (opts.sub && (await deps.mfa.status(opts.sub)).totp) params.acr_values = ACR_MFA;
    }
    ctx.redirect(`${deps.issuer}/auth?${new URLSearchParams(params)}`);
  }

  async function requireSession(ctx: Context, next: Next) {
    const session = sessions.current(ctx);
    // After signing in, come back to the page that was asked for.
    if (!session) return signIn(ctx, ctx.method === 'GET' ? { returnTo: ctx.path } : {});
    ctx.state.account = session;
    await next();
  }

  /** True when the session may change factors now; otherwise sends the browser to step up. */
  async function freshEnough(ctx: Context): Promise<boolean> {
    const s = ctx.state.account as AccountSession;
    const recent = Math.floor(Date.now() / 1000) - s.authTime <= FRESH_LOGIN;
    const hasFactor = (await deps.mfa.status(s.sub)).totp;
    if (recent && (!hasFactor || levelOf(s.acr) >= levelOf(ACR_MFA))) return true;
    const account = await deps.accounts.findById(s.sub);
    await signIn(ctx, { stepUp: true, sub: s.sub, ...(account ? { username: account.username } : {}) });
    return false;
  }

  router.get('/callback', async (ctx) => {
    const [state, verifier, back] = ctx.cookies.get(PENDING, { signed: true })?.split('.') ?? [];
    ctx.cookies.set(PENDING, null, { path: '/account', secure });
    if (typeof ctx.query.error === 'string') throw badRequest('sign-in was cancelled or refused; open your account page to try again');
    if (!state || !verifier || ctx.query.state !== state || typeof ctx.query.code !== 'string') {
      throw badRequest('this sign-in did not start in this browser; open your account page again');
    }
    const res = await fetch(`${deps.selfUrl()}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: ctx.query.code, redirect_uri: callback, client_id: ACCOUNT_CLIENT_ID, code_verifier: verifier }),
    });
    const body = (await res.json()) as { id_token?: string };
    if (!res.ok || !body.id_token) throw badRequest('sign-in could not be completed; open your account page again');
    // Straight from our own token endpoint over a direct connection: no signature to doubt here.
    const claims = JSON.parse(Buffer.from(body.id_token.split('.')[1] ?? '', 'base64url').toString()) as {
      sub: string;
      acr: string;
      amr?: string[];
      auth_time: number;
    };
    sessions.start(ctx, { sub: claims.sub, acr: claims.acr, amr: claims.amr ?? [], authTime: claims.auth_time });
    ctx.redirect(safeReturn(back ? Buffer.from(back, 'base64url').toString('utf8') : undefined));
  });

  router.get('/', csrfToken({ secure }), requireSession, async (ctx) => {
    const s = ctx.state.account as AccountSession;
    const account = await deps.accounts.findById(s.sub);
    if (!account || account.disabled) {
      sessions.end(ctx);
      throw badRequest('this account is not available');
    }
    render(ctx, 'account', {
      title: 'Your account',
      account: { username: account.username, name: account.displayName, role: account.role },
      mfa: await deps.mfa.status(s.sub),
      notice: typeof ctx.query.done === 'string' ? NOTICES[ctx.query.done] : undefined,
      // Messages from admins (a second factor reset...), shown once at the next visit.
      adminNotices: await deps.accounts.takeNotices(s.sub),
    });
  });

  router.get('/mfa/totp', csrfToken({ secure }), requireSession, async (ctx) => {
    if (!(await freshEnough(ctx))) return;
    const s = ctx.state.account as AccountSession;
    const account = (await deps.accounts.findById(s.sub))!;
    render(ctx, 'enrol-totp', { title: 'Set up two-step verification', action: '/account/mfa/totp', ...(await enrolmentView(deps.mfa, account, issuerName)) });
  });

  router.post('/mfa/totp', csrfToken({ secure }), requireSession, ...forms, async (ctx) => {
    if (!(await freshEnough(ctx))) return;
    const s = ctx.state.account as AccountSession;
    // Nothing pending to confirm: starting an enrolment is the page's job, never a refused form's write.
    if (!(await deps.mfa.pendingTotpSecret(s.sub))) return ctx.redirect('/account/mfa/totp');
    const code = String((ctx.request.body as Record<string, unknown>).code ?? '').replace(/\s/g, '').slice(0, 16);
    const enrolled = (trx: Knex.Transaction) =>
      deps.audit.record({ type: 'mfa.totp_enrolled', outcome: 'success', actor: s.sub, ip: ctx.ip, details: { during: 'account_page' } }, trx);
    if (!(await deps.mfa.confirmTotp(s.sub, code, enrolled))) {
      const account = (await deps.accounts.findById(s.sub))!;
      return render(
        ctx,
        'enrol-totp',
        { title: 'Set up two-step verification', action: '/account/mfa/totp', error: 'That code is not valid. Enter the 6-digit code your app shows now.', ...(await enrolmentView(deps.mfa, account, issuerName)) },
        400,
      );
    }
    const codes = await deps.mfa.regenerateRecoveryCodes(s.sub);
    render(ctx, 'recovery-codes', { title: 'Save your recovery codes', codes, continueHref: '/account?done=totp' });
  });

  router.post('/mfa/totp/remove', csrfToken({ secure }), requireSession, ...forms, async (ctx) => {
    if (!(await freshEnough(ctx))) return;
    const s = ctx.state.account as AccountSession;
    await deps.mfa.removeTotp(s.sub, (trx) => deps.audit.record({ type: 'mfa.totp_removed', outcome: 'success', actor: s.sub, ip: ctx.ip }, trx));
    ctx.redirect('/account?done=removed');
  });

  router.post('/mfa/recovery-codes', csrfToken({ secure }), requireSession, ...forms, async (ctx) => {
    if (!(await freshEnough(ctx))) return;
    const s = ctx.state.account as AccountSession;
    if (!(await deps.mfa.status(s.sub)).totp) throw badRequest('set up two-step verification first');
    const codes = await deps.mfa.regenerateRecoveryCodes(s.sub, (trx) =>
      deps.audit.record({ type: 'mfa.recovery_codes_regenerated', outcome: 'success', actor: s.sub, ip: ctx.ip }, trx),
    );
    render(ctx, 'recovery-codes', { title: 'Your new recovery codes', codes, continueHref: '/account?done=codes' });
  });

  connectedApps(router, {
    render,
    requireSession,
    forms,
    secure,
    consents: deps.consents,
    clients: deps.clients,
    audit: deps.audit,
    accounts: deps.accounts,
    issuer: deps.issuer,
    /** A multi-factor login within FRESH_LOGIN seconds (or no factor to ask for at all). */
    async strongRecentLogin(s: AccountSession) {
      return Math.floor(Date.now() / 1000) - s.authTime <= FRESH_LOGIN && levelOf(s.acr) >= levelOf(ACR_MFA);
    },
    stepUp: (ctx: Context, s: AccountSession, returnTo: string) => signIn(ctx, { stepUp: true, sub: s.sub, returnTo }),
  });

  router.post('/logout', csrfToken({ secure }), ...forms, async (ctx) => {
    sessions.end(ctx);
    ctx.redirect(`${deps.issuer}/session/end`);
  });

  return router;
}

/** Only our own account pages are places to come back to after signing in. */
function safeReturn(path: string | undefined): string {
  return path && /^\/account(\/[A-Za-z0-9\-/]*)?$/.test(path) ? path : '/account';
}

const NOTICES: Record<string, string> = {
  totp: 'Two-step verification is on.',
  removed: 'Two-step verification is off.',
  codes: 'New recovery codes were created; the old ones no longer work.',
};
