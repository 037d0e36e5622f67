/**
 * The second step of a login: after the password, a TOTP code (or a recovery code) when the
 * account has a factor, or enrolment when policy requires multi-factor and the account has none
 * (never a silent downgrade). Which account passed the password step is kept in a signed cookie
 * scoped to this interaction and valid for five minutes.
 */
import type { Context } from 'koa';
import QRCode from 'qrcode';
import type { Account } from '../accounts/index.ts';
import { ACR_MFA, ACR_PASSWORD, totpUri, type MfaRepository } from '../mfa/index.ts';

const COOKIE = 'custos_mfa';
const PENDING_SECONDS = 300;

export interface PasswordPassed {
  accountId: string;
  /**
   * `enrolled` once this interaction's enrolment proved the new factor with a valid code;
   * `recovered` once a recovery code was accepted (the user is told how many remain).
   */
  stage: 'password' | 'enrolled' | 'recovered';
}

export function secondFactorState(opts: { secure: boolean }) {
  const path = (uid: string) => `/interaction/${uid}`;
  return {
    remember(ctx: Context, uid: string, accountId: string, stage: PasswordPassed['stage'] = 'password') {
      const expires = Math.floor(Date.now() / 1000) + PENDING_SECONDS;
      // The interaction id is inside the signed value too: the cookie path alone binds nothing.
      ctx.cookies.set(COOKIE, `${accountId}.${expires}.${stage}.${uid}`, {
        httpOnly: true,
        sameSite: 'lax',
        secure: opts.secure,
        signed: true,
        path: path(uid),
        maxAge: PENDING_SECONDS * 1000,
      });
    },
    recall(ctx: Context): PasswordPassed | undefined {
      const value = ctx.cookies.get(COOKIE, { signed: true });
      const [accountId, expires, stage, uid] = value?.split('.') ?? [];
      if (!accountId || !expires || Number(expires) < Date.now() / 1000) return undefined;
      if (uid !== ctx.params.uid) return undefined;
      if (stage !== 'password' && stage !== 'enrolled' && stage !== 'recovered') return undefined;
      return { accountId, stage };
    },
    forget(ctx: Context, uid: string) {
      ctx.cookies.set(COOKIE, null, { path: path(uid), secure: opts.secure });
    },
  };
}

/** What finishes a login at each level (RFC 8176 `amr` values). */
export const LOGIN_RESULTS = {
  password: { acr: ACR_PASSWORD, amr: ['pwd'] },
  totp: { acr: ACR_MFA, amr: ['pwd', 'otp', 'mfa'] },
  recoveryCode: { acr: ACR_MFA, amr: ['pwd', 'mfa'] },
} as const;

/** The enrolment page's data: the QR code (SVG, rendered here) and the key to type by hand. */
export async function enrolmentView(mfa: MfaRepository, account: Account, issuerName: string) {
  const secret = (await mfa.pendingTotpSecret(account.id)) ?? (await mfa.beginTotp(account.id));
  const uri = totpUri({ issuer: issuerName, account: account.username, secret });
  const qr = await QRCode.toString(uri, { type: 'svg', margin: 1, errorCorrectionLevel: 'M' });
  return { qr, secret: secret.replace(/(.{4})/g, '$1 ').trim() };
}
