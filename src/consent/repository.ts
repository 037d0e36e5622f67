/**
 * Consent storage: consents (who, which app) and their append-only versions, and each
 * patient's privacy preferences. Writes take the caller's transaction, so a consent change, the
 * grants it narrows or revokes and its audit event commit together.
 */
import type { Knex } from 'knex';
import { visibilityLimitsSchema, type VisibilityLimits } from './visibility.ts';
import type { Consent, ConsentChange, ConsentVersion } from './consent-record.ts';
import { SENSITIVE_LABELS, sortLabels, type SensitiveLabel } from './security-labels.ts';
import { ConsentError } from './consent-errors.ts';
import { standingRepresentations } from '../accounts/index.ts';

export const CLIENT_CATEGORIES = ['internal', 'external', 'third-party'] as const;
export type ClientCategory = (typeof CLIENT_CATEGORIES)[number];

/** Sensitive categories hidden by default from each kind of app. */
export type PrivacyPreferences = Record<ClientCategory, SensitiveLabel[]>;

/** Hide everything sensitive from every app until the patient decides otherwise. */
export const DEFAULT_PREFERENCES: PrivacyPreferences = {
  internal: [...SENSITIVE_LABELS],
  external: [...SENSITIVE_LABELS],
  'third-party': [...SENSITIVE_LABELS],
};

interface ConsentRow {
  id: string;
  patient_account_id: string;
  patient_fhir_id: string | null;
  client_id: string;
  actor_account_id: string;
  created_at: Date;
}

interface VersionRow {
  consent_id: string;
  version: number;
  status: 'active' | 'revoked';
  scopes: string;
  limits: unknown;
  expires_at: Date | null;
  acr: string | null;
  changed_by: string;
  change: ConsentChange;
  created_at: Date;
}

const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

function toVersion(r: VersionRow): ConsentVersion {
  return {
    version: Number(r.version),
    status: r.status,
    scopes: r.scopes.split(' ').filter(Boolean),
    limits: visibilityLimitsSchema.parse(json(r.limits)),
    expiresAt: r.expires_at ? new Date(r.expires_at) : null,
    acr: r.acr,
    changedBy: r.changed_by,
    change: r.change,
    createdAt: new Date(r.created_at),
  };
}

function toConsent(c: ConsentRow, v: VersionRow): Consent {
  return {
    id: c.id,
    patientAccountId: c.patient_account_id,
    patientFhirId: c.patient_fhir_id,
    clientId: c.client_id,
    actorAccountId: c.actor_account_id,
    createdAt: new Date(c.created_at),
    current: toVersion(v),
  };
}

export interface NewVersion {
  status: 'active' | 'revoked';
  scopes: string[];
  limits: VisibilityLimits;
  expiresAt: Date | null;
  acr: string | null;
  changedBy: string;
  change: ConsentChange;
  at: Date;
}

export interface ConsentRepository {
  find(id: string, trx?: Knex.Transaction): Promise<Consent | undefined>;
  /** The consent of a patient (acting for themselves or through `actor`) for an app. */
  findFor(patientAccountId: string, clientId: string, actorAccountId: string, trx?: Knex.Transaction): Promise<Consent | undefined>;
  /** The consent an account gave an app about a patient (by FHIR id), or about themselves when null. */
  findByActor(actorAccountId: string, clientId: string, patientFhirId: string | null): Promise<Consent | undefined>;
  /** The consents about a patient, and those they gave as a representative while the representation holds; most recently changed first, at most `limit`. */
  listForPatient(patientAccountId: string, limit: number): Promise<Consent[]>;
  /** Every consent `actorAccountId` gave about another patient's record (any app), for ending a representation. */
  givenFor(actorAccountId: string, patientAccountId: string, trx: Knex.Transaction): Promise<Consent[]>;
  versions(consentId: string, limit: number): Promise<ConsentVersion[]>;
  version(consentId: string, version: number): Promise<ConsentVersion | undefined>;
  /** Creates the consent row if needed and appends a version; fails if another change won the race. */
  append(
    key: { patientAccountId: string; patientFhirId: string | null; clientId: string; actorAccountId: string },
    next: NewVersion,
    trx: Knex.Transaction,
  ): Promise<Consent>;
  preferences(accountId: string): Promise<PrivacyPreferences>;
  setPreferences(accountId: string, prefs: PrivacyPreferences, trx: Knex.Transaction): Promise<void>;
  /** How many patients have an active consent for each app. */
  patientCounts(clientIds: string[], now: Date): Promise<Map<string, number>>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function createConsentRepository(db: Knex): ConsentRepository {
  async function latest(trx: Knex | Knex.Transaction, consentId: string): Promise<VersionRow | undefined> {
    return trx('consent_versions').where({ consent_id: consentId }).orderBy('version', 'desc').first();
  }

  async function withCurrent(trx: Knex | Knex.Transaction, row: ConsentRow | undefined): Promise<Consent | undefined> {
    if (!row) return undefined;
    const v = await latest(trx, row.id);
    return v ? toConsent(row, v) : undefined;
  }

  /**
   * A consent with its latest version in one query: token issuance and introspection check the
   * consent on every request, so this is one round trip rather than two.
   */
  async function oneWithCurrent(q: Knex | Knex.Transaction, where: (b: Knex.QueryBuilder) => void): Promise<Consent | undefined> {
    const builder = q('consents as c')
      .joinRaw('cross join lateral (select * from consent_versions cv where cv.consent_id = c.id order by cv.version desc limit 1) v')
      .first(
        'c.id', 'c.patient_account_id', 'c.patient_fhir_id', 'c.client_id', 'c.actor_account_id', 'c.created_at',
        'v.consent_id', 'v.version', 'v.status', 'v.scopes', 'v.limits', 'v.expires_at', 'v.acr', 'v.changed_by', 'v.change',
        'v.created_at as version_created_at',
      );
    where(builder);
    const row = (await builder) as (ConsentRow & Omit<VersionRow, 'created_at'> & { version_created_at: Date }) | undefined;
    return row ? toConsent(row, { ...row, created_at: row.version_created_at }) : undefined;
  }

  return {
    async find(id, trx) {
      if (!UUID.test(id)) return undefined;
      return oneWithCurrent(trx ?? db, (b) => b.where('c.id', id));
    },
    async findFor(patientAccountId, clientId, actorAccountId, trx) {
      const q = trx ?? db;
      return withCurrent(q, await q('consents').where({ patient_account_id: patientAccountId, client_id: clientId, actor_account_id: actorAccountId }).first());
    },
    async findByActor(actorAccountId, clientId, patientFhirId) {
      if (!UUID.test(actorAccountId)) return undefined;
      return oneWithCurrent(db, (b) => {
        b.where({ 'c.actor_account_id': actorAccountId, 'c.client_id': clientId });
        if (patientFhirId) b.where('c.patient_fhir_id', patientFhirId);
        else b.where('c.patient_account_id', actorAccountId);
      });
    },
    async listForPatient(patientAccountId, limit) {
      const rows: (ConsentRow & VersionRow)[] = await db('consents as c')
        .join(
          db('consent_versions').distinctOn('consent_id').orderBy([{ column: 'consent_id' }, { column: 'version', order: 'desc' }]).as('v'),
          'v.consent_id',
          'c.id',
        )
        // Consents given as a representative, only while the representation holds: once it ends,
        // what the app sees of that patient and how it uses it is no longer this person's to see.
        .where((q) =>
          q.where('c.patient_account_id', patientAccountId).orWhere((given) =>
            given.where('c.actor_account_id', patientAccountId).whereExists(
              standingRepresentations(db).whereRaw('r.representative_account_id = c.actor_account_id').whereRaw('r.patient_account_id = c.patient_account_id').select(db.raw('1')),
            ),
          ),
        )
        .orderBy('v.created_at', 'desc')
        .limit(limit)
        .select('c.*', 'v.*');
      return rows.map((r) => toConsent(r, r));
    },
    async givenFor(actorAccountId, patientAccountId, trx) {
      if (!UUID.test(actorAccountId) || !UUID.test(patientAccountId)) return [];
      const rows: ConsentRow[] = await trx('consents').where({ actor_account_id: actorAccountId, patient_account_id: patientAccountId }).orderBy('created_at');
      const found: Consent[] = [];
      for (const row of rows) {
        const consent = await withCurrent(trx, row);
        if (consent) found.push(consent);
      }
      return found;
    },
    async versions(consentId, limit) {
      if (!UUID.test(consentId)) return [];
      const rows: VersionRow[] = await db('consent_versions').where({ consent_id: consentId }).orderBy('version', 'desc').limit(limit);
      return rows.map(toVersion);
    },
    async version(consentId, version) {
      if (!UUID.test(consentId)) return undefined;
      const row: VersionRow | undefined = await db('consent_versions').where({ consent_id: consentId, version }).first();
      return row ? toVersion(row) : undefined;
    },
    async append(key, next, trx) {
      await trx('consents')
        .insert({
          patient_account_id: key.patientAccountId,
          patient_fhir_id: key.patientFhirId,
          client_id: key.clientId,
          actor_account_id: key.actorAccountId,
          created_at: next.at,
        })
        .onConflict(['patient_account_id', 'client_id', 'actor_account_id'])
        .ignore();
      const consent: ConsentRow = await trx('consents')
        .where({ patient_account_id: key.patientAccountId, client_id: key.clientId, actor_account_id: key.actorAccountId })
        .first();
      const previous = await latest(trx, consent.id);
      // The primary key (consent_id, version) makes a concurrent change fail instead of forking history.
      const [row] = await trx('consent_versions')
        .insert({
          consent_id: consent.id,
          version: (previous ? Number(previous.version) : 0) + 1,
          status: next.status,
          scopes: next.scopes.join(' '),
          limits: JSON.stringify(next.limits),
          expires_at: next.expiresAt,
          acr: next.acr,
          changed_by: next.changedBy,
          change: next.change,
          created_at: next.at,
        })
        .returning('*')
        .catch((err: { code?: string }) => {
          if (err.code === '23505') throw new ConsentError('conflict', 'this app connection was changed at the same moment; look at it again and retry');
          throw err;
        });
      return toConsent(consent, row);
    },
    async preferences(accountId) {
      const row = await db('privacy_preferences').where({ account_id: accountId }).first<{ hidden: unknown } | undefined>('hidden');
      if (!row) return structuredClone(DEFAULT_PREFERENCES);
      const stored = json<Partial<Record<ClientCategory, string[]>>>(row.hidden);
      return Object.fromEntries(
        CLIENT_CATEGORIES.map((c) => [c, sortLabels((stored[c] ?? DEFAULT_PREFERENCES[c]).filter((l): l is SensitiveLabel => (SENSITIVE_LABELS as readonly string[]).includes(l)))]),
      ) as PrivacyPreferences;
    },
    async setPreferences(accountId, prefs, trx) {
      await trx('privacy_preferences')
        .insert({ account_id: accountId, hidden: JSON.stringify(prefs), updated_at: trx.fn.now() })
        .onConflict('account_id')
        .merge(['hidden', 'updated_at']);
    },
    async patientCounts(clientIds, now) {
      if (clientIds.length === 0) return new Map();
      const rows: { client_id: string; patients: string | number }[] = await db('consents as c')
        .join(
          db('consent_versions').distinctOn('consent_id').orderBy([{ column: 'consent_id' }, { column: 'version', order: 'desc' }]).as('v'),
          'v.consent_id',
          'c.id',
        )
        .whereIn('c.client_id', clientIds)
        .where('v.status', 'active')
        .where((q) => q.whereNull('v.expires_at').orWhere('v.expires_at', '>', now))
        .groupBy('c.client_id')
        .select('c.client_id')
        .countDistinct({ patients: 'c.patient_account_id' });
      return new Map(rows.map((r) => [r.client_id, Number(r.patients)]));
    },
  };
}
