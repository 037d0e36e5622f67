/**
 * Accounts: who can log in, with which role, and which FHIR resource they are (`fhirUser`).
 */
import { z } from 'zod';

export const ROLES = ['patient', 'practitioner', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** FHIR R4 `id` datatype: 1-64 of [A-Za-z0-9-.]. */
export const fhirId = z.string().regex(/^[A-Za-z0-9\-.]{1,64}$/, 'must be a FHIR id (1-64 letters, digits, "-" or ".")');

export const username = z
  .string()
  .min(3, 'must be at least 3 characters')
  .max(64, 'must be at most 64 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'may contain letters, digits and . _ @ - and must start with a letter or digit');

/** NIST SP 800-63B: long passphrases allowed, a generous cap so hashing cannot be abused. */
export const password = z.string().min(12, 'must be at least 12 characters').max(256, 'must be at most 256 characters');

export const newAccountSchema = z
  .object({
    username,
    password,
    role: z.enum(ROLES),
    displayName: z.string().trim().min(1).max(200).optional(),
    email: z.email().max(320).optional(),
    fhirId: fhirId.optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.role !== 'admin' && !a.fhirId) {
      ctx.addIssue({
        code: 'custom',
        path: ['fhirId'],
        message: `a ${a.role} account must be linked to a FHIR ${a.role === 'patient' ? 'Patient' : 'Practitioner'} id`,
      });
    }
    if (a.role === 'admin' && a.fhirId) {
      ctx.addIssue({ code: 'custom', path: ['fhirId'], message: 'an admin account is not linked to a FHIR resource' });
    }
  });

export type NewAccount = z.infer<typeof newAccountSchema>;

export interface Account {
  id: string;
  username: string;
  role: Role;
  displayName: string | null;
  email: string | null;
  fhirPatientId: string | null;
  fhirPractitionerId: string | null;
  disabled: boolean;
  createdAt: Date;
}

/** The FHIR resource reference for `fhirUser`, relative (`Patient/123`); absolute URLs are built by SMART. */
export function fhirUserReference(account: Account): string | undefined {
  if (account.fhirPatientId) return `Patient/${account.fhirPatientId}`;
  if (account.fhirPractitionerId) return `Practitioner/${account.fhirPractitionerId}`;
  return undefined;
}
