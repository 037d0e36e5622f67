/**
 * The client registry: registering clients, their life cycle (pending, approved, suspended,
 * retired), secret rotation, usage figures, and handing their metadata to the provider. Only
 * approved clients are visible to the provider, so a suspended one stops getting tokens; every
 * change is audited in the transaction that makes it. The API, the CLI, the admin pages and
 * dynamic registration all go through here.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { z } from 'zod';
import type { AuditTrail } from '../audit/index.ts';
import { ADMIN_SCOPE, clientMetadataSchema, clientTypeOf, needsSecret, type ClientMetadata, type ClientType } from './client-metadata.ts';
import { generateClientSecret, hashClientSecret, verifyClientSecret } from './client-secret.ts';

export const CLIENT_STATUSES = ['pending', 'approved', 'suspended', 'retired'] as const;
export type ClientStatus = (typeof CLIENT_STATUSES)[number];
export const CLIENT_CATEGORIES = ['internal', 'external', 'third-party'] as const;
export type ClientCategory = (typeof CLIENT_CATEGORIES)[number];
export type ClientOrigin = 'admin' | 'dcr' | 'system';

/** Life-cycle actions and the statuses each may start from. Retired is final. */
export const LIFECYCLE = {
  approve: { from: ['pending'], to: 'approved', event: 'client.approved' },
  suspend: { from: ['pending', 'approved'], to: 'suspended', event: 'client.suspended' },
  reactivate: { from: ['suspended'], to: 'approved', event: 'client.reactivated' },
  retire: { from: ['pending', 'approved', 'suspended'], to: 'retired', event: 'client.retired' },
} as const satisfies Record<string, { from: readonly ClientStatus[]; to: ClientStatus; event: string }>;
export type LifecycleAction = keyof typeof LIFECYCLE;

/** The longest grace period an old secret may keep working after a rotation (one day). */
export const MAX_SECRET_GRACE = 86400;

export interface RegisteredClient {
  clientId: string;
  name: string;
  status: ClientStatus;
  category: ClientCategory;
  verified: boolean;
  origin: ClientOrigin;
  type: ClientType;
  metadata: ClientMetadata;
  createdAt: Date;
  updatedAt: Date;
  statusChangedAt: Date | null;
  lastUsedAt: Date | null;
  /** Until when the secret replaced by the last rotation still works, if it does. */
  previousSecretExpiresAt: Date | null;
}

/** Who did something, and from where: an account id, `cli:<os user>`, `system:<job>`, `client:<id>`. */
export interface Actor {
  actor: string;
  ip?: string | undefined;
}

interface ClientRow {
  client_id: string;
  name: string;
  status: ClientStatus;
  category: ClientCategory;
  verified: boolean;
  origin: ClientOrigin;
  metadata: ClientMetadata;
  secret_hash: string | null;
  previous_secret_hash: string | null;
  previous_secret_expires_at: Date | null;
  registration_token_hash: string | null;
  created_at: Date;
  updated_at: Date;
  status_changed_at: Date | null;
  last_used_at: Date | null;
}

export class ClientNotFoundError extends Error {
  override name = 'ClientNotFoundError';
}

/** The action does not fit the client's current state (approving a retired client...). */
export class ClientStateError extends Error {
  override name = 'ClientStateError';
}

export const CLIENT_SORTS = ['name', 'created_at', 'last_used_at', 'client_id'] as const;
export type ClientSort = (typeof CLIENT_SORTS)[number];

export interface ClientSearch {
  status?: ClientStatus | undefined;
  category?: ClientCategory | undefined;
  verified?: boolean | undefined;
  origin?: ClientOrigin | undefined;
  /** Matches the name, the owner or the client id (case-insensitive substring). */
  q?: string | undefined;
  /** Only clients unused (no token issued) for at least this many days. */
  unusedForDays?: number | undefined;
  sort?: ClientSort | undefined;
  order?: 'asc' | 'desc' | undefined;
  limit: number;
  cursor?: string | undefined;
}

export interface ClientUsage {
  tokensLastDay: number;
  tokensLast30Days: number;
}

export class InvalidClientCursorError extends Error {
  override name = 'InvalidClientCursorError';
}

/** What an admin may change besides the RFC 7591 metadata. */
export interface AdminFields {
  category?: ClientCategory | undefined;
  verified?: boolean | undefined;
}

export interface CreateOptions extends AdminFields {
  /** A fixed id, for seeding well-known clients (the demo); registrations get a random one. */
  clientId?: string;
  status?: ClientStatus;
  origin?: ClientOrigin;
  /** RFC 7592: also issue a registration access token (returned once). */
  registrationToken?: boolean;
  /** Defaults to `system` for seeding code that has no person behind it. */
  by?: Actor;
  /** Runs inside the registration's transaction before the client is written; throwing aborts it. */
  inTransaction?: (trx: Knex.Transaction, clientId: string) => Promise<void>;
}

export interface UpdateOptions {
  /**
   * For changes the client makes itself (RFC 7592): an approved (or suspended) client whose
   * security-relevant metadata changes goes back to `pending`, its grants and tokens revoked,
   * until an admin approves it again.
   */
  reviewSecurityChanges?: boolean;
}

/**
 * Metadata that only changes how a client is presented. Anything else (redirect URIs, grants,
 * authentication, keys, scope, origins, launch modes...) changes what the client may do.
 */
export const COSMETIC_METADATA: ReadonlySet<string> = new Set(['client_name', 'logo_uri', 'client_uri', 'policy_uri', 'tos_uri', 'contacts', 'owner']);

/** JSON with object keys sorted, so values read back from jsonb compare equal to what was sent. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

export interface ClientRegistry {
  /** Validates RFC 7591 metadata and registers it; the secret is returned here and never again. */
  create(input: unknown, opts?: CreateOptions): Promise<{ client: RegisteredClient; clientSecret?: string; registrationAccessToken?: string }>;
  get(clientId: string): Promise<RegisteredClient | undefined>;
  /** Creates or updates one of Custos's own clients (fixed id, no secret), e.g. the account pages. */
  ensureInternal(clientId: string, input: unknown): Promise<void>;
  list(opts: { limit: number; after?: string }): Promise<RegisteredClient[]>;
  search(opts: ClientSearch): Promise<{ clients: RegisteredClient[]; nextCursor?: string }>;
  /**
   * Replaces metadata fields (`patch` is merged into the current metadata; `null` removes an
   * optional field) and admin fields; the result is validated whole before anything is written.
   */
  update(clientId: string, patch: Record<string, unknown>, admin: AdminFields, by: Actor, options?: UpdateOptions): Promise<RegisteredClient>;
  /**
   * Moves a client through its life cycle. Suspending or retiring deletes every grant, code and
   * token issued to it in the same transaction, so they stop working at once.
   */
  transition(clientId: string, action: LifecycleAction, by: Actor, details?: Record<string, string>): Promise<RegisteredClient>;
  /** A new secret (returned once); the old one keeps working for `graceSeconds` (0 to 86400). */
  rotateSecret(clientId: string, graceSeconds: number, by: Actor): Promise<{ client: RegisteredClient; clientSecret: string }>;
  /**
   * Counts a token response for the inventory and marks the client used. Counts are kept in
   * memory and written together within `USAGE_FLUSH_MS` (reads through this registry see them at
   * once), so the token path does not queue on the client's row lock.
   */
  recordTokenIssued(clientId: string): Promise<void>;
  /** Writes the counts `recordTokenIssued` is holding (call before shutting down). */
  flushUsage(): Promise<void>;
  usage(clientIds: readonly string[], now?: Date): Promise<Map<string, ClientUsage>>;
  /** Suspends approved clients (not Custos's own) unused for `days` days at `now`; returns their ids. */
  suspendUnused(days: number, now: Date, by: Actor): Promise<string[]>;
  /** RFC 7592: the client whose registration access token this is, when it is still registered. */
  findByRegistrationToken(clientId: string, token: string): Promise<RegisteredClient | undefined>;
  /** RFC 7592 deletion by the client itself: retires it (audited as the client). */
  deleteSelf(clientId: string, ip: string | undefined): Promise<void>;
  /** Provider-shaped metadata for an approved client, with the secret's hash in `client_secret`. */
  findForProvider(clientId: string): Promise<Record<string, unknown> | undefined>;
  verifySecret(storedHash: string, presented: string): boolean;
}

export interface ClientRegistryOptions {
  audit: AuditTrail;
  /** The server's token lifetimes: a client may only shorten them. */
  caps?: { accessToken: number; refreshToken: number };
  /** Deletes every provider artifact (grants, codes, tokens) of a client inside `trx`; returns how many. */
  revokeArtifacts?: (trx: Knex.Transaction, clientId: string) => Promise<number>;
  clock?: () => Date;
  /** Told when writing the usage counts failed (they are kept and tried again). */
  onUsageError?: (err: unknown) => void;
}

/**
 * How long an instance may answer the provider from what it last read about a client. A change
 * made through this instance's registry applies at once; one made on another instance (a
 * suspension, a secret rotation) reaches this one within this bound, and so does the end of
 * every token the suspended client holds (the adapter checks a token's client through here).
 */
export const CLIENT_CACHE_MS = 3000;
const CLIENT_CACHE_MAX = 10_000;

/**
 * How long token counts wait in memory before they are written. Usage figures are for the
 * inventory and the stale-client sweep (whose unit is days); a crash loses at most this much.
 */
export const USAGE_FLUSH_MS = 2000;

const CLIENT_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * A new random client id (128 bits, base64url) that never starts with '-', which a command line
 * (`custos client show <id>`) would read as an option.
 */
export function newClientId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}
const DAY_MS = 86_400_000;

function toClient(r: ClientRow, now: Date): RegisteredClient {
  const previousLive = r.previous_secret_hash && r.previous_secret_expires_at && r.previous_secret_expires_at > now;
  return {
    clientId: r.client_id,
    name: r.name,
    status: r.status,
    category: r.category,
    verified: r.verified,
    origin: r.origin,
    type: clientTypeOf(r.metadata),
    metadata: r.metadata,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    statusChangedAt: r.status_changed_at,
    lastUsedAt: r.last_used_at,
    previousSecretExpiresAt: previousLive ? r.previous_secret_expires_at : null,
  };
}

/** A field problem in the same shape zod reports, so callers handle one kind of validation error. */
function fieldError(path: string, message: string): z.ZodError {
  return new z.ZodError([{ code: 'custom', path: [path], message, input: undefined }]);
}

const SORT_EXPR: Record<ClientSort, { expr: string; cast: string }> = {
  name: { expr: 'lower(name)', cast: 'text' },
  created_at: { expr: 'created_at', cast: 'timestamptz' },
  last_used_at: { expr: "coalesce(last_used_at, '-infinity'::timestamptz)", cast: 'timestamptz' },
  client_id: { expr: 'client_id', cast: 'text' },
};

export function createClientRegistry(db: Knex, secretPepper: Buffer, opts: ClientRegistryOptions): ClientRegistry {
  const { audit } = opts;
  const clock = opts.clock ?? (() => new Date());
  const revoke = opts.revokeArtifacts ?? (async () => 0);

  /** The metadata schema plus the server's caps on token lifetimes. */
  function parseMetadata(input: unknown): ClientMetadata {
    const metadata = clientMetadataSchema.parse(input);
    const caps = opts.caps;
    if (caps && metadata.access_token_ttl !== undefined && metadata.access_token_ttl > caps.accessToken) {
      throw fieldError('access_token_ttl', `must be at most the server's ${caps.accessToken} seconds`);
    }
    if (caps && metadata.refresh_token_ttl !== undefined && metadata.refresh_token_ttl > caps.refreshToken) {
      throw fieldError('refresh_token_ttl', `must be at most the server's ${caps.refreshToken} seconds`);
    }
    return metadata;
  }

  /** The admin API scope only ever goes to Custos's internal (first-party) clients. */
  function checkCategory(metadata: ClientMetadata, category: ClientCategory) {
    if (category !== 'internal' && (metadata.scope ?? '').split(' ').includes(ADMIN_SCOPE)) {
      throw fieldError('scope', `${ADMIN_SCOPE} is only for clients of category "internal"`);
    }
  }

  async function locked(trx: Knex.Transaction, clientId: string): Promise<ClientRow> {
    const row: ClientRow | undefined = CLIENT_ID.test(clientId)
      ? await trx('clients').where({ client_id: clientId }).forUpdate().first()
      : undefined;
    if (!row) throw new ClientNotFoundError(`no client with id "${clientId}"`);
    return row;
  }

  // Token counts per client not yet written, and the write in progress (writes never overlap).
  const pendingUsage = new Map<string, number>();
  let usageWrite: Promise<void> = Promise.resolve();
  let usageTimer: NodeJS.Timeout | undefined;

  async function writeUsage(batch: [string, number][]): Promise<void> {
    const values = batch.map(() => '(?, ?::integer)').join(', ');
    const bindings = batch.flat();
    await db.transaction(async (trx) => {
      // A client deleted meanwhile is skipped, as the single-row version skipped it.
      await trx('clients').whereIn('client_id', batch.map(([id]) => id)).update({ last_used_at: trx.fn.now() });
      await trx.raw(
        `insert into client_usage_hourly (client_id, hour, tokens)
         select v.client_id, date_trunc('hour', now()), v.n from (values ${values}) as v (client_id, n)
         join clients c on c.client_id = v.client_id
         on conflict (client_id, hour) do update set tokens = client_usage_hourly.tokens + excluded.tokens`,
        bindings,
      );
    });
  }

  function flushUsage(): Promise<void> {
    if (usageTimer) {
      clearTimeout(usageTimer);
      usageTimer = undefined;
    }
    const run = usageWrite.then(async () => {
      if (pendingUsage.size === 0) return;
      const batch = [...pendingUsage];
      pendingUsage.clear();
      try {
        await writeUsage(batch);
      } catch (err) {
        for (const [id, n] of batch) pendingUsage.set(id, (pendingUsage.get(id) ?? 0) + n);
        throw err;
      }
    });
    usageWrite = run.catch(() => {});
    return run;
  }

  // What the provider was last told about each client, and when; `generation` moves on every
  // local change so that a read begun before the change cannot store its stale answer after it.
  const providerCache = new Map<string, { at: number; value: Promise<Record<string, unknown> | undefined> }>();
  let generation = 0;
  const forget = () => {
    generation += 1;
    providerCache.clear();
  };
  /** Runs a change to clients, forgetting what the provider was told before and after it commits. */
  async function changing<T>(change: () => Promise<T>): Promise<T> {
    forget();
    try {
      return await change();
    } finally {
      forget();
    }
  }

  async function loadForProvider(clientId: string): Promise<Record<string, unknown> | undefined> {
    const row: ClientRow | undefined = await db('clients').where({ client_id: clientId, status: 'approved' }).first();
    if (!row) return undefined;
    // The provider only knows its static scopes; the whole ceiling, SMART resource scopes
    // included, travels as our own metadata field and is applied by scope negotiation.
    const ceiling = (row.metadata.scope ?? '').split(' ').filter(Boolean);
    const statics = ceiling.filter((s) => !/^(patient|user|system)\//.test(s));
    const { owner: _owner, ...providerMetadata } = row.metadata;
    const previous =
      row.previous_secret_hash && row.previous_secret_expires_at && row.previous_secret_expires_at > clock()
        ? { client_secret_previous: row.previous_secret_hash, client_secret_previous_expires_at: Math.floor(row.previous_secret_expires_at.getTime() / 1000) }
        : {};
    return {
      ...providerMetadata,
      scope: statics.join(' ') || undefined,
      scope_ceiling: row.metadata.scope,
      client_id: row.client_id,
      ...(row.secret_hash ? { client_secret: row.secret_hash, ...previous } : {}),
      application_type: 'web',
      response_types: row.metadata.grant_types.includes('authorization_code') ? ['code'] : [],
    };
  }

  const registry: ClientRegistry = {
    async create(input, options = {}) {
      const metadata = parseMetadata(input);
      checkCategory(metadata, options.category ?? 'third-party');
      if (options.clientId !== undefined && !CLIENT_ID.test(options.clientId)) throw new Error('invalid client_id');
      const clientId = options.clientId ?? newClientId();
      const clientSecret = needsSecret(metadata) ? generateClientSecret() : undefined;
      const registrationAccessToken = options.registrationToken ? randomBytes(32).toString('base64url') : undefined;
      const by = options.by ?? { actor: 'system' };
      const status = options.status ?? 'approved';
      const row = await db.transaction(async (trx) => {
        await options.inTransaction?.(trx, clientId);
        const [inserted] = await trx('clients')
          .insert({
            client_id: clientId,
            name: metadata.client_name,
            metadata,
            secret_hash: clientSecret ? hashClientSecret(secretPepper, clientSecret) : null,
            registration_token_hash: registrationAccessToken ? hashClientSecret(secretPepper, registrationAccessToken) : null,
            status,
            status_changed_at: trx.fn.now(),
            category: options.category ?? 'third-party',
            verified: options.verified ?? false,
            origin: options.origin ?? 'admin',
          })
          .returning('*');
        await audit.record(
          {
            type: 'client.created',
            outcome: 'success',
            actor: by.actor,
            ip: by.ip,
            clientId,
            details: { name: metadata.client_name, status, category: options.category ?? 'third-party', origin: options.origin ?? 'admin' },
          },
          trx,
        );
        return inserted as ClientRow;
      });
      return {
        client: toClient(row, clock()),
        ...(clientSecret ? { clientSecret } : {}),
        ...(registrationAccessToken ? { registrationAccessToken } : {}),
      };
    },

    async ensureInternal(clientId, input) {
      const metadata = clientMetadataSchema.parse(input);
      if (needsSecret(metadata)) throw new Error('internal clients are public clients');
      await db('clients')
        .insert({ client_id: clientId, name: metadata.client_name, metadata, status: 'approved', category: 'internal', verified: true, origin: 'system' })
        .onConflict('client_id')
        .merge({ name: metadata.client_name, metadata, updated_at: db.fn.now() });
    },

    async get(clientId) {
      if (pendingUsage.has(clientId)) await flushUsage();
      if (!CLIENT_ID.test(clientId)) return undefined;
      const row = await db('clients').where({ client_id: clientId }).first();
      return row ? toClient(row, clock()) : undefined;
    },

    async list({ limit, after }) {
      await flushUsage();
      const q = db('clients').orderBy('client_id').limit(limit);
      if (after) q.where('client_id', '>', after);
      return (await q).map((r: ClientRow) => toClient(r, clock()));
    },

    async search(s) {
      await flushUsage();
      const sort = SORT_EXPR[s.sort ?? 'name'];
      const desc = s.order === 'desc';
      const q = db('clients')
        .select('*', db.raw(`(${sort.expr})::text as sort_key`))
        .orderByRaw(`${sort.expr} ${desc ? 'desc' : 'asc'}, client_id ${desc ? 'desc' : 'asc'}`)
        .limit(s.limit + 1);
      if (s.status) q.where('status', s.status);
      if (s.category) q.where('category', s.category);
      if (s.origin) q.where('origin', s.origin);
      if (s.verified !== undefined) q.where('verified', s.verified);
      if (s.q) {
        const pattern = `%${s.q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
        q.where((w) => w.whereILike('name', pattern).orWhereILike('client_id', pattern).orWhereRaw(`metadata->>'owner' ilike ?`, [pattern]));
      }
      if (s.unusedForDays !== undefined) {
        q.whereRaw('coalesce(last_used_at, created_at) < ?', [new Date(clock().getTime() - s.unusedForDays * DAY_MS)]);
      }
      if (s.cursor) {
        let key: unknown;
        try {
          key = JSON.parse(Buffer.from(s.cursor, 'base64url').toString('utf8'));
        } catch {
          throw new InvalidClientCursorError('the cursor is not one this server gave out');
        }
        if (!Array.isArray(key) || key.length !== 3 || key[0] !== (s.sort ?? 'name') || typeof key[1] !== 'string' || typeof key[2] !== 'string') {
          throw new InvalidClientCursorError('the cursor is not one this server gave out, or the sort changed');
        }
        q.whereRaw(`(${sort.expr}, client_id) ${desc ? '<' : '>'} (?::${sort.cast}, ?)`, [key[1], key[2]]);
      }
      const rows = (await q) as (ClientRow & { sort_key: string })[];
      const page = rows.slice(0, s.limit);
      const last = page.at(-1);
      const clients = page.map((r) => toClient(r, clock()));
      if (rows.length <= s.limit || !last) return { clients };
      return { clients, nextCursor: Buffer.from(JSON.stringify([s.sort ?? 'name', last.sort_key, last.client_id])).toString('base64url') };
    },

    async update(clientId, patch, admin, by, options = {}) {
      return db.transaction(async (trx) => {
        const row = await locked(trx, clientId);
        if (row.origin === 'system') throw new ClientStateError('Custos\'s own clients are not edited here');
        if (row.status === 'retired') throw new ClientStateError('a retired client cannot be changed');
        const merged: Record<string, unknown> = { ...row.metadata };
        for (const [k, v] of Object.entries(patch)) {
          if (v === null) delete merged[k];
          else merged[k] = v;
        }
        const metadata = parseMetadata(merged);
        checkCategory(metadata, admin.category ?? row.category);
        const fromSecret = Boolean(row.secret_hash);
        if (needsSecret(metadata) !== fromSecret) {
          throw fieldError('token_endpoint_auth_method', 'cannot switch between secret and non-secret authentication; register a new client');
        }
        const before = row.metadata as Record<string, unknown>;
        const after = metadata as Record<string, unknown>;
        const changed = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((k) => canonical(before[k]) !== canonical(after[k]));
        const security = changed.filter((k) => !COSMETIC_METADATA.has(k)).sort();
        if (admin.category !== undefined && admin.category !== row.category) changed.push('category');
        if (admin.verified !== undefined && admin.verified !== row.verified) changed.push('verified');
        // A suspended client too: reactivating it must not approve metadata nobody reviewed.
        const review = options.reviewSecurityChanges === true && (row.status === 'approved' || row.status === 'suspended') && security.length > 0;
        const [updated] = await trx('clients')
          .where({ client_id: clientId })
          .update({
            name: metadata.client_name,
            metadata,
            category: admin.category ?? row.category,
            verified: admin.verified ?? row.verified,
            updated_at: trx.fn.now(),
            ...(review ? { status: 'pending', status_changed_at: trx.fn.now() } : {}),
          })
          .returning('*');
        await audit.record({ type: 'client.updated', outcome: 'success', actor: by.actor, ip: by.ip, clientId, details: { changed: changed.sort() } }, trx);
        if (review) {
          // As a suspension does: nothing issued under the old registration outlives the change.
          const revoked = await revoke(trx, clientId);
          await audit.record(
            {
              type: 'client.review_required',
              outcome: 'success',
              actor: by.actor,
              ip: by.ip,
              clientId,
              details: { from: row.status, to: 'pending', fields: security, revoked_artifacts: revoked, reason: 'security-relevant metadata changed; an admin must approve the client again' },
            },
            trx,
          );
        }
        return toClient(updated as ClientRow, clock());
      });
    },

    async transition(clientId, action, by, details = {}) {
      const rule = LIFECYCLE[action];
      return db.transaction(async (trx) => {
        const row = await locked(trx, clientId);
        if (row.origin === 'system') throw new ClientStateError('Custos\'s own clients cannot change status');
        if (!(rule.from as readonly ClientStatus[]).includes(row.status)) {
          throw new ClientStateError(`cannot ${action} a client that is ${row.status}`);
        }
        const [updated] = await trx('clients')
          .where({ client_id: clientId })
          .update({ status: rule.to, status_changed_at: trx.fn.now(), updated_at: trx.fn.now() })
          .returning('*');
        const revoked = rule.to === 'approved' ? 0 : await revoke(trx, clientId);
        await audit.record(
          { type: rule.event, outcome: 'success', actor: by.actor, ip: by.ip, clientId, details: { from: row.status, to: rule.to, revoked_artifacts: revoked, ...details } },
          trx,
        );
        return toClient(updated as ClientRow, clock());
      });
    },

    async rotateSecret(clientId, graceSeconds, by) {
      if (!Number.isInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_SECRET_GRACE) {
        throw fieldError('grace_seconds', `must be a whole number from 0 to ${MAX_SECRET_GRACE}`);
      }
      const clientSecret = generateClientSecret();
      const client = await db.transaction(async (trx) => {
        const row = await locked(trx, clientId);
        if (!row.secret_hash) throw new ClientStateError('this client does not authenticate with a secret');
        if (row.status === 'retired') throw new ClientStateError('a retired client cannot be changed');
        const expires = graceSeconds > 0 ? new Date(clock().getTime() + graceSeconds * 1000) : null;
        const [updated] = await trx('clients')
          .where({ client_id: clientId })
          .update({
            secret_hash: hashClientSecret(secretPepper, clientSecret),
            previous_secret_hash: expires ? row.secret_hash : null,
            previous_secret_expires_at: expires,
            updated_at: trx.fn.now(),
          })
          .returning('*');
        await audit.record(
          { type: 'client.secret_rotated', outcome: 'success', actor: by.actor, ip: by.ip, clientId, details: { grace_seconds: graceSeconds } },
          trx,
        );
        return toClient(updated as ClientRow, clock());
      });
      return { client, clientSecret };
    },

    async recordTokenIssued(clientId) {
      if (!CLIENT_ID.test(clientId)) return;
      pendingUsage.set(clientId, (pendingUsage.get(clientId) ?? 0) + 1);
      if (!usageTimer) {
        usageTimer = setTimeout(() => {
          usageTimer = undefined;
          flushUsage().catch((err: unknown) => opts.onUsageError?.(err));
        }, USAGE_FLUSH_MS);
        usageTimer.unref();
      }
    },

    flushUsage,

    async usage(clientIds, now = clock()) {
      await flushUsage();
      const result = new Map<string, ClientUsage>();
      if (clientIds.length === 0) return result;
      const rows: { client_id: string; day: string | number; month: string | number }[] = await db('client_usage_hourly')
        .whereIn('client_id', [...clientIds])
        .where('hour', '>', new Date(now.getTime() - 30 * DAY_MS))
        .groupBy('client_id')
        .select(
          'client_id',
          db.raw('coalesce(sum(tokens) filter (where hour > ?), 0) as day', [new Date(now.getTime() - DAY_MS)]),
          db.raw('coalesce(sum(tokens), 0) as month'),
        );
      for (const id of clientIds) result.set(id, { tokensLastDay: 0, tokensLast30Days: 0 });
      for (const r of rows) result.set(r.client_id, { tokensLastDay: Number(r.day), tokensLast30Days: Number(r.month) });
      return result;
    },

    async suspendUnused(days, now, by) {
      await flushUsage();
      const rows: { client_id: string }[] = await db('clients')
        .where({ status: 'approved' })
        .whereNot({ origin: 'system' })
        .whereRaw('coalesce(last_used_at, created_at) < ?', [new Date(now.getTime() - days * DAY_MS)])
        .select('client_id');
      const suspended: string[] = [];
      for (const { client_id } of rows) {
        try {
          await registry.transition(client_id, 'suspend', by, { reason: `unused for ${days} days` });
          suspended.push(client_id);
        } catch (err) {
          // Changed meanwhile (used, suspended by an admin): leave it to the next sweep.
          if (!(err instanceof ClientStateError)) throw err;
        }
      }
      return suspended;
    },

    async findByRegistrationToken(clientId, token) {
      if (!CLIENT_ID.test(clientId) || token.length > 200) return undefined;
      const row: ClientRow | undefined = await db('clients').where({ client_id: clientId, origin: 'dcr' }).whereNot({ status: 'retired' }).first();
      if (!row?.registration_token_hash || !verifyClientSecret(secretPepper, row.registration_token_hash, token)) return undefined;
      return toClient(row, clock());
    },

    async deleteSelf(clientId, ip) {
      await registry.transition(clientId, 'retire', { actor: `client:${clientId}`, ip }, { reason: 'deleted by the client (RFC 7592)' });
      await db('clients').where({ client_id: clientId }).update({ registration_token_hash: null });
    },

    async findForProvider(clientId) {
      if (!CLIENT_ID.test(clientId)) return undefined;
      const now = clock().getTime();
      const cached = providerCache.get(clientId);
      if (cached && now - cached.at >= 0 && now - cached.at < CLIENT_CACHE_MS) return structuredClone(await cached.value);
      const started = generation;
      const value = loadForProvider(clientId);
      if (providerCache.size >= CLIENT_CACHE_MAX) providerCache.delete(providerCache.keys().next().value!);
      providerCache.set(clientId, { at: now, value });
      try {
        const loaded = await value;
        if (started !== generation) providerCache.delete(clientId);
        return structuredClone(loaded);
      } catch (err) {
        if (providerCache.get(clientId)?.value === value) providerCache.delete(clientId);
        throw err;
      }
    },

    verifySecret(storedHash, presented) {
      return verifyClientSecret(secretPepper, storedHash, presented);
    },
  };
  // Every change to clients goes through `changing`, so this instance never answers from before it.
  for (const name of ['create', 'ensureInternal', 'update', 'transition', 'rotateSecret', 'deleteSelf'] as const) {
    const change = registry[name] as (...args: unknown[]) => Promise<unknown>;
    (registry as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => changing(() => change.apply(registry, args));
  }
  return registry;
}
