/**
 * Pages made of visible matches only. Filtering the FHIR server's own pages would leak: with
 * `_count=1`, an empty page with a `next` link says a hidden match is there, and page sizes or
 * totals count what the app may not see. So the proxy reads the server's pages itself and cuts
 * its own: every page but the last holds exactly `pageSize` visible matches, a next page exists
 * only when one more visible match does, and the position to resume from is a {@link Cursor} into
 * the server's pages (which the proxy signs into its own paging link).
 */
import type { FilterReport, JudgedEntry, PageEntry } from './response-filter.ts';

type Json = Record<string, unknown>;

/** Where a page starts: a page of the upstream server, and how many of its matches come before. */
export interface Cursor {
  /** Path and query below the upstream base. */
  url: string;
  skip: number;
}

/** The reads a run of matches needs: `add` takes the run's next match and answers what the run costs with it, in upstream reads. */
export interface ReadPlan {
  add: (entry: PageEntry) => number;
}

export interface CollectedPage {
  matches: Json[];
  /** The page cut short before its n-th match: where it would go on, and what it would report. */
  cuts: { next: Cursor; report: FilterReport }[];
  /** Where the next page starts; absent when no visible match is left. */
  next?: Cursor;
  report: FilterReport;
}

export interface CollectOptions<F> {
  from: Cursor;
  pageSize: number;
  /**
   * Matches judged at most per page, hidden ones included. Past it the page ends early with a
   * `next` link: a short page then says only that much hidden data lay in between.
   */
  maxScanned: number;
  /** Reads one upstream page (a Bundle), or says why it could not. */
  fetch: (url: string) => Promise<{ bundle: Json } | { failure: F }>;
  /** The entries of an upstream page, unjudged (only its matches make pages). */
  entries: (bundle: Json) => PageEntry[];
  /** Starts planning the reads that judging a run of matches needs first (the drugs they name). */
  plan: () => ReadPlan;
  /**
   * Upstream reads judging may make per page, hidden matches' included. Past it the page ends
   * early with a `next` link, as past `maxScanned`; a page's first match is judged whatever it costs.
   */
  maxReads: number;
  /** Judges matches, reading first what they need (in one go, so reads are batched). */
  judge: (entries: PageEntry[]) => Promise<JudgedEntry[]>;
  /** The upstream page after this one, as a path below the upstream base; undefined on the last. */
  nextOf: (bundle: Json) => string | undefined;
}

/** Upstream pages read at most for one page of the proxy's. */
const MAX_UPSTREAM_PAGES = 50;

/** Reads upstream pages from `from` until a page of visible matches is full (and one more is seen) or none are left. */
export async function collectPage<F>(opts: CollectOptions<F>): Promise<CollectedPage | { failure: F }> {
  const matches: Json[] = [];
  const cuts: CollectedPage['cuts'] = [];
  const report: FilterReport = { kept: 0, removed: 0, reasons: {} };
  const done = (n?: Cursor): CollectedPage => ({ matches, cuts, ...(n ? { next: n } : {}), report });
  let { url, skip } = opts.from;
  let scanned = 0;
  let spent = 0;
  for (let fetched = 1; ; fetched += 1) {
    const got = await opts.fetch(url);
    if ('failure' in got) return got;
    // Included entries on an upstream page came with every match of it, hidden ones too; the
    // proxy asks for the includes of the matches it shows separately (see fhir-proxy.ts).
    const pageMatches = opts.entries(got.bundle).filter((e) => e.role === 'match');
    let at = skip;
    while (at < pageMatches.length) {
      const end = affordable(pageMatches, at, opts, { spent, first: scanned === 0 });
      if (end.index === at) return done({ url, skip: at });
      spent += end.cost;
      const judged = await opts.judge(pageMatches.slice(at, end.index));
      for (const j of judged) {
        if (j.verdict.visible && matches.length === opts.pageSize) return done({ url, skip: at });
        if (j.verdict.visible) cuts.push({ next: { url, skip: at }, report: { ...report, reasons: { ...report.reasons } } });
        at += 1;
        scanned += 1;
        if (j.verdict.visible) {
          matches.push(j.entry);
          report.kept += 1;
        } else {
          report.removed += 1;
          report.reasons[j.verdict.reason] = (report.reasons[j.verdict.reason] ?? 0) + 1;
        }
      }
    }
    const following = opts.nextOf(got.bundle);
    if (following === undefined) return done();
    // Upstream pages may be empty (or a server may loop): the number read is bounded as well.
    if (scanned >= opts.maxScanned || fetched >= MAX_UPSTREAM_PAGES) return done({ url: following, skip: 0 });
    url = following;
    skip = 0;
  }
}

/**
 * How far from `at` matches can be judged within what is left of the page's read budget, and at
 * what cost: a run of matches is judged together, so that what they need is read in batches.
 */
function affordable<F>(entries: PageEntry[], at: number, opts: CollectOptions<F>, page: { spent: number; first: boolean }): { index: number; cost: number } {
  const plan = opts.plan();
  let cost = 0;
  let index = at;
  for (; index < entries.length; index += 1) {
    const withIt = plan.add(entries[index]!);
    if (page.spent + withIt > opts.maxReads && !(page.first && index === at)) break;
    cost = withIt;
  }
  return { index, cost };
}
