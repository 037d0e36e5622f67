/**
 * Pages made of visible matches only. Filtering the FHIR server's own pages would leak: with
 * `_count=1`, an empty page with a `next` link says a hidden match is there, and page sizes or
 * totals count what the app may not see. So the proxy reads the server's pages itself and cuts
 * its own: every page but the last holds exactly `pageSize` visible matches, a next page exists
 * only when one more visible match does, and the position to resume from is a {@link Cursor} into
 * the server's pages (which the proxy signs into its own paging link).
 */
import type { FilterReport, JudgedEntry } from './response-filter.ts';

type Json = Record<string, unknown>;

/** Where a page starts: a page of the upstream server, and how many of its matches come before. */
export interface Cursor {
  /** Path and query below the upstream base. */
  url: string;
  skip: number;
}

export interface CollectedPage {
  matches: Json[];
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
  /** Judges the entries of an upstream page (it may look up referenced resources first). */
  judge: (bundle: Json) => Promise<JudgedEntry[]>;
  /** The upstream page after this one, as a path below the upstream base; undefined on the last. */
  nextOf: (bundle: Json) => string | undefined;
}

/** Upstream pages read at most for one page of the proxy's. */
const MAX_UPSTREAM_PAGES = 50;

/** Reads upstream pages from `from` until a page of visible matches is full (and one more is seen) or none are left. */
export async function collectPage<F>(opts: CollectOptions<F>): Promise<CollectedPage | { failure: F }> {
  const matches: Json[] = [];
  const report: FilterReport = { kept: 0, removed: 0, reasons: {} };
  let { url, skip } = opts.from;
  let scanned = 0;
  for (let fetched = 1; ; fetched += 1) {
    const got = await opts.fetch(url);
    if ('failure' in got) return got;
    const judged = await opts.judge(got.bundle);
    let index = 0;
    let next: Cursor | undefined;
    for (const j of judged) {
      // Included entries on an upstream page came with every match of it, hidden ones too; the
      // proxy asks for the includes of the matches it shows separately (see fhir-proxy.ts).
      if (j.role === 'include') continue;
      const at = index++;
      if (at < skip || next) continue;
      if (j.verdict.visible && matches.length === opts.pageSize) {
        next = { url, skip: at };
        continue;
      }
      scanned += 1;
      if (j.verdict.visible) {
        matches.push(j.entry);
        report.kept += 1;
      } else {
        report.removed += 1;
        report.reasons[j.verdict.reason] = (report.reasons[j.verdict.reason] ?? 0) + 1;
      }
    }
    const done = (n?: Cursor): CollectedPage => ({ matches, ...(n ? { next: n } : {}), report });
    if (next) return done(next);
    const following = opts.nextOf(got.bundle);
    if (following === undefined) return done();
    // Upstream pages may be empty (or a server may loop): the number read is bounded as well.
    if (scanned >= opts.maxScanned || fetched >= MAX_UPSTREAM_PAGES) return done({ url: following, skip: 0 });
    url = following;
    skip = 0;
  }
}
