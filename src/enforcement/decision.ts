/**
 * The access decision for one FHIR request under one token: refuse it (and say why, with the
 * status and challenge to send), or let it through with the search rewritten to stay inside the
 * patient's compartment and the {@link AccessFilter} every returned resource must pass.
 * Scopes follow SMART App Launch 2.x ("SMART's scopes"), step-up follows RFC 9470. Pure code.
 */
import type { Permission, ResourceScope } from '../smart/scope-grammar.ts';
import { stepUpChallenge } from '../resource-server/step-up.ts';
import type { AccessFacts } from './access-token.ts';
import type { FhirInteraction, InteractionKind } from './fhir-request.ts';
import type { AccessFilter } from './resource-visibility.ts';
import { PATIENT_LINKS, PATIENT_SEARCH_ALIASES } from './resource-rules.ts';
import { confineToUser } from './scope-confinement.ts';

export interface EnforcementPolicy {
  /**
   * ACR values (RFC 9470) a token needs to create, update, patch or delete; empty for none.
   * Default: `urn:custos:acr:mfa`.
   */
  writeAcrValues?: readonly string[];
  /** Writes also need a login at most this many seconds old. */
  writeMaxAge?: number;
  /** Absolute base URLs under which `Patient/<id>` references count (the upstream server's). */
  bases?: readonly string[];
}

export const DEFAULT_WRITE_ACR = 'urn:custos:acr:mfa';

export type DenyCode = 'invalid' | 'not-supported' | 'forbidden' | 'security' | 'login' | 'not-found';

export interface Denial {
  effect: 'deny';
  status: 400 | 401 | 403 | 404 | 405;
  /** FHIR R4 IssueType for the OperationOutcome. */
  code: DenyCode;
  reason: string;
  /** RFC 6750 / RFC 9470 error for WWW-Authenticate. */
  error?: 'insufficient_scope' | 'insufficient_user_authentication';
  /** The full WWW-Authenticate value for a step-up challenge. */
  wwwAuthenticate?: string;
}

export interface Permit {
  effect: 'allow';
  interaction: FhirInteraction;
  /** The parameters to send upstream: the request's, minus formatting ones, plus the compartment. */
  upstreamParams: [string, string][];
  filter: AccessFilter;
  /** The permissions a returned resource must be covered by (any of them). */
  needed: Permission[];
  /** Permissions for resources a search brings along (`_include`, `_revinclude`, `$everything`). */
  neededForIncluded: Permission[];
  /** The compartment parameter the proxy added, if any. */
  addedCompartment?: [string, string];
  /** Matches per page (`_count`), counted after filtering. */
  pageSize: number;
}

export type Decision = Denial | Permit;

const deny = (status: Denial['status'], code: DenyCode, reason: string, extra: Partial<Denial> = {}): Denial => ({ effect: 'deny', status, code, reason, ...extra });

const PERMISSION: Record<Exclude<InteractionKind, 'capabilities'>, Permission> = {
  read: 'r',
  vread: 'r',
  history: 'r',
  everything: 'r',
  search: 's',
  create: 'c',
  update: 'u',
  patch: 'u',
  delete: 'd',
};

const WRITES: ReadonlySet<InteractionKind> = new Set(['create', 'update', 'patch', 'delete']);

/** Result parameters allowed on a search; anything else starting with `_` is refused. */
const SEARCH_CONTROLS = new Set(['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source', '_text', '_content', '_list', '_sort', '_count', '_include', '_revinclude', '_total', '_format', '_pretty', '_summary']);
const ALLOWED_PARAMS: Record<string, ReadonlySet<string> | 'search'> = {
  search: 'search',
  history: new Set(['_count', '_since', '_at', '_format', '_pretty']),
  everything: new Set(['_count', '_since', '_type', 'start', 'end', '_format', '_pretty']),
};
const FORMAT_ONLY = new Set(['_format', '_pretty']);

/** The largest page a search through the proxy returns. */
export const MAX_PAGE_SIZE = 1000;
/** The page size when the app gives no `_count`. */
export const DEFAULT_PAGE_SIZE = 50;
const JSON_FORMATS = new Set(['json', 'application/json', 'application/fhir+json']);

// FHIR R4 3.1.1.5.5: [source type]:[search parameter], optionally :[target type]; `*` for all.
const INCLUDE_VALUE = /^([A-Z][A-Za-z]{1,63}):([a-z][A-Za-z0-9-]{0,63}|\*)(?::([A-Z][A-Za-z]{1,63}))?$/;

/**
 * Why an `_include` or `_revinclude` cannot be passed on, judged from the request alone so the
 * answer never depends on what matches. Iterated includes are refused: they would follow
 * references out of included resources, some of which the app may not see.
 */
function includeProblem(rawName: string, value: string, searched: string): Denial | undefined {
  const [name, modifier] = rawName.split(':');
  if (modifier !== undefined) {
    return modifier === 'iterate' || modifier === 'recurse'
      ? deny(400, 'not-supported', `${name}:${modifier} is not supported through this server`)
      : deny(400, 'invalid', `${rawName} is not a FHIR search parameter`);
  }
  const m = INCLUDE_VALUE.exec(value);
  if (!m) return deny(400, 'invalid', `${name}=${value.slice(0, 80)} is not [type]:[search parameter] or [type]:[search parameter]:[target type]`);
  if (name === '_include' && m[1] !== searched) return deny(400, 'invalid', `${name}=${value} must start with the type searched, ${searched}`);
  return undefined;
}

// A name, with a modifier or target type (chains are refused before this is asked).
const SEARCH_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}(?::[A-Za-z][A-Za-z0-9-]{0,63})?$/;
const SORT_VALUE = /^-?[A-Za-z_][A-Za-z0-9_-]{0,63}(?:,-?[A-Za-z_][A-Za-z0-9_-]{0,63})*$/;

function checkParams(interaction: FhirInteraction): Denial | [string, string][] {
  const allowed = ALLOWED_PARAMS[interaction.kind] ?? FORMAT_ONLY;
  const upstream: [string, string][] = [];
  for (const [rawName, value] of interaction.params) {
    const name = rawName.split(':')[0]!;
    if (name === '_format') {
      if (!JSON_FORMATS.has(value.split(';')[0]!.trim())) return deny(400, 'not-supported', 'only JSON is supported through this server');
      continue;
    }
    if (name === '_pretty') continue;
    if (name === '_count') {
      // The proxy pages itself (see fhir-proxy.ts), so the page size is not passed on.
      if (!/^[1-9]\d{0,3}$/.test(value) || Number(value) > MAX_PAGE_SIZE) return deny(400, 'invalid', `_count must be a whole number from 1 to ${MAX_PAGE_SIZE} (a count alone is not supported)`);
      continue;
    }
    if (name === '_summary') {
      // A summary or count would drop what the proxy checks (labels, dates) or count what it hides.
      if (value !== 'false') return deny(400, 'not-supported', '_summary is not supported through this server');
      continue;
    }
    if (allowed === 'search') {
      // Chained and reverse-chained searches would select by data the app may not see.
      if (rawName.includes('.') || name === '_has') return deny(400, 'not-supported', 'chained searches are not supported through this server');
      // Names and the values servers copy into their paging links as they are must be plain, so
      // no server can read one parameter as several (see upstream-paging.ts).
      if (!SEARCH_NAME.test(rawName)) return deny(400, 'invalid', `${rawName.slice(0, 80)} is not a FHIR search parameter name`);
      if (name === '_total' && !['none', 'estimate', 'accurate'].includes(value)) return deny(400, 'invalid', '_total must be none, estimate or accurate');
      if (name === '_sort' && !SORT_VALUE.test(value)) return deny(400, 'invalid', '_sort must be a comma-separated list of search parameters, each optionally preceded by -');
      if (name.startsWith('_') && !SEARCH_CONTROLS.has(name)) return deny(400, 'not-supported', `the search parameter ${name} is not supported through this server`);
      if (name === '_include' || name === '_revinclude') {
        const problem = includeProblem(rawName, value, interaction.resourceType!);
        if (problem) return problem;
      }
    } else if (!allowed.has(name)) {
      return deny(400, 'not-supported', `the parameter ${name} is not supported for ${interaction.kind}`);
    }
    upstream.push([rawName, value]);
  }
  return upstream;
}

function permits(scope: ResourceScope, type: string, permission: Permission): boolean {
  return (scope.resourceType === '*' || scope.resourceType === type) && scope.permissions.has(permission);
}

/** Does a search parameter value name exactly `Patient/<patient>` (or the bare id)? */
function namesPatient(value: string, patient: string, bases: readonly string[]): boolean {
  return value.split(',').every((v) => {
    let ref = v.trim();
    for (const base of bases) if (ref.startsWith(`${base}/`)) ref = ref.slice(base.length + 1);
    return ref === patient || ref === `Patient/${patient}`;
  });
}

/**
 * Decides one request. `now` is in seconds (RFC 9470 `max_age` is judged against it).
 */
export function decide(interaction: FhirInteraction, facts: AccessFacts, policy: EnforcementPolicy = {}, now = Math.floor(Date.now() / 1000)): Decision {
  const bases = policy.bases ?? [];
  const { scopes, patient } = confineToUser(facts);
  const filter: AccessFilter = { scopes, patient, consent: facts.consent, bases };
  if (interaction.kind === 'capabilities') return { effect: 'allow', interaction, upstreamParams: [], filter, needed: [], neededForIncluded: [], pageSize: DEFAULT_PAGE_SIZE };

  const type = interaction.resourceType!;
  if (type === 'Bundle') return deny(403, 'forbidden', 'Bundle resources may hold anything: they are not served through this server');
  if (type === 'Binary') return deny(403, 'forbidden', 'Binary resources carry no patient or labels this server can check');
  const permission = PERMISSION[interaction.kind];
  if (interaction.kind === 'history' && interaction.level === 'type') {
    // Each version would need its resource's current state judged too (see the proxy): one resource at a time.
    return deny(400, 'not-supported', 'history across a resource type is not supported through this server; ask for one resource\'s history');
  }
  const candidates = scopes.filter((s) => permits(s, type, permission));
  if (candidates.length === 0) {
    return deny(403, 'forbidden', `the token has no scope to ${interaction.kind} ${type}`, { error: 'insufficient_scope' });
  }
  // Applying a patch reads the current version: a failed `test` operation, or the patched
  // resource sent back, would show an update-only token what it may not read.
  if (interaction.kind === 'patch' && !scopes.some((s) => permits(s, type, 'r'))) {
    return deny(403, 'forbidden', `a JSON Patch is applied to the current version, so patching ${type} needs read (r) as well as update (u)`, { error: 'insufficient_scope' });
  }
  const consentTypes = facts.consent?.resourceTypes;
  if (consentTypes && !consentTypes.includes(type)) return deny(403, 'forbidden', `the patient has not shared ${type} records with this app`);

  if (WRITES.has(interaction.kind)) {
    const acrValues = policy.writeAcrValues ?? [DEFAULT_WRITE_ACR];
    const challenge = stepUpChallenge(
      { acr: facts.acr, auth_time: facts.authTime },
      { ...(acrValues.length ? { acrValues } : {}), ...(policy.writeMaxAge !== undefined ? { maxAge: policy.writeMaxAge } : {}) },
      now,
    );
    if (challenge) {
      return deny(401, 'login', `changing data needs ${challenge.body.error_description}`, {
        error: 'insufficient_user_authentication',
        wwwAuthenticate: challenge.headers['WWW-Authenticate'],
      });
    }
  }

  const checked = checkParams(interaction);
  if (!Array.isArray(checked)) return checked;
  let upstreamParams = checked;
  let addedCompartment: [string, string] | undefined;

  // Only patient/ scopes allow this: the request must stay inside the patient's compartment.
  if (candidates.every((s) => s.context === 'patient')) {
    if (!patient) return deny(403, 'forbidden', 'the token names no patient, so patient/ scopes allow nothing');
    if (type !== 'Patient' && !PATIENT_LINKS[type]) return deny(403, 'forbidden', `${type} resources are not in the patient compartment this server can check`);
    if (interaction.compartment && interaction.compartment.id !== patient) return deny(403, 'forbidden', "another patient's records are not accessible with this token");
    if (type === 'Patient' && interaction.level === 'instance' && interaction.id !== patient) {
      return deny(403, 'forbidden', "another patient's records are not accessible with this token");
    }
    if (interaction.kind === 'search') {
      const link = type === 'Patient' ? { search: '_id' } : PATIENT_LINKS[type]!;
      const names = type === 'Patient' ? ['_id'] : PATIENT_SEARCH_ALIASES;
      const naming = upstreamParams.filter(([n]) => names.includes(n.split(':')[0]!));
      if (naming.some(([n]) => n.includes(':') && !/:(Patient)$/.test(n))) return deny(400, 'not-supported', 'modifiers on the patient parameter are not supported through this server');
      if (naming.some(([, v]) => !namesPatient(v, patient, bases))) return deny(403, 'forbidden', "another patient's records are not accessible with this token");
      if (naming.length === 0 || interaction.compartment) {
        addedCompartment = [link.search, patient];
        upstreamParams = [...upstreamParams, addedCompartment];
      }
    }
  }
  if (interaction.compartment && !addedCompartment) {
    // A compartment search goes upstream as a plain search on the patient parameter.
    const link = PATIENT_LINKS[type];
    if (!link) return deny(403, 'forbidden', `${type} resources are not in the patient compartment this server can check`);
    addedCompartment = [link.search, interaction.compartment.id];
    upstreamParams = [...upstreamParams, addedCompartment];
  }

  return {
    effect: 'allow',
    interaction,
    upstreamParams,
    filter,
    needed: [permission],
    neededForIncluded: ['r', 's'],
    pageSize: Number(interaction.params.findLast(([n]) => n.split(':')[0] === '_count')?.[1] ?? DEFAULT_PAGE_SIZE),
    ...(addedCompartment ? { addedCompartment } : {}),
  };
}
