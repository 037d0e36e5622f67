/**
 * What admins do to accounts: create them, disable and re-enable them, link them to their FHIR
 * resource, and reset their second factor. Each change and its audit event commit together; the
 * API, the CLI and the pages all call these functions.
 */
import type { Knex } from 'knex';
import type { Account, AccountRepository, NewAccount } from '../accounts/index.ts';
import type { AuditTrail } from '../audit/index.ts';
import type { Actor } from '../clients/index.ts';
import type { MfaRepository } from '../mfa/index.ts';

export class AccountNotFoundError extends Error {
  override name = 'AccountNotFoundError';
}

/** The action does not fit the account (disabling a disabled account, linking an admin...). */
export class AccountStateError extends Error {
  override name = 'AccountStateError';
}

export const MFA_RESET_NOTICE =
  'An administrator reset your two-step verification. Set up your authenticator app again from this page; if you did not ask for this, contact your administrator.';

export interface AccountAdminDeps {
  db: Knex;
  accounts: AccountRepository;
  mfa: MfaRepository;
  audit: AuditTrail;
  /** Deletes the account's sessions, grants and tokens (or only `kinds`) inside `trx`. */
  revokeArtifacts: (trx: Knex.Transaction, accountId: string, kinds?: readonly string[]) => Promise<number>;
}

export interface AccountAdmin {
  create(input: NewAccount, by: Actor): Promise<Account>;
  /** Disables the account and ends its sessions, grants and tokens at once. */
  disable(accountId: string, by: Actor): Promise<Account>;
  enable(accountId: string, by: Actor): Promise<Account>;
  link(accountId: string, fhirId: string, by: Actor): Promise<Account>;
  /** Removes every factor and recovery code, ends the account's sessions, and tells the user. */
  resetMfa(accountId: string, by: Actor): Promise<Account>;
}

export function createAccountAdmin(deps: AccountAdminDeps): AccountAdmin {
  const { db, accounts, audit } = deps;

  async function change(
    accountId: string,
    by: Actor,
    fn: (account: Account, trx: Knex.Transaction) => Promise<{ type: string; details?: Record<string, string | number | boolean> }>,
  ): Promise<Account> {
    await db.transaction(async (trx) => {
      const account = await accounts.findForUpdate(accountId, trx);
      if (!account) throw new AccountNotFoundError(`no account with id "${accountId}"`);
      const event = await fn(account, trx);
      await audit.record(
        { type: event.type, outcome: 'success', actor: by.actor, ip: by.ip, patientId: account.fhirPatientId ?? undefined, details: { account_id: account.id, ...event.details } },
        trx,
      );
    });
    return (await accounts.findById(accountId))!;
  }

  return {
    async create(input, by) {
      return db.transaction(async (trx) => {
        const account = await accounts.create(input, trx);
        await audit.record(
          {
            type: 'account.created',
            outcome: 'success',
            actor: by.actor,
            ip: by.ip,
            patientId: account.fhirPatientId ?? undefined,
            details: { account_id: account.id, role: account.role },
          },
          trx,
        );
        return account;
      });
    },

    disable: (accountId, by) =>
      change(accountId, by, async (account, trx) => {
        if (account.disabled) throw new AccountStateError('the account is already disabled');
        await accounts.setDisabled(account.id, true, trx);
        const revoked = await deps.revokeArtifacts(trx, account.id);
        return { type: 'account.disabled', details: { revoked_artifacts: revoked } };
      }),

    enable: (accountId, by) =>
      change(accountId, by, async (account, trx) => {
        if (!account.disabled) throw new AccountStateError('the account is not disabled');
        await accounts.setDisabled(account.id, false, trx);
        return { type: 'account.enabled' };
      }),

    link: (accountId, fhirId, by) =>
      change(accountId, by, async (account, trx) => {
        if (account.role === 'admin') throw new AccountStateError('an admin account is not linked to a FHIR resource');
        const previous = account.fhirPatientId ?? account.fhirPractitionerId ?? '';
        await accounts.linkFhir(account.id, fhirId, trx);
        const resource = account.role === 'patient' ? 'Patient' : 'Practitioner';
        return { type: 'account.fhir_linked', details: { resource, fhir_id: fhirId, previous } };
      }),

    resetMfa: (accountId, by) =>
      change(accountId, by, async (account, trx) => {
        const removed = await deps.mfa.resetAll(account.id, trx);
        // A session signed in with the old factor must not outlive it.
        const sessions = await deps.revokeArtifacts(trx, account.id, ['Session']);
        await accounts.addNotice(account.id, MFA_RESET_NOTICE, trx);
        return { type: 'account.mfa_reset', details: { factors: removed.factors, recovery_codes: removed.recoveryCodes, sessions_ended: sessions } };
      }),
  };
}
