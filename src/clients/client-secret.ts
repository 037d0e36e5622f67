/**
 * Client secrets: generated here with 256 bits of entropy, shown once, stored only as a keyed
 * hash. A fast HMAC is the right tool for a high-entropy random secret (guessing is hopeless
 * anyway) and keeps argon2's cost off the token path.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const PREFIX = 'hmac-sha256$';

export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function hashClientSecret(pepper: Buffer, secret: string): string {
  return PREFIX + createHmac('sha256', pepper).update(secret, 'utf8').digest('base64url');
}

export function verifyClientSecret(pepper: Buffer, storedHash: string, presented: string): boolean {
  if (!storedHash.startsWith(PREFIX)) return false;
  const expected = Buffer.from(storedHash.slice(PREFIX.length), 'base64url');
  const actual = createHmac('sha256', pepper).update(presented, 'utf8').digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
