/**
 * Factor storage. TOTP secrets are sealed under the KEK; the replay guard advances atomically.
 */
import type { Knex } from 'knex';
import { open, seal } from '../keys/index.ts';
import { matchTotp, newTotpSecret } from './totp.ts';
import { hashRecoveryCode, newRecoveryCodes } from './recovery-codes.ts';

export interface MfaStatus {
  totp: boolean;
  recoveryCodesLeft: number;
}

export interface MfaRepository {
  status(accountId: string): Promise<MfaStatus>;
  /** Starts (or restarts) TOTP enrolment; returns the new secret. Active factors stay until confirmed. */
  beginTotp(accountId: string): Promise<string>;
  /** The pending enrolment's secret, if any (to show the QR code again). */
  pendingTotpSecret(accountId: string): Promise<string | undefined>;
  /** Activates the pending secret when `code` is valid; replaces any older TOTP factor. */
  confirmTotp(accountId: string, code: string): Promise<boolean>;
  /** Checks a TOTP code of the active factor; each time step is accepted at most once. */
  verifyTotp(accountId: string, code: string): Promise<boolean>;
  removeTotp(accountId: string): Promise<void>;
  /** Removes every factor and recovery code of the account (an admin's reset), inside `trx`. */
  resetAll(accountId: string, trx: Knex.Transaction): Promise<{ factors: number; recoveryCodes: number }>;
  /** Replaces the recovery codes with ten new ones, returned here only. */
  regenerateRecoveryCodes(accountId: string): Promise<string[]>;
  /** Uses a recovery code once; returns how many remain, or undefined when it is not valid. */
  useRecoveryCode(accountId: string, code: string): Promise<number | undefined>;
}

const aad = (accountId: string) => `totp:${accountId}`;

export function createMfaRepository(db: Knex, kek: Buffer, recoveryPepper: Buffer): MfaRepository {
  const unusedCodes = async (accountId: string) => {
    const rows = await db('recovery_codes').where({ account_id: accountId }).whereNull('used_at').count<{ count: string }[]>({ count: '*' });
    return Number(rows[0]?.count ?? 0);
  };

  async function secretOf(row: { secret_encrypted: string } | undefined, accountId: string) {
    return row ? open(kek, row.secret_encrypted, aad(accountId)) : undefined;
  }

  return {
    async status(accountId) {
      const totp = await db('mfa_factors').where({ account_id: accountId, kind: 'totp' }).whereNotNull('confirmed_at').first('id');
      return { totp: Boolean(totp), recoveryCodesLeft: await unusedCodes(accountId) };
    },
    async beginTotp(accountId) {
      const secret = newTotpSecret();
      await db.transaction(async (trx) => {
        await trx('mfa_factors').where({ account_id: accountId, kind: 'totp' }).whereNull('confirmed_at').delete();
        await trx('mfa_factors').insert({ account_id: accountId, kind: 'totp', secret_encrypted: seal(kek, secret, aad(accountId)) });
      });
      return secret;
    },
    async pendingTotpSecret(accountId) {
      const row = await db('mfa_factors').where({ account_id: accountId, kind: 'totp' }).whereNull('confirmed_at').first('secret_encrypted');
      return secretOf(row, accountId);
    },
    async confirmTotp(accountId, code) {
      const pending = await db('mfa_factors').where({ account_id: accountId, kind: 'totp' }).whereNull('confirmed_at').first('id', 'secret_encrypted');
      if (!pending) return false;
      const step = await matchTotp((await secretOf(pending, accountId))!, code, 0);
      if (step === undefined) return false;
      await db.transaction(async (trx) => {
        await trx('mfa_factors').where({ account_id: accountId, kind: 'totp' }).whereNotNull('confirmed_at').delete();
        await trx('mfa_factors').where({ id: pending.id }).update({ confirmed_at: trx.fn.now(), last_step: step });
      });
      return true;
    },
    async verifyTotp(accountId, code) {
      const factor = await db('mfa_factors')
        .where({ account_id: accountId, kind: 'totp' })
        .whereNotNull('confirmed_at')
        .first('id', 'secret_encrypted', 'last_step');
      if (!factor) return false;
      const step = await matchTotp((await secretOf(factor, accountId))!, code, Number(factor.last_step));
      if (step === undefined) return false;
      // Two requests with the same code race here: only one advances the step.
      const advanced = await db('mfa_factors').where({ id: factor.id }).andWhere('last_step', '<', step).update({ last_step: step }, ['id']);
      return advanced.length === 1;
    },
    async removeTotp(accountId) {
      await db('mfa_factors').where({ account_id: accountId, kind: 'totp' }).delete();
    },
    async resetAll(accountId, trx) {
      const factors = await trx('mfa_factors').where({ account_id: accountId }).delete(['id']);
      const codes = await trx('recovery_codes').where({ account_id: accountId }).delete(['code_hash']);
      return { factors: factors.length, recoveryCodes: codes.length };
    },
    async regenerateRecoveryCodes(accountId) {
      const codes = newRecoveryCodes();
      await db.transaction(async (trx) => {
        await trx('recovery_codes').where({ account_id: accountId }).delete();
        await trx('recovery_codes').insert(codes.map((c) => ({ account_id: accountId, code_hash: hashRecoveryCode(recoveryPepper, c) })));
      });
      return codes;
    },
    async useRecoveryCode(accountId, code) {
      const used = await db('recovery_codes')
        .where({ account_id: accountId, code_hash: hashRecoveryCode(recoveryPepper, code) })
        .whereNull('used_at')
        .update({ used_at: db.fn.now() }, ['code_hash']);
      return used.length === 1 ? unusedCodes(accountId) : undefined;
    },
  };
}
