/**
 * The patient portal (SMART `management_endpoint`): the apps connected to the patient's records,
 * with their scopes, limits, expiry and access log; narrowing, changing limits or revoking in
 * one step; the history of each consent; privacy preferences; each consent as FHIR R4 Consent.
 * Every route works on the signed-in patient's own consents only, and on those they gave as a
 * representative; changing or revoking one of those needs the representation to hold at the
 * moment of the change (the consent service checks it in the change's transaction).
 */
import type Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import type { AccountRepository } from '../accounts/index.ts';
import type { AuditTrail } from '../audit/index.ts';
import type { ClientRegistry } from '../clients/index.ts';
import {
  CLIENT_CATEGORIES,
  ConsentError,
  effectiveStatus,
  IDENTITY_SCOPES,
  securityLabel,
  SENSITIVE_LABELS,
  toFhirConsent,
  visibilityLimitsSchema,
  type ClientCategory,
  type Consent,
  type ConsentService,
  type PrivacyPreferences,
  type SensitiveLabel,
} from '../consent/index.ts';
import { badRequest, forbidden, notFound } from '../http/errors.ts';
import { csrfToken } from '../http/csrf.ts';
import { describeScope } from '../smart/index.ts';
import type { AccountSession } from './account-session.ts';

/** At most this many apps and log lines on one page. */
const LIST_LIMIT = 100;
const LOG_PAGE = 20;

export interface ConnectedAppsDeps {
  render: (ctx: Context, template: string, data: Record<string, unknown>, status?: number) => void;
  requireSession: (ctx: Context, next: Next) => Promise<void>;
  forms: Middleware[];
  secure: boolean;
  consents: ConsentService;
  clients: ClientRegistry;
  audit: AuditTrail;
  accounts: AccountRepository;
  issuer: string;
  strongRecentLogin: (s: AccountSession) => Promise<boolean>;
  stepUp: (ctx: Context, s: AccountSession, returnTo: string) => Promise<void>;
}

const asList = (v: unknown): string[] => (typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const asText = (v: unknown, max: number) => (typeof v === 'string' ? v.trim().slice(0, max) : '');
const day = (d: Date) => d.toISOString().slice(0, 10);

export function connectedApps(router: Router, deps: ConnectedAppsDeps): void {
  const { consents } = deps;
  const csrf = csrfToken({ secure: deps.secure });
  const session = (ctx: Context) => ctx.state.account as AccountSession;

  async function appName(clientId: string) {
    return (await deps.clients.get(clientId))?.name ?? clientId;
  }

  /**
   * A consent about the signed-in patient, or one they gave as a representative while they still
   * represent that patient. Someone else's, or none, is 404 alike; one given under a
   * representation that has ended is 403 with the reason (its giver knows it exists), and shows
   * nothing of what the app sees or does with that patient's record since. Changes check the
   * representation again, in their own transaction.
   */
  async function ownConsent(ctx: Context, purpose: 'view' | 'change' = 'view'): Promise<Consent> {
    const consent = await consents.repo.find(String(ctx.params.id));
    const s = session(ctx);
    if (!consent || (consent.patientAccountId !== s.sub && consent.actorAccountId !== s.sub)) throw notFound('there is no such app connection');
    if (consent.patientAccountId !== s.sub && !(await deps.accounts.representsNow(s.sub, consent.patientAccountId))) {
      throw forbidden(`you no longer act for this patient, so ${purpose === 'change' ? 'nothing was changed' : 'this app connection is no longer yours to see'}`);
    }
    return consent;
  }

  /** The token events of this consent alone (not the app's other consents about the same patient). */
  const accessLog = (consent: Consent, page: { limit: number; cursor?: string | undefined }) =>
    deps.audit.list({ clientId: consent.clientId, patientId: consent.patientFhirId ?? undefined, consentId: consent.id, type: 'token.' }, page);

  function summary(consent: Consent, name: string, viewer?: string) {
    const v = consent.current;
    return {
      id: consent.id,
      name,
      // Set when the viewer is not the person whose record this is, or did not give this consent.
      byRepresentative: consent.actorAccountId !== consent.patientAccountId,
      viewerIsRepresentative: viewer !== undefined && viewer === consent.actorAccountId && viewer !== consent.patientAccountId,
      patient: consent.patientFhirId,
      status: effectiveStatus(v, consents.clock()),
      since: day(consent.createdAt),
      changed: day(v.createdAt),
      expires: v.expiresAt ? day(v.expiresAt) : null,
      scopes: v.scopes.filter((s) => !IDENTITY_SCOPES.has(s)).map((scope) => ({ scope, description: describeScope(scope) })),
      hidden: v.limits.hiddenLabels.map((l) => securityLabel(l).label),
      from: v.limits.from ?? null,
      until: v.limits.until ?? null,
      types: v.limits.resourceTypes ?? null,
    };
  }

  async function showApp(ctx: Context, consent: Consent, extra: Record<string, unknown> = {}, status = 200) {
    const s = session(ctx);
    const name = await appName(consent.clientId);
    const cursor = typeof ctx.query.log === 'string' ? ctx.query.log.slice(0, 100) : undefined;
    const log = await accessLog(consent, { limit: LOG_PAGE, cursor }).catch(() => ({ events: [] as never[], nextCursor: undefined }));
    const hidden = new Set<string>(consent.current.limits.hiddenLabels);
    deps.render(
      ctx,
      'connected-app',
      {
        title: name,
        app: summary(consent, name, s.sub),
        sensitive: SENSITIVE_LABELS.map((code) => ({ code, label: securityLabel(code).label, shared: !hidden.has(code) })),
        strong: await deps.strongRecentLogin(s),
        versions: (await consents.repo.versions(consent.id, 50)).map((v) => ({
          version: v.version,
          change: v.change.replace('_', ' '),
          at: v.createdAt.toISOString().replace('T', ' ').slice(0, 16),
          scopes: v.scopes.filter((x) => !IDENTITY_SCOPES.has(x)).length,
          hidden: v.limits.hiddenLabels.length,
          expires: v.expiresAt ? day(v.expiresAt) : '-',
        })),
        log: log.events.map((e) => ({
          at: e.occurredAt.toISOString().replace('T', ' ').slice(0, 19),
          what: e.type === 'token.introspected' ? `checked by ${String(e.details.resource_server ?? 'a resource server')}` : e.type === 'token.refreshed' ? 'access renewed' : 'access given',
        })),
        nextLog: log.nextCursor,
        ...extra,
      },
      status,
    );
  }

  router.get('/apps', csrf, deps.requireSession, async (ctx) => {
    const s = session(ctx);
    const list = await consents.repo.listForPatient(s.sub, LIST_LIMIT);
    const apps = await Promise.all(
      list.map(async (c) => {
        const last = (await accessLog(c, { limit: 1 })).events[0];
        return { ...summary(c, await appName(c.clientId), s.sub), lastUsed: last ? day(last.occurredAt) : null };
      }),
    );
    deps.render(ctx, 'connected-apps', {
      title: 'Connected apps',
      apps,
      notice: ctx.query.done === 'revoked' ? 'Access was revoked. The app can no longer use your records.' : undefined,
    });
  });

  router.get('/apps/:id', csrf, deps.requireSession, async (ctx) => {
    const consent = await ownConsent(ctx);
    await showApp(ctx, consent, { notice: ctx.query.done === 'saved' ? 'Saved. The app sees only what you allow, starting now.' : undefined });
  });

  router.get('/apps/:id/verify', deps.requireSession, async (ctx) => {
    const consent = await ownConsent(ctx);
    await deps.stepUp(ctx, session(ctx), `/account/apps/${consent.id}`);
  });

  router.post('/apps/:id', csrf, deps.requireSession, ...deps.forms, async (ctx) => {
    const consent = await ownConsent(ctx, 'change');
    const s = session(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const keep = asList(body.scope).slice(0, 200);
    const shared = asList(body.share).slice(0, 20);
    const fail = (message: string, status = 400) => showApp(ctx, consent, { error: message }, status);
    const unknown = shared.find((l) => !(SENSITIVE_LABELS as readonly string[]).includes(l));
    if (unknown !== undefined) return fail(`"${unknown.slice(0, 40)}" is not one of the sensitive categories offered.`);
    const types = asText(body.types, 2000).split(/[\s,]+/).filter(Boolean);
    const from = asText(body.from, 20);
    const until = asText(body.until, 20);
    const limits = visibilityLimitsSchema.safeParse({
      hiddenLabels: SENSITIVE_LABELS.filter((l) => !shared.includes(l)),
      ...(from ? { from } : {}),
      ...(until ? { until } : {}),
      ...(types.length ? { resourceTypes: types } : {}),
    });
    if (!limits.success) return fail(limits.error.issues[0]!.message);
    const ends = asText(body.ends, 20);
    let expiresAt: Date | undefined;
    if (ends) {
      if (!/^\d{4}-\d{2}-\d{2}$/.test(ends) || Number.isNaN(Date.parse(`${ends}T23:59:59Z`))) return fail('dates are written YYYY-MM-DD');
      expiresAt = new Date(`${ends}T23:59:59Z`);
      if (consent.current.expiresAt && expiresAt.getTime() >= consent.current.expiresAt.getTime()) expiresAt = undefined;
    }
    try {
      await consents.change(
        consent.id,
        { scopes: keep, limits: limits.data, ...(expiresAt ? { expiresAt } : {}) },
        { accountId: s.sub, acr: s.acr, ip: ctx.ip, strongRecentLogin: await deps.strongRecentLogin(s) },
      );
    } catch (err) {
      if (err instanceof ConsentError) {
        if (err.kind === 'not_found') throw notFound(err.message);
        // No page about the patient's consent for someone who no longer acts for them.
        if (err.kind === 'forbidden') throw forbidden(err.message);
        return fail(
          err.kind === 'step_up_required' ? `${err.message}. Use "Verify it's you" below, then save again.` : err.message,
          err.kind === 'step_up_required' ? 403 : err.kind === 'conflict' ? 409 : 400,
        );
      }
      throw err;
    }
    ctx.redirect(`/account/apps/${consent.id}?done=saved`);
  });

  router.post('/apps/:id/revoke', csrf, deps.requireSession, ...deps.forms, async (ctx) => {
    const consent = await ownConsent(ctx, 'change');
    const s = session(ctx);
    try {
      await consents.revoke(consent.id, { accountId: s.sub, acr: s.acr, ip: ctx.ip, strongRecentLogin: false });
    } catch (err) {
      if (err instanceof ConsentError) throw err.kind === 'forbidden' ? forbidden(err.message) : badRequest(err.message);
      throw err;
    }
    ctx.redirect('/account/apps?done=revoked');
  });

  router.get('/apps/:id/fhir', deps.requireSession, async (ctx) => {
    const consent = await ownConsent(ctx);
    ctx.type = 'application/fhir+json';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = toFhirConsent({ consent, clientName: await appName(consent.clientId), issuer: deps.issuer, now: consents.clock() });
  });

  const CATEGORY_TEXT: Record<ClientCategory, string> = {
    internal: 'apps run by your care provider',
    external: "your care provider's partners",
    'third-party': 'third-party apps',
  };

  async function showPrivacy(ctx: Context, prefs: PrivacyPreferences, extra: Record<string, unknown> = {}, status = 200) {
    deps.render(
      ctx,
      'privacy',
      {
        title: 'Privacy preferences',
        categories: CLIENT_CATEGORIES.map((c) => ({
          category: c,
          text: CATEGORY_TEXT[c],
          labels: SENSITIVE_LABELS.map((code) => ({ code, label: securityLabel(code).label, hidden: prefs[c].includes(code) })),
        })),
        strong: await deps.strongRecentLogin(session(ctx)),
        ...extra,
      },
      status,
    );
  }

  router.get('/privacy', csrf, deps.requireSession, async (ctx) => {
    await showPrivacy(ctx, await consents.repo.preferences(session(ctx).sub), { notice: ctx.query.done === 'saved' ? 'Saved. New app connections start from these choices.' : undefined });
  });

  router.get('/privacy/verify', deps.requireSession, async (ctx) => {
    await deps.stepUp(ctx, session(ctx), '/account/privacy');
  });

  router.post('/privacy', csrf, deps.requireSession, ...deps.forms, async (ctx) => {
    const s = session(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const prefs = {} as PrivacyPreferences;
    for (const c of CLIENT_CATEGORIES) {
      const hidden = asList(body[`hide-${c}`]);
      const bad = hidden.find((l) => !(SENSITIVE_LABELS as readonly string[]).includes(l));
      if (bad !== undefined) return showPrivacy(ctx, await consents.repo.preferences(s.sub), { error: `"${bad.slice(0, 40)}" is not one of the sensitive categories offered.` }, 400);
      prefs[c] = SENSITIVE_LABELS.filter((l) => hidden.includes(l)) as SensitiveLabel[];
    }
    try {
      await consents.setPreferences(prefs, { accountId: s.sub, acr: s.acr, ip: ctx.ip, strongRecentLogin: await deps.strongRecentLogin(s) });
    } catch (err) {
      if (err instanceof ConsentError) return showPrivacy(ctx, prefs, { error: `${err.message}. Use "Verify it's you" below, then save again.` }, 403);
      throw err;
    }
    ctx.redirect('/account/privacy?done=saved');
  });
}

