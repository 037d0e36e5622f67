/**
 * Recovery codes: ten random single-use codes, shown once and stored as keyed hashes.
 * Each has 50 random bits, so a fast keyed hash is enough (and login throttling applies).
 */
import { createHmac, randomInt } from 'node:crypto';

export const RECOVERY_CODE_COUNT = 10;
// Crockford-style alphabet without look-alikes (no I, L, O, U).
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

export function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODE_COUNT }, () => {
    const chars = Array.from({ length: 10 }, () => ALPHABET[randomInt(ALPHABET.length)]).join('');
    return `${chars.slice(0, 5)}-${chars.slice(5)}`;
  });
}

/** Case, spaces and dashes do not matter when a user types a code back. */
export function normaliseRecoveryCode(input: string): string {
  return input.toUpperCase().replace(/[\s-]/g, '');
}

export function hashRecoveryCode(pepper: Buffer, code: string): string {
  return createHmac('sha256', pepper).update(normaliseRecoveryCode(code)).digest('base64url');
}
