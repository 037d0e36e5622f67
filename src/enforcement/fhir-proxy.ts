/**
 * A reverse proxy that puts a patient's consent in front of any FHIR R4 server: it validates the
 * bearer token, decides the request ({@link decide}), forwards what is allowed (searches kept
 * inside the patient's compartment), judges what comes back ({@link judgeEntry}, a run of matches at a time) and pages over
 * the visible part only ({@link collectPage}), answers refusals with an OperationOutcome (401 with
 * RFC 6750 / RFC 9470 challenges, 403, 404), and reports every decision to `audit`. Whatever is
 * hidden answers exactly as what does not exist. Paging links are sealed (encrypted) links to the
 * proxy itself, so they say nothing, and every page is decided again under the token as it is then.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import jsonPatch, { type Operation } from 'fast-json-patch';
import type { AuditEventInput } from '../audit/audit-event.ts';
import type { AccessFacts } from './access-token.ts';
import { decide, MAX_PAGE_SIZE, type Decision, type EnforcementPolicy, type Permit } from './decision.ts';
import { FHIR_ID, RESOURCE_TYPE, parseFhirRequest } from './fhir-request.ts';
import { operationOutcome, type IssueCode } from './operation-outcome.ts';
import { bundleResources, checkSingle, judgeEntry, pageEntries, rewriteEntry, type FilterReport, type PageEntry } from './response-filter.ts';
import { MAX_DRUG_REFERENCES, checkResource, literalReferences, medicationReferences, relativeReference, type ReferencedMedications } from './resource-visibility.ts';
import { PATIENT_LINKS, REFERENCE_DATA_TYPES } from './resource-rules.ts';
import { collectPage, type Cursor } from './paging.ts';
import { createPageLinkSeal } from './page-link-seal.ts';
import { applyPatchBounded, parseJsonBody } from './write-body.ts';
import { nextUpstreamPage } from './upstream-paging.ts';
import { TokenServiceUnavailable, type TokenValidator } from './token-validator.ts';

export interface FhirProxyOptions {
  /** The FHIR server's base URL. */
  upstream: string;
  /** The base URL apps use to reach the proxy; defaults to `http://<host>:<port>` once listening. */
  publicUrl?: string;
  tokens: TokenValidator;
  policy?: EnforcementPolicy;
  /** A token's `aud` must name one of these; defaults to the public URL. `false` skips the check. */
  audience?: readonly string[] | false;
  /** Receives one event per decision (success, denied or failure). Errors it throws are logged. */
  audit?: (event: AuditEventInput) => unknown;
  log?: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** Headers added to every upstream request (for example the proxy's own credentials). */
  upstreamHeaders?: Record<string, string>;
  /** Milliseconds since the epoch. */
  clock?: () => number;
  fetch?: typeof fetch;
  /** Secret sealing paging links (random per process by default, so links end with it). */
  pageKey?: Buffer;
  maxBodyBytes?: number;
  upstreamTimeoutMs?: number;
}

export interface FhirProxy {
  /** A plain `node:http` request listener, to mount in another server. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  listen(port: number, host?: string): Promise<{ url: string; server: Server; close(): Promise<void> }>;
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const PAGE_PATH = '/_page';
const PAGE_LIFETIME_MS = 60 * 60 * 1000;
/** Matches judged at most for one page (see collectPage). */
const MAX_SCANNED = 5000;
/** The longest request target sent upstream, or handed out as a paging link: within the 8 KiB request line of common servers. */
const MAX_UPSTREAM_TARGET = 6144;
/** Room kept for the position a server's paging adds (`_offset`, `_getpages` ids...). */
const PAGING_POSITION_ROOM = 256;
/** References to patient data a written resource may make: each is read and judged first. */
const MAX_CHECKED_REFERENCES = 100;
/** Operations in one JSON Patch: each is applied and the result judged, so their number is bounded. */
const MAX_PATCH_OPERATIONS = 1000;
/**
 * Ids asked for in one `_id` search (matches whose includes are wanted, drugs, referenced or
 * included resources). Ninety of the longest ids FHIR allows (64 characters, each comma encoded)
 * fit within MAX_UPSTREAM_TARGET: a batch that mixes the drugs of hidden matches with those of
 * visible ones must never be refused for its length.
 */
const ID_BATCH = 90;
/** Versions of a drug read back when a prescription pins an older one (one history page). */
const DRUG_HISTORY_COUNT = 100;
/**
 * Upstream reads of drugs one page may make for its matches, and as many for their includes, and
 * one write for the resources it refers to. Drugs are read before what names them is judged,
 * hidden resources' too, so without a bound a page over resources naming many made-up drugs
 * would cost a read per hundred of them.
 */
const MAX_DRUG_READS = 10;
const INCLUDE_PARAM = /^_(rev)?include(:|$)/;

type Json = Record<string, unknown>;

/** The drug a `Medication/id` or `Medication/id/_history/v` reference names; undefined for any other. */
function drugReference(ref: string): { mid: string; version?: string } | undefined {
  const [type, mid = '', history, version = '', ...rest] = ref.split('/');
  if (type !== 'Medication' || !FHIR_ID.test(mid) || rest.length > 0) return undefined;
  if (history === undefined) return { mid };
  return history === '_history' && FHIR_ID.test(version) ? { mid, version } : undefined;
}

/**
 * The path of a POST `_search` without its `_search` segment, however that is spelt (`%5Fsearch`,
 * a trailing `/`: the request parser decodes segments), or undefined for any other path.
 */
function searchBase(path: string): string | undefined {
  const m = /^(.*?)\/+([^/]+)\/*$/.exec(path);
  if (!m) return undefined;
  try {
    return decodeURIComponent(m[2]!) === '_search' ? m[1] : undefined;
  } catch {
    return undefined;
  }
}
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const entryKey = (e: Json) => `${String((e.resource as Json).resourceType)}/${String((e.resource as Json).id)}`;
const versionOf = (r: Json) => (isObject(r.meta) && typeof r.meta.versionId === 'string' ? r.meta.versionId : undefined);

class Reply {
  readonly status: number;
  readonly body: unknown;
  readonly headers: Record<string, string>;
  constructor(status: number, body: unknown, headers: Record<string, string> = {}) {
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/** Why the request ended as it did, for the audit event. */
interface Outcome {
  reply: Reply;
  outcome: 'success' | 'denied' | 'failure';
  reason?: string;
  report?: FilterReport;
}

/** What a fast-json-patch error name means, in words (its messages hold the whole document). */
/** An entity tag without its weak marker (`W/"2"` and `"2"` name the same version here), or undefined. */
function opaqueTag(tag: string): string | undefined {
  return /^(?:W\/)?("[^"]*")$/.exec(tag.trim())?.[1];
}

/** The tags of an If-Match list (RFC 9110 13.1.1; repeated headers arrive joined by commas), or undefined if it is not one. */
function ifMatchTags(header: string): string[] | undefined {
  const tags: string[] = [];
  const rest = header.replace(/\s*((?:W\/)?"[^"]*")\s*(?:,|$)/gy, (_, tag: string) => {
    tags.push(opaqueTag(tag)!);
    return '';
  });
  return rest === '' && tags.length > 0 ? tags : undefined;
}

function patchErrorText(name: string | undefined): string {
  switch (name) {
    case 'TEST_OPERATION_FAILED':
      return 'a test operation failed';
    case 'OPERATION_PATH_UNRESOLVABLE':
    case 'OPERATION_FROM_UNRESOLVABLE':
      return 'a path does not exist in the resource';
    case 'OPERATION_OP_INVALID':
      return 'an op is not one RFC 6902 defines';
    case 'OPERATION_PATH_INVALID':
    case 'OPERATION_FROM_REQUIRED':
    case 'OPERATION_PATH_ILLEGAL_ARRAY_INDEX':
    case 'OPERATION_PATH_CANNOT_ADD':
      return 'a path is not valid';
    case 'OPERATION_VALUE_REQUIRED':
    case 'OPERATION_VALUE_CANNOT_CONTAIN_UNDEFINED':
      return 'a value is missing';
    default:
      return 'it is malformed';
  }
}

const refuse = (status: number, code: IssueCode, reason: string, headers: Record<string, string> = {}, auditReason = reason): Outcome => ({
  reply: new Reply(status, operationOutcome(code, reason), headers),
  outcome: status >= 500 ? 'failure' : 'denied',
  reason: auditReason,
});

export function createFhirProxy(opts: FhirProxyOptions): FhirProxy {
  const upstream = opts.upstream.replace(/\/+$/, '');
  const clock = opts.clock ?? Date.now;
  const doFetch = opts.fetch ?? fetch;
  const pageSeal = createPageLinkSeal(opts.pageKey ?? randomBytes(32));
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024;
  const timeoutMs = opts.upstreamTimeoutMs ?? 30_000;
  let publicUrl = opts.publicUrl?.replace(/\/+$/, '');
  const policy: EnforcementPolicy = { ...opts.policy, bases: [upstream, ...(opts.policy?.bases ?? [])] };

  const base = () => publicUrl ?? '';
  const realm = () => `Bearer realm="${base() || 'FHIR'}"`;

  const resourceUrl = (url: string) => (url.startsWith(`${upstream}/`) ? `${base()}${url.slice(upstream.length)}` : undefined);

  /**
   * A sealed link to the proxy standing for the page that starts at `cursor`. The upstream
   * request it resumes is kept as what it adds to the search's first one (`first`), which the
   * proxy builds again from the request: the link carries the search once, not twice.
   */
  function pageLink(cursor: Cursor, first: string, originalRequest: string, facts: AccessFacts): string {
    const u = cursor.url === first ? '' : cursor.url.startsWith(`${first}&`) ? cursor.url.slice(first.length) : cursor.url;
    const state = { u, k: cursor.skip, r: originalRequest, c: facts.clientId ?? null, p: facts.patient ?? null, s: facts.sub ?? null, e: clock() + PAGE_LIFETIME_MS };
    return `${base()}${PAGE_PATH}?page=${pageSeal.seal(state, knownToHolder(originalRequest, facts))}`;
  }

  /** What the holder of a paging link knows its state holds (its request, its token's facts), which sizes the padding. */
  const knownToHolder = (originalRequest: string, facts: AccessFacts) => Buffer.byteLength(JSON.stringify([originalRequest, facts.clientId ?? null, facts.patient ?? null, facts.sub ?? null]));

  /** The upstream request a paging link's `u` stands for (see {@link pageLink}). */
  const resumeAt = (u: string, first: string) => (u === '' ? first : u.startsWith('&') ? `${first}${u}` : u);

  /** An upstream link as a path below the upstream base; a link elsewhere is the server misbehaving. */
  function belowUpstream(url: string): string {
    if (url.startsWith(`${upstream}/`) || url.startsWith(`${upstream}?`)) return url.slice(upstream.length);
    throw new Error('the FHIR server gave a paging link to somewhere else');
  }

  async function readBody(req: IncomingMessage): Promise<Buffer | Outcome> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) return refuse(413, 'too-costly', `the body is larger than ${maxBody} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > maxBody) return refuse(413, 'too-costly', `the body is larger than ${maxBody} bytes`);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  async function callUpstream(method: string, pathAndQuery: string, init: { body?: Buffer | string; headers?: Record<string, string> } = {}) {
    const res = await doFetch(`${upstream}${pathAndQuery}`, {
      method,
      headers: { accept: 'application/fhir+json', ...opts.upstreamHeaders, ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let json: unknown;
    if (text && /json/.test(res.headers.get('content-type') ?? '')) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return { status: res.status, headers: res.headers, json, empty: text === '' };
  }

  /** Headers worth passing back, with upstream URLs turned into the proxy's. */
  function passHeaders(headers: Headers): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of ['etag', 'last-modified']) {
      const v = headers.get(name);
      if (v) out[name] = v;
    }
    for (const name of ['location', 'content-location']) {
      const v = headers.get(name);
      if (!v) continue;
      const abs = v.startsWith('http') ? v : `${upstream}/${v.replace(/^\/+/, '')}`;
      if (abs.startsWith(`${upstream}/`)) out[name] = `${base()}${abs.slice(upstream.length)}`;
    }
    return out;
  }

  /** An upstream error answer, passed on without anything but an OperationOutcome. */
  function upstreamError(status: number, json: unknown): Outcome {
    const body = isObject(json) && json.resourceType === 'OperationOutcome' ? json : operationOutcome(status >= 500 ? 'exception' : 'invalid', `the FHIR server answered ${status}`);
    return { reply: new Reply(status >= 500 ? 502 : status, body), outcome: 'failure', reason: `upstream ${status}` };
  }

  const notFound = (reason: string) => refuse(404, 'not-found', 'not found, or not shared with this app', {}, reason);

  /** The drugs a request has read, and what judging more resources would still need read. */
  interface Lookup {
    /** Reads the drugs these resources name that are not read yet; undefined when no drug matters. */
    read: (resources: Json[]) => Promise<ReferencedMedications | undefined>;
    /**
     * Starts planning reads: `add` takes one more resource (none, to ask only) and answers how
     * many upstream reads `read` would make for all added so far (an `_id` read per ID_BATCH
     * drugs not read yet, and a history read per pinned drug, counted before its current
     * version says whether it is needed).
     */
    plan: (asIfFresh?: DrugsRead) => { add: (resource?: Json) => number; commit: () => void };
  }

  /**
   * Drugs a run of plans counts as read, in place of what the request has read: a plan given one
   * costs what a lookup that had read only those would, so what it answers does not depend on
   * drugs read for anything else (hidden matches' above all). `commit` adds a plan's drugs to it.
   */
  interface DrugsRead {
    ids: Set<string>;
    histories: Set<string>;
  }

  /**
   * Reads the Medications that resources refer to, each once per request (one lookup serves one
   * request), when the consent hides anything a drug could reveal. One that cannot be read is
   * recorded as `null` (and hides what refers to it). Current versions come by `_id` in batches,
   * and a pinned older version from one read of its drug's history, so made-up versions of a
   * drug cost nothing more. A resource naming more drugs than can be judged is hidden unread, and
   * what a page or a write may read is planned first (MAX_DRUG_READS).
   */
  function drugLookup(permit: Permit): Lookup {
    const memo = new Map<string, Json | null>();
    // Drugs whose history this request has read: every version it held is in `memo`.
    const historyRead = new Set<string>();
    const matters = () => Boolean(permit.filter.consent?.hiddenLabels.length);
    const judgedDrugs = (r: Json) => {
      const own = new Set(medicationReferences(r, permit.filter.bases));
      return own.size <= MAX_DRUG_REFERENCES ? own : new Set<string>();
    };
    const plan = (asIfFresh?: DrugsRead) => {
      const ids = new Set<string>();
      const histories = new Set<string>();
      const idRead = (mid: string) => (asIfFresh ? asIfFresh.ids.has(mid) : memo.has(`Medication/${mid}`));
      const historyKnown = (mid: string) => (asIfFresh ? asIfFresh.histories.has(mid) : historyRead.has(mid));
      const add = (r?: Json) => {
        if (r && matters()) {
          for (const ref of judgedDrugs(r)) {
            const drug = !asIfFresh && memo.has(ref) ? undefined : drugReference(ref);
            if (!drug) continue;
            if (!idRead(drug.mid)) ids.add(drug.mid);
            if (drug.version !== undefined && !historyKnown(drug.mid)) histories.add(drug.mid);
          }
        }
        return Math.ceil(ids.size / ID_BATCH) + histories.size;
      };
      const commit = () => {
        for (const mid of ids) asIfFresh?.ids.add(mid);
        for (const mid of histories) asIfFresh?.histories.add(mid);
      };
      return { add, commit };
    };
    const read = async (resources: Json[]) => {
      if (!matters()) return undefined;
      const named = new Set<string>();
      for (const r of resources) for (const ref of judgedDrugs(r)) named.add(ref);
      const current = new Set<string>();
      const pinned: { ref: string; mid: string; version: string }[] = [];
      for (const ref of named) {
        if (memo.has(ref)) continue;
        const drug = drugReference(ref);
        if (!drug) memo.set(ref, null);
        else if (drug.version === undefined) current.add(drug.mid);
        else {
          pinned.push({ ref, mid: drug.mid, version: drug.version });
          // A pinned version is judged with the drug as it is now too (see resource-visibility.ts).
          if (!memo.has(`Medication/${drug.mid}`)) current.add(drug.mid);
        }
      }
      if (current.size > 0) {
        // A drug the server would not give counts as unreadable, which hides what names it.
        const found = new Map(((await findByIds('Medication', [...current])) ?? []).map((r) => [String(r.id), r]));
        for (const mid of current) memo.set(`Medication/${mid}`, found.get(mid) ?? null);
      }
      const histories = new Set<string>();
      for (const { ref, mid, version } of pinned) {
        const now = memo.get(`Medication/${mid}`);
        // A drug that is gone, or pinned at the version it is now, needs no history.
        if (!now || versionOf(now) === version) memo.set(ref, now ?? null);
        else if (!historyRead.has(mid)) histories.add(mid);
      }
      for (const mid of histories) {
        for (const v of await drugHistory(mid)) memo.set(`Medication/${mid}/_history/${String(versionOf(v))}`, v);
        historyRead.add(mid);
      }
      for (const { ref } of pinned) if (!memo.has(ref)) memo.set(ref, null);
      return memo;
    };
    return { read, plan };
  }

  /**
   * The versions of a drug its server's first history page holds (the newest). A version pinned
   * further back counts as one that cannot be read: catalogue drugs change a handful of times.
   */
  async function drugHistory(mid: string): Promise<Json[]> {
    const res = await callUpstream('GET', `/Medication/${mid}/_history?_count=${DRUG_HISTORY_COUNT}`);
    if (res.status !== 200 || !isObject(res.json)) return [];
    return bundleResources(res.json).filter((r) => r.resourceType === 'Medication' && r.id === mid);
  }

  /**
   * Reads one resource (or version) and judges it. Missing, deleted and hidden answer alike, so
   * the answer never tells whether something the app may not see exists.
   */
  async function readVisible(permit: Permit, path: string, lookup: Lookup): Promise<{ resource: Json; headers: Headers } | { outcome: Outcome }> {
    const { resourceType, id } = permit.interaction;
    const res = await callUpstream('GET', path);
    if (res.status === 404 || res.status === 410) return { outcome: notFound('no such resource') };
    if (res.status !== 200) return { outcome: upstreamError(res.status, res.json) };
    if (!isObject(res.json) || res.json.resourceType !== resourceType || res.json.id !== id) {
      return { outcome: refuse(502, 'exception', 'the FHIR server answered with something other than the resource') };
    }
    const verdict = checkSingle(res.json, permit, await lookup.read([res.json]));
    if (!verdict.visible) return { outcome: notFound(verdict.reason) };
    return { resource: res.json, headers: res.headers };
  }

  /**
   * An upstream refusal of a search, in the proxy's words: the server's own OperationOutcome may
   * quote what it read, and the app learns enough from "check the parameters".
   */
  function searchRefused(status: number, reason: string): Outcome {
    if ([400, 404, 405, 422].includes(status)) return refuse(400, 'invalid', reason, {}, `upstream ${status}`);
    return upstreamError(status, undefined);
  }

  /**
   * The `_include`d and `_revinclude`d resources of the matches shown, and of no other. The
   * includes on the server's own pages came with hidden matches as well (a Practitioner that only
   * a hidden Observation names, a Provenance of a hidden record), so the proxy asks again for its
   * matches by id, with the include parameters, and keeps the visible included entries that are
   * their resources' current versions. Judging them reads the drugs they name, hidden ones' too,
   * so a page's includes have a drug budget of their own, as its matches do: the matches whose
   * includes would pass it are left to the next page (`shown` says how many stay), and a page
   * whose first match's alone would is refused.
   */
  async function includedWith(matches: Json[], params: [string, string][], permit: Permit, lookup: Lookup): Promise<{ entries: Json[]; shown: number } | { failure: Outcome }> {
    const ids = matches.map((e) => String((e.resource as Json).id));
    const found = new Map<string, Json>();
    // A revinclude is a search of the type it names, so what it brings needs `s` (SMART's search);
    // an include follows references the app already sees, so `r` or `s` will do.
    const groups: [[string, string][], Permit][] = [
      [params.filter(([n]) => n.split(':')[0] === '_include'), permit],
      [params.filter(([n]) => n.split(':')[0] === '_revinclude'), { ...permit, neededForIncluded: ['s'] }],
    ];
    let spent = 0;
    let kept = matches.length;
    let size = ID_BATCH;
    // Planned as if no drug had been read yet: those read for the page's hidden matches must not
    // make its includes cheaper (and so decide where the page is cut, or whether it is refused).
    const includesRead: DrugsRead = { ids: new Set(), histories: new Set() };
    for (let i = 0; i < ids.length; ) {
      const batch = ids.slice(i, i + size);
      const brought: { entries: PageEntry[]; judgedAs: Permit }[] = [];
      for (const [groupParams, judgedAs] of groups) {
        if (groupParams.length === 0) continue;
        const query = new URLSearchParams([['_id', batch.join(',')], ...groupParams, ['_count', String(batch.length)]]);
        const res = await callUpstream('GET', `/${permit.interaction.resourceType}?${query}`);
        if (res.status !== 200) return { failure: searchRefused(res.status, 'the FHIR server could not apply _include or _revinclude; check their search parameters') };
        if (!isObject(res.json) || res.json.resourceType !== 'Bundle') return { failure: refuse(502, 'exception', 'the FHIR server answered with something other than a Bundle') };
        // A match another one includes is judged as an include too (its drugs are read already):
        // whether it is shown as one depends on where the page ends.
        const entries = pageEntries(res.json, judgedAs).filter((e) => e.role === 'include' && e.resource);
        brought.push({ entries, judgedAs });
      }
      const plan = lookup.plan(includesRead);
      for (const { entries } of brought) for (const e of entries) plan.add(e.resource);
      const cost = plan.add();
      if (spent + cost > MAX_DRUG_READS) {
        if (i > 0) {
          kept = i;
          break;
        }
        // The page's first matches are tried in halves, so that the page shows what it can.
        if (batch.length === 1) return { failure: refuse(400, 'too-costly', 'the resources included with this match name too many drugs to judge; leave out _include and _revinclude to read it') };
        size = Math.ceil(batch.length / 2);
        continue;
      }
      spent += cost;
      plan.commit();
      const medications = await lookup.read(brought.flatMap(({ entries }) => entries.map((e) => e.resource!)));
      for (const { entries, judgedAs } of brought) {
        for (const e of entries) if (judgeEntry(e, judgedAs, medications).verdict.visible) found.set(entryKey(e.entry), e.entry);
      }
      i += batch.length;
    }
    const shown = new Set(matches.slice(0, kept).map(entryKey));
    for (const key of shown) found.delete(key);
    const current = await currentVersions([...found.values()].map((e) => e.resource as Json));
    if ('failure' in current) return current;
    // A versioned reference can bring an old version: shown only while it is the current one,
    // as a vread is (a resource since labelled, moved or deleted keeps its past hidden).
    const entries = [...found.entries()].filter(([key, e]) => current.versions.has(key) && current.versions.get(key) === versionOf(e.resource as Json)).map(([, e]) => e);
    return { entries, shown: kept };
  }

  /** Resources of one type read by `_id`, in batches; undefined when the server refuses. */
  async function findByIds(type: string, ids: readonly string[]): Promise<Json[] | undefined> {
    const found: Json[] = [];
    for (let i = 0; i < ids.length; i += ID_BATCH) {
      const batch = ids.slice(i, i + ID_BATCH);
      const res = await callUpstream('GET', `/${type}?${new URLSearchParams([['_id', batch.join(',')], ['_count', String(batch.length)]])}`);
      if (res.status !== 200 || !isObject(res.json)) return undefined;
      found.push(...bundleResources(res.json).filter((r) => r.resourceType === type && typeof r.id === 'string' && batch.includes(r.id)));
    }
    return found;
  }

  /** The current version id of each resource (by `Type/id`), read by `_id`; absent when there is none. */
  async function currentVersions(resources: Json[]): Promise<{ versions: Map<string, string | undefined> } | { failure: Outcome }> {
    const versions = new Map<string, string | undefined>();
    const byType = new Map<string, string[]>();
    for (const r of resources) {
      const type = String(r.resourceType);
      if (RESOURCE_TYPE.test(type) && typeof r.id === 'string' && FHIR_ID.test(r.id)) byType.set(type, [...(byType.get(type) ?? []), r.id]);
    }
    for (const [type, ids] of byType) {
      const found = await findByIds(type, ids);
      if (!found) return { failure: refuse(502, 'exception', 'the FHIR server could not say which versions of the included resources are current') };
      for (const r of found) versions.set(`${type}/${String(r.id)}`, versionOf(r));
    }
    return { versions };
  }

  /** The resource in a create or update body, or the refusal of it. */
  function parseWrittenResource(body: Buffer, permit: Permit, contentType: string | undefined): Json | Outcome {
    const parsed = parseJsonBody(body, contentType, /^application\/(fhir\+)?json$/, 'the resource as application/fhir+json');
    if ('problem' in parsed) return refuse(parsed.problem.status, parsed.problem.code, parsed.problem.text);
    const resource = parsed.value;
    const { resourceType, id, kind } = permit.interaction;
    if (!isObject(resource) || resource.resourceType !== resourceType) return refuse(400, 'invalid', `the body must be a ${resourceType} resource`);
    if (kind === 'update' && resource.id !== id) return refuse(400, 'invalid', 'the resource id in the body must match the URL');
    if (kind === 'create') {
      // FHIR R4 3.1.0.8: the server assigns the id of a created resource. Forwarding one the app
      // chose would let the server's answer (a conflict, an overwrite) say whether that id, maybe
      // another patient's, already exists.
      const { id: _ignored, ...rest } = resource;
      if (isObject(rest.meta)) {
        const { versionId: _v, lastUpdated: _l, ...meta } = rest.meta;
        rest.meta = meta;
      }
      return rest;
    }
    return resource;
  }

  /** Whether `resource`, as it would be stored, is one the token may write. */
  async function judgeWrite(resource: Json, permit: Permit, lookup: Lookup): Promise<Outcome | undefined> {
    const medications = await lookup.read([resource]);
    const checked = checkResource(resource, permit.filter, permit.needed, { checkDates: false, ...(medications ? { medications } : {}) });
    if (!checked.visible) return writeRefused(checked.reason);
    const references = patientDataReferences(resource, permit);
    // Counted from the body alone, so this refusal says nothing of what the references name.
    if (references === 'too_many') return refuse(400, 'too-costly', `a resource written through this server may refer to at most ${MAX_CHECKED_REFERENCES} resources of patient data`);
    if (references === 'unreadable' || (await refersToUnreadable(references, permit, lookup))) return writeRefused('unverifiable_reference');
    return undefined;
  }

  /**
   * One text for every consent reason: some come from resources a write refers to, which the app
   * may not read (a Medication with a hidden label answers as one that does not exist). The
   * audit event keeps the reason.
   */
  function writeRefused(reason: string): Outcome {
    const why = reason === 'other_patient' ? 'it would not belong to the patient in context' : 'it is outside what the patient shared with this app';
    return refuse(403, 'forbidden', `this resource cannot be written: ${why}`, {}, reason);
  }

  /**
   * The resources of patient data a resource to be written refers to, by type: those it names
   * other than the patient in context and reference data (REFERENCE_DATA_TYPES). `unreadable`
   * when one is of a type the proxy cannot judge or is not a plain `Type/id`.
   */
  function patientDataReferences(resource: Json, permit: Permit): Map<string, Set<string>> | 'unreadable' | 'too_many' {
    const wanted = new Map<string, Set<string>>();
    let count = 0;
    for (const ref of literalReferences(resource)) {
      const rel = relativeReference(ref, permit.filter.bases ?? []);
      if (rel === undefined) continue;
      const m = /^([A-Z][A-Za-z]{1,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(rel);
      if (!m) return 'unreadable';
      const [, type, rid] = m as unknown as [string, string, string];
      if (REFERENCE_DATA_TYPES.has(type)) continue;
      if (type === 'Patient' && rid === permit.filter.patient) continue;
      if (type !== 'Patient' && !PATIENT_LINKS[type]) return 'unreadable';
      if (!FHIR_ID.test(rid)) return 'unreadable';
      if (!wanted.get(type)?.has(rid) && ++count > MAX_CHECKED_REFERENCES) return 'too_many';
      wanted.set(type, (wanted.get(type) ?? new Set<string>()).add(rid));
    }
    return wanted;
  }

  /**
   * Whether a resource to be written refers to patient data the token may not read. A server that
   * checks references on write (HAPI's referential integrity, Medplum's) would refuse a reference
   * to a missing resource and accept one to a hidden resource, so each one is read and judged
   * first; missing and hidden are refused alike.
   */
  async function refersToUnreadable(wanted: Map<string, Set<string>>, permit: Permit, lookup: Lookup): Promise<boolean> {
    const referred: Json[] = [];
    for (const [type, ids] of wanted) {
      const found = await findByIds(type, [...ids]);
      if (!found || new Set(found.map((r) => r.id)).size !== ids.size) return true;
      referred.push(...found);
    }
    // Judging them may need their drugs read: a write whose references name more than a page may
    // read is refused as if one were hidden (a false refusal, never a leak).
    const plan = lookup.plan();
    for (const r of referred) plan.add(r);
    if (plan.add() > MAX_DRUG_READS) return true;
    const medications = await lookup.read(referred);
    return referred.some((r) => !checkResource(r, permit.filter, ['r', 's'], medications ? { medications } : {}).visible);
  }

  /** The operations of a JSON Patch body (RFC 6902), checked for shape only, or the refusal. */
  function parsePatch(body: Buffer, contentType: string | undefined): Operation[] | Outcome {
    const parsed = parseJsonBody(body, contentType, /^application\/json-patch\+json$/, 'only JSON Patch (application/json-patch+json) through this server');
    if ('problem' in parsed) return refuse(parsed.problem.status, parsed.problem.code, parsed.problem.text);
    const ops = parsed.value;
    if (!Array.isArray(ops) || ops.length === 0) return refuse(400, 'invalid', 'a JSON Patch is a non-empty array of operations');
    if (ops.length > MAX_PATCH_OPERATIONS) return refuse(400, 'too-costly', `a JSON Patch may hold at most ${MAX_PATCH_OPERATIONS} operations`);
    const problem = jsonPatch.validate(ops as Operation[]);
    if (problem) return refuse(400, 'invalid', `JSON Patch operation ${problem.index ?? 0} is not valid (${patchErrorText(problem.name)})`);
    return ops as Operation[];
  }

  /**
   * The current version with `ops` applied: the resource a PATCH would store, judged like a PUT
   * of it. A patch that cannot be applied to this version is the app's error (RFC 5789 422).
   */
  function applyPatch(current: Json, ops: Operation[], permit: Permit): Json | Outcome {
    const applied = applyPatchBounded(current, ops, maxBody, patchErrorText);
    if ('problem' in applied) return refuse(applied.problem.status, applied.problem.code, applied.problem.text);
    const result = applied.value;
    const { resourceType, id } = permit.interaction;
    if (!isObject(result) || result.resourceType !== resourceType || result.id !== id) return refuse(400, 'invalid', 'a patch may not change the resource type or id');
    return result;
  }

  async function execute(req: IncomingMessage, permit: Permit, facts: AccessFacts, self: string, original: string, body: Buffer | undefined, cursor?: Cursor): Promise<Outcome> {
    const { interaction } = permit;
    const { kind, resourceType, id } = interaction;
    const enc = (v: string) => encodeURIComponent(v);

    const lookup = drugLookup(permit);
    const instancePath = id ? `/${resourceType}/${enc(id)}` : '';

    // A version is shown only while the resource as it is now may be: one that has since moved to
    // another patient, been labelled or been deleted keeps its past hidden too. `$everything` of a
    // Patient the app may not see answers as that of one that does not exist, not as the server's
    // empty (or refused) search.
    if (kind === 'read' || kind === 'vread' || kind === 'history' || kind === 'everything') {
      const current = await readVisible(permit, instancePath, lookup);
      if ('outcome' in current) return current.outcome;
      if (kind === 'read') return { reply: new Reply(200, current.resource, passHeaders(current.headers)), outcome: 'success' };
      if (kind === 'vread') {
        const version = await readVisible(permit, `${instancePath}/_history/${enc(interaction.versionId!)}`, lookup);
        if ('outcome' in version) return version.outcome;
        return { reply: new Reply(200, version.resource, passHeaders(version.headers)), outcome: 'success' };
      }
    }

    if (kind === 'search' || kind === 'history' || kind === 'everything') {
      const path = kind === 'search' ? `/${resourceType}` : kind === 'everything' ? `${instancePath}/$everything` : `${instancePath}/_history`;
      const includeParams = kind === 'search' ? permit.upstreamParams.filter(([n]) => INCLUDE_PARAM.test(n)) : [];
      const matchParams = permit.upstreamParams.filter(([n]) => !INCLUDE_PARAM.test(n));
      // Upstream pages are read in sizes of our choosing; the app's _count sizes the proxy's pages.
      const upstreamCount = String(Math.min(MAX_PAGE_SIZE, Math.max(permit.pageSize + 1, 100)));
      const sent: [string, string][] = [...matchParams, ['_count', upstreamCount]];
      const first = `${path}?${new URLSearchParams(sent)}`;
      // Every upstream page must fit what any server accepts: a later page's request is longer (it
      // carries a position), and whether it is made depends on hidden matches, so its refusal
      // would say they exist. Judged from the request alone, before anything is sent.
      if (first.length + PAGING_POSITION_ROOM > MAX_UPSTREAM_TARGET) return refuse(414, 'too-costly', `this search is too long to pass on: at most ${MAX_UPSTREAM_TARGET - PAGING_POSITION_ROOM} characters of path and parameters`);
      // So must the proxy's own paging links, which carry the search (sealed, so longer).
      if (`${PAGE_PATH}?page=`.length + pageSeal.sealedLength(knownToHolder(original, facts)) > MAX_UPSTREAM_TARGET) return refuse(414, 'too-costly', 'this search is too long to page through: its paging links would be too long for a request; shorten it');
      const from = cursor ? { url: resumeAt(cursor.url, first), skip: cursor.skip } : { url: first, skip: 0 };
      const collected = await collectPage<Outcome>({
        from,
        pageSize: permit.pageSize,
        maxScanned: MAX_SCANNED,
        fetch: async (url) => {
          const res = await callUpstream('GET', url);
          if (res.status !== 200) return { failure: searchRefused(res.status, 'the FHIR server refused this search; check its parameters') };
          if (!isObject(res.json) || res.json.resourceType !== 'Bundle') return { failure: refuse(502, 'exception', 'the FHIR server answered with something other than a Bundle') };
          return { bundle: res.json };
        },
        entries: (bundle) => pageEntries(bundle, permit),
        plan: () => {
          const plan = lookup.plan();
          return { add: (e) => plan.add(e.resource) };
        },
        maxReads: MAX_DRUG_READS,
        judge: async (entries) => {
          const medications = await lookup.read(entries.flatMap((e) => (e.resource ? [e.resource] : [])));
          return entries.map((e) => judgeEntry(e, permit, medications));
        },
        nextOf: (bundle) => {
          const next = (Array.isArray(bundle.link) ? bundle.link : []).find((l) => isObject(l) && l.relation === 'next' && typeof l.url === 'string') as { url: string } | undefined;
          if (!next) return undefined;
          const page = nextUpstreamPage(belowUpstream(next.url), path, sent);
          if ('refused' in page) throw new Error(page.refused);
          return page.path;
        },
      });
      if ('failure' in collected) return collected.failure;
      const included = includeParams.length && collected.matches.length ? await includedWith(collected.matches, includeParams, permit, lookup) : { entries: [], shown: collected.matches.length };
      if ('failure' in included) return included.failure;
      // A page whose includes cost too much to judge in full is cut short, and goes on after what it shows.
      const matches = collected.matches.slice(0, included.shown);
      const cut = included.shown < collected.matches.length ? collected.cuts[included.shown] : undefined;
      const next = cut ? cut.next : collected.next;
      const entries = [...matches, ...included.entries].map((e) => rewriteEntry(e, resourceUrl));
      const bundle: Json = {
        resourceType: 'Bundle',
        type: kind === 'history' ? 'history' : 'searchset',
        // A total only where it is plainly the number of matches shown: a result of one page.
        ...(!cursor && !next ? { total: matches.length } : {}),
        link: [{ relation: 'self', url: self }, ...(next ? [{ relation: 'next', url: pageLink(next, first, original, facts) }] : [])],
        ...(entries.length ? { entry: entries } : {}),
      };
      return { reply: new Reply(200, bundle), outcome: 'success', report: cut ? cut.report : collected.report };
    }

    const contentType = req.headers['content-type'];
    // The server is told what the proxy sends (JSON it serialised itself), never what the app
    // said it sent: a charset the server honoured differently would store an unjudged resource.
    const forwardHeaders = (extra: Record<string, string> = {}) => ({
      ...(typeof req.headers.prefer === 'string' ? { prefer: req.headers.prefer } : {}),
      ...extra,
    });
    const written = async (method: string, path: string, payload: Buffer | undefined, extra: Record<string, string>): Promise<Outcome> => {
      const res = await callUpstream(method, path, { ...(payload ? { body: payload } : {}), headers: forwardHeaders(extra) });
      // The server's own words about a refused write may name what the body referred to.
      if (res.status >= 300) return upstreamError(res.status, undefined);
      const headers = passHeaders(res.headers);
      // What the server sends back is shown only if the app could read it.
      const shown = async (json: Json) => {
        const medications = await lookup.read([json]);
        return checkResource(json, permit.filter, ['c', 'r', 'u'], medications ? { medications } : {}).visible;
      };
      if (isObject(res.json) && res.json.resourceType !== 'OperationOutcome' && !(await shown(res.json))) {
        return { reply: new Reply(res.status, operationOutcome('forbidden', 'done; the result is not shown')), outcome: 'success' };
      }
      return { reply: new Reply(res.status, res.json ?? (res.empty ? null : operationOutcome('exception', 'the FHIR server answered with a body that is not JSON')), headers), outcome: 'success' };
    };

    if (req.headers['if-none-exist'] || req.headers['if-none-match']) {
      return refuse(400, 'not-supported', 'conditional creates and updates are not supported through this server');
    }
    if (kind === 'create') {
      const resource = parseWrittenResource(body ?? Buffer.alloc(0), permit, contentType);
      if ('reply' in resource) return resource as Outcome;
      const problem = await judgeWrite(resource, permit, lookup);
      if (problem) return problem;
      return written('POST', `/${resourceType}`, Buffer.from(JSON.stringify(resource)), { 'content-type': 'application/fhir+json' });
    }
    // The body is judged before the current version is read, so whether a refusal is about the
    // body or a 404 does not depend on what exists. An update never creates: a PUT to an id that
    // does not exist answers as one that is hidden (create with POST).
    let replacement: Json | undefined;
    let ops: Operation[] | undefined;
    if (kind === 'update') {
      const resource = parseWrittenResource(body ?? Buffer.alloc(0), permit, contentType);
      if ('reply' in resource) return resource as Outcome;
      const problem = await judgeWrite(resource, permit, lookup);
      if (problem) return problem;
      replacement = resource;
    } else if (kind === 'patch') {
      const parsed = parsePatch(body ?? Buffer.alloc(0), contentType);
      if (!Array.isArray(parsed)) return parsed;
      ops = parsed;
    }
    const current = await readVisible(permit, instancePath, lookup);
    if ('outcome' in current) return current.outcome;
    if (ops) {
      // The version patched must be readable too (see decide): a granular read scope may cover less.
      const medications = await lookup.read([current.resource]);
      const readable = checkResource(current.resource, permit.filter, ['r'], medications ? { medications } : {});
      if (!readable.visible) return notFound(readable.reason);
      // A patch is sent as the update it amounts to, so what is stored is exactly what was judged.
      const patched = applyPatch(current.resource, ops, permit);
      if ('reply' in patched) return patched as Outcome;
      const problem = await judgeWrite(patched, permit, lookup);
      if (problem) return problem;
      replacement = patched;
    }
    const version = isObject(current.resource.meta) && typeof current.resource.meta.versionId === 'string' ? `W/"${current.resource.meta.versionId}"` : undefined;
    const judged = current.headers.get('etag') ?? version;
    // The version checked above is the version changed: a concurrent change makes the write fail.
    // The guard is always the proxy's own; an app's If-Match may only ask for the same version
    // (one like `*` or `x` would otherwise switch the server's check off).
    const asked = req.headers['if-match'];
    const currentTag = judged ? opaqueTag(judged) : undefined;
    if (asked !== undefined && (typeof asked !== 'string' || !currentTag || !ifMatchTags(asked)?.includes(currentTag))) {
      return refuse(412, 'conflict', 'If-Match does not name the current version of this resource; read it again');
    }
    const guard: Record<string, string> = judged ? { 'if-match': judged } : {};
    if (kind === 'delete') return written('DELETE', instancePath, undefined, guard);
    return written('PUT', instancePath, Buffer.from(JSON.stringify(replacement)), { ...guard, 'content-type': 'application/fhir+json' });
  }

  async function bearer(req: IncomingMessage): Promise<Outcome | AccessFacts> {
    const header = req.headers.authorization;
    const m = header ? /^Bearer +(\S+) *$/i.exec(header) : null;
    if (!header) return refuse(401, 'login', 'this server needs a bearer access token', { 'www-authenticate': realm() }, 'no token');
    if (!m?.[1]) return refuse(401, 'login', 'the Authorization header is not a bearer token', { 'www-authenticate': `${realm()}, error="invalid_request"` }, 'malformed authorization');
    let verdict;
    try {
      verdict = await opts.tokens.validate(m[1]);
    } catch (err) {
      if (err instanceof TokenServiceUnavailable) {
        opts.log?.warn({ err }, 'token validation unavailable');
        return refuse(503, 'transient', 'the authorization server could not be reached; try again shortly', { 'retry-after': '5' });
      }
      throw err;
    }
    const invalid = (reason: string) => refuse(401, 'login', 'the access token is not valid', { 'www-authenticate': `${realm()}, error="invalid_token"` }, reason);
    if (!verdict.active) return invalid(verdict.reason);
    const audience = opts.audience === false ? undefined : (opts.audience ?? (publicUrl ? [publicUrl] : undefined));
    if (audience && !verdict.facts.aud.some((a) => audience.includes(a.replace(/\/+$/, '')))) return invalid('the token is for another server');
    return verdict.facts;
  }

  function denial(decision: Extract<Decision, { effect: 'deny' }>): Outcome {
    const headers: Record<string, string> = {};
    if (decision.wwwAuthenticate) headers['www-authenticate'] = decision.wwwAuthenticate;
    else if (decision.error === 'insufficient_scope') headers['www-authenticate'] = `${realm()}, error="insufficient_scope"`;
    return refuse(decision.status, decision.code, decision.reason, headers);
  }

  async function route(req: IncomingMessage, self: string, path: string, query: URLSearchParams, facts: { value?: AccessFacts; decision?: Decision }): Promise<Outcome> {
    // Public, however the path is spelt (`/metadata/`, `//metadata`): parsed as every other path is.
    const asked = parseFhirRequest({ method: req.method ?? 'GET', path, query });
    if (asked.ok && asked.interaction.kind === 'capabilities') {
      const res = await callUpstream('GET', '/metadata');
      if (res.status !== 200) return upstreamError(res.status, res.json);
      return { reply: new Reply(200, res.json), outcome: 'success' };
    }
    const token = await bearer(req);
    if ('reply' in token) return token;
    facts.value = token;

    let original = `${path}${query.size ? `?${query}` : ''}`;
    let cursor: Cursor | undefined;
    if (path === PAGE_PATH) {
      if (req.method !== 'GET') return refuse(405, 'not-supported', 'paging links take GET');
      const page = pageSeal.open(query.get('page') ?? '');
      if (!page || typeof page.u !== 'string' || !Number.isSafeInteger(page.k) || (page.k as number) < 0 || typeof page.r !== 'string' || typeof page.e !== 'number') {
        return refuse(400, 'invalid', 'this paging link is not one this server gave out');
      }
      if (page.e < clock()) return refuse(410, 'not-found', 'this paging link has expired; search again');
      if (page.c !== (token.clientId ?? null) || page.p !== (token.patient ?? null) || page.s !== (token.sub ?? null)) return refuse(403, 'forbidden', 'this paging link belongs to another token');
      original = page.r;
      cursor = { url: page.u, skip: page.k as number };
    }
    const [origPath = '', origQuery = ''] = original.split(/\?(.*)/s);

    let formBody: URLSearchParams | undefined;
    let body: Buffer | undefined;
    if (['POST', 'PUT', 'PATCH'].includes(req.method ?? '') && !cursor) {
      const read = await readBody(req);
      if (!Buffer.isBuffer(read)) return read;
      body = read;
      if (req.method === 'POST' && searchBase(origPath) !== undefined) {
        if (!/^application\/x-www-form-urlencoded\b/.test(req.headers['content-type'] ?? '')) return refuse(415, 'not-supported', 'send _search parameters as application/x-www-form-urlencoded');
        formBody = new URLSearchParams(body.toString('utf8'));
      }
    }
    const parsed = parseFhirRequest({ method: cursor ? 'GET' : (req.method ?? 'GET'), path: origPath, query: new URLSearchParams(origQuery), ...(formBody ? { formBody } : {}) });
    if (!parsed.ok) return refuse(parsed.status, parsed.status === 404 ? 'not-found' : 'not-supported', parsed.reason);
    if (cursor && !['search', 'history', 'everything'].includes(parsed.interaction.kind)) return refuse(400, 'invalid', 'this paging link is not one this server gave out');

    const decision = decide(parsed.interaction, token, policy, Math.floor(clock() / 1000));
    facts.decision = decision;
    if (decision.effect === 'deny') return denial(decision);
    // A POST _search is forwarded as a GET, and its own links point at the GET form.
    const selfUrl = formBody ? `${base()}${searchBase(origPath)}?${new URLSearchParams([...parsed.interaction.params])}` : self;
    return execute(req, decision, token, selfUrl, formBody ? selfUrl.slice(base().length) : original, body, cursor);
  }

  function send(res: ServerResponse, reply: Reply): void {
    const headers: Record<string, string> = { 'cache-control': 'no-store', ...reply.headers };
    if (reply.body === null || reply.body === undefined) {
      res.writeHead(reply.status, headers).end();
      return;
    }
    const text = JSON.stringify(reply.body);
    res.writeHead(reply.status, { ...headers, 'content-type': FHIR_JSON, 'content-length': String(Buffer.byteLength(text)) }).end(text);
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = req.url ?? '/';
    const [path = '/', search = ''] = raw.split(/\?(.*)/s);
    const query = new URLSearchParams(search);
    const self = `${base()}${raw}`;
    const seen: { value?: AccessFacts; decision?: Decision } = {};
    let result: Outcome;
    try {
      result = path.startsWith('/') ? await route(req, self, path, query, seen) : refuse(400, 'invalid', 'the request target must be a path');
    } catch (err) {
      const timeout = (err as Error).name === 'TimeoutError';
      opts.log?.error({ err }, 'fhir proxy request failed');
      result = timeout
        ? refuse(504, 'timeout', 'the FHIR server did not answer in time')
        : refuse(502, 'exception', 'the FHIR server could not be reached or answered unexpectedly', {}, (err as Error).message);
    }
    send(res, result.reply);
    if (path === '/metadata' && result.outcome === 'success') return;
    const facts = seen.value;
    const interaction = seen.decision?.effect === 'allow' ? seen.decision.interaction : undefined;
    const event: AuditEventInput = {
      type: 'fhir.access',
      outcome: result.outcome,
      actor: facts?.sub ?? (facts?.clientId ? `client:${facts.clientId}` : undefined),
      clientId: facts?.clientId,
      patientId: facts?.patient,
      ip: req.socket.remoteAddress,
      details: {
        method: req.method ?? null,
        path: path.length > 200 ? `${path.slice(0, 200)}...` : path,
        status: result.reply.status,
        interaction: interaction?.kind,
        resource_type: interaction?.resourceType,
        resource_id: interaction?.id,
        reason: result.reason,
        consent_id: facts?.consent?.consentId,
        consent_version: facts?.consent?.version,
        ...(result.report ? { returned: result.report.kept, withheld: result.report.removed, withheld_because: result.report.reasons } : {}),
      },
    };
    try {
      await opts.audit?.(event);
    } catch (err) {
      opts.log?.error({ err }, 'recording a fhir access decision failed');
    }
  }

  const proxy: FhirProxy = {
    handle(req, res) {
      handleRequest(req, res).catch((err: unknown) => {
        opts.log?.error({ err }, 'fhir proxy failed');
        if (!res.headersSent) send(res, new Reply(500, operationOutcome('exception', 'internal error')));
        else res.destroy();
      });
    },
    async listen(port, host = '127.0.0.1') {
      const server = createServer((req, res) => proxy.handle(req, res));
      server.headersTimeout = 20_000;
      server.requestTimeout = 60_000;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve());
      });
      const address = server.address() as AddressInfo;
      const url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
      publicUrl ??= url;
      return {
        url,
        server,
        close: () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      };
    },
  };
  return proxy;
}
