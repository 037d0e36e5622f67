/**
 * Our login and consent pages: the interaction endpoints oidc-provider redirects the browser to
 * (OpenID Connect Core 1.0 section 3.1.2.3-4). Forms are CSRF-protected and rendered server-side.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Knex } from 'knex';
import { errors, type Provider } from 'oidc-provider';
import type { ProviderHost } from './provider-host.ts';
import type { Logger } from 'pino';
import type { AccountRepository } from '../accounts/index.ts';
import type { AuditTrail } from '../audit/index.ts';
import { HttpError, badRequest } from '../http/errors.ts';
import { csrfToken, verifyCsrf, CSRF_FIELD } from '../http/csrf.ts';
import type { Views } from '../http/views.ts';
import type { ClientRegistry } from '../clients/index.ts';
import type { ConsentService } from '../consent/index.ts';
import type { SmartLaunch } from './smart-launch.ts';
import { consentPage } from './consent-page.ts';
import { enrolmentView, LOGIN_RESULTS, secondFactorState } from './second-factor.ts';
import { requiredLevel, type MfaPolicy, type MfaRepository } from '../mfa/index.ts';
import type { Account, LoginStep, LoginThrottle } from '../accounts/index.ts';
import { formBody } from '../http/request-body.ts';

interface InteractionDeps {
  providers: ProviderHost;
  accounts: AccountRepository;
  mfa: MfaRepository;
  mfaPolicy: MfaPolicy;
  throttle: LoginThrottle;
  launch: SmartLaunch;
  /** Custos's own clients (the account pages): their consent is implied. */
  firstPartyClients: readonly string[];
  views: Views;
  log: Logger;
  audit: AuditTrail;
  clients: ClientRegistry;
  consents: ConsentService;
  /** The longest a patient's consent may last (the grant lifetime), in seconds. */
  maxConsentSeconds: number;
  issuer: string;
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

const expired = () =>
  new HttpError(
    400,
    'invalid_request',
    'This sign-in request has expired or was opened in another browser. Go back to the app and start again.',
  );

export function interactionRoutes(deps: InteractionDeps): Router {
  const { providers, accounts, views } = deps;
  const router = new Router({ prefix: '/interaction/:uid' });
  const secure = deps.issuer.startsWith('https://');
  const origin = new URL(deps.issuer).origin;
  const forms = [formBody({ limit: '16kb' }), verifyCsrf(origin)];
  const passed = secondFactorState({ secure });
  const { mfa } = deps;
  const issuerName = new URL(deps.issuer).host;
  const consent = consentPage({
    providers,
    accounts,
    clients: deps.clients,
    consents: deps.consents,
    mfa,
    throttle: deps.throttle,
    audit: deps.audit,
    launch: deps.launch,
    maxConsentSeconds: deps.maxConsentSeconds,
    render: (ctx, data, status) => page(ctx, 'consent', data, status),
  });

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
    // A login_hint (OIDC Core 3.1.2.1) fills in the username, e.g. when re-authenticating.
    const hint = typeof d.params.login_hint === 'string' ? d.params.login_hint.slice(0, 64) : '';
    page(ctx, 'login', { title: 'Sign in', client: await clientName(d), username: hint, ...extra }, status);
  }

  /** Refuses the step while its failures are being throttled (429 with Retry-After). */
  async function throttled(ctx: Context, d: Details, step: LoginStep, key: string, retryAfter: number) {
    await deps.audit.record({ type: 'login.throttled', outcome: 'denied', actor: step === 'otp' ? key : undefined, clientId: String(d.params.client_id), ip: ctx.ip, details: { step, retry_after: retryAfter } });
    ctx.set('Retry-After', String(retryAfter));
    const message = `Too many failed attempts. Wait ${retryAfter} seconds, then try again.`;
    if (step === 'password') return showLogin(ctx, d, { username: key, error: message }, 429);
    const account = await passwordPassed(ctx);
    return account ? showSecondFactor(ctx, d, account, { error: message }, 429) : showLogin(ctx, d, { error: message }, 429);
  }

  async function finishLogin(ctx: Context, accountId: string, result: { acr: string; amr: readonly string[] }) {
    passed.forget(ctx, ctx.params.uid!);
    await providers.current.interactionFinished(
      ctx.req,
      ctx.res,
      { login: { accountId, acr: result.acr, amr: [...result.amr], remember: true } },
      { mergeWithLastSubmission: false },
    );
    ctx.respond = false;
  }

  /** The account that passed the password step of this interaction, if it still may go on. */
  async function passwordPassed(ctx: Context): Promise<Account | undefined> {
    const state = passed.recall(ctx);
    const account = state ? await accounts.findById(state.accountId) : undefined;
    return account && !account.disabled ? account : undefined;
  }

  async function showSecondFactor(ctx: Context, d: Details, account: Account, extra: Record<string, unknown> = {}, status = 200) {
    const client = await clientName(d);
    if ((await mfa.status(account.id)).totp) {
      return page(ctx, 'second-factor', { title: 'Two-step verification', client, ...extra }, status);
    }
    page(
      ctx,
      'enrol-totp',
      { title: 'Set up two-step verification', client, action: `/interaction/${d.uid}/enrol`, ...(await enrolmentView(mfa, account, issuerName)), ...extra },
      status,
    );
  }

  const PICKER_LIMIT = 20;

  /** For a patient: themselves and the patients they represent; undefined for everyone else. */
  async function ownChoices(d: Details) {
    const account = d.session?.accountId ? await accounts.findById(d.session.accountId) : undefined;
    if (account?.role !== 'patient' || !account.fhirPatientId) return undefined;
    const represented = await accounts.representedPatients(account.id, PICKER_LIMIT);
    return [
      { id: account.fhirPatientId, name: `${account.displayName ?? account.username} (you)` },
      ...represented.map((r) => ({ id: r.account.fhirPatientId!, name: `${r.account.displayName ?? r.account.username} (${r.relationship})` })),
    ];
  }

  async function showPicker(ctx: Context, d: Details, extra: Record<string, unknown> = {}, status = 200) {
    const own = await ownChoices(d);
    if (own) {
      return page(
        ctx,
        'patient-picker',
        { title: 'Whose record?', client: await clientName(d), representative: true, query: '', patients: own, limit: PICKER_LIMIT, askEncounter: false, ...extra },
        status,
      );
    }
    const query = typeof ctx.query.q === 'string' ? ctx.query.q.trim().slice(0, 100) : '';
    const patients = query ? await accounts.searchPatients(query, PICKER_LIMIT) : [];
    page(
      ctx,
      'patient-picker',
      {
        title: 'Choose a patient',
        client: await clientName(d),
        query,
        patients: patients.map((p) => ({ id: p.fhirPatientId, name: p.displayName ?? p.username })),
        limit: PICKER_LIMIT,
        askEncounter: Boolean((d.prompt.details as { encounter?: boolean }).encounter),
        ...extra,
      },
      status,
    );
  }

  router.get('/', csrfToken({ secure }), async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name === 'login') {
      const account = await passwordPassed(ctx);
      return account ? showSecondFactor(ctx, d, account) : showLogin(ctx, d);
    }
    if (d.prompt.name === 'consent') {
      // Custos's own account pages only learn who signed in: nothing for the user to approve.
      if (deps.firstPartyClients.includes(String(d.params.client_id)) && d.session?.accountId) {
        await consent.finish(ctx, d, undefined);
        return;
      }
      return consent.show(ctx, d);
    }
    if (d.prompt.name === 'launch') return showPicker(ctx, d);
    throw badRequest(`unsupported interaction "${d.prompt.name}"`);
  });

  router.post('/login', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'login') throw badRequest('this sign-in step is already complete; go back to the app and start again');
    const body = ctx.request.body as Record<string, unknown>;
    const username = typeof body.username === 'string' ? body.username.trim().slice(0, 64) : '';
    const password = typeof body.password === 'string' ? body.password.slice(0, 256) : '';
    // Throttled by the name typed, so unknown names are throttled exactly like real ones.
    const throttleKey = username.toLowerCase();
    const wait = await deps.throttle.retryAfter('password', throttleKey, ctx.ip);
    if (wait > 0) return throttled(ctx, d, 'password', username, wait);
    const account = username && password ? await accounts.verifyCredentials(username, password) : undefined;
    if (!account) {
      // One message and one status whether the account exists, is disabled, or the password is wrong.
      // The typed name is not stored: it is often a password typed into the wrong field.
      await deps.audit.record({ type: 'login.failure', outcome: 'failure', clientId: String(d.params.client_id), ip: ctx.ip, details: { step: 'password' } });
      const lockout = await deps.throttle.failed('password', throttleKey, ctx.ip);
      if (lockout > 0) return throttled(ctx, d, 'password', username, lockout);
      return showLogin(ctx, d, { username, error: 'The username or password is incorrect.' }, 401);
    }
    await deps.throttle.succeeded('password', throttleKey);
    const status = await mfa.status(account.id);
    const client = await providers.current.Client.find(String(d.params.client_id));
    const needed = requiredLevel(
      {
        acrValues: d.params.acr_values as string | undefined,
        scope: d.params.scope as string | undefined,
        role: account.role,
        clientMinimumAcr: client?.metadata().minimum_acr as string | undefined,
      },
      deps.mfaPolicy,
    );
    if (!status.totp && needed.level < 2) {
      await deps.audit.record({ type: 'login.success', outcome: 'success', actor: account.id, clientId: String(d.params.client_id), ip: ctx.ip, details: { acr: LOGIN_RESULTS.password.acr } });
      return finishLogin(ctx, account.id, LOGIN_RESULTS.password);
    }
    // The password was right; the second step decides. Never downgrade when policy wants MFA.
    deps.log.debug({ sub: account.id, uid: d.uid, enrol: !status.totp, reasons: needed.reasons }, 'second factor needed');
    passed.remember(ctx, d.uid, account.id);
    return showSecondFactor(ctx, d, account, { reasons: needed.reasons });
  });

  router.post('/otp', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    const account = await passwordPassed(ctx);
    if (d.prompt.name !== 'login' || !account) throw badRequest('sign in with your password first; go back to the app and start again');
    const wait = await deps.throttle.retryAfter('otp', account.id, ctx.ip);
    if (wait > 0) return throttled(ctx, d, 'otp', account.id, wait);
    const body = ctx.request.body as Record<string, unknown>;
    const code = typeof body.code === 'string' ? body.code.replace(/\s/g, '').slice(0, 16) : '';
    const recovery = typeof body.recovery_code === 'string' ? body.recovery_code.slice(0, 32) : '';
    if (code && (await mfa.verifyTotp(account.id, code))) {
      await deps.throttle.succeeded('otp', account.id);
      await deps.audit.record({ type: 'login.success', outcome: 'success', actor: account.id, clientId: String(d.params.client_id), ip: ctx.ip, details: { acr: LOGIN_RESULTS.totp.acr } });
      return finishLogin(ctx, account.id, LOGIN_RESULTS.totp);
    }
    if (!code && recovery) {
      const left = await mfa.useRecoveryCode(account.id, recovery, (trx, facts) =>
        deps.audit.record({ type: 'mfa.recovery_code_used', outcome: 'success', actor: account.id, clientId: String(d.params.client_id), ip: ctx.ip, details: { remaining: facts?.remaining } }, trx),
      );
      if (left !== undefined) {
        await deps.throttle.succeeded('otp', account.id);
        passed.remember(ctx, d.uid, account.id, 'recovered');
        return page(ctx, 'recovery-used', { title: 'Recovery code used', left, continueAction: `/interaction/${d.uid}/recovered` });
      }
    }
    await deps.audit.record({ type: 'login.failure', outcome: 'failure', actor: account.id, clientId: String(d.params.client_id), ip: ctx.ip, details: { step: code ? 'totp' : 'recovery_code' } });
    const lockout = await deps.throttle.failed('otp', account.id, ctx.ip);
    if (lockout > 0) return throttled(ctx, d, 'otp', account.id, lockout);
    return showSecondFactor(ctx, d, account, { error: 'That code is not valid. Codes change every 30 seconds and work once.' }, 401);
  });

  router.post('/enrol', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    const account = await passwordPassed(ctx);
    if (d.prompt.name !== 'login' || !account) throw badRequest('sign in with your password first; go back to the app and start again');
    if ((await mfa.status(account.id)).totp) throw badRequest('two-step verification is already set up for this account');
    // Nothing pending to confirm: the interaction page starts an enrolment, a refused form never does.
    if (!(await mfa.pendingTotpSecret(account.id))) return ctx.redirect(`/interaction/${d.uid}`);
    const body = ctx.request.body as Record<string, unknown>;
    const code = typeof body.code === 'string' ? body.code.replace(/\s/g, '').slice(0, 16) : '';
    const enrolled = (trx: Knex.Transaction) =>
      deps.audit.record({ type: 'mfa.totp_enrolled', outcome: 'success', actor: account.id, clientId: String(d.params.client_id), ip: ctx.ip, details: { during: 'login' } }, trx);
    if (!code || !(await mfa.confirmTotp(account.id, code, enrolled))) {
      return showSecondFactor(ctx, d, account, { error: 'That code is not valid. Enter the 6-digit code your app shows now.' }, 400);
    }
    const codes = await mfa.regenerateRecoveryCodes(account.id);
    passed.remember(ctx, d.uid, account.id, 'enrolled');
    page(ctx, 'recovery-codes', { title: 'Save your recovery codes', client: await clientName(d), codes, continueAction: `/interaction/${d.uid}/enrolled` });
  });

  /**
   * The "continue" after a page shown between the second factor and the end of the login: it
   * finishes only when this interaction really reached `stage`.
   */
  function continueAfter(stage: 'recovered' | 'enrolled', result: { acr: string; amr: readonly string[] }) {
    return async (ctx: Context) => {
      const d = await details(ctx);
      const account = await passwordPassed(ctx);
      if (d.prompt.name !== 'login' || !account || passed.recall(ctx)?.stage !== stage) {
        throw badRequest('sign in with your password first; go back to the app and start again');
      }
      return finishLogin(ctx, account.id, result);
    };
  }

  router.post('/recovered', csrfToken({ secure }), ...forms, continueAfter('recovered', LOGIN_RESULTS.recoveryCode));
  // The code that activated the factor was this login's second factor.
  router.post('/enrolled', csrfToken({ secure }), ...forms, continueAfter('enrolled', LOGIN_RESULTS.totp));

  router.post('/patient', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'launch') throw badRequest('there is no patient to choose for this request');
    const body = ctx.request.body as Record<string, unknown>;
    const patientId = typeof body.patient === 'string' ? body.patient : '';
    const patient = patientId ? await accounts.findPatientByFhirId(patientId) : undefined;
    if (!patient) return showPicker(ctx, d, { error: 'Choose one of the patients listed.' }, 400);
    // A patient may choose only themselves or someone they represent.
    const own = await ownChoices(d);
    if (own && !own.some((p) => p.id === patientId)) return showPicker(ctx, d, { error: 'Choose one of the patients listed.' }, 400);
    const encounter = typeof body.encounter === 'string' ? body.encounter.trim() : '';
    if (encounter && !/^[A-Za-z0-9\-.]{1,64}$/.test(encounter)) {
      return showPicker(ctx, d, { error: 'An encounter id has 1-64 letters, digits, "-" or ".".' }, 400);
    }
    await deps.audit.record({ type: 'launch.patient_selected', outcome: 'success', actor: d.session?.accountId, clientId: String(d.params.client_id), patientId, ip: ctx.ip, details: encounter ? { encounter } : {} });
    await providers.current.interactionFinished(
      ctx.req,
      ctx.res,
      { launch: { patient: patientId, ...(encounter ? { encounter } : {}) } },
      { mergeWithLastSubmission: true },
    );
    ctx.respond = false;
  });

  router.post('/confirm', csrfToken({ secure }), ...forms, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'consent' || !d.session?.accountId) throw badRequest('there is nothing to approve for this request');
    if (deps.firstPartyClients.includes(String(d.params.client_id))) throw badRequest('there is nothing to approve for this request');
    await consent.submit(ctx, d, ctx.ip);
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
