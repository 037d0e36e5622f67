/**
 * Account storage. The password hash never leaves this module except to the credential check.
 */
import type { Knex } from 'knex';
import type { Account, NewAccount, Role } from './account.ts';
import type { PasswordHasher } from './password-hasher.ts';
import { standingRepresentations } from './representation.ts';

interface AccountRow {
  id: string;
  username: string;
  role: Role;
  display_name: string | null;
  email: string | null;
  fhir_patient_id: string | null;
  fhir_practitioner_id: string | null;
  password_hash: string;
  disabled_at: Date | null;
  created_at: Date;
}

const PUBLIC_COLUMNS = [
  'id', 'username', 'role', 'display_name', 'email', 'fhir_patient_id', 'fhir_practitioner_id', 'disabled_at', 'created_at',
] as const;

function toAccount(r: Omit<AccountRow, 'password_hash'>): Account {
  return {
    id: r.id,
    username: r.username,
    role: r.role,
    displayName: r.display_name,
    email: r.email,
    fhirPatientId: r.fhir_patient_id,
    fhirPractitionerId: r.fhir_practitioner_id,
    disabled: r.disabled_at !== null,
    createdAt: r.created_at,
  };
}

export class UsernameTakenError extends Error {
  override name = 'UsernameTakenError';
}

export interface AccountRepository {
  /** Creates an account; pass the transaction of a larger change (an audited admin action). */
  create(input: NewAccount, trx?: Knex.Transaction): Promise<Account>;
  /** Locks the account's row for the rest of `trx` and returns it. */
  findForUpdate(id: string, trx: Knex.Transaction): Promise<Account | undefined>;
  setDisabled(id: string, disabled: boolean, trx: Knex.Transaction): Promise<void>;
  /** Links the account to its FHIR Patient (patients) or Practitioner (practitioners) id. */
  linkFhir(id: string, fhirId: string, trx: Knex.Transaction): Promise<void>;
  /** Leaves a message the account holder reads at their next sign-in to the account page. */
  addNotice(id: string, message: string, trx: Knex.Transaction): Promise<void>;
  /** Unread notices, marked read. */
  takeNotices(id: string): Promise<string[]>;
  findById(id: string): Promise<Account | undefined>;
  findByUsername(username: string): Promise<Account | undefined>;
  /** Returns the account only when the password matches and the account is enabled. */
  verifyCredentials(username: string, password: string): Promise<Account | undefined>;
  list(opts: { limit: number; after?: string }): Promise<Account[]>;
  /**
   * Accounts by username, filtered: `q` matches the username, display name, email or linked FHIR
   * id (case-insensitive substring); `after` is the last username of the previous page.
   */
  search(opts: { q?: string | undefined; role?: Role | undefined; disabled?: boolean | undefined; limit: number; after?: string | undefined }): Promise<Account[]>;
  countByRole(role: Role): Promise<number>;
  /** Enabled patient accounts whose username or name contains `query`, at most `limit`. */
  searchPatients(query: string, limit: number): Promise<Account[]>;
  /** The enabled patient account linked to a FHIR Patient id. */
  findPatientByFhirId(fhirPatientId: string): Promise<Account | undefined>;
  /** The enabled patients `accountId` may act for, at most `limit`. */
  representedPatients(accountId: string, limit: number): Promise<{ account: Account; relationship: Relationship }[]>;
  /** Whether `accountId` may act for the patient with this FHIR Patient id (themselves included). */
  mayActFor(accountId: string, fhirPatientId: string): Promise<boolean>;
  addRepresentative(representativeId: string, patientId: string, relationship: Relationship): Promise<void>;
  /**
   * Deletes the link inside `trx` (ending a representation also revokes what it allowed, in the
   * same transaction: see the consent service's `endRepresentation`); returns whether there was one.
   */
  removeRepresentative(representativeId: string, patientId: string, trx: Knex.Transaction): Promise<boolean>;
  /**
   * Whether `representativeId` represents the enabled patient `patientId` now, holding a share
   * lock on the link until `trx` ends: a change made on the strength of the link commits before
   * the link can be removed, or sees it gone. Without `trx`, a plain read: enough to decide what
   * to show, never to decide a change.
   */
  representsNow(representativeId: string, patientId: string, trx?: Knex.Transaction): Promise<boolean>;
}

export const RELATIONSHIPS = ['parent', 'guardian', 'caregiver', 'other'] as const;
export type Relationship = (typeof RELATIONSHIPS)[number];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function createAccountRepository(db: Knex, hasher: PasswordHasher): AccountRepository {
  return {
    async create(input, trx) {
      const passwordHash = await hasher.hash(input.password);
      try {
        const [row] = await (trx ?? db)('accounts')
          .insert({
            username: input.username,
            role: input.role,
            display_name: input.displayName ?? null,
            email: input.email ?? null,
            fhir_patient_id: input.role === 'patient' ? input.fhirId : null,
            fhir_practitioner_id: input.role === 'practitioner' ? input.fhirId : null,
            password_hash: passwordHash,
          })
          .returning(PUBLIC_COLUMNS as unknown as string[]);
        return toAccount(row);
      } catch (err) {
        if ((err as { code?: string }).code === '23505') throw new UsernameTakenError(`username "${input.username}" is already taken`);
        throw err;
      }
    },
    async findById(id) {
      if (!UUID.test(id)) return undefined;
      const row = await db('accounts').select(PUBLIC_COLUMNS).where({ id }).first();
      return row ? toAccount(row) : undefined;
    },
    async findByUsername(username) {
      const row = await db('accounts').select(PUBLIC_COLUMNS).whereRaw('lower(username) = lower(?)', [username.slice(0, 64)]).first();
      return row ? toAccount(row) : undefined;
    },
    async verifyCredentials(username, password) {
      const row: AccountRow | undefined = await db('accounts')
        .whereRaw('lower(username) = lower(?)', [username])
        .first();
      const ok = await hasher.verify(row?.password_hash, password);
      if (!ok || !row || row.disabled_at) return undefined;
      return toAccount(row);
    },
    async list({ limit, after }) {
      const q = db('accounts').select(PUBLIC_COLUMNS).orderBy('username').limit(limit);
      if (after) q.where('username', '>', after);
      return (await q).map(toAccount);
    },
    async search({ q, role, disabled, limit, after }) {
      const query = db('accounts').select(PUBLIC_COLUMNS).orderBy('username').limit(limit);
      if (role) query.where({ role });
      if (disabled === true) query.whereNotNull('disabled_at');
      if (disabled === false) query.whereNull('disabled_at');
      if (after) query.where('username', '>', after);
      if (q) {
        const pattern = `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
        query.where((w) =>
          w.whereILike('username', pattern).orWhereILike('display_name', pattern).orWhereILike('email', pattern)
            .orWhereILike('fhir_patient_id', pattern).orWhereILike('fhir_practitioner_id', pattern),
        );
      }
      return (await query).map(toAccount);
    },
    async searchPatients(query, limit) {
      const pattern = `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      const rows = await db('accounts')
        .select(PUBLIC_COLUMNS)
        .where({ role: 'patient' })
        .whereNull('disabled_at')
        .andWhere((q) => q.whereILike('username', pattern).orWhereILike('display_name', pattern).orWhere('fhir_patient_id', query))
        .orderBy('display_name')
        .orderBy('username')
        .limit(limit);
      return rows.map(toAccount);
    },
    async findPatientByFhirId(fhirPatientId) {
      const row = await db('accounts').select(PUBLIC_COLUMNS).where({ role: 'patient', fhir_patient_id: fhirPatientId }).whereNull('disabled_at').first();
      return row ? toAccount(row) : undefined;
    },
    async representedPatients(accountId, limit) {
      if (!UUID.test(accountId)) return [];
      const rows = await db('representatives as r')
        .join('accounts as a', 'a.id', 'r.patient_account_id')
        .where('r.representative_account_id', accountId)
        .where('a.role', 'patient')
        .whereNull('a.disabled_at')
        .orderBy('a.display_name')
        .orderBy('a.username')
        .limit(limit)
        .select(...PUBLIC_COLUMNS.map((c) => `a.${c}`), 'r.relationship');
      return rows.map((r: AccountRow & { relationship: Relationship }) => ({ account: toAccount(r), relationship: r.relationship }));
    },
    async mayActFor(accountId, fhirPatientId) {
      if (!UUID.test(accountId)) return false;
      const own = await db('accounts').where({ id: accountId, role: 'patient', fhir_patient_id: fhirPatientId }).whereNull('disabled_at').first('id');
      if (own) return true;
      const link = await db('representatives as r')
        .join('accounts as a', 'a.id', 'r.patient_account_id')
        .where('r.representative_account_id', accountId)
        .where({ 'a.fhir_patient_id': fhirPatientId, 'a.role': 'patient' })
        .whereNull('a.disabled_at')
        .first('a.id');
      return Boolean(link);
    },
    async addRepresentative(representativeId, patientId, relationship) {
      await db('representatives')
        .insert({ representative_account_id: representativeId, patient_account_id: patientId, relationship })
        .onConflict(['representative_account_id', 'patient_account_id'])
        .merge(['relationship']);
    },
    async removeRepresentative(representativeId, patientId, trx) {
      if (!UUID.test(representativeId) || !UUID.test(patientId)) return false;
      const removed = await trx('representatives').where({ representative_account_id: representativeId, patient_account_id: patientId }).delete(['patient_account_id']);
      return removed.length > 0;
    },
    async representsNow(representativeId, patientId, trx) {
      if (!UUID.test(representativeId) || !UUID.test(patientId)) return false;
      const query = standingRepresentations(trx ?? db).where({ 'r.representative_account_id': representativeId, 'r.patient_account_id': patientId });
      if (trx) query.forShare('r');
      return Boolean(await query.first('r.patient_account_id'));
    },
    async findForUpdate(id, trx) {
      if (!UUID.test(id)) return undefined;
      const row = await trx('accounts').select(PUBLIC_COLUMNS).where({ id }).forUpdate().first();
      return row ? toAccount(row) : undefined;
    },
    async setDisabled(id, disabled, trx) {
      await trx('accounts').where({ id }).update({ disabled_at: disabled ? trx.fn.now() : null, updated_at: trx.fn.now() });
    },
    async linkFhir(id, fhirId, trx) {
      const row = await trx('accounts').where({ id }).first('role');
      if (row?.role === 'patient') await trx('accounts').where({ id }).update({ fhir_patient_id: fhirId, updated_at: trx.fn.now() });
      else if (row?.role === 'practitioner') await trx('accounts').where({ id }).update({ fhir_practitioner_id: fhirId, updated_at: trx.fn.now() });
      else throw new Error('only patient and practitioner accounts are linked to FHIR resources');
    },
    async addNotice(id, message, trx) {
      await trx('account_notices').insert({ account_id: id, message });
    },
    async takeNotices(id) {
      if (!UUID.test(id)) return [];
      const rows: { message: string }[] = await db('account_notices')
        .where({ account_id: id })
        .whereNull('seen_at')
        .update({ seen_at: db.fn.now() }, ['message', 'id']);
      return rows.map((r) => r.message);
    },
    async countByRole(role) {
      const rows = await db('accounts').where({ role }).count<{ count: string }[]>({ count: '*' });
      return Number(rows[0]?.count ?? 0);
    },
  };
}
