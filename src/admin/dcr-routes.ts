/**
 * Dynamic client registration (RFC 7591) and its management protocol (RFC 7592), on our own
 * routes: clients live in the client registry, not in oidc-provider's storage. A registration
 * needs an initial access token an admin issued (unless REGISTRATION_OPEN), and the new client
 * stays `pending` until an admin approves it. Metadata a client may not choose for itself
 * (status, category, verified, minimum_acr, Custos's own scopes) is refused, never dropped.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { AuditTrail } from '../audit/index.ts';
import {
  ClientStateError,
  CUSTOS_SCOPES,
  type ClientRegistry,
  type InitialAccessTokens,
  type RegisteredClient,
} from '../clients/index.ts';
import { HttpError } from '../http/errors.ts';
import { jsonBody } from '../http/request-body.ts';

export interface DcrDeps {
  issuer: string;
  clients: ClientRegistry;
  initialTokens: InitialAccessTokens;
  audit: AuditTrail;
  /** Whether registration works without an initial access token. */
  open: boolean;
}

/** Fields only an admin sets; a client asking for them gets `invalid_client_metadata`. */
const ADMIN_ONLY = ['minimum_acr', 'status', 'category', 'verified', 'access_token_ttl', 'refresh_token_ttl'] as const;

const metadataError = (description: string, error = 'invalid_client_metadata') => new HttpError(400, error, description);

function bearer(ctx: Context): string | undefined {
  return /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(ctx.get('Authorization'))?.[1];
}

function invalidToken(description: string): HttpError {
  return new HttpError(401, 'invalid_token', description, { 'WWW-Authenticate': `Bearer error="invalid_token", error_description="${description}"` });
}

/** Checks what a client sends about itself before the registry validates it as metadata. */
function selfAssertable(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw metadataError('the request body must be a JSON object');
  const metadata = { ...(body as Record<string, unknown>) };
  const forbidden = ADMIN_ONLY.filter((k) => k in metadata);
  if (forbidden.length) throw metadataError(`${forbidden.join(', ')} cannot be set by the client itself; an admin sets them`);
  if (typeof metadata.scope === 'string') {
    const own = metadata.scope.split(' ').filter((s) => (CUSTOS_SCOPES as readonly string[]).includes(s));
    if (own.length) throw metadataError(`scope ${own.join(', ')} cannot be registered dynamically; ask an admin`);
  }
  return metadata;
}

/** RFC 7591 section 3.2.2: `invalid_redirect_uri` for redirect URI problems, else `invalid_client_metadata`. */
function fromZod(err: z.ZodError): HttpError {
  const first = err.issues[0];
  const field = String(first?.path[0] ?? '');
  const message = first?.code === 'unrecognized_keys' ? `unsupported field(s): ${first.keys.join(', ')}` : `${field ? `${field}: ` : ''}${first?.message ?? 'invalid'}`;
  return metadataError(message, field === 'redirect_uris' ? 'invalid_redirect_uri' : 'invalid_client_metadata');
}

export function dcrRoutes(deps: DcrDeps): Router {
  const router = new Router({ prefix: '/register' });
  const json = jsonBody({ limit: '32kb' });
  const clientUri = (id: string) => `${deps.issuer}/register/${id}`;

  function response(c: RegisteredClient, extra: Record<string, unknown> = {}) {
    return {
      ...c.metadata,
      client_id: c.clientId,
      client_name: c.name,
      client_id_issued_at: Math.floor(c.createdAt.getTime() / 1000),
      ...extra,
      registration_client_uri: clientUri(c.clientId),
      // Not RFC 7591: whether an admin has approved the client yet.
      status: c.status,
    };
  }

  async function registered(ctx: Context): Promise<RegisteredClient> {
    const token = bearer(ctx);
    const c = token ? await deps.clients.findByRegistrationToken(String(ctx.params.client_id), token) : undefined;
    // RFC 7592 section 2: an unknown client or a wrong token both get 401, revealing nothing.
    if (!c) throw invalidToken('the registration access token is not valid for this client');
    return c;
  }

  function requireJson(ctx: Context) {
    if (!ctx.is('application/json')) throw metadataError('send the metadata as application/json', 'invalid_request');
  }

  router.post('/', json, async (ctx) => {
    const token = bearer(ctx);
    if (!token && !deps.open) throw invalidToken('an initial access token from an admin is required to register');
    requireJson(ctx);
    const metadata = selfAssertable(ctx.request.body);
    const by = { actor: 'registration', ip: ctx.ip };
    let created;
    try {
      created = await deps.clients.create(metadata, {
        status: 'pending',
        origin: 'dcr',
        category: 'third-party',
        verified: false,
        registrationToken: true,
        by,
        async inTransaction(trx, clientId) {
          if (!token) return;
          const used = await deps.initialTokens.consume(token, clientId, trx);
          if (!used) throw invalidToken('the initial access token is not valid, expired or already used');
          await deps.audit.record(
            { type: 'client.initial_token_used', outcome: 'success', actor: by.actor, ip: by.ip, clientId, details: { token_id: used.id, issued_by: used.createdBy } },
            trx,
          );
        },
      });
    } catch (err) {
      if (err instanceof z.ZodError) throw fromZod(err);
      throw err;
    }
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = response(created.client, {
      ...(created.clientSecret ? { client_secret: created.clientSecret, client_secret_expires_at: 0 } : {}),
      registration_access_token: created.registrationAccessToken,
    });
  });

  router.get('/:client_id', async (ctx) => {
    const c = await registered(ctx);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = response(c);
  });

  // RFC 7592 section 2.2: the request replaces the metadata; fields left out are removed.
  router.put('/:client_id', json, async (ctx) => {
    const c = await registered(ctx);
    requireJson(ctx);
    const metadata = selfAssertable(ctx.request.body);
    if (metadata.client_id !== c.clientId) throw metadataError('client_id must be the registered client_id', 'invalid_request');
    delete metadata.client_id;
    // The secret is the server's to issue: a client may echo it back, never choose it.
    delete metadata.client_secret;
    const patch: Record<string, unknown> = { ...metadata };
    for (const key of Object.keys(c.metadata)) if (!(key in metadata) && !ADMIN_ONLY.includes(key as never)) patch[key] = null;
    try {
      const updated = await deps.clients.update(c.clientId, patch, {}, { actor: `client:${c.clientId}`, ip: ctx.ip }, { reviewSecurityChanges: true });
      ctx.set('Cache-Control', 'no-store');
      ctx.body = response(updated);
    } catch (err) {
      if (err instanceof z.ZodError) throw fromZod(err);
      if (err instanceof ClientStateError) throw metadataError(err.message);
      throw err;
    }
  });

  router.delete('/:client_id', async (ctx) => {
    const c = await registered(ctx);
    await deps.clients.deleteSelf(c.clientId, ctx.ip);
    ctx.status = 204;
  });

  return router;
}
