/**
 * What the patient chooses from on the consent page: every requested scope as a checkbox
 * (identity scopes excepted: they are what signing in means), and for broad Observation and
 * Condition access the granular category sub-scopes (SMART App Launch 2.2, "Finer-grained
 * resource constraints using search parameters"), so a patient can grant lab results without
 * vital signs. Granting some sub-scopes replaces the broad scope; it never travels with them.
 */
import { describeScope, isResourceScope, parseResourceScope, toV2, type ResourceScope } from '../smart/index.ts';

/** Scopes that identify the user or the launch; approving the request means approving these. */
export const IDENTITY_SCOPES = new Set(['openid', 'fhirUser', 'profile', 'email', 'launch', 'launch/patient', 'launch/encounter']);

interface Category {
  system: string;
  code: string;
  label: string;
}

const OBSERVATION = 'http://terminology.hl7.org/CodeSystem/observation-category';
const US_CORE_CATEGORY = 'http://hl7.org/fhir/us/core/CodeSystem/us-core-category';
const CONDITION = 'http://terminology.hl7.org/CodeSystem/condition-category';
const US_CORE_CONDITION = 'http://hl7.org/fhir/us/core/CodeSystem/condition-category';

const CATEGORIES: Record<string, Category[]> = {
  Observation: [
    { system: OBSERVATION, code: 'laboratory', label: 'Lab results' },
    { system: OBSERVATION, code: 'vital-signs', label: 'Vital signs' },
    { system: OBSERVATION, code: 'social-history', label: 'Social history' },
    { system: US_CORE_CATEGORY, code: 'sdoh', label: 'Social needs (housing, food, transport)' },
    { system: OBSERVATION, code: 'survey', label: 'Questionnaire answers' },
    { system: US_CORE_CATEGORY, code: 'clinical-test', label: 'Clinical tests' },
  ],
  Condition: [
    { system: CONDITION, code: 'problem-list-item', label: 'Problem list' },
    { system: CONDITION, code: 'encounter-diagnosis', label: 'Diagnoses from visits' },
    { system: US_CORE_CONDITION, code: 'health-concern', label: 'Health concerns' },
  ],
};

export interface SubScopeChoice {
  scope: string;
  label: string;
}

export interface ScopeChoice {
  scope: string;
  description: string;
  /** Identity scopes come with approval and have no checkbox. */
  required: boolean;
  /** Granular alternatives to a broad scope: grant only some categories. */
  subScopes: SubScopeChoice[];
}

export class ScopeChoiceError extends Error {
  override name = 'ScopeChoiceError';
}

function subScopesOf(scope: ResourceScope): SubScopeChoice[] {
  const categories = CATEGORIES[scope.resourceType];
  if (!categories || scope.query.length > 0) return [];
  // Category filters narrow reads and searches; they are offered in the v2 form the grammar needs.
  if (!scope.permissions.has('r') && !scope.permissions.has('s')) return [];
  return categories.map((c) => ({
    scope: toV2({ ...scope, query: [['category', `${c.system}|${c.code}`]] }),
    label: c.label,
  }));
}

/** The choices the consent page shows for `requested` scopes, in the order asked. */
export function scopeChoices(requested: readonly string[]): ScopeChoice[] {
  return requested.map((scope) => ({
    scope,
    description: describeScope(scope),
    required: IDENTITY_SCOPES.has(scope),
    subScopes: isResourceScope(scope) ? subScopesOf(parseResourceScope(scope)) : [],
  }));
}

/**
 * The scopes the patient granted, from the checkboxes they submitted. Identity scopes are always
 * in; a broad scope that is checked wins over its sub-scopes; otherwise the checked sub-scopes
 * replace it. Anything not offered is refused rather than ignored.
 */
export function chosenScopes(requested: readonly string[], submitted: readonly string[]): string[] {
  const choices = scopeChoices(requested);
  const offered = new Set(choices.flatMap((c) => [c.scope, ...c.subScopes.map((s) => s.scope)]));
  const picked = new Set(submitted);
  for (const value of picked) {
    if (!offered.has(value)) throw new ScopeChoiceError(`"${value.slice(0, 200)}" was not one of the choices offered`);
  }
  const granted: string[] = [];
  for (const choice of choices) {
    if (choice.required || picked.has(choice.scope)) {
      granted.push(choice.scope);
      continue;
    }
    for (const sub of choice.subScopes) if (picked.has(sub.scope) && !granted.includes(sub.scope)) granted.push(sub.scope);
  }
  return granted;
}
