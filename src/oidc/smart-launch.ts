/**
 * SMART launch context on oidc-provider (App Launch 2.2, "EHR launch", "Standalone launch" and
 * "Launch context arrives with your access_token"):
 * - the `launch` parameter resolves a single-use EHR launch value bound to the app;
 * - a `launch` interaction prompt lets a practitioner pick the patient in a standalone launch;
 * - each authorization that carries a context gets a grant of its own, so two launches of one app
 *   for two patients never share a context;
 * - every token of the grant carries the context (and introspection returns it), and the token
 *   response lists it next to the access token.
 */
import { errors, interactionPolicy, type KoaContextWithOIDC, type Configuration, type Grant } from 'oidc-provider';
import { fhirUserReference, type AccountRepository } from '../accounts/index.ts';
import {
  CONTEXT_PARAMETERS,
  isResourceScope,
  mergeContexts,
  splitScopes,
  type LaunchContext,
  type LaunchRepository,
} from '../smart/index.ts';

export interface SmartLaunchDeps {
  launches: LaunchRepository;
  accounts: AccountRepository;
  /** Served by us; apps may style themselves after it (context-style). */
  defaultStyleUrl: string;
  /** How long a grant (and so its context) lives. */
  grantTtl: number;
  /** The primary FHIR server, for absolute `fhirUser` URLs. */
  fhirBase: string | undefined;
}

const stringParam = (ctx: KoaContextWithOIDC, name: string) => {
  const v = (ctx.oidc.params as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : undefined;
};

function notRedirected<T extends Error & { allow_redirect?: boolean }>(err: T): T {
  err.allow_redirect = false;
  return err;
}

/** What the request needs from a launch context. */
function contextNeeds(scopes: string[]) {
  return {
    patient: scopes.includes('launch/patient') || scopes.some((s) => isResourceScope(s) && s.startsWith('patient/')),
    encounter: scopes.includes('launch/encounter'),
  };
}

/** The interaction result our patient picker submits. */
interface PickerResult {
  launch?: { patient?: string; encounter?: string };
}

export function smartLaunch(deps: SmartLaunchDeps) {
  const { launches, accounts } = deps;

  /**
   * The context this authorization will carry: `undefined` when it needs none, `'pending'` while
   * a patient still has to be picked.
   */
  async function resolveContext(ctx: KoaContextWithOIDC): Promise<LaunchContext | 'pending' | undefined> {
    const clientId = ctx.oidc.client?.clientId;
    const accountId = ctx.oidc.session?.accountId;
    if (!clientId || !accountId) return 'pending';
    const launch = stringParam(ctx, 'launch');
    const ehr = launch ? await launches.peek(launch, clientId) : undefined;
    const needs = contextNeeds(splitScopes(stringParam(ctx, 'scope')));
    if (!ehr && !needs.patient && !needs.encounter) return undefined;
    const picked = (ctx.oidc.result as PickerResult | undefined)?.launch;
    const account = await accounts.findById(accountId);
    let own = account?.role === 'patient' ? account.fhirPatientId ?? undefined : undefined;
    // Someone who may act for other patients says whose record this is, in the picker.
    if (own && needs.patient && !ehr?.patient && !picked?.patient && (await accounts.representedPatients(accountId, 1)).length > 0) own = undefined;
    const patient = ehr?.patient ?? picked?.patient ?? own;
    if (needs.patient && !patient) return 'pending';
    return mergeContexts(
      ehr,
      { patient, encounter: picked?.encounter },
      patient ? { need_patient_banner: true } : undefined,
      { smart_style_url: deps.defaultStyleUrl },
    );
  }

  /**
   * Validates `launch` once, at the start of the authorization (or when it is pushed), and the
   * launch mode against the client's registered `launch_modes`: an EHR launch (a `launch` value)
   * needs `ehr`, a standalone launch (`launch/patient` or `launch/encounter` without `launch`)
   * needs `standalone` (SMART App Launch 2.2 sections 2.0.1 and 2.0.2). A client registered
   * without `launch_modes` may use both.
   */
  async function launchParam(ctx: KoaContextWithOIDC, value: string | undefined): Promise<void> {
    const route = ctx.oidc.route;
    const authorizing = route === 'authorization' || route === 'pushed_authorization_request';
    const modes = authorizing ? (ctx.oidc.client?.metadata().launch_modes as readonly string[] | undefined) : undefined;
    if (value === undefined) {
      const needs = contextNeeds(splitScopes(stringParam(ctx, 'scope')).filter((s) => s.startsWith('launch/')));
      if (modes && (needs.patient || needs.encounter) && !modes.includes('standalone')) {
        throw notRedirected(
          new errors.InvalidRequest('this app is not registered for standalone launch; open it from the EHR instead (launch/patient and launch/encounter need an EHR launch for this app)'),
        );
      }
      return;
    }
    if (modes && !modes.includes('ehr')) {
      throw notRedirected(new errors.InvalidRequest('this app is not registered for EHR launch; it cannot be launched from the EHR'));
    }
    const clientId = ctx.oidc.client?.clientId;
    const fromPushed = 'PushedAuthorizationRequest' in ctx.oidc.entities && ctx.oidc.route === 'authorization';
    const context = clientId
      ? fromPushed
        ? await launches.peek(value, clientId)
        : await launches.consume(value, clientId)
      : undefined;
    if (!context) {
      throw notRedirected(
        new errors.InvalidRequest('the launch value is unknown, expired, already used, or was issued for another app; launch the app from the EHR again'),
      );
    }
  }

  /** A patient must be chosen before consent when the launch did not bring one. */
  const pickerPrompt = new interactionPolicy.Prompt(
    { name: 'launch', requestable: false },
    // The details the picker page needs.
    async (ctx: KoaContextWithOIDC) => ({ encounter: contextNeeds(splitScopes(stringParam(ctx, 'scope'))).encounter }),
    new interactionPolicy.Check('patient_required', 'a patient must be chosen for this launch', 'interaction_required', async (ctx) =>
      (await resolveContext(ctx)) === 'pending' ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT,
    ),
  );

  /**
   * oidc-provider's policy, plus: a login when the session's level is below what the request
   * needs (acr_values, MFA policy: the default only checks essential `acr` claims), and the
   * patient picker between login and consent.
   */
  function interactionPolicyWithPicker(levelTooLow: (ctx: KoaContextWithOIDC) => Promise<boolean>) {
    const policy = interactionPolicy.base();
    policy.get('login')!.checks.add(
      new interactionPolicy.Check('acr_level', 'the session is not strong enough for this request', 'login_required', async (ctx) =>
        (await levelTooLow(ctx)) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT,
      ),
    );
    policy.add(pickerPrompt, 1);
    return policy;
  }

  /**
   * Reuses the account's grant for this app, except when the authorization carries a launch
   * context: then the grant is copied so the context belongs to this authorization alone.
   */
  async function loadExistingGrant(ctx: KoaContextWithOIDC): Promise<Grant | undefined> {
    const { Grant: GrantModel } = ctx.oidc.provider;
    const fromConsent = ctx.oidc.result?.consent?.grantId as string | undefined;
    const grantId = fromConsent ?? ctx.oidc.session?.grantIdFor(ctx.oidc.client!.clientId);
    if (!grantId) return undefined;
    const grant = await GrantModel.find(grantId);
    if (!grant) return undefined;
    const context = await resolveContext(ctx);
    // A grant holding a launch context belongs to that launch (perhaps another patient's, chosen
    // by a representative): an authorization without one must not take over its context and
    // consent, so it starts from nothing and the consent page asks.
    if (context === undefined) return (await holdsContext(grant.jti)) ? undefined : grant;
    if (context === 'pending') return grant;
    let target = grant;
    if (!fromConsent) {
      target = copyGrant(GrantModel, grant);
      await target.save();
    }
    await launches.attachToGrant(target.jti, context, deps.grantTtl);
    return target;
  }

  /** Launch context and fhirUser on access tokens (and so in introspection responses). */
  async function extraTokenClaims(ctx: KoaContextWithOIDC, token: { grantId?: string; accountId?: string }) {
    const claims: Record<string, unknown> = {};
    // Every user's access token says who the user is, asked for or not: a resource server needs
    // it to tell a practitioner's user/ scopes from anyone else's (see src/enforcement/scope-confinement.ts).
    if (token.accountId && deps.fhirBase) {
      const account = await accounts.findById(token.accountId);
      const reference = account ? fhirUserReference(account) : undefined;
      if (reference) claims.fhirUser = `${deps.fhirBase}/${reference}`;
    }
    if (token.grantId) Object.assign(claims, await launches.forGrant(token.grantId));
    // How the user authenticated, on access tokens and in introspection (RFC 9470 section 4).
    const source = ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.RefreshToken;
    if (source?.acr) claims.acr = source.acr;
    if (source?.amr) claims.amr = source.amr;
    if (source?.authTime) claims.auth_time = source.authTime;
    return Object.keys(claims).length ? claims : undefined;
  }

  /**
   * The token response lists the launch context, and its `scope` names everything granted,
   * identity scopes included (oidc-provider lists only the access token's resource scopes).
   */
  async function decorateTokenResponse(ctx: KoaContextWithOIDC): Promise<void> {
    const body = ctx.body as Record<string, unknown> | undefined;
    if (ctx.status !== 200 || !body || typeof body.access_token !== 'string') return;
    const grant = ctx.oidc.entities.Grant;
    if (!grant) return;
    const source = ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.RefreshToken;
    const granted = new Set(splitScopes(grant.getOIDCScope()));
    const identity = splitScopes(source?.scope).filter((s) => !isResourceScope(s) && granted.has(s));
    const scopes = [...new Set([...identity, ...splitScopes(body.scope as string | undefined)])];
    if (scopes.length) body.scope = scopes.join(' ');
    const context = await launches.forGrant(grant.jti);
    if (context) {
      for (const key of CONTEXT_PARAMETERS) if (context[key] !== undefined) body[key] = context[key];
    }
  }

  /** True when a grant holds a launch context (a patient or encounter), so it is that launch's alone. */
  async function holdsContext(grantId: string): Promise<boolean> {
    return (await launches.forGrant(grantId)) !== undefined;
  }

  /** True when an authorization carries (or will carry) a launch context, so it needs its own grant. */
  function carriesContext(params: Record<string, unknown>): boolean {
    const needs = contextNeeds(splitScopes(typeof params.scope === 'string' ? params.scope : undefined));
    return typeof params.launch === 'string' || needs.patient || needs.encounter;
  }

  /** The patient an EHR launch (`launch`) names for this client, which wins over any other. */
  async function ehrPatient(launch: unknown, clientId: string): Promise<string | undefined> {
    return typeof launch === 'string' ? (await launches.peek(launch, clientId))?.patient : undefined;
  }

  return { launchParam, interactionPolicyWithPicker, loadExistingGrant, extraTokenClaims, decorateTokenResponse, carriesContext, holdsContext, ehrPatient };
}

export type SmartLaunch = ReturnType<typeof smartLaunch>;

/** A new, unsaved grant with everything `source` grants (identity scopes and claims, resource scopes). */
export function copyGrant(GrantModel: KoaContextWithOIDC['oidc']['provider']['Grant'], source: Grant): Grant {
  const copy = new GrantModel({ accountId: source.accountId!, clientId: source.clientId! });
  const oidcScope = source.getOIDCScope();
  if (oidcScope) copy.addOIDCScope(oidcScope);
  const claims = source.getOIDCClaims?.();
  if (claims?.length) copy.addOIDCClaims(claims);
  for (const [resource, scope] of Object.entries(source.resources ?? {})) {
    if (typeof scope === 'string' && scope) copy.addResourceScope(resource, scope);
  }
  return copy;
}
export type InteractionsConfig = NonNullable<Configuration['interactions']>;
