/**
 * Seeds the benchmark's database before the server starts: the clients each scenario uses
 * (registered through the client registry, as an admin would), a few thousand more clients and
 * patients with a confirmed TOTP factor. The bulk rows go straight in with knex: hashing
 * thousands of passwords at production cost would take minutes, and every patient gets the same
 * password hash (one argon2id hash at the configured cost, so each login pays the real price).
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { Config } from '../src/config/index.ts';
import { openServices } from '../src/main.ts';
import { closeDatabase } from '../src/db/index.ts';
import { createPasswordHasher } from '../src/accounts/index.ts';
import { seal } from '../src/keys/index.ts';
import { newTotpSecret } from '../src/mfa/totp.ts';
import { createLogger } from '../src/logging/index.ts';

export const PASSWORD = 'bench correct horse battery staple';
export const REDIRECT_URI = 'https://app.bench.example/callback';
export const APP_SCOPE = 'openid fhirUser offline_access launch/patient patient/*.cruds';

export interface SeededClient {
  clientId: string;
  clientSecret?: string;
}

export interface Seed {
  /** client_credentials with client_secret_basic. */
  service: Required<SeededClient>;
  /** SMART Backend Services: private_key_jwt with an ES384 key. */
  backend: SeededClient & { privateKey: KeyObject; kid: string };
  /** A confidential SMART app: authorization code + PKCE, refresh tokens. */
  app: Required<SeededClient>;
  /** A resource server allowed to introspect any token. */
  resourceServer: Required<SeededClient>;
  /** Patients, each with a TOTP factor; all share one secret and `PASSWORD`. */
  users: string[];
  totpSecret: string;
}

const BATCH = 500;

export async function seedDatabase(config: Config, opts: { users: number; clients: number }): Promise<Seed> {
  const services = await openServices(config, createLogger('warn'));
  const { db, clients } = services;
  try {
    const service = await clients.create({
      client_name: 'Bench service (secret)',
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'system/*.rs',
    });

    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const kid = 'bench-es384';
    const backend = await clients.create({
      client_name: 'Bench backend service (ES384)',
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES384',
      jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES384', use: 'sig' }] },
      scope: 'system/*.rs',
    });

    const app = await clients.create({
      client_name: 'Bench SMART app',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: APP_SCOPE,
    });

    const resourceServer = await clients.create({
      client_name: 'Bench FHIR server',
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'custos:introspect',
    });

    // The other registered clients: copies of the service client's row under other ids, so the
    // clients table is the size of a real deployment's.
    const template = await db('clients').where({ client_id: service.client.clientId }).first();
    for (let start = 0; start < opts.clients; start += BATCH) {
      const rows = [];
      for (let i = start; i < Math.min(opts.clients, start + BATCH); i += 1) {
        rows.push({ ...template, client_id: `bench-client-${i}`, name: `Bench client ${i}` });
      }
      await db('clients').insert(rows);
    }

    const passwordHash = await createPasswordHasher(config.argon2).hash(PASSWORD);
    const totpSecret = newTotpSecret();
    const users: string[] = [];
    for (let start = 0; start < opts.users; start += BATCH) {
      const rows = [];
      for (let i = start; i < Math.min(opts.users, start + BATCH); i += 1) {
        rows.push({ username: `bench-patient-${i}`, role: 'patient', fhir_patient_id: `bench-patient-${i}`, display_name: `Patient ${i}`, password_hash: passwordHash });
      }
      const inserted: { id: string; username: string }[] = await db('accounts').insert(rows).returning(['id', 'username']);
      // Sealed exactly as src/mfa/repository.ts seals a confirmed factor (associated data `totp:<account id>`).
      await db('mfa_factors').insert(
        inserted.map((a) => ({
          account_id: a.id,
          kind: 'totp',
          secret_encrypted: seal(config.secrets.keyEncryptionKey, totpSecret, `totp:${a.id}`),
          confirmed_at: db.fn.now(),
          last_step: 0,
        })),
      );
      users.push(...inserted.map((a) => a.username));
    }

    return {
      service: { clientId: service.client.clientId, clientSecret: service.clientSecret! },
      backend: { clientId: backend.client.clientId, privateKey, kid },
      app: { clientId: app.client.clientId, clientSecret: app.clientSecret! },
      resourceServer: { clientId: resourceServer.client.clientId, clientSecret: resourceServer.clientSecret! },
      users,
      totpSecret,
    };
  } finally {
    await closeDatabase(db);
  }
}
