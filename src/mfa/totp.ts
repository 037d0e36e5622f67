/**
 * TOTP (RFC 6238) with otplib: 30-second steps, 6 digits, SHA-1 (what authenticator apps use),
 * at most one step of clock drift either way. Pure: no storage.
 */
import { generateSecret, generateURI, verify } from 'otplib';

export const TOTP_PERIOD = 30;

export function newTotpSecret(): string {
  // 160 bits, the RFC 4226 recommendation, base32 for authenticator apps.
  return generateSecret({ length: 20 });
}

export function totpUri(opts: { issuer: string; account: string; secret: string }): string {
  return generateURI({ issuer: opts.issuer, label: opts.account, secret: opts.secret });
}

/**
 * The time step a code belongs to, when it is valid and newer than `afterStep` (so a code, or an
 * older one, is never accepted twice); undefined otherwise.
 */
export async function matchTotp(secret: string, code: string, afterStep: number): Promise<number | undefined> {
  if (!/^\d{6}$/.test(code)) return undefined;
  try {
    const result = await verify({ secret, token: code, epochTolerance: TOTP_PERIOD, afterTimeStep: afterStep });
    // The TOTP strategy reports the matched time step (the generic type does not say so).
    const step = (result as { timeStep?: unknown }).timeStep;
    return result.valid && typeof step === 'number' ? step : undefined;
  } catch {
    return undefined;
  }
}
