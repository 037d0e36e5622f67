/**
 * Purpose-bound keys derived from the key-encryption key with HKDF (RFC 5869), so that one
 * configured secret never serves two purposes directly.
 */
import { hkdfSync } from 'node:crypto';

export type KeyPurpose = 'client-secret-hmac' | 'recovery-code-hmac' | 'initial-access-token-hmac' | 'csrf';

export function deriveKey(kek: Buffer, purpose: KeyPurpose): Buffer {
  return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), `custos/${purpose}`, 32));
}
