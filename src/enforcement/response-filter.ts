/**
 * Filters what a FHIR server answered before the app sees it: a single resource is shown or
 * reported as not found; a search, history or `$everything` Bundle loses every entry the token may
 * not see (included resources too), and its `total` and links are made safe:
 *
 * - `total` is recomputed when the whole result came in one page (no `next`/`previous` link) and
 *   removed otherwise (R4 makes it optional), so a count never reveals hidden resources on other pages;
 * - `fullUrl`s under the upstream base are rewritten to the proxy's base; paging links are handed
 *   to `links.page` (the proxy turns them into signed links to itself) and dropped when it declines.
 */
import type { Permit } from './decision.ts';
import { checkResource, type HiddenReason, type ResourceVerdict } from './resource-visibility.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface LinkRewriter {
  /** The URL of the request the app made (the Bundle's `self`). */
  self: string;
  /** Rewrites an upstream absolute URL (a resource's) to the proxy's; undefined when it is not upstream's. */
  resourceUrl(url: string): string | undefined;
  /** A proxy URL standing for the upstream paging URL, or undefined to drop the link. */
  page(relation: string, upstreamUrl: string): string | undefined;
}

export interface FilterReport {
  kept: number;
  removed: number;
  reasons: Partial<Record<HiddenReason, number>>;
}

/** Whether a single resource (read, vread, or the current state before a write) may be shown. */
export function checkSingle(resource: unknown, permit: Permit): ResourceVerdict {
  return checkResource(resource, permit.filter, permit.needed);
}

/** Filters a Bundle in place of the upstream one; returns the new Bundle and what was removed. */
export function filterBundle(bundle: Json, permit: Permit, links: LinkRewriter): { bundle: Json; report: FilterReport } {
  const report: FilterReport = { kept: 0, removed: 0, reasons: {} };
  const hide = (reason: HiddenReason) => {
    report.removed += 1;
    report.reasons[reason] = (report.reasons[reason] ?? 0) + 1;
  };
  const everything = permit.interaction.kind === 'everything';
  const entries: Json[] = [];
  let matches = 0;
  for (const entry of Array.isArray(bundle.entry) ? bundle.entry : []) {
    if (!isObject(entry) || !isObject(entry.resource)) {
      // A history entry for a deletion has no resource to check the patient or labels of.
      hide('malformed');
      continue;
    }
    const search = isObject(entry.search) ? entry.search : undefined;
    const mode = search?.mode;
    if (mode === 'outcome' && entry.resource.resourceType === 'OperationOutcome') {
      entries.push(rewriteEntry(entry, links));
      continue;
    }
    const included = everything || mode === 'include';
    const verdict = checkResource(entry.resource, permit.filter, included ? permit.neededForIncluded : permit.needed);
    if (!verdict.visible) {
      hide(verdict.reason);
      continue;
    }
    report.kept += 1;
    if (!included) matches += 1;
    entries.push(rewriteEntry(entry, links));
  }

  const upstreamLinks = Array.isArray(bundle.link) ? bundle.link.filter(isObject) : [];
  const paged = upstreamLinks.some((l) => l.relation === 'next' || l.relation === 'previous' || l.relation === 'prev');
  const newLinks: Json[] = [{ relation: 'self', url: links.self }];
  for (const l of upstreamLinks) {
    if (typeof l.relation !== 'string' || typeof l.url !== 'string' || l.relation === 'self') continue;
    const url = links.page(l.relation, l.url);
    if (url) newLinks.push({ relation: l.relation, url });
  }

  const out: Json = { resourceType: 'Bundle' };
  for (const key of ['id', 'meta', 'type', 'timestamp']) if (bundle[key] !== undefined) out[key] = bundle[key];
  if (!paged) out.total = everything ? report.kept : matches;
  out.link = newLinks;
  if (entries.length) out.entry = entries;
  return { bundle: out, report };
}

function rewriteEntry(entry: Json, links: LinkRewriter): Json {
  const out: Json = { ...entry };
  if (typeof entry.fullUrl === 'string') {
    const url = links.resourceUrl(entry.fullUrl);
    if (url) out.fullUrl = url;
    else if (/^https?:/.test(entry.fullUrl)) delete out.fullUrl;
  }
  if (isObject(entry.response) && typeof entry.response.location === 'string') {
    const url = links.resourceUrl(entry.response.location);
    out.response = { ...entry.response, ...(url ? { location: url } : {}) };
  }
  return out;
}
