/**
 * Seals the state behind a paging link. The state counts matches the token may not see (how far
 * into the upstream's results the next page starts), so a link that was only signed would let its
 * holder read those counts, and from them probe which hidden ids exist. Sealed with AES-256-GCM it
 * is opaque as well as tamper-proof, and padded so that its length does not count either.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Sealed lengths move in steps this big, and only with what the caller says they may follow. */
const PAD_STEP = 256;

export interface PageLinkSeal {
  /**
   * Seals `state` into a base64url string. Its length depends only on `visibleLength` (a length
   * the holder already knows, such as its own request's), unless the state outgrows the room that
   * leaves, which a FHIR server's ordinary paging links do not.
   */
  seal(state: object, visibleLength: number): string;
  /** The length of what {@link seal} makes of a state that fits the room `visibleLength` leaves. */
  sealedLength(visibleLength: number): number;
  /** The state sealed with this key, or undefined for anything else. */
  open(sealed: string): Record<string, unknown> | undefined;
}

export function createPageLinkSeal(secret: Buffer): PageLinkSeal {
  // A key of its own, so the secret given could also serve another purpose without the two mixing.
  const key = Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'custos fhir-proxy paging link', 32));

  return {
    seal(state, visibleLength) {
      const json = Buffer.from(JSON.stringify(state), 'utf8');
      const room = roomFor(visibleLength);
      const padded = Buffer.alloc(json.length > room ? roundUp(json.length, 4 * PAD_STEP) : room, ' ');
      json.copy(padded);
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const body = Buffer.concat([cipher.update(padded), cipher.final()]);
      return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
    },
    sealedLength(visibleLength) {
      return Math.ceil(((IV_BYTES + roomFor(visibleLength) + TAG_BYTES) * 4) / 3);
    },
    open(sealed) {
      if (!/^[A-Za-z0-9_-]+$/.test(sealed)) return undefined;
      const raw = Buffer.from(sealed, 'base64url');
      if (raw.length <= IV_BYTES + TAG_BYTES) return undefined;
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
        decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
        const plain = Buffer.concat([decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)), decipher.final()]);
        const parsed: unknown = JSON.parse(plain.toString('utf8'));
        return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
      } catch {
        return undefined;
      }
    },
  };
}

const roundUp = (n: number, step: number) => Math.ceil(n / step) * step;
/** What the state holds besides what the holder knows (a position, counts, an expiry) fits in two steps. */
const roomFor = (visibleLength: number) => roundUp(visibleLength + 2 * PAD_STEP, PAD_STEP);
