/**
 * A tiny FHIR R4 server over in-memory synthetic data, for testing what sits in front of one:
 * read, vread, search (patient/subject, _id, category, code, _count paging with absolute links,
 * _include, _revinclude), history, Patient/$everything, create, update, JSON Patch and delete.
 * It records every request it receives, so tests can check what reached it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

type Resource = Record<string, unknown> & { resourceType: string; id: string };

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const OBS_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category';
const COND_CAT = 'http://terminology.hl7.org/CodeSystem/condition-category';
const LOINC = 'http://loinc.org';
const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';

const label = (code: string) => ({ meta: { security: [{ system: ACT, code }] } });
const ref = (patient: string) => ({ reference: `Patient/${patient}` });
const obs = (id: string, patient: string, category: string, code: string, date: string, extra: Record<string, unknown> = {}): Resource => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  category: [{ coding: [{ system: OBS_CAT, code: category }] }],
  code: { coding: [{ system: LOINC, code }] },
  subject: ref(patient),
  effectiveDateTime: date,
  ...extra,
});
const cond = (id: string, patient: string, code: string, date: string, extra: Record<string, unknown> = {}): Resource => ({
  resourceType: 'Condition',
  id,
  category: [{ coding: [{ system: COND_CAT, code: 'problem-list-item' }] }],
  code: { coding: [{ system: ICD10, code }] },
  subject: ref(patient),
  recordedDate: date,
  ...extra,
});

/** The synthetic records: two patients with data from 2018 to 2023, some of it sensitive. */
export function syntheticRecords(): Resource[] {
  return [
    { resourceType: 'Patient', id: 'pat-1', name: [{ family: 'Rivera', given: ['Alex'] }], birthDate: '1980-04-02' },
    { resourceType: 'Patient', id: 'pat-2', name: [{ family: 'Okafor', given: ['Sam'] }], birthDate: '1975-11-20' },
    { resourceType: 'Practitioner', id: 'prac-1', name: [{ family: 'House' }] },
    obs('obs-glucose-2019', 'pat-1', 'laboratory', '2345-7', '2019-03-10'),
    obs('obs-a1c-2021', 'pat-1', 'laboratory', '4548-4', '2021-06-01T09:30:00Z'),
    obs('obs-bp-2022', 'pat-1', 'vital-signs', '85354-9', '2022-01-15'),
    obs('obs-hiv-2020', 'pat-1', 'laboratory', '75622-1', '2020-05-05', label('HIV')),
    obs('obs-phq9-2023', 'pat-1', 'survey', '44249-1', '2023-02-01', label('PSY')),
    // A contained specimen carries the label: the whole observation is HIV-labelled data.
    obs('obs-viral-2021', 'pat-1', 'laboratory', '2345-7', '2021-07-07', {
      contained: [{ resourceType: 'Specimen', id: 'sp', ...label('HIV') }],
      specimen: { reference: '#sp' },
    }),
    obs('obs-weight-undated', 'pat-1', 'vital-signs', '29463-7', '2021-01-01', { effectiveDateTime: undefined }),
    cond('cond-asthma-2018', 'pat-1', 'J45.909', '2018-02-01'),
    // No label: only its ICD-10 code (F10, alcohol use disorder) says it is substance use.
    cond('cond-alcohol-2021', 'pat-1', 'F10.20', '2021-09-09'),
    cond('cond-depression-2022', 'pat-1', 'F32.1', '2022-04-04', label('PSY')),
    {
      resourceType: 'MedicationRequest',
      id: 'medreq-2020',
      status: 'active',
      intent: 'order',
      subject: ref('pat-1'),
      requester: { reference: 'Practitioner/prac-1' },
      authoredOn: '2020-02-02',
      medicationCodeableConcept: { text: 'Salbutamol' },
    },
    { resourceType: 'Encounter', id: 'enc-2019', status: 'finished', class: { code: 'AMB' }, subject: ref('pat-1'), period: { start: '2019-03-10T08:00:00Z', end: '2019-03-10T09:00:00Z' } },
    { resourceType: 'DocumentReference', id: 'doc-2022', status: 'current', subject: ref('pat-1'), date: '2022-03-03T10:00:00Z', content: [{ attachment: { url: 'Binary/bin-1', contentType: 'text/plain' } }] },
    { resourceType: 'Binary', id: 'bin-1', contentType: 'text/plain', data: Buffer.from('discharge letter').toString('base64') },
    obs('obs-p2-lab-2021', 'pat-2', 'laboratory', '2345-7', '2021-03-03'),
    cond('cond-p2-hiv-2019', 'pat-2', 'B20', '2019-08-08', label('HIV')),
  ].map((r) => JSON.parse(JSON.stringify(r)) as Resource);
}

export interface FhirTestServer {
  url: string;
  /** Every request received, as `METHOD /path?query`. */
  requests: string[];
  store: Map<string, Resource>;
  close(): Promise<void>;
}

function tokenMatch(value: unknown, wanted: string): boolean {
  const [system, code] = wanted.includes('|') ? wanted.split('|') : [undefined, wanted];
  const list = Array.isArray(value) ? value : value ? [value] : [];
  return list.some((cc: { coding?: { system?: string; code?: string }[] }) =>
    (cc.coding ?? []).some((c) => (!system || c.system === system) && (!code || c.code === code)),
  );
}

const patientOf = (r: Resource): string | undefined => {
  const link = (r.subject ?? r.patient) as { reference?: string } | undefined;
  return link?.reference?.replace(/^Patient\//, '') ?? (r.resourceType === 'Patient' ? r.id : undefined);
};

export async function startFhirTestServer(records: Resource[] = syntheticRecords()): Promise<FhirTestServer> {
  const store = new Map(records.map((r) => [`${r.resourceType}/${r.id}`, { ...r, meta: { versionId: '1', ...(r.meta as object) } } as Resource]));
  const requests: string[] = [];
  let base = '';
  let next = 1;

  const bundle = (type: string, resources: { resource: Resource; mode?: string }[], total: number | undefined, links: { relation: string; url: string }[]) => ({
    resourceType: 'Bundle',
    type,
    ...(total !== undefined ? { total } : {}),
    link: links,
    entry: resources.map(({ resource, mode }) => ({ fullUrl: `${base}/${resource.resourceType}/${resource.id}`, resource, ...(mode ? { search: { mode } } : {}) })),
  });

  function search(type: string, params: URLSearchParams, self: string) {
    let matches = [...store.values()].filter((r) => r.resourceType === type);
    for (const [name, value] of params) {
      const n = name.split(':')[0];
      if (n === 'patient' || n === 'subject') matches = matches.filter((r) => value.split(',').some((v) => patientOf(r) === v.replace(/^Patient\//, '')));
      else if (n === '_id') matches = matches.filter((r) => value.split(',').includes(r.id));
      else if (n === 'category' || n === 'code') matches = matches.filter((r) => value.split(',').some((v) => tokenMatch(r[n], v)));
    }
    const count = Number(params.get('_count') ?? 50);
    const offset = Number(params.get('_offset') ?? 0);
    const page = matches.slice(offset, offset + count).map((resource) => ({ resource, mode: 'match' }));
    const included: { resource: Resource; mode: string }[] = [];
    for (const inc of params.getAll('_include')) {
      const [, element] = inc.split(':');
      for (const { resource } of page) {
        const target = (resource[element ?? ''] as { reference?: string } | undefined)?.reference;
        const found = target ? store.get(target) : undefined;
        if (found && !included.some((i) => i.resource === found)) included.push({ resource: found, mode: 'include' });
      }
    }
    for (const rev of params.getAll('_revinclude')) {
      const [srcType, element] = rev.split(':');
      for (const { resource } of page) {
        for (const r of store.values()) {
          if (r.resourceType !== srcType) continue;
          if ((r[element ?? ''] as { reference?: string } | undefined)?.reference === `${resource.resourceType}/${resource.id}`) included.push({ resource: r, mode: 'include' });
        }
      }
    }
    const links = [{ relation: 'self', url: self }];
    const withOffset = (o: number) => {
      const p = new URLSearchParams(params);
      p.set('_offset', String(o));
      p.set('_count', String(count));
      return `${base}/${type}?${p}`;
    };
    if (offset + count < matches.length) links.push({ relation: 'next', url: withOffset(offset + count) });
    if (offset > 0) links.push({ relation: 'previous', url: withOffset(Math.max(0, offset - count)) });
    return bundle('searchset', [...page, ...included], matches.length, links);
  }

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      requests.push(`${req.method} ${url.pathname}${url.search}`);
      const send = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { ...(body ? { 'content-type': 'application/fhir+json' } : {}), ...headers }).end(body ? JSON.stringify(body) : undefined);
      };
      const notFound = () => send(404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'no such resource' }] });
      const parts = url.pathname.split('/').filter(Boolean);
      const [type, id, op, vid] = parts;
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown) : undefined;
      const etag = (r: Resource) => ({ etag: `W/"${(r.meta as { versionId: string }).versionId}"` });

      if (type === 'metadata') return send(200, { resourceType: 'CapabilityStatement', status: 'active', fhirVersion: '4.0.1', kind: 'instance', format: ['json'] });
      if (!type) return send(400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-supported' }] });
      if (req.method === 'GET' && !id) return send(200, search(type, url.searchParams, `${base}${url.pathname}${url.search}`));
      if (req.method === 'GET' && id === '_history') {
        const all = [...store.values()].filter((r) => r.resourceType === type).map((resource) => ({ resource }));
        return send(200, bundle('history', all, all.length, []));
      }
      if (req.method === 'GET' && type === 'Patient' && op === '$everything') {
        const patient = store.get(`Patient/${id}`);
        if (!patient) return notFound();
        const all = [...store.values()].filter((r) => patientOf(r) === id);
        const prac = [...store.values()].filter((r) => r.resourceType === 'Practitioner');
        return send(200, bundle('searchset', [...all, ...prac].map((resource) => ({ resource })), all.length + prac.length, []));
      }
      const key = `${type}/${id}`;
      const current = store.get(key);
      if (req.method === 'GET') {
        if (!current) return notFound();
        if (op === '_history' && vid === undefined) return send(200, bundle('history', [{ resource: current }], 1, []));
        if (op === '_history' && vid !== (current.meta as { versionId: string }).versionId) return notFound();
        return send(200, current, etag(current));
      }
      if (req.method === 'POST' && !id) {
        const created = { ...(body as Resource), id: `new-${next++}`, meta: { ...((body as Resource).meta ?? {}), versionId: '1' } } as Resource;
        store.set(`${type}/${created.id}`, created);
        return send(201, created, { location: `${base}/${type}/${created.id}/_history/1`, ...etag(created) });
      }
      const ifMatch = req.headers['if-match'];
      if (current && ifMatch && ifMatch !== etag(current).etag) return send(412, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'conflict' }] });
      const bump = (r: Resource) => ({ ...r, meta: { ...(r.meta as object), versionId: String(Number((current?.meta as { versionId?: string } | undefined)?.versionId ?? 0) + 1) } }) as Resource;
      if (req.method === 'PUT') {
        const updated = bump(body as Resource);
        store.set(key, updated);
        return send(current ? 200 : 201, updated, etag(updated));
      }
      if (req.method === 'PATCH') {
        if (!current) return notFound();
        const patched = { ...current };
        for (const o of body as { op: string; path: string; value?: unknown }[]) {
          const field = o.path.split('/')[1]!;
          if (o.op === 'remove') delete patched[field];
          else patched[field] = o.value;
        }
        const updated = bump(patched);
        store.set(key, updated);
        return send(200, updated, etag(updated));
      }
      if (req.method === 'DELETE') {
        if (!current) return notFound();
        store.delete(key);
        return send(204);
      }
      return send(405);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`.replace(/\/fhir$/, '');
  return {
    url: base,
    requests,
    store,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
