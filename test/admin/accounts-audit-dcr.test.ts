/**
 * Accounts, the audit viewer, dynamic client registration and the inventory through the admin
 * API: account changes take effect at once and are audited; the audit trail pages and exports as
 * FHIR AuditEvents; registration needs an admin's initial access token and leaves the client
 * pending; the inventory flags (and optionally suspends) clients nobody used, by a clock we control.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminApi, adminToken, createAdminTool, createMfaAdmin } from '../helpers/admin.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';
import { MFA_RESET_NOTICE } from '../../src/admin/index.ts';

type Api = ReturnType<typeof adminApi>;

describe('admin API: accounts, audit, registration, inventory', () => {
  let server: TestServer;
  let api: Api;
  let adminId: string;
  let tool: oidc.Configuration;

  before(async () => {
    server = await startTestServer();
    tool = await createAdminTool(server);
    const { token, admin } = await adminToken(server, tool);
    adminId = admin.id;
    api = adminApi(server, token);
  });
  after(() => server.close());

  it('creates accounts with the same rules as everywhere, never echoing the password', async () => {
    const res = await api('POST', '/accounts', { username: 'alice', password: 'correct horse battery staple', role: 'patient', fhir_id: 'alice-1', display_name: 'Alice' });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.fhir_patient_id, 'alice-1');
    assert.ok(!/password|hash/i.test(Object.keys(res.json).join(' ')));
    const noLink = await api('POST', '/accounts', { username: 'bob', password: 'correct horse battery staple', role: 'patient' });
    assert.equal(noLink.status, 400);
    assert.deepEqual((noLink.json.errors as { pointer: string }[]).map((e) => e.pointer), ['#/fhir_id']);
    assert.equal((await api('POST', '/accounts', { username: 'alice', password: 'correct horse battery staple', role: 'patient', fhir_id: 'x' })).status, 409);
    assert.equal((await api('POST', '/accounts', { username: 'carol', password: 'short', role: 'admin' })).status, 400);
    assert.equal((await api('POST', '/accounts', { username: 'dave', password: 'correct horse battery staple', role: 'admin', password_hash: 'x' })).status, 400);
    assert.equal(await server.running.services.accounts.list({ limit: 100 }).then((l) => l.filter((a) => ['bob', 'carol', 'dave'].includes(a.username)).length), 0);
  });

  it('disables an account (its tokens stop at once), enables it, links it to FHIR', async () => {
    const pat = await server.createAccount({ username: 'pat', role: 'patient', fhirId: 'pat-1' });
    const app = await server.createClient({ client_name: 'App', redirect_uris: [REDIRECT_URI], scope: 'openid', grant_types: ['authorization_code'] });
    const appConfig = await discover(server.issuer, app.clientId, app.clientSecret);
    const { tokens } = await codeFlow(appConfig, server.issuer, pat);
    assert.equal((await oidc.tokenIntrospection(appConfig, tokens.access_token)).active, true);

    const off = await api('POST', `/accounts/${pat.id}/disable`, {});
    assert.equal(off.status, 200, off.text);
    assert.equal(off.json.disabled, true);
    assert.equal((await oidc.tokenIntrospection(appConfig, tokens.access_token)).active, false);
    assert.equal((await api('POST', `/accounts/${pat.id}/disable`, {})).status, 409);
    await assert.rejects(codeFlow(appConfig, server.issuer, pat));
    assert.equal((await api('POST', `/accounts/${pat.id}/enable`, {})).json.disabled, false);
    await codeFlow(appConfig, server.issuer, pat);

    const linked = await api('PUT', `/accounts/${pat.id}/fhir-link`, { fhir_id: 'pat-99' });
    assert.equal(linked.json.fhir_patient_id, 'pat-99');
    assert.equal((await api('PUT', `/accounts/${pat.id}/fhir-link`, { fhir_id: 'bad id!' })).status, 400);
    assert.equal((await api('PUT', `/accounts/${adminId}/fhir-link`, { fhir_id: 'x' })).status, 409);
    const types = (await server.running.services.audit.list({ actor: adminId, type: 'account.' }, { limit: 10 })).events.map((e) => e.type);
    assert.deepEqual(types.slice(0, 3), ['account.fhir_linked', 'account.enabled', 'account.disabled']);
  });

  it('resets a second factor: the user enrols again and is told why', async () => {
    const other = await createMfaAdmin(server);
    assert.equal((await server.running.services.mfa.status(other.id)).totp, true);
    const res = await api('POST', `/accounts/${other.id}/mfa/reset`, {});
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(await server.running.services.mfa.status(other.id), { totp: false, recoveryCodesLeft: 0 });
    assert.deepEqual(await server.running.services.accounts.takeNotices(other.id), [MFA_RESET_NOTICE]);
    assert.deepEqual(await server.running.services.accounts.takeNotices(other.id), [], 'told once');
    const event = (await server.running.services.audit.list({ type: 'account.mfa_reset' }, { limit: 1 })).events[0]!;
    assert.equal(event.actor, adminId);
    assert.equal(event.details.account_id, other.id);
  });

  it('pages through the audit trail with filters and exports FHIR AuditEvents', async () => {
    const first = await api('GET', `/audit?actor=${adminId}&limit=2`);
    assert.equal(first.status, 200);
    assert.equal((first.json.events as unknown[]).length, 2);
    const second = await api('GET', `/audit?actor=${adminId}&limit=2&cursor=${String(first.json.next_cursor)}`);
    assert.notDeepEqual(second.json.events, first.json.events);
    assert.equal((await api('GET', '/audit?limit=201')).status, 400);
    assert.equal((await api('GET', '/audit?from=yesterday')).status, 400);
    assert.equal((await api('GET', '/audit?cursor=bm9wZQ')).status, 400);

    const fhir = await api('GET', `/audit/fhir?type=account.&limit=2`);
    assert.equal(fhir.status, 200);
    assert.match(fhir.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    const bundle = fhir.json as { resourceType: string; type: string; entry: { resource: Record<string, unknown> }[]; link: { relation: string }[] };
    assert.equal(bundle.resourceType, 'Bundle');
    assert.equal(bundle.type, 'searchset');
    assert.equal(bundle.entry.length, 2);
    assert.ok(bundle.link.some((l) => l.relation === 'next'));
    const event = bundle.entry[0]!.resource as { resourceType: string; recorded: string; outcome: string; agent: { requestor: boolean }[]; source: unknown; subtype: { code: string }[] };
    assert.equal(event.resourceType, 'AuditEvent');
    assert.equal(event.outcome, '0');
    assert.ok(event.agent[0]!.requestor);
    assert.ok(event.source);
    assert.match(event.subtype[0]!.code, /^account\./);
  });

  it('dynamic registration: refused without an initial access token; with one, the client waits as pending', async () => {
    const metadata = { client_name: 'Registered App', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], scope: 'openid' };
    const register = (body: unknown, token?: string) =>
      fetch(`${server.issuer}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
    const discovery = (await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    assert.equal(discovery.registration_endpoint, `${server.issuer}/register`);
    const smart = (await (await fetch(`${server.issuer}/.well-known/smart-configuration`)).json()) as Record<string, unknown>;
    assert.equal(smart.registration_endpoint, `${server.issuer}/register`);

    const before = Number((await server.running.services.db('clients').count<{ c: string }[]>({ c: '*' }))[0]?.c);
    const anonymous = await register(metadata);
    assert.equal(anonymous.status, 401);
    assert.equal(((await anonymous.json()) as { error: string }).error, 'invalid_token');
    assert.equal((await register(metadata, 'made-up')).status, 401);

    const issued = await api('POST', '/initial-access-tokens', { expires_in: 3600, note: 'for Registered App' });
    assert.equal(issued.status, 201);
    const iat = String(issued.json.initial_access_token);
    for (const [field, value] of [['status', 'approved'], ['category', 'internal'], ['verified', true], ['minimum_acr', 'urn:custos:acr:password']] as const) {
      const res = await register({ ...metadata, [field]: value }, iat);
      assert.equal(res.status, 400, field);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client_metadata');
    }
    const adminScope = await register({ ...metadata, scope: 'openid custos:admin' }, iat);
    assert.equal(((await adminScope.json()) as { error: string }).error, 'invalid_client_metadata');
    const badUri = await register({ ...metadata, redirect_uris: ['http://evil.example/cb'] }, iat);
    assert.equal(((await badUri.json()) as { error: string }).error, 'invalid_redirect_uri');
    assert.equal(Number((await server.running.services.db('clients').count<{ c: string }[]>({ c: '*' }))[0]?.c), before, 'nothing written');

    const ok = await register(metadata, iat);
    assert.equal(ok.status, 201);
    const reg = (await ok.json()) as Record<string, string>;
    assert.equal(reg.status, 'pending');
    assert.ok(reg.client_secret && reg.registration_access_token);
    assert.equal(reg.registration_client_uri, `${server.issuer}/register/${reg.client_id}`);
    assert.equal((await register(metadata, iat)).status, 401, 'an initial access token works once');

    // Pending: no tokens yet.
    const app = await discover(server.issuer, reg.client_id!, reg.client_secret);
    const pat = await server.createAccount({ username: 'dcrpat', role: 'patient', fhirId: 'dcr-1' });
    await assert.rejects(codeFlow(app, server.issuer, pat));
    // RFC 7592 read, with the registration access token only.
    const read = await fetch(reg.registration_client_uri!, { headers: { authorization: `Bearer ${reg.registration_access_token}` } });
    assert.equal(read.status, 200);
    assert.ok(!('client_secret' in ((await read.json()) as object)));
    assert.equal((await fetch(reg.registration_client_uri!, { headers: { authorization: `Bearer ${iat}` } })).status, 401);

    const approved = await api('POST', `/clients/${reg.client_id}/approve`, {});
    assert.equal(approved.json.status, 'approved');
    assert.equal(approved.json.origin, 'dcr');
    await codeFlow(app, server.issuer, pat);

    const update = await fetch(reg.registration_client_uri!, {
      method: 'PUT',
      headers: { authorization: `Bearer ${reg.registration_access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...metadata, client_id: reg.client_id, client_name: 'Renamed App', minimum_acr: 'urn:custos:acr:password' }),
    });
    assert.equal(update.status, 400, 'minimum_acr refused on update too');
    const deleted = await fetch(reg.registration_client_uri!, { method: 'DELETE', headers: { authorization: `Bearer ${reg.registration_access_token}` } });
    assert.equal(deleted.status, 204);
    assert.equal((await server.running.services.clients.get(reg.client_id!))?.status, 'retired');
    const types = (await server.running.services.audit.list({ clientId: reg.client_id, type: 'client.' }, { limit: 10 })).events.map((e) => e.type);
    assert.deepEqual(types, ['client.retired', 'client.approved', 'client.created', 'client.initial_token_used']);
  });

  it('inventory: usage, stale flag by a controllable clock, automatic suspension, CSV and JSON export', async () => {
    const { clients } = server.running.services;
    const used = await server.createClient({ client_name: 'Inventory used', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const idle = await server.createClient({ client_name: 'Inventory idle', grant_types: ['client_credentials'] });
    await oidc.clientCredentialsGrant(await discover(server.issuer, used.clientId, used.clientSecret), { scope: 'custos:introspect' });
    await oidc.clientCredentialsGrant(await discover(server.issuer, used.clientId, used.clientSecret), { scope: 'custos:introspect' });
    const usage = await clients.usage([used.clientId, idle.clientId]);
    assert.deepEqual(usage.get(used.clientId), { tokensLastDay: 2, tokensLast30Days: 2 });
    assert.deepEqual(usage.get(idle.clientId), { tokensLastDay: 0, tokensLast30Days: 0 });
    // Two days on, the tokens are outside the last day but inside the last 30.
    const later = new Date(Date.now() + 2 * 86_400_000);
    assert.deepEqual((await clients.usage([used.clientId], later)).get(used.clientId), { tokensLastDay: 0, tokensLast30Days: 2 });

    const listed = await api('GET', '/clients?q=Inventory&stale=true');
    assert.deepEqual(listed.json.clients, [], 'nothing is stale today');
    // 91 days on (CLIENT_STALE_DAYS 90): the idle one first, then both.
    await server.running.services.db('clients').where({ client_id: idle.clientId }).update({ created_at: new Date(Date.now() - 91 * 86_400_000) });
    const stale = await api('GET', '/clients?q=Inventory&stale=true');
    assert.deepEqual((stale.json.clients as { client_id: string; stale: boolean }[]).map((c) => [c.client_id, c.stale]), [[idle.clientId, true]]);
    const suspended = await clients.suspendUnused(90, new Date(), { actor: 'system:stale-sweep' });
    assert.ok(suspended.includes(idle.clientId) && !suspended.includes(used.clientId));
    assert.equal((await clients.get(idle.clientId))?.status, 'suspended');
    const event = (await server.running.services.audit.list({ clientId: idle.clientId, type: 'client.suspended' }, { limit: 1 })).events[0]!;
    assert.equal(event.actor, 'system:stale-sweep');
    assert.equal(event.details.reason, 'unused for 90 days');

    const csv = await api('GET', '/inventory/export?format=csv&q=Inventory');
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    const lines = csv.text.trim().split('\r\n');
    assert.equal(lines[0], 'client_id,client_name,owner,category,client_type,status,verified,origin,created_at,last_used_at,tokens_last_day,tokens_last_30_days,stale,consented_patients');
    assert.equal(lines.length, 3);
    assert.ok(lines.some((l) => l.startsWith(`${used.clientId},Inventory used,`) && l.includes(',2,2,')));
    const json = await api('GET', '/inventory/export?q=Inventory&sort=created_at');
    assert.deepEqual((json.json.clients as { client_name: string }[]).map((c) => c.client_name), ['Inventory idle', 'Inventory used'], 'the idle one was created 91 days ago');
    assert.equal((await api('GET', '/inventory/export?format=xml')).status, 400);

    // 100 days on, everything not used since is swept (the admin tool too, so this comes last).
    const farFuture = await clients.suspendUnused(90, new Date(Date.now() + 100 * 86_400_000), { actor: 'system:stale-sweep' });
    assert.ok(farFuture.includes(used.clientId));
    assert.ok(!farFuture.includes('custos-account') && !farFuture.includes('custos-admin'), "Custos's own clients are never swept");
  });
});
