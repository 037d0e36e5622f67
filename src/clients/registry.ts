/**
 * The client registry: creating clients, and handing their metadata to the provider. Only
 * approved clients are visible to the provider, so a suspended one stops getting tokens.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { clientMetadataSchema, needsSecret, type ClientMetadata } from './client-metadata.ts';
import { generateClientSecret, hashClientSecret, verifyClientSecret } from './client-secret.ts';

export const CLIENT_STATUSES = ['pending', 'approved', 'suspended', 'retired'] as const;
export type ClientStatus = (typeof CLIENT_STATUSES)[number];

export interface RegisteredClient {
  clientId: string;
  name: string;
  status: ClientStatus;
  metadata: ClientMetadata;
  createdAt: Date;
  lastUsedAt: Date | null;
}

interface ClientRow {
  client_id: string;
  name: string;
  status: ClientStatus;
  metadata: ClientMetadata;
  secret_hash: string | null;
  created_at: Date;
  last_used_at: Date | null;
}

export interface ClientRegistry {
  /** Validates RFC 7591 metadata and registers it; the secret is returned here and never again. */
  create(input: unknown, opts?: { clientId?: string }): Promise<{ client: RegisteredClient; clientSecret?: string }>;
  get(clientId: string): Promise<RegisteredClient | undefined>;
  /** Creates or updates one of Custos's own clients (fixed id, no secret), e.g. the account pages. */
  ensureInternal(clientId: string, input: unknown): Promise<void>;
  list(opts: { limit: number; after?: string }): Promise<RegisteredClient[]>;
  /** Provider-shaped metadata for an approved client, with the secret's hash in `client_secret`. */
  findForProvider(clientId: string): Promise<Record<string, unknown> | undefined>;
  verifySecret(storedHash: string, presented: string): boolean;
}

function toClient(r: ClientRow): RegisteredClient {
  return { clientId: r.client_id, name: r.name, status: r.status, metadata: r.metadata, createdAt: r.created_at, lastUsedAt: r.last_used_at };
}

const CLIENT_ID = /^[A-Za-z0-9_-]{1,128}$/;

export function createClientRegistry(db: Knex, secretPepper: Buffer): ClientRegistry {
  return {
    async create(input, opts = {}) {
      const metadata = clientMetadataSchema.parse(input);
      // A fixed id is for seeding well-known clients (the demo); registrations get a random one.
      if (opts.clientId !== undefined && !CLIENT_ID.test(opts.clientId)) throw new Error('invalid client_id');
      const clientId = opts.clientId ?? randomBytes(16).toString('base64url');
      const clientSecret = needsSecret(metadata) ? generateClientSecret() : undefined;
      const [row] = await db('clients')
        .insert({
          client_id: clientId,
          name: metadata.client_name,
          metadata,
          secret_hash: clientSecret ? hashClientSecret(secretPepper, clientSecret) : null,
          status: 'approved',
        })
        .returning('*');
      return clientSecret ? { client: toClient(row), clientSecret } : { client: toClient(row) };
    },
    async ensureInternal(clientId, input) {
      const metadata = clientMetadataSchema.parse(input);
      if (needsSecret(metadata)) throw new Error('internal clients are public clients');
      await db('clients')
        .insert({ client_id: clientId, name: metadata.client_name, metadata, status: 'approved' })
        .onConflict('client_id')
        .merge({ name: metadata.client_name, metadata, updated_at: db.fn.now() });
    },
    async get(clientId) {
      if (!CLIENT_ID.test(clientId)) return undefined;
      const row = await db('clients').where({ client_id: clientId }).first();
      return row ? toClient(row) : undefined;
    },
    async list({ limit, after }) {
      const q = db('clients').orderBy('client_id').limit(limit);
      if (after) q.where('client_id', '>', after);
      return (await q).map(toClient);
    },
    async findForProvider(clientId) {
      if (!CLIENT_ID.test(clientId)) return undefined;
      const row: ClientRow | undefined = await db('clients').where({ client_id: clientId, status: 'approved' }).first();
      if (!row) return undefined;
      // The provider only knows its static scopes; the whole ceiling, SMART resource scopes
      // included, travels as our own metadata field and is applied by scope negotiation.
      const ceiling = (row.metadata.scope ?? '').split(' ').filter(Boolean);
      const statics = ceiling.filter((s) => !/^(patient|user|system)\//.test(s));
      return {
        ...row.metadata,
        scope: statics.join(' ') || undefined,
        scope_ceiling: row.metadata.scope,
        client_id: row.client_id,
        ...(row.secret_hash ? { client_secret: row.secret_hash } : {}),
        application_type: 'web',
        response_types: row.metadata.grant_types.includes('authorization_code') ? ['code'] : [],
      };
    },
    verifySecret(storedHash, presented) {
      return verifyClientSecret(secretPepper, storedHash, presented);
    },
  };
}
