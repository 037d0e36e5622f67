/**
 * SMART's HTTP surface outside oidc-provider: the configuration document (CORS-open, JSON
 * whatever the Accept header), the default style, and the EHR launch API.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { ClientRegistry } from '../clients/index.ts';
import { HttpError, badRequest } from '../http/errors.ts';
import { jsonBody } from '../http/request-body.ts';
import { DEFAULT_SMART_STYLE, launchContextSchema, smartConfiguration, type LaunchRepository } from '../smart/index.ts';
import type { ProviderHost } from './provider-host.ts';
import { EHR_LAUNCH_SCOPE } from './provider.ts';
import { clientTokenAuth } from './client-token-auth.ts';

interface SmartRouteDeps {
  issuer: string;
  fhirBaseUrls: readonly string[];
  authorizePost: boolean;
  providers: ProviderHost;
  clients: ClientRegistry;
  launches: LaunchRepository;
}

/** The same algorithms the provider accepts for client assertions. */
const CLIENT_AUTH_ALGS = ['RS256', 'RS384', 'PS256', 'PS384', 'ES256', 'ES384'];
const LAUNCH_TTL_DEFAULT = 300;

const launchRequestSchema = launchContextSchema.extend({
  client_id: z.string().min(1).max(128),
  expires_in: z.number().int().min(30).max(3600).optional(),
});

function openCors(ctx: Context) {
  ctx.set('Access-Control-Allow-Origin', '*');
  ctx.set('Access-Control-Allow-Methods', 'GET');
}

export function smartRoutes(deps: SmartRouteDeps): Router {
  const router = new Router();
  const document = smartConfiguration({ issuer: deps.issuer, authorizePost: deps.authorizePost, tokenEndpointAuthSigningAlgs: CLIENT_AUTH_ALGS });
  const issuerOrigin = new URL(deps.issuer).origin;
  // Under the issuer, and under every registered FHIR base URL this server answers for.
  const paths = new Set(['/.well-known/smart-configuration']);
  for (const base of deps.fhirBaseUrls) {
    const url = new URL(base);
    if (url.origin === issuerOrigin) paths.add(`${url.pathname.replace(/\/+$/, '')}/.well-known/smart-configuration`);
  }
  for (const path of paths) {
    router.get(path, (ctx) => {
      openCors(ctx);
      ctx.set('Cache-Control', 'public, max-age=300');
      ctx.type = 'application/json';
      ctx.body = JSON.stringify(document);
    });
    router.options(path, (ctx) => {
      openCors(ctx);
      ctx.set('Allow', 'HEAD, GET, OPTIONS');
      ctx.status = 204;
    });
  }

  router.get('/smart/style.json', (ctx) => {
    openCors(ctx);
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.body = DEFAULT_SMART_STYLE;
  });

  /** The EHR's bearer token must be a client-credentials token holding EHR_LAUNCH_SCOPE. */
  const authenticateEhr = clientTokenAuth(deps.providers, EHR_LAUNCH_SCOPE);

  router.post('/smart/launch', authenticateEhr, jsonBody({ limit: '16kb' }), async (ctx) => {
    if (!ctx.is('application/json')) throw new HttpError(415, 'invalid_request', 'the request body must be application/json');
    const parsed = launchRequestSchema.safeParse(ctx.request.body);
    if (!parsed.success) {
      throw badRequest(parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
    }
    const { client_id: clientId, expires_in: ttl, ...context } = parsed.data;
    const app = await deps.clients.get(clientId);
    if (!app || app.status !== 'approved') throw badRequest('client_id does not name an approved client');
    if (app.metadata.launch_modes && !app.metadata.launch_modes.includes('ehr')) {
      throw badRequest('this app is not registered for EHR launch (its launch_modes do not include "ehr")');
    }
    const ttlSeconds = ttl ?? LAUNCH_TTL_DEFAULT;
    const launch = await deps.launches.create({ clientId, createdBy: String(ctx.state.callerClientId), context, ttlSeconds });
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { launch, expires_in: ttlSeconds };
  });

  return router;
}
