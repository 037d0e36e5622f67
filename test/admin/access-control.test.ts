/**
 * Who may use the admin API: every route in the router (iterated, so a new route cannot be left
 * unprotected) refuses no token, a forged token, a patient's token, an admin's token without the
 * second factor or without the admin scope, and an application's own token, and writes nothing.
 * Destructive routes also refuse an admin whose sign-in is not recent. The OpenAPI document lists
 * exactly the routes the router has.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type Router from '@koa/router';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminApi, adminToken, createAdminTool, createMfaAdmin, signInForTokens } from '../helpers/admin.ts';
import { discover, oidc } from '../helpers/oidc-client.ts';
import { adminApiRoutes, openApiPath, type ApiRoute } from '../../src/admin/index.ts';

/** The routes exactly as the server registers them (same function, same services). */
function registeredRoutes(server: TestServer): { router: Router; routes: ApiRoute[] } {
  const s = server.running.services;
  return adminApiRoutes({
    issuer: server.issuer,
    providers: { current: undefined as never, middleware: () => async () => {}, update: () => false },
    accounts: s.accounts,
    accountAdmin: s.accountAdmin,
    clients: s.clients,
    audit: s.audit,
    initialTokens: s.initialTokens,
    reauthMaxAge: 600,
    staleDays: 90,
    consents: s.consents,
  });
}

function layers(router: Router): { method: string; path: string }[] {
  return router.stack.flatMap((layer) =>
    layer.methods.filter((m) => m !== 'HEAD').map((method) => ({ method, path: String(layer.path) })),
  );
}

describe('admin API access control', () => {
  let server: TestServer;
  let tool: oidc.Configuration;
  let goodToken: string;
  const bad: Record<string, string | undefined> = {};
  let someClient: string;
  let someAccount: string;

  const countAdminEvents = async () => {
    const rows = await server.running.services.db('audit_events').whereLike('type', 'client.%').orWhereLike('type', 'account.%').count<{ c: string }[]>({ c: '*' });
    return Number(rows[0]?.c);
  };

  before(async () => {
    // Admins sign in with a second factor only when they have one (or a request asks for it),
    // so an admin without a factor can hold a password-only token for this test.
    server = await startTestServer({ env: { MFA_REQUIRED_ROLES: 'practitioner' } });
    tool = await createAdminTool(server);
    goodToken = (await adminToken(server, tool)).token;

    bad['no token'] = undefined;
    bad['a forged token'] = 'not-a-token-custos-issued';

    const patient = await server.createAccount({ username: 'pat', role: 'patient', fhirId: 'p-1' });
    bad["a patient's token"] = (await signInForTokens(server, tool, patient)).access_token;

    const noFactor = await server.createAccount({ username: 'plainadmin', role: 'admin' });
    bad["an admin's token without the second factor"] = (await signInForTokens(server, tool, noFactor)).access_token;

    const scoped = await createMfaAdmin(server);
    bad['an admin token without custos:admin'] = (await signInForTokens(server, tool, scoped, { scope: 'openid' })).access_token;

    const { client, clientSecret } = await server.running.services.clients.create(
      { client_name: 'Robot', grant_types: ['client_credentials'], scope: 'custos:admin' },
      { category: 'internal' },
    );
    const robot = await discover(server.issuer, client.clientId, clientSecret);
    bad["an application's own token (client_credentials)"] = (await oidc.clientCredentialsGrant(robot, { scope: 'custos:admin' })).access_token;

    someClient = (await server.createClient({ client_name: 'Target', redirect_uris: ['https://app.example/cb'] })).clientId;
    someAccount = (await server.createAccount({ username: 'target', role: 'patient', fhirId: 'p-2' })).id;
  });
  after(() => server.close());

  it('the good token works (the baseline the refusals are measured against)', async () => {
    const res = await adminApi(server, goodToken)('GET', '/clients');
    assert.equal(res.status, 200);
  });

  it('refuses every other caller on every route, with a problem, and writes nothing', async () => {
    const { router } = registeredRoutes(server);
    const all = layers(router);
    assert.ok(all.length >= 15, `found ${all.length} routes`);
    const before = await countAdminEvents();
    for (const { method, path } of all) {
      const url = path.replace('/admin/api', '').replace(':client_id', someClient).replace(':account_id', someAccount);
      for (const [who, token] of Object.entries(bad)) {
        const res = await adminApi(server, token)(method, url, method === 'GET' ? undefined : { reason: 'test' });
        assert.ok([401, 403].includes(res.status), `${method} ${path} with ${who}: ${res.status} ${res.text.slice(0, 200)}`);
        assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, `${method} ${path} with ${who}`);
        assert.equal(res.json.status, res.status);
        assert.ok(res.headers.get('www-authenticate')?.startsWith('Bearer realm="custos-admin"'), `${method} ${path}: WWW-Authenticate`);
      }
    }
    assert.equal(await countAdminEvents(), before, 'no admin action was recorded, so none happened');
    assert.equal((await server.running.services.clients.get(someClient))?.status, 'approved');
    assert.equal((await server.running.services.accounts.findById(someAccount))?.disabled, false);
  });

  it('says why: 401 without a token, 401 asking for the second factor, 403 for the wrong person or scope', async () => {
    const call = (t: string | undefined) => adminApi(server, t)('GET', '/clients');
    assert.equal((await call(undefined)).status, 401);
    const weak = await call(bad["an admin's token without the second factor"]);
    assert.equal(weak.status, 401);
    assert.match(weak.headers.get('www-authenticate') ?? '', /error="insufficient_user_authentication".*acr_values="urn:custos:acr:mfa"/);
    assert.equal((await call(bad["a patient's token"])).status, 403);
    const noScope = await call(bad['an admin token without custos:admin']);
    assert.equal(noScope.status, 403, noScope.headers.get('www-authenticate') ?? '');
    assert.equal((await call(bad["an application's own token (client_credentials)"])).status, 403);
  });

  it('asks for a recent sign-in before destructive actions (RFC 9470 max_age)', async () => {
    const { token } = await adminToken(server, tool);
    // This sign-in happened an hour ago, as far as the token knows.
    await server.running.services.db('oidc_payloads')
      .where({ kind: 'AccessToken', id: token })
      .update({ payload: server.running.services.db.raw(`jsonb_set(payload, '{extra,auth_time}', to_jsonb((extract(epoch from now()) - 3600)::bigint))`) });
    const api = adminApi(server, token);
    assert.equal((await api('GET', `/clients/${someClient}`)).status, 200, 'reading is fine');
    const res = await api('POST', `/clients/${someClient}/suspend`, {});
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="insufficient_user_authentication".*max_age=600/);
    assert.equal((await server.running.services.clients.get(someClient))?.status, 'approved');
    const rotate = await api('POST', `/clients/${someClient}/secret`, { grace_seconds: 0 });
    assert.equal(rotate.status, 401);
    const reset = await api('POST', `/accounts/${someAccount}/mfa/reset`, {});
    assert.equal(reset.status, 401);
  });

  it('stops accepting a token once its admin is disabled or its client suspended', async () => {
    const { token, admin } = await adminToken(server, tool);
    const api = adminApi(server, token);
    assert.equal((await api('GET', '/clients')).status, 200);
    await server.running.services.accountAdmin.disable(admin.id, { actor: 'test' });
    assert.equal((await api('GET', '/clients')).status, 401, 'the token was revoked with the account');
  });

  it('serves an OpenAPI 3.1 document listing exactly the routes of the router', async () => {
    const res = await adminApi(server, goodToken)('GET', '/openapi.json');
    assert.equal(res.status, 200);
    const doc = res.json as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.equal(doc.openapi, '3.1.0');
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)).sort();
    const { router } = registeredRoutes(server);
    const routed = layers(router).map((l) => `${l.method} ${openApiPath(l.path.replace('/admin/api', ''))}`).sort();
    assert.deepEqual(documented, routed);
    const create = doc.paths['/clients']!.post as { requestBody: { content: { 'application/json': { schema: { properties: Record<string, unknown>; additionalProperties: unknown } } } } };
    const schema = create.requestBody.content['application/json'].schema;
    assert.ok('redirect_uris' in schema.properties && 'category' in schema.properties);
    assert.ok(!('status' in schema.properties) && !('secret_hash' in schema.properties));
    assert.equal(schema.additionalProperties, false);
  });
});
