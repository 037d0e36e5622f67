/**
 * One differential check: seed a world into Medplum, send a token's requests through the proxy,
 * and compare every answer with what the oracle (the spec read independently) says must be shown.
 * Returns the disagreements found, each a line naming the request, what was expected and got.
 */
import type { SeedHistory } from '../../helpers/medplum-fhir-server.ts';
import type { Answer, Rig } from './proxy-rig.ts';
import { createOracle, type Json, type OracleToken } from './visibility-oracle.ts';

type Entry = { fullUrl?: string; search?: { mode?: string }; resource?: Json };
type Bundle = { resourceType?: string; type?: string; total?: number; link?: { relation: string; url: string }[]; entry?: Entry[] };

export interface CheckStats {
  requests: number;
  /** Patient `_id` searches naming another patient, refused with 403 (see {@link checkWorld}). */
  patientIdSearchRefusals?: number;
}

const versionOf = (r: Json | undefined) => (r?.meta as { versionId?: string } | undefined)?.versionId;
const key = (r: Json) => `${r.resourceType as string}/${r.id as string}/${versionOf(r) ?? '?'}`;
/** A search answer without its self link (which repeats the query), for comparing two searches. */
const comparable = (a: Answer) => {
  const b = a.body as Bundle;
  return JSON.stringify({ status: a.status, ...b, link: (b.link ?? []).filter((l) => l.relation !== 'self').map((l) => l.relation) });
};

export async function checkWorld(rig: Rig, histories: readonly SeedHistory[], token: OracleToken, opts: { counts: number[]; stats?: CheckStats } = { counts: [2] }): Promise<string[]> {
  const { fhir } = rig;
  await rig.reseed(histories);
  const problems: string[] = [];
  const problem = (line: string) => {
    if (problems.length < 12) problems.push(line);
  };
  const jwt = await rig.mint(token);
  let invented = 0;
  const newId = () => `zz-none-${++invented}`;
  const get = async (path: string): Promise<Answer> => {
    if (opts.stats) opts.stats.requests += 1;
    const a = await rig.get(path, jwt);
    if (a.status >= 500) problem(`${path}: ${a.status} ${a.text.slice(0, 200)}`);
    return a;
  };

  // The oracle judges what the upstream stored, not what the world generated: the two differ where
  // storage normalises (an empty Period is dropped, so `issued` dates the Observation instead).
  const stored = new Map<string, Json[]>();
  const current = new Map<string, Json | undefined>();
  for (const h of histories) {
    const { resourceType, id } = h.versions[0]!;
    const versions = fhir.repository().storedVersions(resourceType, id) as unknown as Json[];
    if (versions.length !== h.versions.length) throw new Error(`${resourceType}/${id}: seeded ${h.versions.length} versions, the upstream stored ${versions.length}`);
    stored.set(`${resourceType}/${id}`, versions);
    current.set(`${resourceType}/${id}`, h.deleted ? undefined : versions.at(-1));
  }
  const oracle = createOracle(token, (type, id) => current.get(`${type}/${id}`), fhir.url);
  const effectivePatient = token.patient ?? (token.fhirUser?.startsWith('Patient/') ? token.fhirUser.slice('Patient/'.length) : undefined);
  const types = [...new Set(histories.map((h) => h.versions[0]!.resourceType))];

  // The answers for what does not exist, per type: what every not-visible answer must equal.
  const absent = new Map<string, { read: Answer; vread: Answer; history: Answer }>();
  for (const type of types) {
    absent.set(type, { read: await get(`/${type}/${newId()}`), vread: await get(`/${type}/${newId()}/_history/1`), history: await get(`/${type}/${newId()}/_history`) });
  }
  const anyNotFound = [...absent.values()].map((a) => a.read).find((a) => a.status === 404);
  const same = (what: string, got: Answer, want: Answer, type: string, id: string) => {
    // The patient in context itself is never refused as "another patient" (403): when it is
    // hidden it answers as a missing resource of any other type does.
    if (got.status === want.status && got.text === want.text) return;
    const reference = type === 'Patient' && id === effectivePatient && want.status === 403 ? anyNotFound : want;
    if (!reference) {
      if (got.status !== 404) problem(`${what}: not visible; expected 404, got ${got.status} ${got.text.slice(0, 160)}`);
      return;
    }
    if (got.status !== reference.status || got.text !== reference.text) {
      problem(`${what}: not visible; expected the answer for a nonexistent id (${reference.status} ${reference.text.slice(0, 120)}), got ${got.status} ${got.text.slice(0, 160)}`);
    }
  };

  for (const h of histories) {
    const first = h.versions[0]!;
    const type = first.resourceType;
    const id = first.id;
    const now = current.get(`${type}/${id}`);
    const nowVisible = now !== undefined && oracle.visible(now, 'r');
    const none = absent.get(type)!;

    const read = await get(`/${type}/${id}`);
    if (nowVisible) {
      if (read.status !== 200 || key(read.body) !== key(now)) problem(`read ${type}/${id}: visible; expected 200 ${key(now)}, got ${read.status} ${read.status === 200 ? key(read.body) : read.text.slice(0, 160)}`);
    } else same(`read ${type}/${id}`, read, none.read, type, id);

    const versions = stored.get(`${type}/${id}`)!;
    for (const v of versions) {
      const vid = versionOf(v)!;
      const answer = await get(`/${type}/${id}/_history/${vid}`);
      if (oracle.versionVisible(v, now)) {
        if (answer.status !== 200 || key(answer.body) !== key(v)) problem(`vread ${type}/${id}/_history/${vid}: visible; expected 200, got ${answer.status} ${answer.text.slice(0, 160)}`);
      } else same(`vread ${type}/${id}/_history/${vid}`, answer, none.vread, type, id);
    }
    same(`vread ${type}/${id}/_history/99`, await get(`/${type}/${id}/_history/99`), none.vread, type, id);

    const history = await get(`/${type}/${id}/_history`);
    if (nowVisible) {
      const want = versions.filter((v) => oracle.versionVisible(v, now)).reverse().map(key);
      const b = history.body as Bundle;
      const got = (b.entry ?? []).map((e) => (e.resource ? key(e.resource) : 'entry without resource'));
      if (history.status !== 200 || b.type !== 'history' || JSON.stringify(got) !== JSON.stringify(want)) {
        problem(`history ${type}/${id}: expected ${history.status === 200 ? '' : '200 '}[${want}], got ${history.status} [${got}] ${history.status === 200 ? '' : history.text.slice(0, 160)}`);
      } else if (b.total !== undefined && b.total !== want.length) problem(`history ${type}/${id}: total ${b.total}, ${want.length} entries`);
    } else same(`history ${type}/${id}`, history, none.history, type, id);
  }

  // Searches: the oracle's visible matches among what the upstream matches, in upstream order.
  const upstreamIds = async (type: string, query: string): Promise<string[]> => {
    const res = await fetch(`${fhir.url}/${type}?${query}${query ? '&' : ''}_count=1000`);
    const b = (await res.json()) as Bundle;
    if (res.status !== 200) throw new Error(`upstream ${type}?${query}: ${res.status} ${JSON.stringify(b)}`);
    return (b.entry ?? []).filter((e) => e.search?.mode !== 'include').map((e) => e.resource!.id as string);
  };
  const expectedMatches = async (type: string, query: string): Promise<string[]> => {
    let ids = await upstreamIds(type, query);
    // Compartment membership in a confined search is the upstream's to index (Medplum indexes
    // `Patient/P` only, not `Patient/P/_history/n` nor an absolute URL): the proxy can only ask.
    const compartment = oracle.searchCompartment(type);
    if (compartment !== undefined) {
      const inside = new Set(await upstreamIds(type, `${query}${query ? '&' : ''}${type === 'Patient' ? '_id' : 'patient'}=${compartment}`));
      ids = ids.filter((i) => inside.has(i));
    }
    return ids.filter((i) => {
      const r = current.get(`${type}/${i}`);
      return r !== undefined && oracle.visible(r, 's');
    });
  };
  /** Every reference a resource makes, as `Type/id` below the upstream base. */
  const referencesOf = (node: unknown, out = new Set<string>()): Set<string> => {
    if (Array.isArray(node)) for (const n of node) referencesOf(n, out);
    else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'reference' && typeof v === 'string') {
          const m = /^(?:.*\/)?([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]+)(?:\/_history\/[^/]+)?$/.exec(v.startsWith(`${fhir.url}/`) ? v.slice(fhir.url.length + 1) : v);
          if (m && !v.startsWith('#')) out.add(m[1]!);
        } else referencesOf(v, out);
      }
    }
    return out;
  };
  /**
   * The includes a page of `shown` matches must carry: what the upstream includes for exactly those
   * matches, kept where the oracle says it is visible; and each must be tied to a shown match by a
   * reference (the match names it for `_include`, it names the match for `_revinclude`).
   */
  const expectedIncludes = async (type: string, include: string, shown: string[]): Promise<string[]> => {
    if (shown.length === 0) return [];
    const res = await fetch(`${fhir.url}/${type}?_id=${shown.join(',')}&${include}&_count=${shown.length}`);
    const b = (await res.json()) as Bundle;
    if (res.status !== 200) throw new Error(`upstream ${type}?${include}: ${res.status} ${JSON.stringify(b)}`);
    return (b.entry ?? [])
      .filter((e) => e.search?.mode === 'include' && e.resource)
      .map((e) => current.get(`${e.resource!.resourceType as string}/${e.resource!.id as string}`))
      // A revinclude is a search of its type (needs s); an include follows a reference (r or s).
      .filter((c): c is Json => c !== undefined && (oracle.visible(c, 's') || (include.startsWith('_include=') && oracle.visible(c, 'r'))))
      .map((c) => `${c.resourceType as string}/${c.id as string}`)
      .sort();
  };
  const search = async (type: string, query: string, count: number | undefined) => {
    const what = `search ${type}?${query}${count ? ` _count=${count}` : ''}`;
    const want = await expectedMatches(type, query);
    const params = [query, count ? `_count=${count}` : ''].filter(Boolean).join('&');
    let answer = await get(`/${type}${params ? `?${params}` : ''}`);
    if (answer.status === 403 && want.length === 0) return answer; // a refusal decided by the token alone
    // A Patient search naming other patients' ids is refused from the query alone, before
    // anything is fetched, like a Patient read of another id: no existence oracle, so tolerated.
    if (answer.status === 403 && type === 'Patient' && /another patient/.test(answer.text) && /(^|&)_id=/.test(query)) {
      if (opts.stats) opts.stats.patientIdSearchRefusals = (opts.stats.patientIdSearchRefusals ?? 0) + 1;
      return answer;
    }
    const pageSize = count ?? 50;
    const got: string[] = [];
    const linkLengths = new Set<number>();
    for (let page = 0; ; page++) {
      const b = answer.body as Bundle;
      if (answer.status !== 200 || b.type !== 'searchset') {
        problem(`${what}: expected 200 searchset with [${want}], got ${answer.status} ${answer.text.slice(0, 200)}`);
        return answer;
      }
      const matches = (b.entry ?? []).filter((e) => e.search?.mode !== 'include');
      const pageMatches = matches.flatMap((e) => (e.resource ? [e.resource] : []));
      const include = /(?:^|&)(_(?:rev)?include)=([^&]+)/.exec(query);
      if (include) {
        const gotIncludes = (b.entry ?? []).filter((e) => e.search?.mode === 'include' && e.resource).map((e) => `${e.resource!.resourceType as string}/${e.resource!.id as string}`).sort();
        const wantIncludes = await expectedIncludes(type, `${include[1]}=${include[2]}`, pageMatches.map((r) => r.id as string));
        if (JSON.stringify(gotIncludes) !== JSON.stringify(wantIncludes)) problem(`${what}: page ${page + 1} expected includes [${wantIncludes}], got [${gotIncludes}]`);
        const matchKeys = pageMatches.map((r) => `${r.resourceType as string}/${r.id as string}`);
        for (const inc of (b.entry ?? []).filter((e) => e.search?.mode === 'include' && e.resource)) {
          const incKey = `${inc.resource!.resourceType as string}/${inc.resource!.id as string}`;
          const tied = include[1] === '_include' ? pageMatches.some((m) => referencesOf(m).has(incKey)) : matchKeys.some((k) => referencesOf(inc.resource).has(k));
          if (!tied) problem(`${what}: included ${incKey} is tied to no match shown on page ${page + 1}`);
        }
      }
      for (const e of b.entry ?? []) {
        const r = e.resource;
        if (!r) problem(`${what}: an entry without resource`);
        else if (e.search?.mode === 'include') {
          const c = current.get(`${r.resourceType as string}/${r.id as string}`);
          if (!c || !(oracle.visible(c, 's') || (!/_revinclude=/.test(query) && oracle.visible(c, 'r')))) problem(`${what}: included ${key(r)} is not visible`);
        } else {
          if (r.resourceType !== type) problem(`${what}: a match of type ${r.resourceType as string}`);
          const c = current.get(`${type}/${r.id as string}`);
          if (c && key(c) !== key(r)) problem(`${what}: match ${key(r)} is not the current version ${key(c)}`);
          got.push(r.id as string);
        }
      }
      const next = b.link?.find((l) => l.relation === 'next')?.url;
      if (b.link?.some((l) => l.relation === 'previous')) problem(`${what}: a previous link`);
      // A link stands for how far into the upstream's results the next page starts, which counts
      // hidden matches: it must be opaque, and as long on every page of one search.
      if (next && /_offset|"k"|%22k%22/.test(`${next} ${Buffer.from(new URL(next).searchParams.get('page') ?? '', 'base64url').toString('latin1')}`)) problem(`${what}: a readable paging link ${next.slice(0, 160)}`);
      if (next) linkLengths.add(next.length);
      if (linkLengths.size > 1) problem(`${what}: paging links of different lengths [${[...linkLengths]}]`);
      if (page === 0) {
        if (next && b.total !== undefined) problem(`${what}: total ${b.total} on a first page that has a next link`);
        if (!next && b.total !== matches.length) problem(`${what}: one page of ${matches.length} matches, total ${b.total}`);
      } else if (b.total !== undefined) problem(`${what}: total ${b.total} on page ${page + 1}`);
      if (next ? matches.length !== pageSize : matches.length > pageSize || (matches.length === 0 && page > 0)) {
        problem(`${what}: page ${page + 1} has ${matches.length} matches (page size ${pageSize}, ${next ? 'a' : 'no'} next link)`);
      }
      if (!next) break;
      if (page > 50) {
        problem(`${what}: more than 50 pages`);
        break;
      }
      answer = await get(next);
    }
    if (JSON.stringify(got) !== JSON.stringify(want)) problem(`${what}: expected matches [${want}], got [${got}]`);
    return answer;
  };

  for (const type of types) {
    const ids = histories.filter((h) => h.versions[0]!.resourceType === type).map((h) => h.versions[0]!.id);
    await search(type, '', undefined);
    for (const c of opts.counts) await search(type, '', c);
    const missing = newId();
    const forMissing = await search(type, `_id=${missing}`, undefined);
    for (const id of ids) {
      const answer = await search(type, `_id=${id}`, undefined);
      // The patient in context is never "another patient": hidden, it is an empty Bundle (checked above).
      const ownPatient = type === 'Patient' && id === effectivePatient && forMissing.status === 403;
      const hiddenMatch = !ownPatient && (await expectedMatches(type, `_id=${id}`)).length === 0;
      if (hiddenMatch && comparable(answer) !== comparable(forMissing)) {
        problem(`search ${type}?_id=${id}: not visible; expected the answer for a nonexistent id ${comparable(forMissing).slice(0, 160)}, got ${comparable(answer).slice(0, 200)}`);
      }
      // With an include the server cannot apply, a hidden match fails (or not) as no match does.
      if (hiddenMatch && type === 'Observation') {
        const [withBad, missingBad] = [await get(`/${type}?_id=${id}&_include=${type}:no-such-param`), await get(`/${type}?_id=${missing}&_include=${type}:no-such-param`)];
        if (comparable(withBad) !== comparable(missingBad)) problem(`search ${type}?_id=${id}&_include=${type}:no-such-param: expected ${comparable(missingBad).slice(0, 160)}, got ${comparable(withBad).slice(0, 200)}`);
      }
    }
    if (ids.length > 1) await search(type, `_id=${[...ids.slice(0, 3), missing].join(',')}`, 1);
  }
  await search('Observation', '_include=Observation:patient', undefined);
  await search('Observation', '_include=Observation:patient', 1);
  await search('MedicationRequest', '_include=MedicationRequest:medication', 2);
  await search('Patient', '_revinclude=Observation:patient', undefined);
  await search('Medication', '_revinclude=MedicationRequest:medication', 1);
  // An include the server does not know: refused with the proxy's own words only when matches are shown.
  const badInclude = await get('/Observation?_include=Observation:no-such-param');
  const anyShown = (await expectedMatches('Observation', '')).length > 0;
  if (anyShown ? badInclude.status !== 400 || /no-such-param/.test(badInclude.text) : badInclude.status !== 200 && badInclude.status !== 403) {
    problem(`/Observation?_include=Observation:no-such-param: got ${badInclude.status} ${badInclude.text.slice(0, 160)} with ${anyShown ? 'matches' : 'no match'} shown`);
  }
  await search('Observation', `category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory`, undefined);

  // Bad input: refused with 400 (403 is accepted only where the token cannot search the type at all).
  const canSearchObservations = oracle.visible({ resourceType: 'Observation', id: 'probe', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${effectivePatient ?? 'p1'}` }, effectiveDateTime: token.consent?.start ?? token.consent?.end ?? '2021-06-15' }, 's');
  for (const bad of ['/Observation?_count=0', '/Observation?_count=1001', '/Observation?_summary=count', '/Observation?subject.name=x', '/Observation/_history']) {
    const answer = await get(bad);
    const ok = answer.status === 400 || (!canSearchObservations && answer.status === 403 && !bad.endsWith('/_history'));
    if (!ok || answer.body.resourceType !== 'OperationOutcome') problem(`${bad}: expected 400 OperationOutcome, got ${answer.status} ${answer.text.slice(0, 160)}`);
  }
  const writes = fhir.writes();
  if (writes.length) problem(`the FHIR server received writes: ${writes.map((w) => `${w.method} ${w.url}`).join(', ')}`);
  return problems;
}
