/**
 * Judges what a FHIR server answered before the app sees any of it: a single resource is shown or
 * reported as not found; each entry of a search, history or `$everything` Bundle page is marked a
 * match or an included resource and judged (see {@link collectPage} for how pages are made from
 * the visible ones, so that no count or page boundary reveals a hidden resource). URLs under the
 * upstream base are rewritten to the proxy's. Pure code.
 */
import type { Permit } from './decision.ts';
import { checkResource, type ReferencedMedications, type HiddenReason, type ResourceVerdict } from './resource-visibility.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface FilterReport {
  kept: number;
  removed: number;
  reasons: Partial<Record<HiddenReason, number>>;
}

/** One entry of an upstream Bundle page, judged. */
export interface JudgedEntry {
  entry: Json;
  /** `match` entries are what a page is counted in; `include` ones come along with them. */
  role: 'match' | 'include';
  verdict: ResourceVerdict;
}

/** Whether a single resource (read, vread, or the current state before a write) may be shown. */
export function checkSingle(resource: unknown, permit: Permit, medications?: ReferencedMedications): ResourceVerdict {
  return checkResource(resource, permit.filter, permit.needed, medications ? { medications } : {});
}

/** The resources of a Bundle's entries, for looking up what they refer to before judging them. */
export function bundleResources(bundle: Json): Json[] {
  return (Array.isArray(bundle.entry) ? bundle.entry : []).flatMap((e) => (isObject(e) && isObject(e.resource) ? [e.resource] : []));
}

/** One entry of an upstream Bundle page, before it is judged; `resource` is absent when it cannot be. */
export interface PageEntry {
  entry: Json;
  role: 'match' | 'include';
  resource?: Json;
}

/**
 * The entries of one upstream Bundle page, each marked a match or an included resource. In a
 * history, every entry is a version of the permit's resource (an entry that is not, or has no
 * resource, as for a deletion, is left without one, so hidden); in `$everything` every entry is a
 * match; in a search, `include` entries are included and the rest are matches. Search `outcome`
 * entries are dropped: the upstream server's messages are not the app's to read.
 */
export function pageEntries(bundle: Json, permit: Permit): PageEntry[] {
  const { kind, resourceType, id } = permit.interaction;
  const out: PageEntry[] = [];
  for (const raw of Array.isArray(bundle.entry) ? bundle.entry : []) {
    const entry = isObject(raw) ? raw : {};
    const resource = isObject(entry.resource) ? entry.resource : undefined;
    const mode = isObject(entry.search) ? entry.search.mode : undefined;
    // The server's own messages (outcome entries, OperationOutcomes) may speak of what is hidden.
    if (mode === 'outcome' || (resource && resource.resourceType === 'OperationOutcome')) continue;
    const role = kind === 'search' && mode === 'include' ? 'include' : 'match';
    const judgeable = resource && !(kind === 'history' && (resource.resourceType !== resourceType || resource.id !== id));
    out.push({ entry, role, ...(judgeable ? { resource } : {}) });
  }
  return out;
}

/** Judges one entry: an included one, or any in `$everything`, needs `r` or `s`. */
export function judgeEntry(e: PageEntry, permit: Permit, medications?: ReferencedMedications): JudgedEntry {
  const { entry, role, resource } = e;
  if (!resource) return { entry, role, verdict: { visible: false, reason: 'malformed' } };
  const needed = role === 'include' || permit.interaction.kind === 'everything' ? permit.neededForIncluded : permit.needed;
  return { entry, role, verdict: checkResource(resource, permit.filter, needed, medications ? { medications } : {}) };
}

/** Judges every entry of one upstream Bundle page (see {@link pageEntries}). */
export function judgeEntries(bundle: Json, permit: Permit, medications?: ReferencedMedications): JudgedEntry[] {
  return pageEntries(bundle, permit).map((e) => judgeEntry(e, permit, medications));
}

/** A Bundle entry as the app sees it: URLs under the upstream base rewritten, others dropped. */
export function rewriteEntry(entry: Json, resourceUrl: (url: string) => string | undefined): Json {
  const out: Json = { ...entry };
  if (typeof entry.fullUrl === 'string') {
    const url = resourceUrl(entry.fullUrl);
    if (url) out.fullUrl = url;
    else if (/^https?:/.test(entry.fullUrl)) delete out.fullUrl;
  }
  if (isObject(entry.response) && typeof entry.response.location === 'string') {
    const { location, ...rest } = entry.response;
    const url = resourceUrl(location as string);
    out.response = url ? { ...rest, location: url } : /^https?:/.test(location as string) ? rest : entry.response;
  }
  return out;
}
