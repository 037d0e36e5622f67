/**
 * The client registry through the admin API, with real tokens: creating, reading, changing,
 * the pending/approved/suspended/retired life cycle and what it does to tokens already issued,
 * secret rotation with a grace period, listing with filters and cursors, and every kind of bad
 * input (each answered with problem details, never a 500, and nothing written).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminApi, adminToken, createAdminTool } from '../helpers/admin.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

type Api = ReturnType<typeof adminApi>;

describe('admin API: clients', () => {
  let server: TestServer;
  let api: Api;
  let adminId: string;
  let patient: { username: string; password: string };
  let introspector: oidc.Configuration;

  const countClients = async () => Number((await server.running.services.db('clients').count<{ c: string }[]>({ c: '*' }))[0]?.c);

  before(async () => {
    server = await startTestServer();
    const tool = await createAdminTool(server);
    const { token, admin } = await adminToken(server, tool);
    adminId = admin.id;
    api = adminApi(server, token);
    patient = await server.createAccount({ username: 'pat', role: 'patient', fhirId: 'p-1' });
    const rs = await server.createClient({ client_name: 'Resource server', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    introspector = await discover(server.issuer, rs.clientId, rs.clientSecret);
  });
  after(() => server.close());

  const webApp = {
    client_name: 'Web App',
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    scope: 'openid offline_access patient/*.rs',
    owner: 'Example Health',
    contacts: ['dev@example.org'],
    category: 'external',
  };

  it('creates a client: the secret once, never again, and an audit event with who and from where', async () => {
    const res = await api('POST', '/clients', webApp);
    assert.equal(res.status, 201, res.text);
    assert.equal(typeof res.json.client_secret, 'string');
    assert.equal(res.json.status, 'approved');
    assert.equal(res.json.category, 'external');
    assert.equal(res.json.verified, false);
    assert.equal(res.json.client_type, 'confidential');
    const id = String(res.json.client_id);
    assert.equal(res.headers.get('location'), `${server.issuer}/admin/api/clients/${id}`);
    const read = await api('GET', `/clients/${id}`);
    assert.equal(read.status, 200);
    assert.ok(!('client_secret' in read.json) && !('secret_hash' in read.json) && !/hmac-sha256/.test(read.text));
    assert.equal(read.json.tokens_last_day, 0);
    const events = await server.running.services.audit.list({ clientId: id, type: 'client.created' }, { limit: 5 });
    assert.equal(events.events.length, 1);
    assert.equal(events.events[0]!.actor, adminId);
    assert.equal(events.events[0]!.ip, '127.0.0.1');
  });

  it('refuses mass assignment of status, secret_hash and client_id (400, nothing written)', async () => {
    const before = await countClients();
    for (const field of [{ status: 'approved' }, { secret_hash: 'hmac-sha256$x' }, { client_id: 'chosen' }, { last_used_at: '2020-01-01T00:00:00Z' }]) {
      const res = await api('POST', '/clients', { ...webApp, ...field });
      assert.equal(res.status, 400, JSON.stringify(field));
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
      const errors = res.json.errors as { pointer: string; detail: string }[];
      assert.deepEqual(errors.map((e) => e.pointer), [`#/${Object.keys(field)[0]}`]);
      assert.equal(res.json.type, 'urn:custos:problem:invalid_request');
      assert.equal(res.json.status, 400);
    }
    const { clientId } = await server.createClient({ client_name: 'Victim', redirect_uris: [REDIRECT_URI] });
    for (const field of [{ status: 'retired' }, { secret_hash: 'x' }, { client_id: 'other' }, { origin: 'system' }]) {
      const res = await api('PATCH', `/clients/${clientId}`, field);
      assert.equal(res.status, 400, JSON.stringify(field));
    }
    assert.equal(await countClients(), before + 1);
    assert.equal((await server.running.services.clients.get(clientId))?.status, 'approved');
  });

  it('refuses bad metadata naming the field: URIs, oversized lists, scopes, lifetimes, admin scope', async () => {
    const before = await countClients();
    const cases: [Record<string, unknown>, string][] = [
      [{ redirect_uris: ['http://app.example/cb'] }, '#/redirect_uris/0'],
      [{ redirect_uris: ['https://app.example/cb#frag'] }, '#/redirect_uris/0'],
      [{ redirect_uris: Array.from({ length: 21 }, (_, i) => `https://app.example/cb${i}`) }, '#/redirect_uris'],
      [{ scope: 'openid patient/Observation.xyz' }, '#/scope'],
      [{ scope: 'openid superpowers' }, '#/scope'],
      [{ allowed_origins: ['https://app.example/path'] }, '#/allowed_origins/0'],
      [{ access_token_ttl: 3600 }, '#/access_token_ttl'],
      [{ scope: 'openid custos:admin' }, '#/scope'],
      [{ client_name: '' }, '#/client_name'],
      [{ category: 'vip' }, '#/category'],
    ];
    for (const [patch, pointer] of cases) {
      const res = await api('POST', '/clients', { ...webApp, ...patch });
      assert.equal(res.status, 400, `${JSON.stringify(patch).slice(0, 80)}: ${res.text.slice(0, 200)}`);
      const pointers = (res.json.errors as { pointer: string }[]).map((e) => e.pointer);
      assert.ok(pointers.includes(pointer), `${pointer} in ${pointers.join(', ')}`);
    }
    assert.equal(await countClients(), before);
  });

  it('refuses malformed requests: bad JSON, other media types, unknown ids, bad queries', async () => {
    const malformed = await api('POST', '/clients', '{"client_name": ');
    assert.equal(malformed.status, 400);
    assert.match(malformed.headers.get('content-type') ?? '', /problem\+json/);
    const form = await api('POST', '/clients', 'client_name=x', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(form.status, 415);
    for (const [method, path] of [['GET', '/clients/nope'], ['PATCH', '/clients/nope'], ['POST', '/clients/nope/suspend'], ['POST', '/clients/nope/secret'], ['GET', '/accounts/00000000-0000-4000-8000-000000000000']]) {
      const res = await api(method!, path!, method === 'GET' ? undefined : {});
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(res.json.title, 'Not found');
    }
    const unknownRoute = await api('GET', '/nothing-here');
    assert.equal(unknownRoute.status, 404);
    assert.match(unknownRoute.headers.get('content-type') ?? '', /problem\+json/);
    assert.equal((await api('GET', '/clients?limit=101')).status, 400);
    assert.equal((await api('GET', '/clients?limit=0')).status, 400);
    assert.equal((await api('GET', '/clients?sort=secret_hash')).status, 400);
    assert.equal((await api('GET', '/clients?status=approved&status=pending')).status, 400);
    assert.equal((await api('GET', '/clients?cursor=garbage')).status, 400);
    assert.equal((await api('GET', '/clients?foo=1')).status, 400);
  });

  it('lists with filters, sorting and a cursor, never more than the hard page size', async () => {
    for (const n of ['Alpha', 'Bravo', 'Charlie', 'Delta']) {
      await api('POST', '/clients', { client_name: `List ${n}`, grant_types: ['client_credentials'], category: 'internal' });
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const res = await api('GET', `/clients?category=internal&q=list&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(res.status, 200);
      const page = res.json.clients as { client_name: string }[];
      assert.ok(page.length <= 3);
      seen.push(...page.map((c) => c.client_name));
      cursor = res.json.next_cursor as string | undefined;
    } while (cursor);
    assert.deepEqual(seen, ['List Alpha', 'List Bravo', 'List Charlie', 'List Delta']);
    const desc = await api('GET', '/clients?category=internal&q=list&sort=name&order=desc&limit=2');
    assert.deepEqual((desc.json.clients as { client_name: string }[]).map((c) => c.client_name), ['List Delta', 'List Charlie']);
    const byCreation = await api('GET', '/clients?q=list&sort=created_at&limit=100');
    assert.equal((byCreation.json.clients as unknown[]).length, 4);
  });

  it('suspending revokes every token at once: introspection says inactive, refresh fails; reactivation does not revive them', async () => {
    const created = await api('POST', '/clients', webApp);
    const id = String(created.json.client_id);
    const app = await discover(server.issuer, id, String(created.json.client_secret));
    const { tokens } = await codeFlow(app, server.issuer, patient, { scope: 'openid offline_access', prompt: 'consent' });
    assert.ok(tokens.refresh_token);
    assert.equal((await oidc.tokenIntrospection(introspector, tokens.access_token)).active, true);
    const usage = await api('GET', `/clients/${id}`);
    assert.equal(usage.json.tokens_last_day, 1, 'the token response was counted');
    assert.ok(usage.json.last_used_at);

    const suspended = await api('POST', `/clients/${id}/suspend`, { reason: 'security review' });
    assert.equal(suspended.status, 200, suspended.text);
    assert.equal(suspended.json.status, 'suspended');
    assert.equal((await oidc.tokenIntrospection(introspector, tokens.access_token)).active, false);
    assert.equal((await oidc.tokenIntrospection(introspector, tokens.refresh_token!)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(app, tokens.refresh_token!), (err: oidc.ResponseBodyError) => err.error === 'invalid_client');
    const left = await server.running.services.db('oidc_payloads').whereRaw(`payload->>'clientId' = ?`, [id]).count<{ c: string }[]>({ c: '*' });
    assert.equal(Number(left[0]?.c), 0, 'no grant, code or token of the client is left');
    const event = (await server.running.services.audit.list({ clientId: id, type: 'client.suspended' }, { limit: 1 })).events[0]!;
    assert.equal(event.actor, adminId);
    assert.equal(event.details.reason, 'security review');
    assert.ok(Number(event.details.revoked_artifacts) >= 3);

    assert.equal((await api('POST', `/clients/${id}/approve`, {})).status, 409, 'approve is for pending clients');
    const back = await api('POST', `/clients/${id}/reactivate`, {});
    assert.equal(back.json.status, 'approved');
    await assert.rejects(oidc.refreshTokenGrant(app, tokens.refresh_token!), (err: oidc.ResponseBodyError) => err.error === 'invalid_grant');
    const again = await codeFlow(app, server.issuer, patient, { scope: 'openid' });
    assert.equal((await oidc.tokenIntrospection(introspector, again.tokens.access_token)).active, true);

    const retired = await api('POST', `/clients/${id}/retire`, {});
    assert.equal(retired.json.status, 'retired');
    assert.equal((await oidc.tokenIntrospection(introspector, again.tokens.access_token)).active, false);
    for (const action of ['approve', 'reactivate', 'suspend', 'retire']) {
      const res = await api('POST', `/clients/${id}/${action}`, {});
      assert.equal(res.status, 409, action);
      assert.equal(res.json.title, 'Conflict with the current state');
    }
    assert.equal((await api('PATCH', `/clients/${id}`, { client_name: 'Zombie' })).status, 409);
  });

  it('rotates a secret: shown once, the old one works during the grace period only', async () => {
    const created = await api('POST', '/clients', { client_name: 'Backend', grant_types: ['client_credentials'], scope: 'custos:introspect', category: 'internal' });
    const id = String(created.json.client_id);
    const oldSecret = String(created.json.client_secret);
    const grant = (secret: string) => discover(server.issuer, id, secret).then((c) => oidc.clientCredentialsGrant(c, { scope: 'custos:introspect' }));
    assert.equal((await api('POST', `/clients/${id}/secret`, { grace_seconds: 86401 })).status, 400);
    assert.equal((await api('POST', `/clients/${id}/secret`, { grace_seconds: -1 })).status, 400);
    assert.equal((await api('POST', `/clients/${id}/secret`, { grace_seconds: '60' })).status, 400);

    const rotated = await api('POST', `/clients/${id}/secret`, { grace_seconds: 600 });
    assert.equal(rotated.status, 200);
    const newSecret = String(rotated.json.client_secret);
    assert.notEqual(newSecret, oldSecret);
    assert.ok(rotated.json.previous_secret_expires_at);
    await grant(newSecret);
    await grant(oldSecret);

    const now = await api('POST', `/clients/${id}/secret`, { grace_seconds: 0 });
    const newest = String(now.json.client_secret);
    assert.equal(now.json.previous_secret_expires_at, null);
    await grant(newest);
    await assert.rejects(grant(newSecret), (err: oidc.ResponseBodyError) => err.error === 'invalid_client');
    await assert.rejects(grant(oldSecret), (err: oidc.ResponseBodyError) => err.error === 'invalid_client');
    const events = await server.running.services.audit.list({ clientId: id, type: 'client.secret_rotated' }, { limit: 5 });
    assert.deepEqual(events.events.map((e) => e.details.grace_seconds), [0, 600]);

    const pub = await api('POST', '/clients', { client_name: 'SPA', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' });
    assert.equal((await api('POST', `/clients/${String(pub.json.client_id)}/secret`, {})).status, 409);
  });

  it('changes metadata and admin fields with PATCH; null removes an optional field', async () => {
    const created = await api('POST', '/clients', webApp);
    const id = String(created.json.client_id);
    const res = await api('PATCH', `/clients/${id}`, { redirect_uris: ['https://app.example/cb'], verified: true, category: 'third-party', owner: null });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.redirect_uris, ['https://app.example/cb']);
    assert.equal(res.json.verified, true);
    assert.equal(res.json.category, 'third-party');
    assert.equal(res.json.owner, undefined);
    assert.equal((await api('PATCH', `/clients/${id}`, { client_name: null })).status, 400);
    assert.equal((await api('PATCH', `/clients/${id}`, { token_endpoint_auth_method: 'none' })).status, 400);
    assert.equal((await api('PATCH', `/clients/${id}`, { grant_types: ['client_credentials'] })).status, 400, 'redirect URIs without authorization_code');
    const event = (await server.running.services.audit.list({ clientId: id, type: 'client.updated' }, { limit: 1 })).events[0]!;
    assert.deepEqual(event.details.changed, ['category', 'owner', 'redirect_uris', 'verified']);
    assert.equal((await api('GET', `/clients/${id}`)).json.verified, true);
  });

  it("Custos's own clients cannot be suspended or edited", async () => {
    assert.equal((await api('POST', '/clients/custos-account/suspend', {})).status, 409);
    assert.equal((await api('PATCH', '/clients/custos-admin', { client_name: 'x' })).status, 409);
  });
});
