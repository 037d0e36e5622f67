/**
 * Consents as FHIR R4 `Consent` resources for authorised resource servers: a confidential client
 * holding `custos:introspect` reads the consent a token names (`consent_id`), current or at a
 * given version, with a stable id and `meta.versionId`.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type { ClientRegistry } from '../clients/index.ts';
import { toFhirConsent, type Consent, type ConsentService } from '../consent/index.ts';
import type { AuditTrail } from '../audit/index.ts';
import type { ProviderHost } from './provider-host.ts';
import { INTROSPECT_SCOPE } from './provider.ts';
import { clientTokenAuth } from './client-token-auth.ts';

export interface ConsentApiDeps {
  issuer: string;
  providers: ProviderHost;
  consents: ConsentService;
  clients: ClientRegistry;
  audit: AuditTrail;
}

function notFound(ctx: Context, diagnostics: string) {
  ctx.status = 404;
  ctx.type = 'application/fhir+json';
  ctx.body = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics }] };
}

export function consentApiRoutes(deps: ConsentApiDeps): Router {
  const router = new Router({ prefix: '/fhir' });
  const authenticate = clientTokenAuth(deps.providers, INTROSPECT_SCOPE);

  async function send(ctx: Context, consent: Consent) {
    await deps.audit.record({
      type: 'consent.read',
      outcome: 'success',
      actor: `client:${String(ctx.state.callerClientId)}`,
      clientId: consent.clientId,
      patientId: consent.patientFhirId ?? undefined,
      ip: ctx.ip,
      details: { consent_id: consent.id, version: consent.current.version },
    });
    ctx.type = 'application/fhir+json';
    ctx.set('Cache-Control', 'no-store');
    ctx.set('ETag', `W/"${consent.current.version}"`);
    ctx.body = toFhirConsent({
      consent,
      clientName: (await deps.clients.get(consent.clientId))?.name ?? consent.clientId,
      issuer: deps.issuer,
      now: deps.consents.clock(),
    });
  }

  router.get('/Consent/:id', authenticate, async (ctx) => {
    const consent = await deps.consents.repo.find(String(ctx.params.id));
    if (!consent) return notFound(ctx, 'no such consent');
    await send(ctx, consent);
  });

  router.get('/Consent/:id/_history/:vid', authenticate, async (ctx) => {
    const vid = /^\d{1,9}$/.test(String(ctx.params.vid)) ? Number(ctx.params.vid) : NaN;
    const consent = await deps.consents.repo.find(String(ctx.params.id));
    const version = consent && Number.isFinite(vid) ? await deps.consents.repo.version(consent.id, vid) : undefined;
    if (!consent || !version) return notFound(ctx, 'no such consent version');
    await send(ctx, { ...consent, current: version });
  });

  return router;
}
