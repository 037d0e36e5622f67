import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { seal, open, EnvelopeError } from '../../src/keys/index.ts';
import { generateClientSecret, hashClientSecret, verifyClientSecret } from '../../src/clients/client-secret.ts';

const kek = randomBytes(32);
const AAD = 'signing-key:kid-1';
const DECRYPT_FAILURE = { name: 'EnvelopeError', message: 'cannot decrypt: wrong KEY_ENCRYPTION_KEY or tampered data' };

/** Flips one bit of the base64url field at `index` (0 version, 1 iv, 2 tag, 3 ciphertext). */
function tamper(sealed: string, index: number): string {
  const parts = sealed.split('.');
  const bytes = Buffer.from(parts[index]!, 'base64url');
  bytes[0] = bytes[0]! ^ 0x01;
  parts[index] = bytes.toString('base64url');
  return parts.join('.');
}

describe('envelope encryption (AES-256-GCM under the KEK)', () => {
  it('round-trips text, including empty and non-ASCII plaintext', () => {
    for (const plaintext of ['{"kty":"EC","d":"secret"}', '', 'Zoë – 患者 🔑']) {
      const sealed = seal(kek, plaintext, AAD);
      assert.equal(open(kek, sealed, AAD), plaintext);
    }
  });

  it('never stores the plaintext and uses a fresh IV each time', () => {
    const plaintext = 'the same private key';
    const a = seal(kek, plaintext, AAD);
    const b = seal(kek, plaintext, AAD);
    assert.notEqual(a, b);
    assert.match(a, /^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]+$/);
    assert.notEqual(a.split('.')[1], b.split('.')[1]);
    assert.ok(!a.includes(Buffer.from(plaintext).toString('base64url')));
  });

  it('fails with the wrong key', () => {
    const sealed = seal(kek, 'private', AAD);
    assert.throws(() => open(randomBytes(32), sealed, AAD), DECRYPT_FAILURE);
  });

  it('fails when the ciphertext, the tag or the IV is tampered with', () => {
    const sealed = seal(kek, 'private key material', AAD);
    for (const index of [1, 2, 3]) {
      assert.throws(() => open(kek, tamper(sealed, index), AAD), DECRYPT_FAILURE, `field ${index}`);
    }
  });

  it('fails when the ciphertext is moved to another row (other associated data)', () => {
    const sealed = seal(kek, 'private', AAD);
    assert.throws(() => open(kek, sealed, 'signing-key:kid-2'), DECRYPT_FAILURE);
    assert.throws(() => open(kek, sealed, ''), DECRYPT_FAILURE);
  });

  it('refuses values that are not sealed envelopes', () => {
    const sealed = seal(kek, 'private', AAD);
    for (const bad of ['', 'plain text', sealed.replace(/^v1\./, 'v2.'), sealed.split('.').slice(0, 3).join('.')]) {
      assert.throws(() => open(kek, bad, AAD), (err: unknown) => err instanceof EnvelopeError && err.message === 'unrecognised sealed value');
    }
  });
});

describe('client secrets', () => {
  const pepper = randomBytes(32);

  it('generates 256-bit secrets as 43 base64url characters, distinct each time', () => {
    const secrets = Array.from({ length: 200 }, () => generateClientSecret());
    for (const s of secrets) {
      assert.match(s, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(Buffer.from(s, 'base64url').length, 32);
    }
    assert.equal(new Set(secrets).size, secrets.length);
  });

  it('stores a keyed hash that does not reveal the secret', () => {
    const secret = generateClientSecret();
    const hash = hashClientSecret(pepper, secret);
    assert.match(hash, /^hmac-sha256\$[A-Za-z0-9_-]{43}$/);
    assert.ok(!hash.includes(secret));
    assert.equal(hashClientSecret(pepper, secret), hash, 'deterministic, so it can be checked');
    assert.notEqual(hashClientSecret(randomBytes(32), secret), hash, 'depends on the pepper');
  });

  it('accepts the right secret and rejects a wrong secret or a wrong pepper', () => {
    const secret = generateClientSecret();
    const hash = hashClientSecret(pepper, secret);
    assert.equal(verifyClientSecret(pepper, hash, secret), true);
    assert.equal(verifyClientSecret(pepper, hash, generateClientSecret()), false);
    assert.equal(verifyClientSecret(pepper, hash, `${secret}x`), false);
    assert.equal(verifyClientSecret(pepper, hash, ''), false);
    assert.equal(verifyClientSecret(randomBytes(32), hash, secret), false);
  });

  it('rejects malformed stored hashes instead of throwing', () => {
    const secret = generateClientSecret();
    const hash = hashClientSecret(pepper, secret);
    assert.equal(verifyClientSecret(pepper, hash.replace('hmac-sha256$', 'sha256$'), secret), false);
    assert.equal(verifyClientSecret(pepper, hash.slice(0, -4), secret), false);
    assert.equal(verifyClientSecret(pepper, secret, secret), false, 'a plaintext secret in the column never matches');
  });
});
