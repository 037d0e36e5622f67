/**
 * The SMART App Launch 2.x scope grammar (scopes-and-launch-context, "SMART's scopes"):
 *
 *   ( patient | user | system ) "/" ( ResourceType | "*" ) "." permissions [ "?" query ]
 *
 * with v1 permissions `read | write | *` and v2 permissions `[c][r][u][d][s]` (at least one, in
 * that order). v1 is normalised to v2 for decisions (read = rs, write = cud, * = cruds) while the
 * original text is kept, so an app gets back the form it asked for. Pure code: no I/O.
 */

export const CONTEXTS = ['patient', 'user', 'system'] as const;
export type ScopeContext = (typeof CONTEXTS)[number];

export const PERMISSIONS = ['c', 'r', 'u', 'd', 's'] as const;
export type Permission = (typeof PERMISSIONS)[number];

export interface ResourceScope {
  /** The scope exactly as requested. */
  readonly raw: string;
  readonly context: ScopeContext;
  /** A FHIR resource type, or `*` for every type (including ones added later). */
  readonly resourceType: string;
  readonly permissions: ReadonlySet<Permission>;
  readonly version: 'v1' | 'v2';
  /** Granular constraints, e.g. [['category', 'http://...|laboratory']], sorted by name then value. */
  readonly query: ReadonlyArray<readonly [string, string]>;
}

export class ScopeSyntaxError extends Error {
  override name = 'ScopeSyntaxError';
  readonly scope: string;
  constructor(scope: string, reason: string) {
    super(`malformed scope "${scope}": ${reason}`);
    this.scope = scope;
  }
}

const V1: Record<string, Permission[]> = { read: ['r', 's'], write: ['c', 'u', 'd'], '*': ['c', 'r', 'u', 'd', 's'] };
const V2 = /^c?r?u?d?s?$/;
const RESOURCE_TYPE = /^(\*|[A-Z][A-Za-z]{1,63})$/;
const QUERY_NAME = /^[A-Za-z_][A-Za-z0-9_\-.:]*$/;
// RFC 6749 scope-token characters, minus the ones that delimit the query itself.
const QUERY_VALUE = /^[\x21\x23-\x25\x27-\x3C\x3E-\x5B\x5D-\x7E]+$/;

/** True when the string looks like a SMART resource scope at all (so other scopes pass through). */
export function isResourceScope(scope: string): boolean {
  return /^(patient|user|system)\//.test(scope);
}

/** Parses one resource scope; throws {@link ScopeSyntaxError} naming the problem. */
export function parseResourceScope(raw: string): ResourceScope {
  const slash = raw.indexOf('/');
  const context = raw.slice(0, slash) as ScopeContext;
  if (slash < 0 || !CONTEXTS.includes(context)) throw new ScopeSyntaxError(raw, 'must start with patient/, user/ or system/');
  const rest = raw.slice(slash + 1);
  const [body = '', query, extra] = rest.split('?');
  if (extra !== undefined) throw new ScopeSyntaxError(raw, 'has more than one "?"');
  const dot = body.lastIndexOf('.');
  if (dot < 0) throw new ScopeSyntaxError(raw, 'needs ".permissions" after the resource type');
  const resourceType = body.slice(0, dot);
  const perms = body.slice(dot + 1);
  if (!RESOURCE_TYPE.test(resourceType)) throw new ScopeSyntaxError(raw, `"${resourceType}" is not a FHIR resource type or *`);

  let permissions: Permission[];
  let version: 'v1' | 'v2';
  if (perms in V1) {
    permissions = V1[perms]!;
    version = 'v1';
  } else if (perms.length > 0 && V2.test(perms)) {
    permissions = [...perms] as Permission[];
    version = 'v2';
  } else {
    throw new ScopeSyntaxError(raw, `"${perms}" is not read, write, * or a non-empty subset of cruds in that order`);
  }

  const constraints: Array<[string, string]> = [];
  if (query !== undefined) {
    if (version === 'v1') throw new ScopeSyntaxError(raw, 'query constraints need v2 permissions (cruds)');
    if (query === '') throw new ScopeSyntaxError(raw, 'has an empty query');
    for (const pair of query.split('&')) {
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      if (eq < 1 || !QUERY_NAME.test(name) || !QUERY_VALUE.test(value)) {
        throw new ScopeSyntaxError(raw, `"${pair}" is not a name=value constraint`);
      }
      constraints.push([name, value]);
    }
    constraints.sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : x > y ? 1 : 0) : a < b ? -1 : 1));
  }
  return { raw, context, resourceType, permissions: new Set(permissions), version, query: constraints };
}

/** The v2 permission string of a scope, in canonical order. */
export function permissionString(perms: ReadonlySet<Permission>): string {
  return PERMISSIONS.filter((p) => perms.has(p)).join('');
}

/** The canonical v2 text of a parsed scope. */
export function toV2(scope: Pick<ResourceScope, 'context' | 'resourceType' | 'permissions' | 'query'>): string {
  const query = scope.query.length ? `?${scope.query.map(([k, v]) => `${k}=${v}`).join('&')}` : '';
  return `${scope.context}/${scope.resourceType}.${permissionString(scope.permissions)}${query}`;
}

function sameConstraint(a: readonly [string, string], b: readonly [string, string]): boolean {
  return a[0] === b[0] && a[1] === b[1];
}

/**
 * The largest scope inside both `wanted` and `allowed`, or undefined when they share nothing.
 * Constraints add up (a resource must match all of them); two different values for the same
 * parameter are treated as sharing nothing, which errs on the side of granting less.
 */
export function intersect(wanted: ResourceScope, allowed: ResourceScope): ResourceScope | undefined {
  if (wanted.context !== allowed.context) return undefined;
  let resourceType: string;
  if (allowed.resourceType === '*' || allowed.resourceType === wanted.resourceType) resourceType = wanted.resourceType;
  else if (wanted.resourceType === '*') resourceType = allowed.resourceType;
  else return undefined;
  const permissions = new Set(PERMISSIONS.filter((p) => wanted.permissions.has(p) && allowed.permissions.has(p)));
  if (permissions.size === 0) return undefined;
  const query = [...wanted.query];
  for (const c of allowed.query) {
    if (query.some((q) => sameConstraint(q, c))) continue;
    if (query.some(([name]) => name === c[0])) return undefined;
    query.push(c);
  }
  query.sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : x > y ? 1 : 0) : a < b ? -1 : 1));
  const narrowed = { context: wanted.context, resourceType, permissions, query };
  const unchanged =
    resourceType === wanted.resourceType && permissions.size === wanted.permissions.size && query.length === wanted.query.length;
  return unchanged ? wanted : { ...narrowed, version: 'v2', raw: toV2(narrowed) };
}

/** True when `outer` permits everything `inner` asks for. */
export function covers(outer: ResourceScope, inner: ResourceScope): boolean {
  return intersect(inner, outer) === inner;
}
