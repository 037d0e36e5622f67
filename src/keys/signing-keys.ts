/**
 * The provider's signing keys, stored in the database with private parts sealed under the KEK.
 * RS256 is kept because SMART requires it for ID tokens; ES256 signs everything else we sign.
 * Every instance loads the same keys from the database.
 */
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Knex } from 'knex';
import { open, seal } from './envelope.ts';

export const SIGNING_ALGS = ['RS256', 'ES256'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

export interface PublishedKey {
  kid: string;
  alg: SigningAlg;
  createdAt: Date;
  retireAt: Date | null;
}

interface SigningKeyRow {
  kid: string;
  alg: SigningAlg;
  public_jwk: JWK;
  private_jwk_encrypted: string;
  created_at: Date;
  retire_at: Date | null;
}

const generate = promisify(generateKeyPair);

async function newPrivateJwk(alg: SigningAlg): Promise<JWK> {
  const { privateKey } =
    alg === 'RS256'
      ? await generate('rsa', { modulusLength: 2048 })
      : await generate('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(jwk);
  return { ...jwk, kid, alg, use: 'sig' };
}

function publicPart(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
  return pub;
}

const aad = (kid: string) => `signing-key:${kid}`;

function rowFor(kek: Buffer, jwk: JWK) {
  return {
    kid: jwk.kid,
    alg: jwk.alg,
    public_jwk: publicPart(jwk),
    private_jwk_encrypted: seal(kek, JSON.stringify(jwk), aad(jwk.kid!)),
  };
}

/** Creates a current key for every algorithm that lacks one (first start). Returns new kids. */
export async function ensureSigningKeys(db: Knex, kek: Buffer): Promise<string[]> {
  const current = await db('signing_keys').whereNull('retire_at').distinct('alg');
  const have = new Set(current.map((r: { alg: string }) => r.alg));
  const created: string[] = [];
  for (const alg of SIGNING_ALGS) {
    if (have.has(alg)) continue;
    const jwk = await newPrivateJwk(alg);
    await db('signing_keys').insert(rowFor(kek, jwk));
    created.push(jwk.kid!);
  }
  return created;
}

/**
 * Adds a new key for every algorithm and schedules the current ones for retirement once every
 * token they may have signed has expired (`retireAfterSeconds`, the longest signed-token lifetime
 * plus clock tolerance). Retired keys stop signing now and stop being published at `retire_at`.
 */
export async function rotateSigningKeys(db: Knex, kek: Buffer, retireAfterSeconds: number): Promise<string[]> {
  // Build the new keys first (slow), then switch in one transaction so no reader sees no key.
  const fresh = await Promise.all(SIGNING_ALGS.map((alg) => newPrivateJwk(alg)));
  await db.transaction(async (trx) => {
    await trx('signing_keys')
      .whereNull('retire_at')
      .update({ retire_at: trx.raw(`now() + make_interval(secs => ?)`, [retireAfterSeconds]) });
    await trx('signing_keys').insert(fresh.map((jwk) => rowFor(kek, jwk)));
  });
  return fresh.map((j) => j.kid!);
}

/**
 * Private JWKs for the provider, current keys first (the provider signs with the first key that
 * fits the algorithm), then keys that are retiring but still published for verification.
 */
export async function loadSigningJwks(db: Knex, kek: Buffer): Promise<JWK[]> {
  const rows: SigningKeyRow[] = await db('signing_keys')
    .where((q) => q.whereNull('retire_at').orWhere('retire_at', '>', db.fn.now()))
    .orderByRaw('retire_at is not null, created_at desc');
  return rows.map((r) => JSON.parse(open(kek, r.private_jwk_encrypted, aad(r.kid))) as JWK);
}

export async function listSigningKeys(db: Knex): Promise<PublishedKey[]> {
  const rows: SigningKeyRow[] = await db('signing_keys').orderBy('created_at', 'desc');
  return rows.map((r) => ({ kid: r.kid, alg: r.alg, createdAt: r.created_at, retireAt: r.retire_at }));
}

/** Deletes keys whose retirement time has passed: nothing they signed is still valid. */
export async function purgeRetiredSigningKeys(db: Knex): Promise<number> {
  const removed = await db('signing_keys').whereNotNull('retire_at').andWhere('retire_at', '<=', db.fn.now()).delete(['kid']);
  return removed.length;
}
