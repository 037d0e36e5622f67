/**
 * Creating and editing clients through the admin pages, over HTTP as a browser would: each kind
 * of client (public, secret, keys, backend service) saved by the same registry as the API, the
 * secret shown once, edits that keep what the form does not show, and every kind of bad input
 * answered with a readable message next to its field (the same message the API gives), a 400,
 * and nothing written.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminApi, adminPagesAgent, adminToken, createAdminTool, createMfaAdmin } from '../helpers/admin.ts';
import { discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

type Pages = Awaited<ReturnType<typeof adminPagesAgent>>;

/** The page's text with HTML entities decoded, for matching messages. */
const text = (html: string) => html.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

const base = { client_name: 'Page App', category: 'third-party', type: 'public', launch: 'any', redirect_uris: REDIRECT_URI, scope: 'openid' };

describe('admin pages: create and edit clients', () => {
  let server: TestServer;
  let pages: Pages;
  let api: ReturnType<typeof adminApi>;
  let adminId: string;
  const countClients = async () => Number((await server.running.services.db('clients').count<{ c: string }[]>({ c: '*' }))[0]?.c);
  const clientIdOf = (html: string) => /id="client-id">([^<]+)</.exec(html)?.[1] ?? '';

  before(async () => {
    server = await startTestServer();
    const admin = await createMfaAdmin(server, 'pageadmin');
    adminId = admin.id;
    pages = await adminPagesAgent(server, admin);
    const { token } = await adminToken(server, await createAdminTool(server));
    api = adminApi(server, token);
  });
  after(() => server.close());

  it('offers a labelled form with a CSRF token, linked from the list', async () => {
    const list = await pages.page('/admin/clients');
    assert.match(list.body, /href="\/admin\/clients\/new"/);
    const form = await pages.page('/admin/clients/new');
    assert.equal(form.status, 200);
    assert.match(form.body, /<form method="post" action="\/admin\/clients"/);
    assert.match(form.body, /name="_csrf" value="[^"]+"/);
    for (const name of ['client_name', 'owner', 'contacts', 'category', 'verified', 'jwks_uri', 'jwks', 'redirect_uris', 'allowed_origins', 'scope', 'launch', 'minimum_acr', 'access_token_ttl', 'refresh_token_ttl', 'logo_uri', 'policy_uri', 'tos_uri', 'client_uri']) {
      assert.match(form.body, new RegExp(`<label for="${name}"`), `${name} has a label`);
    }
    for (const type of ['public', 'confidential', 'confidential_keys', 'backend_service']) assert.match(form.body, new RegExp(`<label for="type-${type}"`));
    assert.doesNotMatch(form.body, /<script/);
  });

  it('creates a public client with every field, approved at once and audited as the admin', async () => {
    const res = await pages.post('/admin/clients', {
      ...base,
      client_name: 'Patient Diary <b>',
      owner: 'Diary Ltd',
      contacts: 'dev@diary.example\r\nops@diary.example',
      category: 'external',
      verified: 'on',
      refresh: 'on',
      redirect_uris: `${REDIRECT_URI}\nhttps://diary.example/cb`,
      allowed_origins: 'https://diary.example',
      scope: 'openid  fhirUser launch/patient offline_access patient/*.rs',
      launch: 'standalone',
      minimum_acr: 'urn:custos:acr:mfa',
      access_token_ttl: '120',
      refresh_token_ttl: '86400',
      logo_uri: 'https://diary.example/logo.png',
      policy_uri: 'https://diary.example/privacy',
      tos_uri: 'https://diary.example/terms',
      client_uri: 'https://diary.example/',
    });
    assert.equal(res.status, 200, text(/id="form-problems">([\s\S]*?)<\/div>/.exec(res.body)?.[1] ?? res.body.slice(0, 500)));
    assert.match(res.body, /Patient Diary &lt;b&gt;/, 'escaped');
    assert.doesNotMatch(res.body, /id="client-secret"/, 'a public client has no secret');
    const c = await server.running.services.clients.get(clientIdOf(res.body));
    assert.equal(c?.status, 'approved');
    assert.equal(c?.category, 'external');
    assert.equal(c?.verified, true);
    assert.equal(c?.type, 'public');
    assert.deepEqual(c?.metadata, {
      client_name: 'Patient Diary <b>',
      owner: 'Diary Ltd',
      contacts: ['dev@diary.example', 'ops@diary.example'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [REDIRECT_URI, 'https://diary.example/cb'],
      allowed_origins: ['https://diary.example'],
      scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
      launch_modes: ['standalone'],
      minimum_acr: 'urn:custos:acr:mfa',
      access_token_ttl: 120,
      refresh_token_ttl: 86400,
      logo_uri: 'https://diary.example/logo.png',
      policy_uri: 'https://diary.example/privacy',
      tos_uri: 'https://diary.example/terms',
      client_uri: 'https://diary.example/',
    });
    const event = (await server.running.services.audit.list({ clientId: c!.clientId, type: 'client.created' }, { limit: 1 })).events[0];
    assert.equal(event?.actor, adminId);
    assert.equal(event?.details.origin, 'admin');
    const shown = await pages.page(`/admin/clients/${c!.clientId}`);
    assert.match(shown.body, /standalone/);
    assert.match(shown.body, /access 120 s, refresh 86400 s/);
  });

  it('creates a confidential client and shows its secret once; the secret works', async () => {
    const res = await pages.post('/admin/clients', { ...base, client_name: 'Secret App', type: 'confidential', client_credentials: 'on' });
    assert.equal(res.status, 200, res.body.slice(0, 500));
    const secret = /id="client-secret">([^<]+)</.exec(res.body)?.[1];
    const id = clientIdOf(res.body);
    assert.ok(secret && secret.length >= 43);
    const config = await discover(server.issuer, id, secret);
    assert.ok((await oidc.clientCredentialsGrant(config)).access_token);
    const again = await pages.page(`/admin/clients/${id}`);
    assert.ok(!again.body.includes(secret), 'never shown again');
    assert.equal((await server.running.services.clients.get(id))?.metadata.token_endpoint_auth_method, 'client_secret_basic');
  });

  it('creates clients with keys: inline JWKS, or a JWKS URL for a backend service', async () => {
    const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const withKeys = await pages.post('/admin/clients', { ...base, client_name: 'Keyed App', type: 'confidential_keys', jwks: JSON.stringify({ keys: [jwk] }) });
    assert.equal(withKeys.status, 200, text(withKeys.body).slice(0, 800));
    assert.doesNotMatch(withKeys.body, /id="client-secret"/);
    const keyed = await server.running.services.clients.get(clientIdOf(withKeys.body));
    assert.equal(keyed?.type, 'confidential_keys');
    assert.equal(keyed?.metadata.token_endpoint_auth_method, 'private_key_jwt');
    assert.deepEqual(keyed?.metadata.jwks, { keys: [jwk] });

    const backend = await pages.post('/admin/clients', {
      ...base,
      client_name: 'Nightly export',
      type: 'backend_service',
      redirect_uris: '',
      jwks_uri: 'https://export.example/jwks.json',
      scope: 'system/Patient.rs',
    });
    assert.equal(backend.status, 200, text(backend.body).slice(0, 800));
    const service = await server.running.services.clients.get(clientIdOf(backend.body));
    assert.equal(service?.type, 'backend_service');
    assert.deepEqual(service?.metadata.grant_types, ['client_credentials']);
    assert.deepEqual(service?.metadata.redirect_uris, []);
    assert.equal(service?.metadata.jwks_uri, 'https://export.example/jwks.json');
  });

  it('refuses bad input with the message the API gives, next to the field, writing nothing', async () => {
    const before = await countClients();
    const cases: [Record<string, string>, string, RegExp, Record<string, unknown> | undefined][] = [
      [{ client_name: '' }, 'client_name', /Too small|at least|>=1/i, { client_name: '' }],
      [{ redirect_uris: 'http://evil.example/cb' }, 'redirect_uris', /"http:\/\/evil\.example\/cb" must use https/, { redirect_uris: ['http://evil.example/cb'] }],
      [{ scope: 'openid bogus/scope' }, 'scope', /"bogus\/scope" is not a scope Custos knows/, { scope: 'openid bogus/scope' }],
      [{ scope: 'openid custos:admin' }, 'scope', /custos:admin is only for clients of category "internal"/, { scope: 'openid custos:admin' }],
      [{ access_token_ttl: '99999' }, 'access_token_ttl', /3600/, { access_token_ttl: 99999 }],
      [{ contacts: 'not-an-email' }, 'contacts', /email/i, { contacts: ['not-an-email'] }],
      [{ allowed_origins: 'https://app.example/path' }, 'allowed_origins', /is not an origin/, { allowed_origins: ['https://app.example/path'] }],
      [{ logo_uri: 'http://diary.example/logo.png' }, 'logo_uri', /./, { logo_uri: 'http://diary.example/logo.png' }],
      [{ type: 'confidential_keys' }, 'jwks', /private_key_jwt needs exactly one of jwks or jwks_uri/, { token_endpoint_auth_method: 'private_key_jwt' }],
      [{ redirect_uris: '' }, 'redirect_uris', /at least one redirect URI is required/, { redirect_uris: [] }],
      [{ launch: 'ehr', type: 'backend_service', redirect_uris: '', jwks_uri: 'https://x.example/jwks' }, 'launch', /SMART launches need authorization_code/, undefined],
      [{ type: 'backend_service', jwks_uri: 'https://x.example/jwks' }, 'redirect_uris', /redirect URIs are only used with authorization_code/, undefined],
      [{ client_credentials: 'on' }, 'type', /client_credentials needs a confidential client/, { grant_types: ['authorization_code', 'client_credentials'] }],
      [{ access_token_ttl: 'ten minutes' }, 'access_token_ttl', /must be a whole number of seconds/, undefined],
      [{ type: 'confidential_keys', jwks: '{"keys": [' }, 'jwks', /is not valid JSON/, undefined],
      [{ type: 'implicit' }, 'type', /choose one of the kinds of client listed/, undefined],
      [{ launch: 'sometimes' }, 'launch', /choose one of the launch options listed/, undefined],
      [{ category: 'vip' }, 'category', /choose one of the categories listed/, undefined],
      [{ minimum_acr: 'urn:other' }, 'minimum_acr', /choose one of the levels listed/, undefined],
    ];
    for (const [change, field, message, apiBody] of cases) {
      const res = await pages.post('/admin/clients', { ...base, ...change });
      const label = JSON.stringify(change);
      assert.equal(res.status, 400, label);
      assert.match(res.body, /Nothing was saved/, label);
      const fieldError = new RegExp(`id="error-${field}">([^<]*)<`).exec(res.body)?.[1];
      assert.ok(fieldError, `${label}: an error next to ${field}`);
      assert.match(text(fieldError), message, label);
      assert.match(res.body, new RegExp(`aria-describedby="[^"]*error-${field}`), `${label}: the field points at its error`);
      assert.doesNotMatch(res.body, /at [A-Za-z]+ \(|Error:|node:internal/, 'no stack trace');
      // What was typed stays in the form.
      if (change.client_name === undefined && change.scope) assert.match(text(res.body), new RegExp(change.scope.replace(/[*/]/g, '\\$&')));
      if (apiBody) {
        // The admin API refuses the same input with the same words.
        const viaApi = await api('POST', '/clients', { client_name: 'Page App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', scope: 'openid', ...apiBody });
        assert.equal(viaApi.status, 400, label);
        const details = (viaApi.json.errors as { detail: string }[]).map((e) => e.detail);
        assert.ok(details.some((d) => text(fieldError).includes(d)), `${label}: API said ${JSON.stringify(details)}, page said ${fieldError}`);
      }
    }
    // Several problems at once are all listed.
    const many = await pages.post('/admin/clients', { ...base, client_name: '', scope: 'nope', access_token_ttl: 'x' });
    assert.equal(many.status, 400);
    assert.match(many.body, /3 things need fixing/);
    // A field sent twice, a missing or wrong CSRF token, and an oversized form.
    const twice = await pages.post('/admin/clients', [...Object.entries(base), ['client_name', 'Other']]);
    assert.equal(twice.status, 400);
    assert.match(text(twice.body), /was sent more than once/);
    const noCsrf = await pages.agent.request(`${server.issuer}/admin/clients`, { form: { ...base } });
    assert.equal(noCsrf.status, 403);
    const wrongCsrf = await pages.agent.request(`${server.issuer}/admin/clients`, { form: { ...base, _csrf: 'x'.repeat(43) } });
    assert.equal(wrongCsrf.status, 403);
    const huge = await pages.post('/admin/clients', { ...base, jwks: 'x'.repeat(70_000) });
    assert.equal(huge.status, 413);
    assert.equal(await countClients(), before, 'nothing written');
  });

  it('edits a client: the form starts from what is stored, keeps what it does not show, and is audited', async () => {
    const created = await server.running.services.clients.create(
      {
        client_name: 'Editable App',
        redirect_uris: [REDIRECT_URI],
        post_logout_redirect_uris: [`${REDIRECT_URI}/bye`],
        grant_types: ['authorization_code', 'client_credentials'],
        token_endpoint_auth_method: 'client_secret_post',
        scope: 'openid launch',
        launch_modes: [],
        owner: 'Before Inc.',
      },
      { category: 'external' },
    );
    const id = created.client.clientId;
    const form = await pages.page(`/admin/clients/${id}/edit`);
    assert.equal(form.status, 200);
    assert.match(form.body, /value="Editable App"/);
    assert.match(form.body, /<option value="none" selected>/, 'launch_modes [] shows as no launch');
    assert.match(form.body, /<option value="client_secret_post" selected>/);
    assert.match(form.body, /id="client_credentials" name="client_credentials" value="on" checked/);
    assert.match(form.body, /id="type-confidential" name="type" value="confidential" checked/);

    const saved = await pages.post(`/admin/clients/${id}/edit`, {
      client_name: 'Edited App',
      owner: '',
      category: 'internal',
      type: 'confidential',
      secret_method: 'client_secret_post',
      client_credentials: 'on',
      redirect_uris: `${REDIRECT_URI}\nhttps://edited.example/cb`,
      scope: 'openid launch',
      launch: 'ehr',
      minimum_acr: '',
    });
    assert.equal(saved.status, 302, text(saved.body).slice(0, 800));
    assert.equal(saved.location, `${server.issuer}/admin/clients/${id}?done=edit`);
    const after = await server.running.services.clients.get(id);
    assert.equal(after?.name, 'Edited App');
    assert.equal(after?.category, 'internal');
    assert.equal(after?.metadata.owner, undefined, 'a blank field is removed');
    assert.deepEqual(after?.metadata.launch_modes, ['ehr']);
    assert.deepEqual(after?.metadata.redirect_uris, [REDIRECT_URI, 'https://edited.example/cb']);
    assert.deepEqual(after?.metadata.post_logout_redirect_uris, [`${REDIRECT_URI}/bye`], 'fields the form does not show are kept');
    const config = await discover(server.issuer, id, created.clientSecret, oidc.ClientSecretPost(created.clientSecret));
    assert.ok((await oidc.clientCredentialsGrant(config)).access_token, 'the secret still works');
    const event = (await server.running.services.audit.list({ clientId: id, type: 'client.updated' }, { limit: 1 })).events[0];
    assert.equal(event?.actor, adminId);
    assert.deepEqual(event?.details.changed, ['category', 'client_name', 'launch_modes', 'owner', 'redirect_uris']);
    const shown = await pages.page(`/admin/clients/${id}?done=edit`);
    assert.match(shown.body, /The changes are saved/);

    // Bad edits: a readable message, a 400, nothing changed.
    const stamp = after?.updatedAt.getTime();
    for (const [change, field, message] of [
      [{ type: 'public', client_credentials: undefined }, 'type', /cannot switch between secret and non-secret authentication/],
      [{ type: 'public' }, 'type', /client_credentials needs a confidential client/],
      [{ client_name: '' }, 'client_name', /./],
      [{ redirect_uris: 'https://edited.example/cb#frag' }, 'redirect_uris', /must not contain a fragment/],
      [{ refresh_token_ttl: '600' }, 'refresh_token_ttl', /only for clients with the refresh_token grant/],
      [{ category: 'third-party', scope: 'openid custos:admin' }, 'scope', /only for clients of category "internal"/],
    ] as const) {
      const form = {
        client_name: 'Edited App', category: 'internal', type: 'confidential', secret_method: 'client_secret_post', client_credentials: 'on',
        redirect_uris: REDIRECT_URI, scope: 'openid launch', launch: 'ehr', ...change,
      } as Record<string, string | undefined>;
      const res = await pages.post(`/admin/clients/${id}/edit`, Object.entries(form).filter((e): e is [string, string] => e[1] !== undefined));
      assert.equal(res.status, 400, JSON.stringify(change));
      assert.match(text(new RegExp(`id="error-${field}">([^<]*)<`).exec(res.body)?.[1] ?? ''), message, JSON.stringify(change));
    }
    assert.equal((await server.running.services.clients.get(id))?.updatedAt.getTime(), stamp, 'nothing written');
  });

  it("refuses to edit Custos's own, retired and unknown clients, and anyone without an admin session", async () => {
    assert.equal((await pages.page('/admin/clients/custos-account/edit')).status, 409);
    const retired = await server.createClient({ client_name: 'Old', redirect_uris: [REDIRECT_URI] });
    await server.running.services.clients.transition(retired.clientId, 'retire', { actor: 'test' });
    const gone = await pages.page(`/admin/clients/${retired.clientId}/edit`);
    assert.equal(gone.status, 409);
    assert.match(gone.body, /a retired client cannot be changed/);
    assert.equal((await pages.post(`/admin/clients/${retired.clientId}/edit`, { ...base })).status, 409);
    assert.equal((await pages.page('/admin/clients/no-such-client/edit')).status, 404);
    const before = await countClients();
    const anonymous = await fetch(`${server.issuer}/admin/clients`, { method: 'POST', body: new URLSearchParams(base), redirect: 'manual' });
    assert.equal(anonymous.status, 302);
    assert.equal(await countClients(), before);
  });
});
