/**
 * The provider's signing keys, stored in the database with private parts sealed under the KEK.
 * RS256 is kept because SMART requires it for ID tokens; ES256 signs everything else we sign.
 * Every instance loads the same keys from the database and reloads them when they change.
 *
 * A key's life: created and published at once, but signing only from `activates_at` (so every
 * instance publishes it before any instance signs with it); when a newer key activates it stops
 * signing, and it stays published until `retire_at`, when everything it signed has expired.
 */
import { generateKeyPair, createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Knex } from 'knex';
import { open, seal } from './envelope.ts';

export const SIGNING_ALGS = ['RS256', 'ES256'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

export interface SigningKeyInfo {
  kid: string;
  alg: SigningAlg;
  createdAt: Date;
  activatesAt: Date;
  retireAt: Date | null;
}

interface SigningKeyRow {
  kid: string;
  alg: SigningAlg;
  private_jwk_encrypted: string;
  created_at: Date;
  activates_at: Date;
  retire_at: Date | null;
}

const generate = promisify(generateKeyPair);

async function newPrivateJwk(alg: SigningAlg): Promise<JWK> {
  const { privateKey } =
    alg === 'RS256' ? await generate('rsa', { modulusLength: 2048 }) : await generate('ec', { namedCurve: 'P-256' });
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

/** Creates an immediately active key for every algorithm that has none (first start). */
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

export interface RotationTiming {
  /** How long until the new keys sign: at least how long instances take to notice new keys. */
  activateAfterSeconds: number;
  /** The longest lifetime of anything signed, plus clock tolerance. */
  maxSignedLifetimeSeconds: number;
}

/**
 * Adds a new key for every algorithm. The new keys are published at once and sign from
 * `now + activateAfter`; the current keys sign until then and stay published for
 * `maxSignedLifetime` after that.
 */
export async function rotateSigningKeys(db: Knex, kek: Buffer, timing: RotationTiming): Promise<SigningKeyInfo[]> {
  // Build the new keys first (slow), then switch in one transaction so no reader sees a gap.
  const fresh = await Promise.all(SIGNING_ALGS.map((alg) => newPrivateJwk(alg)));
  return db.transaction(async (trx) => {
    const current = new Set((await trx('signing_keys').whereNull('retire_at').distinct('alg')).map((r: { alg: string }) => r.alg));
    // With no current key of an algorithm there is nothing to hand over from: sign at once.
    const delayFor = (alg: string | undefined) => (alg && current.has(alg) ? timing.activateAfterSeconds : 0);
    await trx('signing_keys')
      .whereNull('retire_at')
      .update({ retire_at: trx.raw('now() + make_interval(secs => ?)', [timing.activateAfterSeconds + timing.maxSignedLifetimeSeconds]) });
    const inserted: SigningKeyRow[] = await trx('signing_keys')
      .insert(
        fresh.map((jwk) => ({ ...rowFor(kek, jwk), activates_at: trx.raw('now() + make_interval(secs => ?)', [delayFor(jwk.alg)]) })),
      )
      .returning('*');
    return inserted.map(toInfo);
  });
}

function toInfo(r: SigningKeyRow): SigningKeyInfo {
  return { kid: r.kid, alg: r.alg, createdAt: r.created_at, activatesAt: r.activates_at, retireAt: r.retire_at };
}

export interface LoadedKeys {
  /** Private JWKs for the provider, the signing key of each algorithm first. */
  jwks: JWK[];
  /** Changes whenever the published set or the signing choice changes. */
  fingerprint: string;
}

/**
 * Loads the published keys, the current key of each algorithm (the newest activated one) first:
 * oidc-provider signs with the first key that fits an algorithm (its selection is a stable sort),
 * so keys that are not yet active, or are retiring, are there for verification only. The
 * rotation test checks that the signing key really changes when the new one activates.
 */
export async function loadSigningKeys(db: Knex, kek: Buffer): Promise<LoadedKeys> {
  const rows: Array<SigningKeyRow & { active: boolean }> = await db('signing_keys')
    .select('*', db.raw('activates_at <= now() as active'))
    .where((q) => q.whereNull('retire_at').orWhere('retire_at', '>', db.fn.now()))
    .orderBy('activates_at', 'desc')
    .orderBy('kid');
  const current = SIGNING_ALGS.map((alg) => rows.find((r) => r.alg === alg && r.active)).filter((r) => r !== undefined);
  const ordered = [...current, ...rows.filter((r) => !current.includes(r))];
  const jwks = ordered.map((r) => JSON.parse(open(kek, r.private_jwk_encrypted, aad(r.kid))) as JWK);
  const fingerprint = createHash('sha256').update(ordered.map((r) => r.kid).join(',')).digest('base64url');
  return { jwks, fingerprint };
}

export async function listSigningKeys(db: Knex): Promise<SigningKeyInfo[]> {
  const rows: SigningKeyRow[] = await db('signing_keys').orderBy('created_at', 'desc');
  return rows.map(toInfo);
}

/** Deletes keys whose retirement time has passed: nothing they signed is still valid. */
export async function purgeRetiredSigningKeys(db: Knex): Promise<number> {
  const removed = await db('signing_keys').whereNotNull('retire_at').andWhere('retire_at', '<=', db.fn.now()).delete(['kid']);
  return removed.length;
}
