/**
 * The next upstream page to read, built by the proxy rather than taken from the FHIR server's
 * `next` link. Servers write those links their own way, and some copy what the app sent into them
 * unencoded (Medplum writes `_total` and `_sort` values as they are): a value holding `&_has:...`
 * would come back as parameters the proxy refuses. So the link is only mined for its paging
 * position; the search parameters sent are always the checked ones.
 */

/** Parameters by which FHIR servers say where a page starts (Medplum, HAPI, Firely, others). */
const PAGING_PARAMS = new Set(['_offset', '_getpages', '_getpagesoffset', '_bundletype', '_cursor', '_page', '_pageToken', '_page_token', 'ct', '_ct', '_continuation', '_searchId']);

export type NextPage = { path: string } | { refused: string };

/**
 * The request for the page a server's `next` link points at. `link` is the link below the
 * upstream base (`/Observation?...`, or `?...` for servers that page from the base); `searched`
 * the path of the search and `sent` the parameters sent for it (the checked ones, with `_count`).
 */
export function nextUpstreamPage(link: string, searched: string, sent: readonly [string, string][]): NextPage {
  const [rawPath = '', rawQuery = ''] = link.split(/\?(.*)/s);
  const path = rawPath.replace(/\/+$/, '');
  // A server that keeps the search itself (HAPI's `_getpages`) links to its base with a page id.
  const fromBase = path === '';
  if (!fromBase && path !== searched) return { refused: 'the FHIR server gave a paging link to another search' };
  const sentNames = new Set(sent.map(([name]) => name));
  const position: [string, string][] = [];
  for (const [name, value] of new URLSearchParams(rawQuery)) {
    if (PAGING_PARAMS.has(name) && !sentNames.has(name)) position.push([name, value]);
  }
  if (position.length === 0) return { refused: 'the FHIR server gave a paging link without a position this proxy understands' };
  const params = fromBase ? [...position, ...sent.filter(([name]) => name === '_count')] : [...sent, ...position];
  return { path: `${fromBase ? '' : searched}?${new URLSearchParams(params)}` };
}
