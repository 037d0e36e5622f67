/**
 * The admin API (`/admin/api`): the client registry and its inventory, accounts, the audit trail,
 * and initial access tokens for dynamic registration. Each route is one entry in a table that
 * both builds the router and the OpenAPI document, so the two cannot drift apart. Every route
 * authenticates its caller first (see admin-auth.ts); answers to errors are problem details.
 */
import Router from '@koa/router';
import { Readable } from 'node:stream';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { newAccountSchema, UsernameTakenError, type Account, type AccountRepository, type NewAccount } from '../accounts/index.ts';
import { InvalidCursorError, type AuditEvent, type AuditTrail } from '../audit/index.ts';
import type { ConsentService } from '../consent/index.ts';
import {
  ClientNotFoundError,
  ClientStateError,
  InvalidClientCursorError,
  type Actor,
  type ClientRegistry,
  type ClientSearch,
  type ClientUsage,
  type InitialAccessTokens,
  type LifecycleAction,
  type RegisteredClient,
} from '../clients/index.ts';
import { HttpError, conflict, notFound, type FieldError } from '../http/errors.ts';
import { jsonBody } from '../http/request-body.ts';
import type { ProviderHost } from '../oidc/index.ts';
import { AccountNotFoundError, AccountStateError, InvalidAccountCursorError, searchAccounts, type AccountAdmin } from './account-admin.ts';
import { adminAuth, type AdminCaller } from './admin-auth.ts';
import * as s from './api-schemas.ts';
import { auditBundle } from './audit-fhir.ts';
import { openApiDocument } from './openapi.ts';

export interface AdminApiDeps {
  issuer: string;
  providers: ProviderHost;
  accounts: AccountRepository;
  accountAdmin: AccountAdmin;
  clients: ClientRegistry;
  audit: AuditTrail;
  initialTokens: InitialAccessTokens;
  reauthMaxAge: number;
  staleDays: number;
  consents: ConsentService;
}

export const ADMIN_API_PREFIX = '/admin/api';

type Method = 'get' | 'post' | 'patch' | 'put';

interface Input<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  /** The caller, as the audit trail records them. */
  by: Actor;
  caller: AdminCaller;
}

interface Reply {
  status?: number;
  body: unknown;
  type?: string;
  headers?: Record<string, string>;
}

/** One admin API operation: how it is reached, what it accepts, what it does. */
export interface ApiRoute {
  method: Method;
  /** Koa router path under the prefix, `:name` for path parameters. */
  path: string;
  operationId: string;
  summary: string;
  tag: 'clients' | 'accounts' | 'audit' | 'registration' | 'meta';
  /** Needs a recent sign-in (ADMIN_REAUTH_MAX_AGE) on top of an admin token. */
  destructive?: boolean;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  success: { status: number; description: string; contentTypes?: string[] };
  handle(ctx: Context, input: Input<unknown, unknown, unknown>): Promise<Reply>;
}

function route<P extends z.ZodType = z.ZodNever, Q extends z.ZodType = z.ZodNever, B extends z.ZodType = z.ZodNever>(spec: {
  method: Method;
  path: string;
  operationId: string;
  summary: string;
  tag: ApiRoute['tag'];
  destructive?: boolean;
  params?: P;
  query?: Q;
  body?: B;
  success: ApiRoute['success'];
  handle(ctx: Context, input: Input<z.output<P>, z.output<Q>, z.output<B>>): Promise<Reply>;
}): ApiRoute {
  return spec as unknown as ApiRoute;
}

/** Zod issues as RFC 9457 `errors` members. */
export function fieldErrors(err: z.ZodError, where: 'body' | 'query' | 'path'): FieldError[] {
  return err.issues.flatMap((issue) => {
    const keys = issue.code === 'unrecognized_keys' ? issue.keys.map((k) => [...issue.path, k]) : [issue.path];
    const detail = issue.code === 'unrecognized_keys' ? 'is not a field that can be set here' : issue.message;
    return keys.map((path) =>
      where === 'body'
        ? { pointer: `#/${path.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/')}`, detail }
        : { parameter: String(path[0] ?? ''), detail },
    );
  });
}

function invalid(err: z.ZodError, where: 'body' | 'query' | 'path'): HttpError {
  const errors = fieldErrors(err, where);
  const what = where === 'body' ? 'request body' : where === 'query' ? 'query parameters' : 'path';
  return new HttpError(400, 'invalid_request', `the ${what} ${errors.length === 1 ? 'has a problem' : `has ${errors.length} problems`}`, {}, errors);
}

/** Domain errors to HTTP problems; anything else stays unknown (a 500 with nothing leaked). */
function translate(err: unknown): unknown {
  if (err instanceof z.ZodError) return invalid(err, 'body');
  if (err instanceof ClientNotFoundError || err instanceof AccountNotFoundError) return notFound(err.message);
  if (err instanceof ClientStateError || err instanceof AccountStateError || err instanceof UsernameTakenError) return conflict(err.message);
  if (err instanceof InvalidClientCursorError || err instanceof InvalidCursorError || err instanceof InvalidAccountCursorError) {
    return new HttpError(400, 'invalid_request', err.message, {}, [{ parameter: 'cursor', detail: err.message }]);
  }
  return err;
}

/** Account schema field names as the API spells them. */
const ACCOUNT_FIELDS: Record<string, string> = { fhirId: 'fhir_id', displayName: 'display_name' };

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function clientJson(c: RegisteredClient) {
  return {
    ...c.metadata,
    client_id: c.clientId,
    client_name: c.name,
    status: c.status,
    category: c.category,
    verified: c.verified,
    client_type: c.type,
    origin: c.origin,
    created_at: iso(c.createdAt),
    updated_at: iso(c.updatedAt),
    status_changed_at: iso(c.statusChangedAt),
    last_used_at: iso(c.lastUsedAt),
    previous_secret_expires_at: iso(c.previousSecretExpiresAt),
  };
}

/** The inventory's view of a client: use, stale flag, patients who consented. */
export function inventoryRow(c: RegisteredClient, usage: ClientUsage | undefined, staleDays: number, now: Date, consented?: Map<string, number>) {
  const idleSince = c.lastUsedAt ?? c.createdAt;
  return {
    client_id: c.clientId,
    client_name: c.name,
    owner: c.metadata.owner ?? null,
    category: c.category,
    client_type: c.type,
    status: c.status,
    verified: c.verified,
    origin: c.origin,
    created_at: iso(c.createdAt),
    last_used_at: iso(c.lastUsedAt),
    tokens_last_day: usage?.tokensLastDay ?? 0,
    tokens_last_30_days: usage?.tokensLast30Days ?? 0,
    stale: now.getTime() - idleSince.getTime() > staleDays * 86_400_000,
    // Patients with an active consent for the app right now.
    consented_patients: consented ? (consented.get(c.clientId) ?? 0) : null,
  };
}

export function accountJson(a: Account) {
  return {
    id: a.id,
    username: a.username,
    role: a.role,
    display_name: a.displayName,
    email: a.email,
    fhir_patient_id: a.fhirPatientId,
    fhir_practitioner_id: a.fhirPractitionerId,
    disabled: a.disabled,
    created_at: iso(a.createdAt),
  };
}

function auditJson(e: AuditEvent) {
  return {
    id: e.id,
    occurred_at: e.occurredAt.toISOString(),
    type: e.type,
    outcome: e.outcome,
    actor: e.actor,
    client_id: e.clientId,
    patient_id: e.patientId,
    ip: e.ip,
    details: e.details,
  };
}

const CSV_COLUMNS = [
  'client_id', 'client_name', 'owner', 'category', 'client_type', 'status', 'verified', 'origin',
  'created_at', 'last_used_at', 'tokens_last_day', 'tokens_last_30_days', 'stale', 'consented_patients',
] as const;

/** One CSV field (RFC 4180), defused against formula injection in spreadsheets. */
function csvField(value: unknown): string {
  let text = value === null || value === undefined ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function searchOf(q: z.output<typeof s.exportQuery>, staleDays: number): Omit<ClientSearch, 'limit' | 'cursor'> {
  return {
    status: q.status,
    category: q.category,
    verified: q.verified,
    origin: q.origin,
    q: q.q,
    unusedForDays: q.stale ? staleDays : undefined,
    sort: q.sort,
    order: q.order,
  };
}

export function adminApiRouteTable(deps: AdminApiDeps): ApiRoute[] {
  const { clients, accountAdmin, audit } = deps;

  async function client(id: string): Promise<RegisteredClient> {
    const found = await clients.get(id);
    if (!found) throw notFound(`no client with id "${id}"`);
    return found;
  }

  const lifecycle = (action: LifecycleAction, summary: string, destructive: boolean) =>
    route({
      method: 'post',
      path: `/clients/:client_id/${action}`,
      operationId: `${action}Client`,
      summary,
      tag: 'clients',
      destructive,
      params: s.clientIdParams,
      body: s.lifecycleBody,
      success: { status: 200, description: 'the client, with its new status' },
      async handle(_ctx, { params, body, by }) {
        const updated = await clients.transition(params.client_id, action, by, body.reason ? { reason: body.reason } : {});
        return { body: clientJson(updated) };
      },
    });

  async function* exportRows(q: z.output<typeof s.exportQuery>) {
    const now = new Date();
    let cursor: string | undefined;
    let sent = 0;
    do {
      const page = await clients.search({ ...searchOf(q, deps.staleDays), limit: s.MAX_CLIENT_PAGE, cursor });
      const ids = page.clients.map((c) => c.clientId);
      const usage = await clients.usage(ids, now);
      const consented = await deps.consents.repo.patientCounts(ids, now);
      for (const c of page.clients) {
        if (sent >= s.MAX_EXPORT_ROWS) return;
        sent += 1;
        yield inventoryRow(c, usage.get(c.clientId), deps.staleDays, now, consented);
      }
      cursor = page.nextCursor;
    } while (cursor);
  }

  const table: ApiRoute[] = [
    route({
      method: 'get',
      path: '/openapi.json',
      operationId: 'getOpenApiDocument',
      summary: 'This API, described in OpenAPI 3.1',
      tag: 'meta',
      query: s.emptyQuery,
      success: { status: 200, description: 'the OpenAPI document' },
      async handle() {
        return { body: openApiDocument(table, deps.issuer) };
      },
    }),
    route({
      method: 'get',
      path: '/clients',
      operationId: 'listClients',
      summary: 'Clients with their use (the inventory), filtered and sorted, one page at a time',
      tag: 'clients',
      query: s.clientListQuery,
      success: { status: 200, description: '`clients` and, when there are more, `next_cursor`' },
      async handle(_ctx, { query }) {
        const now = new Date();
        const page = await clients.search({ ...searchOf({ ...query, format: 'json' }, deps.staleDays), limit: query.limit, cursor: query.cursor });
        const ids = page.clients.map((c) => c.clientId);
        const usage = await clients.usage(ids, now);
        const consented = await deps.consents.repo.patientCounts(ids, now);
        return {
          body: {
            clients: page.clients.map((c) => ({ ...clientJson(c), ...inventoryRow(c, usage.get(c.clientId), deps.staleDays, now, consented) })),
            ...(page.nextCursor ? { next_cursor: page.nextCursor } : {}),
          },
        };
      },
    }),
    route({
      method: 'post',
      path: '/clients',
      operationId: 'createClient',
      summary: 'Register a client (approved at once); a secret, when it has one, is returned this once',
      tag: 'clients',
      body: s.clientCreateBody,
      success: { status: 201, description: 'the client, with `client_secret` for confidential clients' },
      async handle(ctx, { body, by }) {
        const { category, verified, ...metadata } = body;
        const created = await clients.create(metadata, { category, verified, by, origin: 'admin' });
        ctx.set('Location', `${deps.issuer}${ADMIN_API_PREFIX}/clients/${created.client.clientId}`);
        return { status: 201, body: { ...clientJson(created.client), ...(created.clientSecret ? { client_secret: created.clientSecret } : {}) } };
      },
    }),
    route({
      method: 'get',
      path: '/clients/:client_id',
      operationId: 'getClient',
      summary: 'One client (never its secret)',
      tag: 'clients',
      params: s.clientIdParams,
      query: s.emptyQuery,
      success: { status: 200, description: 'the client' },
      async handle(_ctx, { params }) {
        const c = await client(params.client_id);
        const now = new Date();
        const usage = await clients.usage([c.clientId]);
        const consented = await deps.consents.repo.patientCounts([c.clientId], now);
        return { body: { ...clientJson(c), ...inventoryRow(c, usage.get(c.clientId), deps.staleDays, now, consented) } };
      },
    }),
    route({
      method: 'patch',
      path: '/clients/:client_id',
      operationId: 'updateClient',
      summary: 'Change metadata, category or verified; null removes an optional field',
      tag: 'clients',
      params: s.clientIdParams,
      body: s.clientPatchBody,
      success: { status: 200, description: 'the updated client' },
      async handle(_ctx, { params, body, by }) {
        const { category, verified, ...patch } = body as Record<string, unknown> & { category?: RegisteredClient['category']; verified?: boolean };
        const updated = await clients.update(params.client_id, patch, { category, verified }, by);
        return { body: clientJson(updated) };
      },
    }),
    lifecycle('approve', 'Approve a pending client: it can get tokens from now on', false),
    lifecycle('suspend', 'Suspend a client and revoke every grant and token it holds', true),
    lifecycle('reactivate', 'Approve a suspended client again (its old tokens stay revoked)', false),
    lifecycle('retire', 'Retire a client for good and revoke everything it holds', true),
    route({
      method: 'post',
      path: '/clients/:client_id/secret',
      operationId: 'rotateClientSecret',
      summary: 'A new client secret, shown once; the old one works for grace_seconds more',
      tag: 'clients',
      destructive: true,
      params: s.clientIdParams,
      body: s.rotateSecretBody,
      success: { status: 200, description: '`client_secret` (shown once) and `previous_secret_expires_at`' },
      async handle(_ctx, { params, body, by }) {
        const { client: c, clientSecret } = await clients.rotateSecret(params.client_id, body.grace_seconds, by);
        return { body: { client_id: c.clientId, client_secret: clientSecret, previous_secret_expires_at: iso(c.previousSecretExpiresAt) } };
      },
    }),
    route({
      method: 'get',
      path: '/inventory/export',
      operationId: 'exportInventory',
      summary: `The inventory as CSV or JSON, streamed, at most ${s.MAX_EXPORT_ROWS} clients`,
      tag: 'clients',
      query: s.exportQuery,
      success: { status: 200, description: 'the inventory', contentTypes: ['application/json', 'text/csv'] },
      async handle(_ctx, { query }) {
        const rows = exportRows(query);
        const stamp = new Date().toISOString().slice(0, 10);
        if (query.format === 'csv') {
          const lines = async function* () {
            yield `${CSV_COLUMNS.join(',')}\r\n`;
            for await (const row of rows) yield `${CSV_COLUMNS.map((c) => csvField(row[c])).join(',')}\r\n`;
          };
          return {
            body: Readable.from(lines()),
            type: 'text/csv; charset=utf-8',
            headers: { 'Content-Disposition': `attachment; filename="custos-clients-${stamp}.csv"` },
          };
        }
        const json = async function* () {
          yield '{"clients":[';
          let first = true;
          for await (const row of rows) {
            yield `${first ? '' : ','}\n${JSON.stringify(row)}`;
            first = false;
          }
          yield '\n]}\n';
        };
        return {
          body: Readable.from(json()),
          type: 'application/json; charset=utf-8',
          headers: { 'Content-Disposition': `attachment; filename="custos-clients-${stamp}.json"` },
        };
      },
    }),
    route({
      method: 'post',
      path: '/initial-access-tokens',
      operationId: 'issueInitialAccessToken',
      summary: 'A single-use initial access token for dynamic client registration (RFC 7591 section 3), shown once',
      tag: 'registration',
      body: s.initialTokenBody,
      success: { status: 201, description: '`initial_access_token` and `expires_at`' },
      async handle(_ctx, { body, by }) {
        const issued = await deps.initialTokens.issue({ expiresIn: body.expires_in, note: body.note }, by);
        return { status: 201, body: { id: issued.id, initial_access_token: issued.token, expires_at: issued.expiresAt.toISOString() } };
      },
    }),
    route({
      method: 'post',
      path: '/accounts',
      operationId: 'createAccount',
      summary: 'Create an account',
      tag: 'accounts',
      body: s.accountCreateBody,
      success: { status: 201, description: 'the account (never its password)' },
      async handle(ctx, { body, by }) {
        const input: NewAccount = {
          username: body.username,
          password: body.password,
          role: body.role,
          ...(body.display_name ? { displayName: body.display_name } : {}),
          ...(body.email ? { email: body.email } : {}),
          ...(body.fhir_id ? { fhirId: body.fhir_id } : {}),
        };
        // The same rules as everywhere else (a patient needs a Patient id, an admin none).
        const parsed = newAccountSchema.safeParse(input);
        if (!parsed.success) {
          const renamed = parsed.error.issues.map((i) => ({ ...i, path: i.path.map((p) => ACCOUNT_FIELDS[String(p)] ?? p) }));
          throw invalid(new z.ZodError(renamed), 'body');
        }
        const account = await accountAdmin.create(parsed.data, by);
        ctx.set('Location', `${deps.issuer}${ADMIN_API_PREFIX}/accounts/${account.id}`);
        return { status: 201, body: accountJson(account) };
      },
    }),
    route({
      method: 'get',
      path: '/accounts',
      operationId: 'listAccounts',
      summary: 'Accounts by username, filtered, one page at a time',
      tag: 'accounts',
      query: s.accountListQuery,
      success: { status: 200, description: '`accounts` and, when there are more, `next_cursor`' },
      async handle(_ctx, { query }) {
        const page = await searchAccounts(deps.accounts, query);
        return { body: { accounts: page.accounts.map(accountJson), ...(page.nextCursor ? { next_cursor: page.nextCursor } : {}) } };
      },
    }),
    route({
      method: 'get',
      path: '/accounts/:account_id',
      operationId: 'getAccount',
      summary: 'One account (never its password or factors)',
      tag: 'accounts',
      params: s.accountIdParams,
      query: s.emptyQuery,
      success: { status: 200, description: 'the account' },
      async handle(_ctx, { params }) {
        const account = await deps.accounts.findById(params.account_id);
        if (!account) throw notFound(`no account with id "${params.account_id}"`);
        return { body: accountJson(account) };
      },
    }),
    route({
      method: 'post',
      path: '/accounts/:account_id/disable',
      operationId: 'disableAccount',
      summary: 'Disable an account and end its sessions, grants and tokens',
      tag: 'accounts',
      destructive: true,
      params: s.accountIdParams,
      body: s.lifecycleBody,
      success: { status: 200, description: 'the account' },
      async handle(_ctx, { params, by }) {
        return { body: accountJson(await accountAdmin.disable(params.account_id, by)) };
      },
    }),
    route({
      method: 'post',
      path: '/accounts/:account_id/enable',
      operationId: 'enableAccount',
      summary: 'Enable a disabled account again',
      tag: 'accounts',
      params: s.accountIdParams,
      body: s.lifecycleBody,
      success: { status: 200, description: 'the account' },
      async handle(_ctx, { params, by }) {
        return { body: accountJson(await accountAdmin.enable(params.account_id, by)) };
      },
    }),
    route({
      method: 'put',
      path: '/accounts/:account_id/fhir-link',
      operationId: 'linkAccount',
      summary: 'Link a patient to its FHIR Patient id, a practitioner to its Practitioner id',
      tag: 'accounts',
      params: s.accountIdParams,
      body: s.accountLinkBody,
      success: { status: 200, description: 'the account' },
      async handle(_ctx, { params, body, by }) {
        return { body: accountJson(await accountAdmin.link(params.account_id, body.fhir_id, by)) };
      },
    }),
    route({
      method: 'post',
      path: '/accounts/:account_id/mfa/reset',
      operationId: 'resetAccountMfa',
      summary: 'Remove every second factor and recovery code; the user is told at their next sign-in',
      tag: 'accounts',
      destructive: true,
      params: s.accountIdParams,
      body: s.lifecycleBody,
      success: { status: 200, description: 'the account' },
      async handle(_ctx, { params, by }) {
        return { body: accountJson(await accountAdmin.resetMfa(params.account_id, by)) };
      },
    }),
    route({
      method: 'get',
      path: '/audit',
      operationId: 'listAuditEvents',
      summary: 'Audit events, newest first, filtered, one page at a time',
      tag: 'audit',
      query: s.auditQuery,
      success: { status: 200, description: '`events` and, when there are more, `next_cursor`' },
      async handle(_ctx, { query }) {
        const page = await audit.list(auditFilter(query), { limit: query.limit, cursor: query.cursor });
        return { body: { events: page.events.map(auditJson), ...(page.nextCursor ? { next_cursor: page.nextCursor } : {}) } };
      },
    }),
    route({
      method: 'get',
      path: '/audit/fhir',
      operationId: 'exportAuditEventsFhir',
      summary: 'The same events as FHIR R4 AuditEvent resources in a searchset Bundle',
      tag: 'audit',
      query: s.auditQuery,
      success: { status: 200, description: 'a FHIR Bundle', contentTypes: ['application/fhir+json'] },
      async handle(ctx, { query }) {
        const page = await audit.list(auditFilter(query), { limit: query.limit, cursor: query.cursor });
        const self = `${deps.issuer}${ctx.path}${ctx.querystring ? `?${ctx.querystring}` : ''}`;
        let next: string | undefined;
        if (page.nextCursor) {
          const params = new URLSearchParams(ctx.querystring);
          params.set('cursor', page.nextCursor);
          next = `${deps.issuer}${ctx.path}?${params}`;
        }
        return { body: auditBundle(page.events, deps.issuer, self, next), type: 'application/fhir+json' };
      },
    }),
  ];
  return table;
}

function auditFilter(q: z.output<typeof s.auditQuery>) {
  return {
    actor: q.actor,
    clientId: q.client_id,
    patientId: q.patient,
    type: q.type,
    from: q.from ? new Date(q.from) : undefined,
    to: q.to ? new Date(q.to) : undefined,
  };
}

function parse<T extends z.ZodType>(schema: T | undefined, value: unknown, where: 'body' | 'query' | 'path'): unknown {
  if (!schema) return undefined;
  const result = schema.safeParse(value);
  if (!result.success) throw invalid(result.error, where);
  return result.data;
}

/** JSON bodies up to 32 KiB; a malformed or oversized one is the caller's problem (400, 413). */
const readJson = jsonBody({ limit: '32kb' });

/** The admin API router and the table it was built from (for the OpenAPI document and tests). */
export function adminApiRoutes(deps: AdminApiDeps): { router: Router; routes: ApiRoute[] } {
  const routes = adminApiRouteTable(deps);
  const auth = adminAuth({ providers: deps.providers, accounts: deps.accounts, clients: deps.clients, reauthMaxAge: deps.reauthMaxAge });
  const router = new Router({ prefix: ADMIN_API_PREFIX });
  for (const spec of routes) {
    const handler: Middleware = async (ctx) => {
      if (spec.body && ctx.request.length && !ctx.is('application/json')) {
        throw new HttpError(415, 'invalid_request', 'send the request body as application/json');
      }
      const caller = ctx.state.admin as AdminCaller;
      const input = {
        params: parse(spec.params, { ...ctx.params }, 'path'),
        query: parse(spec.query ?? s.emptyQuery, { ...ctx.query }, 'query'),
        body: parse(spec.body, ctx.request.body ?? {}, 'body'),
        caller,
        by: { actor: caller.accountId, ip: caller.ip },
      };
      let reply: Reply;
      try {
        reply = await spec.handle(ctx, input);
      } catch (err) {
        throw translate(err);
      }
      ctx.set('Cache-Control', 'no-store');
      for (const [k, v] of Object.entries(reply.headers ?? {})) ctx.set(k, v);
      ctx.status = reply.status ?? spec.success.status;
      ctx.body = reply.body;
      if (reply.type) ctx.type = reply.type;
    };
    const steps: Middleware[] = [auth.authenticate, ...(spec.destructive ? [auth.recentLogin] : []), ...(spec.body ? [readJson] : []), handler];
    router[spec.method](spec.path, ...steps);
  }
  return { router, routes };
}
