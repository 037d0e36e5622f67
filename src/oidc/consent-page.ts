/**
 * The consent page at authorization: the patient picks which scopes the app gets (granular
 * sub-scopes included), which sensitive categories stay hidden, an optional date range and
 * record types, and how long the connection lasts. Sharing sensitive data needs a multi-factor
 * login from the last few minutes, or a current TOTP code typed on this page.
 *
 * Approval writes the consent record (patients), narrows the grant to what was chosen, and
 * rewrites the interaction's scope so the code, tokens and refreshes carry exactly that.
 */
import type { Context } from 'koa';
import type { Provider } from 'oidc-provider';
import type { Account, AccountRepository, LoginThrottle } from '../accounts/index.ts';
import type { AuditTrail } from '../audit/index.ts';
import type { ClientRegistry } from '../clients/index.ts';
import {
  chosenScopes,
  consentDetails,
  ConsentError,
  expiryChoices,
  scopeChoices,
  securityLabel,
  SENSITIVE_LABELS,
  visibilityLimitsSchema,
  widensSensitiveAccess,
  ScopeChoiceError,
  type ClientCategory,
  type ConsentService,
  type VisibilityLimits,
} from '../consent/index.ts';
import { ACR_MFA, type MfaRepository } from '../mfa/index.ts';
import { isResourceScope, splitScopes } from '../smart/index.ts';
import { HttpError, badRequest } from '../http/errors.ts';
import type { ProviderHost } from './provider-host.ts';
import { copyGrant, type SmartLaunch } from './smart-launch.ts';

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

/** A multi-factor login at most this old may share sensitive data without typing a code again. */
export const SENSITIVE_STEP_UP_MAX_AGE = 600;

const CATEGORY_LABELS: Record<ClientCategory, string> = {
  internal: 'Run by your care provider',
  external: 'A partner of your care provider',
  'third-party': 'A third-party app, not run by your care provider',
};

interface PromptDetails {
  missingOIDCScope?: string[];
  missingOIDCClaims?: string[];
  missingResourceScopes?: Record<string, string[]>;
}

export interface ConsentPageDeps {
  providers: ProviderHost;
  accounts: AccountRepository;
  clients: ClientRegistry;
  consents: ConsentService;
  mfa: MfaRepository;
  /** The login's own second-factor throttle: a code typed here is one more guess at the same factor. */
  throttle: LoginThrottle;
  audit: AuditTrail;
  launch: SmartLaunch;
  /** The longest a consent may last (the grant lifetime), in seconds. */
  maxConsentSeconds: number;
  render: (ctx: Context, data: Record<string, unknown>, status?: number) => void;
}

/** The form as submitted, kept to show it again with an error. */
interface Submission {
  scopes: string[];
  shared: string[];
  from: string;
  until: string;
  types: string;
  expiresDays: string;
}

const asList = (v: unknown): string[] => (typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const asText = (v: unknown, max: number) => (typeof v === 'string' ? v.trim().slice(0, max) : '');

function readForm(body: Record<string, unknown>): Submission {
  return {
    scopes: asList(body.scope).slice(0, 200),
    shared: asList(body.share).slice(0, 20),
    from: asText(body.from, 20),
    until: asText(body.until, 20),
    types: asText(body.types, 2000),
    expiresDays: asText(body.expires, 6),
  };
}

const day = (d: Date) => d.toISOString().slice(0, 10);

export function consentPage(deps: ConsentPageDeps) {
  const { providers, accounts } = deps;

  function requestedOf(d: Details): string[] {
    const prompt = d.prompt.details as PromptDetails;
    return [...new Set([...(prompt.missingOIDCScope ?? []), ...Object.values(prompt.missingResourceScopes ?? {}).flat()])];
  }

  async function appProfile(clientId: string) {
    const registered = await deps.clients.get(clientId);
    const profile = registered as (typeof registered & { category?: ClientCategory; verified?: boolean }) | undefined;
    const category: ClientCategory = profile?.category ?? 'third-party';
    return {
      name: registered?.name ?? clientId,
      category,
      categoryLabel: CATEGORY_LABELS[category],
      verified: profile?.verified ?? false,
      policyUri: registered?.metadata.policy_uri,
      clientUri: registered?.metadata.client_uri,
    };
  }

  /** Is the session's login multi-factor and recent enough to share sensitive data? */
  async function strongRecentSession(d: Details): Promise<boolean> {
    if (d.session?.acr !== ACR_MFA || !d.session.cookie) return false;
    const session = await providers.current.Session.find(d.session.cookie);
    const authTime = session?.authTime();
    return typeof authTime === 'number' && Date.now() / 1000 - authTime <= SENSITIVE_STEP_UP_MAX_AGE;
  }

  /**
   * The app's consent from this person about this record: `current` while active, and `lastLimits`
   * whatever its status, since limits set before a revocation or expiry stand as the baseline a
   * reconnection may only loosen with a strong login.
   */
  async function consentSoFar(accountId: string, clientId: string, patientFhirId: string | null) {
    const found = await deps.consents.forGrant(accountId, clientId, patientFhirId);
    return { current: found?.status === 'active' ? found.consent.current : undefined, lastLimits: found?.consent.current.limits };
  }

  /**
   * Whose record the grant will carry, decided as the launch decides it (src/oidc/smart-launch.ts):
   * an EHR launch's patient, else the one chosen in the picker, else the patient's own.
   */
  async function contextPatient(d: Details, account: Account): Promise<string | null> {
    // An EHR launch names the patient, so the consent is about that record, or refused.
    const ehr = await deps.launch.ehrPatient(d.params.launch, String(d.params.client_id));
    // The picker's answer is this interaction's result, or (once a new prompt started) the last submission.
    type Picked = { launch?: { patient?: string } } | undefined;
    const picked = (d.result as Picked)?.launch?.patient ?? (d.lastSubmission as Picked)?.launch?.patient;
    return ehr ?? picked ?? account.fhirPatientId ?? null;
  }

  async function show(ctx: Context, d: Details, submitted?: Submission, error?: string, status = 200) {
    const account = d.session?.accountId ? await accounts.findById(d.session.accountId) : undefined;
    const requested = requestedOf(d);
    const client = await appProfile(String(d.params.client_id));
    const isPatient = account?.role === 'patient';
    const picked = submitted ? new Set(submitted.scopes) : undefined;
    const choices = scopeChoices(requested).map((c) => ({
      ...c,
      // Everything is ticked at first: the patient unticks what they do not want.
      checked: c.required || !picked || picked.has(c.scope),
      subScopes: c.subScopes.map((s) => ({ ...s, checked: Boolean(picked?.has(s.scope)) })),
    }));
    const forPatient = isPatient && account ? await contextPatient(d, account) : null;
    const onBehalf = Boolean(forPatient && account && forPatient !== account.fhirPatientId);
    // Someone else's record (an EHR launch may name any): not even its name or preferences are shown
    // to an account that may not act for it.
    if (onBehalf && !(await accounts.mayActFor(account!.id, forPatient!))) throw new HttpError(403, 'access_denied', 'you may not give access to this record');
    const represented = onBehalf ? await accounts.findPatientByFhirId(forPatient!) : undefined;
    // Labels start from the app's active consent, or else from the preferences of the patient
    // whose record it is: a representative's own choices are about their own record. Dates and
    // record types start from those last set for the app, active or not (see consentSoFar).
    const { current, lastLimits } = isPatient && account ? await consentSoFar(account.id, String(d.params.client_id), forPatient) : { current: undefined, lastLimits: undefined };
    const prefsOwner = represented ?? account;
    const prefs = isPatient && prefsOwner && !current ? await deps.consents.repo.preferences(prefsOwner.id) : undefined;
    const hiddenByDefault = new Set<string>(current?.limits.hiddenLabels ?? (prefs ? prefs[client.category] : SENSITIVE_LABELS));
    const shared = submitted ? new Set(submitted.shared) : new Set(SENSITIVE_LABELS.filter((l) => !hiddenByDefault.has(l)));
    const now = deps.consents.clock();
    const expiries = expiryChoices(deps.maxConsentSeconds);
    const chosenExpiry = submitted?.expiresDays ? Number(submitted.expiresDays) : expiries.at(-1);
    deps.render(
      ctx,
      {
        title: 'Allow access?',
        client,
        account: account?.displayName ?? account?.username,
        onBehalfOf: represented ? represented.displayName ?? represented.username : undefined,
        choices,
        offline: requested.includes('offline_access'),
        isPatient,
        sensitive: SENSITIVE_LABELS.map((code) => ({ code, label: securityLabel(code).label, shared: shared.has(code) })),
        hasTotp: account ? (await deps.mfa.status(account.id)).totp : false,
        strongSession: await strongRecentSession(d),
        expiries: expiries.map((days) => ({ days, until: day(new Date(now.getTime() + days * 86400_000)), selected: days === chosenExpiry })),
        from: submitted?.from ?? lastLimits?.from ?? '',
        until: submitted?.until ?? lastLimits?.until ?? '',
        types: submitted?.types ?? lastLimits?.resourceTypes?.join(', ') ?? '',
        alreadyShared: current ? SENSITIVE_LABELS.filter((l) => !current.limits.hiddenLabels.includes(l)) : [],
        error,
      },
      status,
    );
  }

  /** Validates the limits the patient set; returns a message for the page when they are wrong. */
  function limitsFrom(form: Submission): VisibilityLimits | string {
    const unknown = form.shared.find((l) => !(SENSITIVE_LABELS as readonly string[]).includes(l));
    if (unknown !== undefined) return `"${unknown.slice(0, 40)}" is not one of the sensitive categories offered.`;
    const types = form.types ? form.types.split(/[\s,]+/).filter(Boolean) : undefined;
    const parsed = visibilityLimitsSchema.safeParse({
      hiddenLabels: SENSITIVE_LABELS.filter((l) => !form.shared.includes(l)),
      ...(form.from ? { from: form.from } : {}),
      ...(form.until ? { until: form.until } : {}),
      ...(types?.length ? { resourceTypes: types } : {}),
    });
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0]!;
    const field = issue.path[0] === 'resourceTypes' ? 'Record types: ' : issue.path[0] === 'from' || issue.path[0] === 'until' ? 'Dates: ' : '';
    return `${field}${issue.message}`;
  }

  /**
   * Grants exactly what was chosen and finishes the interaction. `chosen` holds the scopes the
   * patient approved out of the missing ones (every one of them when consent is implied).
   */
  async function finish(ctx: Context, d: Details, chosen: string[] | undefined, result: Record<string, unknown> = {}) {
    const accountId = d.session!.accountId;
    const prompt = d.prompt.details as PromptDetails;
    const missing = requestedOf(d);
    const granted = new Set(chosen ?? missing);
    const { Grant } = providers.current;
    // An authorization with a launch context gets a grant of its own (copying what the account
    // already granted this app), so contexts of different launches never mix; one without a
    // context never adds to a grant that holds one (see loadExistingGrant).
    const ownGrant = deps.launch.carriesContext(d.params);
    const reusable = d.grantId !== undefined && (ownGrant || !(await deps.launch.holdsContext(d.grantId)));
    const existing = reusable ? await Grant.find(d.grantId!) : undefined;
    const grant = existing
      ? ownGrant
        ? copyGrant(Grant, existing)
        : existing
      : new Grant({ accountId, clientId: String(d.params.client_id) });
    const identity = (prompt.missingOIDCScope ?? []).filter((s) => granted.has(s));
    grant.addOIDCScope(['openid', ...identity].join(' '));
    if (prompt.missingOIDCClaims) grant.addOIDCClaims(prompt.missingOIDCClaims);
    const resources = [...granted].filter(isResourceScope);
    for (const indicator of Object.keys(prompt.missingResourceScopes ?? {})) {
      if (resources.length) grant.addResourceScope(indicator, resources.join(' '));
    }
    const grantId = await grant.save();
    if (chosen) {
      // The code, its tokens and their refreshes carry what was chosen, not what was asked.
      const asked = splitScopes(d.params.scope as string | undefined);
      const missingSet = new Set(missing);
      d.params.scope = [...new Set([...asked.filter((s) => !missingSet.has(s) || granted.has(s)), ...granted])].join(' ');
      await d.save(Math.max(1, d.exp - Math.floor(Date.now() / 1000)));
    }
    await providers.current.interactionFinished(ctx.req, ctx.res, { consent: { grantId }, ...result }, { mergeWithLastSubmission: true });
    ctx.respond = false;
    return grantId;
  }

  async function submit(ctx: Context, d: Details, ip: string) {
    const account = await accounts.findById(d.session!.accountId);
    if (!account || account.disabled) throw badRequest('this account cannot approve requests; go back to the app and start again');
    const form = readForm(ctx.request.body as Record<string, unknown>);
    let chosen: string[];
    try {
      chosen = chosenScopes(requestedOf(d), form.scopes);
    } catch (err) {
      if (err instanceof ScopeChoiceError) return show(ctx, d, form, `That choice is not available: ${err.message}.`, 400);
      throw err;
    }
    if (account.role !== 'patient') return finish(ctx, d, chosen);
    return approveForPatient(ctx, d, account, form, chosen, ip);
  }

  async function approveForPatient(ctx: Context, d: Details, account: Account, form: Submission, chosen: string[], ip: string) {
    const limits = limitsFrom(form);
    if (typeof limits === 'string') return show(ctx, d, form, limits, 400);
    const expiries = expiryChoices(deps.maxConsentSeconds);
    const days = Number(form.expiresDays || expiries.at(-1));
    if (!expiries.includes(days)) return show(ctx, d, form, 'Choose one of the periods offered for how long the app keeps access.', 400);

    let acr = d.session?.acr ?? null;
    let strong = await strongRecentSession(d);
    // Sharing a sensitive category this app did not already see needs a strong, recent login.
    const patientFhirId = await contextPatient(d, account);
    // Only the patient, or someone who represents them, may consent for their record.
    const patient = patientFhirId === account.fhirPatientId ? account : patientFhirId ? await accounts.findPatientByFhirId(patientFhirId) : undefined;
    if (!patient || !patientFhirId || !(await accounts.mayActFor(account.id, patientFhirId))) {
      throw new HttpError(403, 'access_denied', 'you may not give access to this record');
    }
    const { current, lastLimits } = await consentSoFar(account.id, String(d.params.client_id), patientFhirId);
    const alreadyShared = new Set(current ? SENSITIVE_LABELS.filter((l) => !current.limits.hiddenLabels.includes(l)) : []);
    const newlyShared = SENSITIVE_LABELS.filter((l) => !limits.hiddenLabels.includes(l) && !alreadyShared.has(l));
    // Loosening a date range or record-type list set for this app is sharing more, too, also
    // when reconnecting after a revocation or expiry.
    const widened = lastLimits !== undefined && widensSensitiveAccess(lastLimits, limits);
    if ((newlyShared.length > 0 || widened) && !strong) {
      // Sharing sensitive data: prove a second factor now.
      const code = asText((ctx.request.body as Record<string, unknown>).code, 16).replace(/\s/g, '');
      const what = newlyShared.length > 0 ? 'share sensitive information' : 'show the app more dates or record types than before';
      if (!(await deps.mfa.status(account.id)).totp) {
        const message =
          newlyShared.length > 0
            ? 'Sharing sensitive information needs two-step verification. Set it up on your account page first, or keep these categories hidden.'
            : 'Showing the app more dates or record types than before needs two-step verification. Set it up on your account page first, or keep the limits as they were.';
        return show(ctx, d, form, message, 403);
      }
      const prompt = `To ${what}, enter the current 6-digit code from your authenticator app.`;
      if (!code) return show(ctx, d, form, prompt, 401);
      // Guesses here count with the login's: a weak or stale session must not get unlimited tries
      // at the factor that guards sensitive data, nor more after the login has locked it.
      const clientId = String(d.params.client_id);
      const throttled = async (retryAfter: number) => {
        await deps.audit.record({ type: 'login.throttled', outcome: 'denied', actor: account.id, clientId, ip, details: { step: 'otp', retry_after: retryAfter, during: 'consent' } });
        ctx.set('Retry-After', String(retryAfter));
        return show(ctx, d, form, `Too many failed attempts. Wait ${retryAfter} seconds, then try again.`, 429);
      };
      const wait = await deps.throttle.retryAfter('otp', account.id, ip);
      if (wait > 0) return throttled(wait);
      if (!(await deps.mfa.verifyTotp(account.id, code))) {
        await deps.audit.record({ type: 'login.failure', outcome: 'failure', actor: account.id, clientId, ip, details: { step: 'totp', during: 'consent' } });
        const lockout = await deps.throttle.failed('otp', account.id, ip);
        if (lockout > 0) return throttled(lockout);
        return show(ctx, d, form, prompt, 401);
      }
      await deps.throttle.succeeded('otp', account.id);
      strong = true;
      acr = ACR_MFA;
    }
    const consent = await deps.consents
      .approve(
        {
          patientAccountId: patient.id,
          patientFhirId,
          clientId: String(d.params.client_id),
          scopes: chosen,
          limits,
          expiresAt: new Date(deps.consents.clock().getTime() + days * 86400_000),
        },
        { accountId: account.id, acr, ip, strongRecentLogin: strong },
      )
      .catch((err: unknown) => {
        // The representation ended between the check above and the write.
        if (err instanceof ConsentError && err.kind === 'forbidden') throw new HttpError(403, 'access_denied', 'you may not give access to this record');
        if (err instanceof ConsentError) throw badRequest(err.message);
        throw err;
      });
    return finish(ctx, d, chosen, { custos: { consentId: consent.id } });
  }

  return { show, submit, finish, consentDetails };
}

export type ConsentPage = ReturnType<typeof consentPage>;
