/**
 * SMART launch context (App Launch 2.2, "Launch context arrives with your access_token"): what an
 * EHR hands an app at launch, or what a standalone launch establishes, and what every token of
 * the resulting grant carries.
 */
import { z } from 'zod';

const fhirId = z.string().regex(/^[A-Za-z0-9\-.]{1,64}$/, 'must be a FHIR id');

/** fhirContext items: a reference (`Type/id`), a canonical, or an identifier, with an optional role. */
const fhirContextItem = z
  .object({
    reference: z.string().regex(/^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/, 'must be a relative reference like Type/id').optional(),
    canonical: z.string().url().max(2000).optional(),
    identifier: z.object({ system: z.string().max(2000).optional(), value: z.string().max(200) }).strict().optional(),
    type: z.string().regex(/^[A-Z][A-Za-z]+$/).optional(),
    role: z.string().url().max(2000).optional(),
  })
  .strict()
  .refine((i) => [i.reference, i.canonical, i.identifier].filter(Boolean).length === 1, 'needs exactly one of reference, canonical or identifier');

export const launchContextSchema = z
  .object({
    patient: fhirId.optional(),
    encounter: fhirId.optional(),
    fhirContext: z.array(fhirContextItem).max(20).optional(),
    intent: z.string().min(1).max(200).optional(),
    need_patient_banner: z.boolean().optional(),
    smart_style_url: z.url({ protocol: /^https?$/ }).max(2000).optional(),
    tenant: z.string().min(1).max(200).optional(),
  })
  .strict();

export type LaunchContext = z.infer<typeof launchContextSchema>;

/** The launch-context members of a token response, in SMART's names. */
export const CONTEXT_PARAMETERS = [
  'patient',
  'encounter',
  'fhirContext',
  'intent',
  'need_patient_banner',
  'smart_style_url',
  'tenant',
] as const;

/** Merges contexts; later ones fill in what earlier ones lack but never override them. */
export function mergeContexts(...contexts: Array<LaunchContext | undefined>): LaunchContext {
  const out: Record<string, unknown> = {};
  for (const c of contexts) {
    if (!c) continue;
    for (const [k, v] of Object.entries(c)) if (v !== undefined && out[k] === undefined) out[k] = v;
  }
  return out as LaunchContext;
}
