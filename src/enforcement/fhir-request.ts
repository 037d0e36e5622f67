/**
 * What a request to a FHIR R4 REST API asks for (FHIR R4 "RESTful API", http.html): the
 * interaction, the resource type and id, and the search parameters. Pure code: it sees a method,
 * a path below the FHIR base and a query, and names the interaction or says why it cannot.
 */

export type InteractionKind =
  | 'capabilities'
  | 'read'
  | 'vread'
  | 'search'
  | 'history'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'everything';

export interface FhirInteraction {
  kind: InteractionKind;
  /** `instance` (Type/id), `type` (Type) or `system` (the base itself). */
  level: 'instance' | 'type' | 'system';
  resourceType?: string;
  id?: string;
  versionId?: string;
  /** A compartment search such as `Patient/123/Observation`. */
  compartment?: { type: string; id: string };
  /** Query (and, for POST `_search`, form body) parameters in order, names with their modifiers. */
  params: [string, string][];
}

export type ParsedRequest = { ok: true; interaction: FhirInteraction } | { ok: false; status: 400 | 404 | 405; reason: string };

// FHIR R4 datatypes: id is [A-Za-z0-9\-\.]{1,64}; resource type names are capitalised words.
// An id of dots alone is excluded: in a URL it is a dot segment, which fetch and HTTP servers
// resolve (RFC 3986 5.2.4), so `Observation/..` would reach the upstream as a search of everything.
export const FHIR_ID = /^(?!\.+$)[A-Za-z0-9\-.]{1,64}$/;
export const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;

const bad = (reason: string): ParsedRequest => ({ ok: false, status: 400, reason });

/**
 * Names the interaction of `method path?query`; `path` is relative to the FHIR base and starts
 * with `/`. `formBody` is the parsed body of a POST `_search`. Anything this does not recognise
 * (batches, transactions, operations other than `$everything`, conditional writes) is refused,
 * because a consent cannot be enforced on what is not understood.
 */
export function parseFhirRequest(input: { method: string; path: string; query: URLSearchParams; formBody?: URLSearchParams }): ParsedRequest {
  const method = input.method.toUpperCase();
  const params: [string, string][] = [...input.query.entries()];
  if (input.formBody) params.push(...input.formBody.entries());
  let segments: string[];
  try {
    segments = input.path.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
  } catch {
    return bad('the path is not valid percent-encoding');
  }
  const [type, second, third, fourth, ...rest] = segments;
  const ok = (interaction: Omit<FhirInteraction, 'params'>): ParsedRequest => ({ ok: true, interaction: { ...interaction, params } });

  if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) return { ok: false, status: 405, reason: `${method} is not a FHIR interaction` };
  if (type === undefined) {
    if (method === 'POST') return bad('batches and transactions are not supported through this server');
    return bad('searching across all resource types is not supported through this server');
  }
  if (type === 'metadata' && segments.length === 1) return method === 'GET' ? ok({ kind: 'capabilities', level: 'system' }) : { ok: false, status: 405, reason: 'metadata takes GET' };
  if (type === '_history') return bad('system-wide history is not supported through this server');
  if (type === '_search') return bad('searching across all resource types is not supported through this server');
  if (type.startsWith('$')) return bad(`the operation ${type} is not supported through this server`);
  if (!RESOURCE_TYPE.test(type)) return { ok: false, status: 404, reason: `"${type}" is not a FHIR resource type` };
  if (rest.length > 0) return { ok: false, status: 404, reason: 'no such FHIR endpoint' };

  if (second === undefined) {
    if (method === 'GET') return ok({ kind: 'search', level: 'type', resourceType: type });
    if (method === 'POST') return ok({ kind: 'create', level: 'type', resourceType: type });
    return bad(`conditional ${method === 'PUT' ? 'updates' : method === 'PATCH' ? 'patches' : 'deletes'} are not supported through this server`);
  }
  if (second === '_search' && third === undefined) {
    return method === 'POST' ? ok({ kind: 'search', level: 'type', resourceType: type }) : { ok: false, status: 405, reason: '_search takes POST' };
  }
  if (second === '_history' && third === undefined) {
    return method === 'GET' ? ok({ kind: 'history', level: 'type', resourceType: type }) : { ok: false, status: 405, reason: 'history takes GET' };
  }
  if (second.startsWith('$')) return bad(`the operation ${second} is not supported through this server`);
  if (!FHIR_ID.test(second)) return bad(`"${second}" is not a FHIR resource id`);
  const id = second;

  if (third === undefined) {
    switch (method) {
      case 'GET':
        return ok({ kind: 'read', level: 'instance', resourceType: type, id });
      case 'PUT':
        return ok({ kind: 'update', level: 'instance', resourceType: type, id });
      case 'PATCH':
        return ok({ kind: 'patch', level: 'instance', resourceType: type, id });
      case 'DELETE':
        return ok({ kind: 'delete', level: 'instance', resourceType: type, id });
      default:
        return { ok: false, status: 405, reason: `${method} on a resource is not a FHIR interaction` };
    }
  }
  if (third === '_history') {
    if (method !== 'GET') return { ok: false, status: 405, reason: 'history takes GET' };
    if (fourth === undefined) return ok({ kind: 'history', level: 'instance', resourceType: type, id });
    if (!FHIR_ID.test(fourth)) return bad(`"${fourth}" is not a version id`);
    return ok({ kind: 'vread', level: 'instance', resourceType: type, id, versionId: fourth });
  }
  if (third === '$everything' && fourth === undefined) {
    if (type !== 'Patient') return bad('$everything is supported on Patient only');
    if (method !== 'GET') return bad('$everything is supported with GET only');
    return ok({ kind: 'everything', level: 'instance', resourceType: type, id });
  }
  if (third.startsWith('$')) return bad(`the operation ${third} is not supported through this server`);
  // Compartment search: [base]/Patient/123/Observation (FHIR R4 3.1.0.9.5).
  if (RESOURCE_TYPE.test(third) && (fourth === undefined || (fourth === '_search' && method === 'POST'))) {
    if (type !== 'Patient') return bad('only the Patient compartment can be searched through this server');
    if (method !== 'GET' && fourth !== '_search') return { ok: false, status: 405, reason: 'a compartment search takes GET' };
    return ok({ kind: 'search', level: 'type', resourceType: third, compartment: { type, id } });
  }
  return { ok: false, status: 404, reason: 'no such FHIR endpoint' };
}
