/**
 * Consent changes, each in one transaction with its effect on the app's grants and its audit
 * event: approving at authorization, narrowing or changing limits from the portal, revoking,
 * and privacy preferences. Widening what an app sees of sensitive data needs a strong, recent
 * login; the caller says whether it has one.
 */
import type { Knex } from 'knex';
import type { AuditTrail } from '../audit/index.ts';
import { effectiveStatus, type Consent } from './consent-record.ts';
import { widensSensitiveAccess, type VisibilityLimits } from './visibility.ts';
import { IDENTITY_SCOPES } from './scope-choices.ts';
import { ConsentError } from './consent-errors.ts';

export { ConsentError, type ConsentErrorKind } from './consent-errors.ts';
import { CLIENT_CATEGORIES, type ConsentRepository, type PrivacyPreferences } from './repository.ts';

/**
 * The grants a consent covers: those of the acting account for the app, about this patient (a
 * representative's grants for other patients, or their own, are not touched).
 */
export interface ConsentedGrants {
  accountId: string;
  clientId: string;
  patientFhirId: string | null;
  /** The patient acts for themselves: their grants without a patient context count too. */
  own: boolean;
}

/** What a consent change does to the app's grants (implemented next to the token storage). */
export interface GrantPort {
  /** Removes the grants, with every code and token issued under them. */
  revokeAll(trx: Knex.Transaction, grants: ConsentedGrants): Promise<number>;
  /**
   * Removes every grant `accountId` holds with this patient as launch context, whatever the app,
   * with every code and token issued under them; returns how many grants went.
   */
  revokeForPatient(trx: Knex.Transaction, accountId: string, patientFhirId: string): Promise<number>;
  /** Keeps only the scopes in `allowed` in the grants. */
  narrowAll(trx: Knex.Transaction, grants: ConsentedGrants, allowed: ReadonlySet<string>): Promise<void>;
}

const coveredGrants = (c: Consent): ConsentedGrants => ({
  accountId: c.actorAccountId,
  clientId: c.clientId,
  patientFhirId: c.patientFhirId,
  own: c.actorAccountId === c.patientAccountId,
});

/** Who is making a change, how they signed in, and from where. */
export interface ChangeContext {
  accountId: string;
  acr: string | null;
  ip?: string | undefined;
  /** A multi-factor login recent enough for widening access to sensitive data. */
  strongRecentLogin: boolean;
}

/** Who may act for whom (implemented by the account repository). */
export interface RepresentationPort {
  /** Whether the representative acts for the patient now; the answer holds until `trx` ends. */
  representsNow(representativeId: string, patientAccountId: string, trx: Knex.Transaction): Promise<boolean>;
  /** Deletes the link in `trx`; returns whether there was one. */
  removeRepresentative(representativeId: string, patientAccountId: string, trx: Knex.Transaction): Promise<boolean>;
}

export interface ConsentServiceDeps {
  db: Knex;
  repo: ConsentRepository;
  audit: AuditTrail;
  grants: GrantPort;
  representatives: RepresentationPort;
  clock: () => Date;
}

/** An operator ending a representation (the CLI, an admin): named in the audit trail. */
export interface OperatorContext {
  actor: string;
  ip?: string | undefined;
}

/** What `endRepresentation` took away. */
export interface RepresentationEnded {
  consentsRevoked: number;
  grantsRevoked: number;
}

export interface Approval {
  patientAccountId: string;
  patientFhirId: string | null;
  clientId: string;
  scopes: string[];
  limits: VisibilityLimits;
  expiresAt: Date | null;
}

export interface ConsentChangeRequest {
  /** The scopes to keep: a subset of the current ones. */
  scopes?: string[] | undefined;
  limits?: VisibilityLimits | undefined;
  /** A new expiry, no later than the current one. */
  expiresAt?: Date | undefined;
}

const NO_LONGER_REPRESENTS = 'you no longer act for this patient, so nothing was changed';

export function createConsentService(deps: ConsentServiceDeps) {
  const { repo, audit, clock } = deps;

  /**
   * A representative's authority is checked inside the change's transaction, not when the form
   * was shown: a page opened before the representation ended must not write after it.
   */
  async function mayActFor(accountId: string, patientAccountId: string, trx: Knex.Transaction): Promise<void> {
    if (accountId === patientAccountId) return;
    if (!(await deps.representatives.representsNow(accountId, patientAccountId, trx))) throw new ConsentError('forbidden', NO_LONGER_REPRESENTS);
  }

  async function owned(consentId: string, accountId: string, trx: Knex.Transaction): Promise<Consent> {
    const consent = await repo.find(consentId, trx);
    // Another patient's consent is reported exactly like one that does not exist.
    if (!consent || (consent.patientAccountId !== accountId && consent.actorAccountId !== accountId)) {
      throw new ConsentError('not_found', 'there is no such app connection');
    }
    await mayActFor(accountId, consent.patientAccountId, trx);
    return consent;
  }

  /** Appends the revoked version, removes the app's grants for it and audits, all in `trx`. */
  async function revokeIn(
    trx: Knex.Transaction,
    consent: Consent,
    change: { changedBy: string; acr: string | null },
    who: OperatorContext,
    details: Record<string, string | number | boolean> = {},
  ): Promise<Consent> {
    const next = await repo.append(consent, { ...consent.current, status: 'revoked', acr: change.acr, changedBy: change.changedBy, change: 'revoked', at: clock() }, trx);
    const grants = await deps.grants.revokeAll(trx, coveredGrants(consent));
    await audit.record(
      {
        type: 'consent.revoked',
        outcome: 'success',
        actor: who.actor,
        clientId: consent.clientId,
        patientId: consent.patientFhirId ?? undefined,
        ip: who.ip,
        details: { consent_id: consent.id, version: next.current.version, grants, ...details },
      },
      trx,
    );
    return next;
  }

  const event = (consent: Consent, by: ChangeContext) => ({
    actor: by.accountId,
    clientId: consent.clientId,
    patientId: consent.patientFhirId ?? undefined,
    ip: by.ip,
  });

  return {
    /** Records what the patient approved on the consent page; scopes add to an active consent's. */
    async approve(input: Approval, by: ChangeContext): Promise<Consent> {
      const at = clock();
      if (input.expiresAt && input.expiresAt.getTime() <= at.getTime()) throw new ConsentError('invalid', 'the expiry must be in the future');
      return deps.db.transaction(async (trx) => {
        await mayActFor(by.accountId, input.patientAccountId, trx);
        const existing = await repo.findFor(input.patientAccountId, input.clientId, by.accountId, trx);
        const active = existing && effectiveStatus(existing.current, at) === 'active' ? existing.current : undefined;
        const keep = active ? active.scopes : [];
        // Approving again with looser limits is a widening like any other, and so is reconnecting
        // after a revocation or expiry: the limits last set stand until a strong login loosens
        // them, or revoking (which needs none) would be a way round the step-up.
        if (existing && widensSensitiveAccess(existing.current.limits, input.limits) && !by.strongRecentLogin) {
          throw new ConsentError('step_up_required', 'showing the app more than before needs a recent sign-in with two-step verification');
        }
        const consent = await repo.append(
          { patientAccountId: input.patientAccountId, patientFhirId: input.patientFhirId, clientId: input.clientId, actorAccountId: by.accountId },
          {
            status: 'active',
            scopes: [...new Set([...keep, ...input.scopes])],
            limits: input.limits,
            expiresAt: input.expiresAt,
            acr: by.acr,
            changedBy: by.accountId,
            change: keep.length ? 'extended' : 'granted',
            at,
          },
          trx,
        );
        await audit.record(
          {
            type: 'consent.granted',
            outcome: 'success',
            ...event(consent, by),
            details: { consent_id: consent.id, version: consent.current.version, scopes: consent.current.scopes.join(' '), hidden: consent.current.limits.hiddenLabels.join(' ') },
          },
          trx,
        );
        return consent;
      });
    },

    /** Narrows scopes, changes limits or shortens the expiry; the app's grants follow at once. */
    async change(consentId: string, request: ConsentChangeRequest, by: ChangeContext): Promise<Consent> {
      const at = clock();
      return deps.db.transaction(async (trx) => {
        const consent = await owned(consentId, by.accountId, trx);
        const current = consent.current;
        if (effectiveStatus(current, at) !== 'active') throw new ConsentError('not_active', 'this app connection has ended; connect the app again to grant access');
        const scopes = request.scopes ?? current.scopes;
        const held = new Set(current.scopes);
        const extra = scopes.filter((s) => !held.has(s));
        if (extra.length) throw new ConsentError('invalid', `only scopes already granted can be kept; "${extra[0]!.slice(0, 200)}" was not granted`);
        // Identity scopes stay with the connection; removing them would not take away any data.
        const kept = [...new Set([...current.scopes.filter((s) => IDENTITY_SCOPES.has(s)), ...scopes])];
        const limits = request.limits ?? current.limits;
        if (widensSensitiveAccess(current.limits, limits) && !by.strongRecentLogin) {
          throw new ConsentError('step_up_required', 'sharing sensitive information needs a recent sign-in with two-step verification');
        }
        const expiresAt = request.expiresAt ?? current.expiresAt;
        if (request.expiresAt) {
          if (request.expiresAt.getTime() <= at.getTime()) throw new ConsentError('invalid', 'the expiry must be in the future');
          if (current.expiresAt && request.expiresAt.getTime() > current.expiresAt.getTime()) {
            throw new ConsentError('invalid', 'the expiry can only be brought forward here; connect the app again to extend it');
          }
        }
        const narrowed = kept.length < current.scopes.length;
        const next = await repo.append(
          consent,
          { status: 'active', scopes: kept, limits, expiresAt, acr: by.acr, changedBy: by.accountId, change: narrowed ? 'narrowed' : 'limits_changed', at },
          trx,
        );
        if (narrowed) await deps.grants.narrowAll(trx, coveredGrants(consent), new Set(kept));
        await audit.record(
          {
            type: 'consent.changed',
            outcome: 'success',
            ...event(consent, by),
            details: { consent_id: consent.id, version: next.current.version, scopes: kept.join(' '), hidden: limits.hiddenLabels.join(' ') },
          },
          trx,
        );
        return next;
      });
    },

    /** Ends the connection: every grant, code and token of the app for this patient goes at once. */
    async revoke(consentId: string, by: ChangeContext): Promise<Consent> {
      return deps.db.transaction(async (trx) => {
        const consent = await owned(consentId, by.accountId, trx);
        if (consent.current.status === 'revoked') throw new ConsentError('not_active', 'this app connection was already revoked');
        return revokeIn(trx, consent, { changedBy: by.accountId, acr: by.acr }, { actor: by.accountId, ip: by.ip });
      });
    },

    /**
     * Ends a representation in one transaction: deletes the link, revokes every consent the
     * representative gave for the patient (as the patient revoking them would), removes every
     * grant, code and token the representative holds with the patient as launch context (for
     * any app), and records `account.representative_removed`. The patient's own consents and
     * the representative's for their own record are not touched. Returns undefined when there
     * was no such representation (and nothing was written).
     */
    async endRepresentation(
      representative: { id: string },
      patient: { id: string; fhirPatientId: string | null },
      by: OperatorContext,
    ): Promise<RepresentationEnded | undefined> {
      return deps.db.transaction(async (trx) => {
        if (!(await deps.representatives.removeRepresentative(representative.id, patient.id, trx))) return undefined;
        let consentsRevoked = 0;
        for (const consent of await repo.givenFor(representative.id, patient.id, trx)) {
          if (consent.current.status === 'revoked') continue;
          // changed_by names an account: the representative whose consent ended; the audit
          // events name the operator who ended it.
          await revokeIn(trx, consent, { changedBy: representative.id, acr: null }, by, { reason: 'representation_ended' });
          consentsRevoked += 1;
        }
        // Grants without a consent of their own (first-party apps) carry the patient context too.
        const grantsRevoked = patient.fhirPatientId ? await deps.grants.revokeForPatient(trx, representative.id, patient.fhirPatientId) : 0;
        await audit.record(
          {
            type: 'account.representative_removed',
            outcome: 'success',
            actor: by.actor,
            ip: by.ip,
            patientId: patient.fhirPatientId ?? undefined,
            details: { representative: representative.id, consents_revoked: consentsRevoked, grants_revoked: grantsRevoked },
          },
          trx,
        );
        return { consentsRevoked, grantsRevoked };
      });
    },

    /** Saves the patient's defaults for new consents; hiding less needs a strong, recent login. */
    async setPreferences(prefs: PrivacyPreferences, by: ChangeContext): Promise<void> {
      const current = await repo.preferences(by.accountId);
      const widens = CLIENT_CATEGORIES.some((c) => current[c].some((l) => !prefs[c].includes(l)));
      if (widens && !by.strongRecentLogin) {
        throw new ConsentError('step_up_required', 'sharing sensitive information needs a recent sign-in with two-step verification');
      }
      await deps.db.transaction(async (trx) => {
        await repo.setPreferences(by.accountId, prefs, trx);
        await audit.record(
          {
            type: 'consent.preferences_changed',
            outcome: 'success',
            actor: by.accountId,
            ip: by.ip,
            details: Object.fromEntries(CLIENT_CATEGORIES.map((c) => [`hidden_${c}`, prefs[c].join(' ')])),
          },
          trx,
        );
      });
    },

    /**
     * The consent behind an account's grant for an app, with its status now: about the grant's
     * context patient when it has one, else about the account's own record.
     */
    async forGrant(accountId: string, clientId: string, patientFhirId?: string | null) {
      const consent = await repo.findByActor(accountId, clientId, patientFhirId ?? null);
      return consent ? { consent, status: effectiveStatus(consent.current, clock()) } : undefined;
    },

    clock,
    repo,
  };
}

export type ConsentService = ReturnType<typeof createConsentService>;
