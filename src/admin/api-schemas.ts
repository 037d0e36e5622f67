/**
 * What the admin API accepts, as zod schemas: request bodies refuse unknown fields (no mass
 * assignment of status, secrets or ids), lists are capped, and the OpenAPI document is generated
 * from these same schemas.
 */
import { z } from 'zod';
import { fhirId, newAccountSchema } from '../accounts/index.ts';
import {
  CLIENT_CATEGORIES,
  CLIENT_SORTS,
  CLIENT_STATUSES,
  MAX_INITIAL_TOKEN_TTL,
  MAX_SECRET_GRACE,
  clientMetadataSchema,
} from '../clients/index.ts';
import { MAX_AUDIT_PAGE } from '../audit/index.ts';

/** Hard cap on one page of clients, whatever a caller asks for. */
export const MAX_CLIENT_PAGE = 100;
/** Hard cap on one inventory export. */
export const MAX_EXPORT_ROWS = 10_000;

const adminFields = {
  category: z.enum(CLIENT_CATEGORIES).optional().describe('internal, external or third-party (default third-party)'),
  verified: z.boolean().optional().describe('whether an admin checked who is behind the app'),
};

/** A new client: RFC 7591 metadata plus the admin-only category and verified flag. */
export const clientCreateBody = clientMetadataSchema.safeExtend(adminFields);

/**
 * A partial update: any metadata field (null removes an optional one) and the admin fields. The
 * merged metadata is validated whole by the registry before anything is written.
 */
export const clientPatchBody = z.strictObject({
  ...Object.fromEntries(
    Object.entries(clientMetadataSchema.shape).map(([key, field]) => {
      const inner = field instanceof z.ZodDefault ? (field.unwrap() as z.ZodType) : field;
      const base = inner instanceof z.ZodOptional ? (inner.unwrap() as z.ZodType) : inner;
      return [key, key === 'client_name' ? base.optional() : base.nullable().optional()];
    }),
  ),
  ...adminFields,
});

export const clientIdParams = z.strictObject({ client_id: z.string().min(1).max(128) });
export const accountIdParams = z.strictObject({ account_id: z.string().min(1).max(64) });

const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

export const clientListQuery = z.strictObject({
  status: z.enum(CLIENT_STATUSES).optional(),
  category: z.enum(CLIENT_CATEGORIES).optional(),
  verified: bool.optional(),
  origin: z.enum(['admin', 'dcr', 'system']).optional(),
  q: z.string().max(100).optional().describe('part of the name, owner or client id'),
  stale: z.literal('true').optional().describe('only clients unused for CLIENT_STALE_DAYS days'),
  sort: z.enum(CLIENT_SORTS).default('name'),
  order: z.enum(['asc', 'desc']).default('asc'),
  limit: z.coerce.number().int().min(1).max(MAX_CLIENT_PAGE).default(50),
  cursor: z.string().max(500).optional(),
});

export const exportQuery = clientListQuery.omit({ limit: true, cursor: true }).extend({
  format: z.enum(['json', 'csv']).default('json'),
});

export const lifecycleBody = z.strictObject({
  reason: z.string().trim().min(1).max(500).optional().describe('why, for the audit trail'),
});

export const rotateSecretBody = z.strictObject({
  grace_seconds: z.number().int().min(0).max(MAX_SECRET_GRACE).default(0).describe('how long the old secret keeps working'),
});

export const accountCreateBody = z.strictObject({
  username: newAccountSchema.shape.username,
  password: newAccountSchema.shape.password,
  role: newAccountSchema.shape.role,
  display_name: newAccountSchema.shape.displayName,
  email: newAccountSchema.shape.email,
  fhir_id: fhirId.optional().describe('FHIR Patient id (patients) or Practitioner id (practitioners)'),
});

export const accountLinkBody = z.strictObject({ fhir_id: fhirId });

export const auditQuery = z.strictObject({
  actor: z.string().max(200).optional(),
  client_id: z.string().max(128).optional(),
  patient: z.string().max(64).optional(),
  type: z.string().max(100).optional().describe('an exact type, or a prefix ending in "." (login.)'),
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).default(50),
  cursor: z.string().max(200).optional(),
});

export const initialTokenBody = z.strictObject({
  expires_in: z.number().int().min(60).max(MAX_INITIAL_TOKEN_TTL).default(86400).describe('seconds until the token stops working'),
  note: z.string().trim().max(200).optional().describe('who it is for'),
});

export const emptyQuery = z.strictObject({});
