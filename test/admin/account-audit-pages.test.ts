/**
 * The accounts and audit pages over HTTP, as a browser would use them: search and page through
 * accounts, disable, enable and reset a second factor (the same services as the API: sessions and
 * tokens end, every change audited), and read the audit trail with filters, cursor paging and the
 * FHIR AuditEvent export. Bad filters and actions that do not fit get a readable page, never a 500.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminPagesAgent, createMfaAdmin } from '../helpers/admin.ts';
import { codeFlow, discover, oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';

type Pages = Awaited<ReturnType<typeof adminPagesAgent>>;
const text = (html: string) => html.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
const usernamesOn = (html: string) => [...html.matchAll(/<a href="\/admin\/accounts\/[0-9a-f-]{36}">([^<]+)<\/a>/g)].map((m) => m[1]);

describe('admin pages: accounts and the audit trail', () => {
  let server: TestServer;
  let pages: Pages;
  let admin: Awaited<ReturnType<typeof createMfaAdmin>>;

  before(async () => {
    server = await startTestServer();
    admin = await createMfaAdmin(server, 'auditor');
    for (const name of ['zara', 'zeke', 'zoe']) await server.createAccount({ username: name, role: 'patient', fhirId: `pat-${name}`, displayName: `${name} Zed` });
    await server.createAccount({ username: 'drzhivago', role: 'practitioner', fhirId: 'prac-z' });
    pages = await adminPagesAgent(server, admin);
  });
  after(() => server.close());

  it('lists accounts with search, role filter and paging; refuses bad filters readably', async () => {
    const all = await pages.page('/admin/accounts');
    assert.equal(all.status, 200);
    assert.match(all.body, /<nav class="admin-nav"/);
    assert.deepEqual(usernamesOn(all.body), ['auditor', 'drzhivago', 'zara', 'zeke', 'zoe']);
    assert.deepEqual(usernamesOn((await pages.page('/admin/accounts?q=z&role=patient')).body), ['zara', 'zeke', 'zoe']);
    assert.deepEqual(usernamesOn((await pages.page('/admin/accounts?q=pat-zeke')).body), ['zeke'], 'by linked FHIR id');
    assert.deepEqual(usernamesOn((await pages.page('/admin/accounts?q=100%25')).body), [], 'wildcards are literal');

    const first = await pages.page('/admin/accounts?role=patient&limit=2');
    assert.deepEqual(usernamesOn(first.body), ['zara', 'zeke']);
    const next = text(/<a href="([^"]+)">Next page<\/a>/.exec(first.body)?.[1] ?? '');
    assert.match(next, /role=patient/);
    const second = await pages.page(next);
    assert.deepEqual(usernamesOn(second.body), ['zoe']);
    assert.doesNotMatch(second.body, /Next page/);

    for (const [query, message] of [
      ['role=superuser', /Role: /],
      ['limit=1000', /Page size: /],
      ['cursor=%%%', /That page link is not valid/],
      ['cursor=bm90LWEtdXNlcg~', /Page: |That page link is not valid/],
    ] as const) {
      const res = await pages.page(`/admin/accounts?${query}`);
      assert.equal(res.status, 400, query);
      assert.match(text(res.body), message, query);
    }
  });

  it('disables an account (its tokens end at once), enables it, resets its second factor, all audited', async () => {
    const pat = await server.createAccount({ username: 'zelda', role: 'patient', fhirId: 'pat-zelda' });
    const app = await server.createClient({ client_name: 'App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    const appConfig = await discover(server.issuer, app.clientId, app.clientSecret);
    const { tokens } = await codeFlow(appConfig, server.issuer, pat);

    const detail = await pages.page(`/admin/accounts/${pat.id}`);
    assert.equal(detail.status, 200);
    assert.match(detail.body, /id="account-status">enabled</);
    assert.match(detail.body, /href="\/admin\/audit\?patient=pat-zelda"/);
    const disabled = await pages.post(`/admin/accounts/${pat.id}/disable`);
    assert.equal(disabled.status, 302);
    assert.equal(disabled.location, `${server.issuer}/admin/accounts/${pat.id}?done=disable`);
    assert.equal((await server.running.services.accounts.findById(pat.id))?.disabled, true);
    assert.equal((await oidc.tokenIntrospection(appConfig, tokens.access_token)).active, false);
    const shown = await pages.page(`/admin/accounts/${pat.id}?done=disable`);
    assert.match(shown.body, /The account is disabled/);
    assert.match(shown.body, /Enable the account/);

    // Disabling twice does not fit: a readable 409 on the account page.
    const again = await pages.post(`/admin/accounts/${pat.id}/disable`);
    assert.equal(again.status, 409);
    assert.match(again.body, /The account is already disabled\./);
    assert.equal((await pages.post(`/admin/accounts/${pat.id}/enable`)).status, 302);
    assert.equal((await server.running.services.accounts.findById(pat.id))?.disabled, false);

    const other = await createMfaAdmin(server, 'zadmin');
    assert.match((await pages.page(`/admin/accounts/${other.id}`)).body, /id="account-mfa">authenticator app/);
    assert.equal((await pages.post(`/admin/accounts/${other.id}/mfa-reset`)).status, 302);
    assert.deepEqual(await server.running.services.mfa.status(other.id), { totp: false, recoveryCodesLeft: 0 });
    assert.match((await pages.page(`/admin/accounts/${other.id}`)).body, /id="account-mfa">none, 0 recovery/);

    const events = await server.running.services.audit.list({ actor: admin.id, type: 'account.' }, { limit: 10 });
    assert.deepEqual(events.events.map((e) => e.type), ['account.mfa_reset', 'account.enabled', 'account.disabled']);

    // Unknown accounts, and posts without the form's token, change nothing.
    assert.equal((await pages.page('/admin/accounts/00000000-0000-0000-0000-000000000000')).status, 404);
    assert.equal((await pages.post('/admin/accounts/00000000-0000-0000-0000-000000000000/disable')).status, 404);
    assert.equal((await pages.page('/admin/accounts/not-a-uuid')).status, 404);
    const forged = await pages.agent.request(`${server.issuer}/admin/accounts/${pat.id}/disable`, { form: { _csrf: 'x'.repeat(43) } });
    assert.equal(forged.status, 403);
    const anonymous = await fetch(`${server.issuer}/admin/accounts/${pat.id}/disable`, { method: 'POST', redirect: 'manual' });
    assert.equal(anonymous.status, 302);
    assert.equal((await server.running.services.accounts.findById(pat.id))?.disabled, false);
  });

  it('shows the audit trail with filters, cursor paging and the FHIR AuditEvent export', async () => {
    const page = await pages.page(`/admin/audit?actor=${admin.id}&type=account.`);
    assert.equal(page.status, 200);
    const types = [...page.body.matchAll(/<td><code>(account\.[a-z_]+)<\/code><\/td>/g)].map((m) => m[1]);
    assert.deepEqual(types, ['account.mfa_reset', 'account.enabled', 'account.disabled']);
    assert.match(page.body, /value="account\."/, 'the filter stays in the form');

    const one = await pages.page(`/admin/audit?actor=${admin.id}&type=account.&limit=1`);
    assert.equal([...one.body.matchAll(/<td><code>account\./g)].length, 1);
    const older = text(/<a href="([^"]+)">Older events<\/a>/.exec(one.body)?.[1] ?? '');
    const two = await pages.page(older);
    assert.match(two.body, /<td><code>account\.enabled<\/code>/);

    // Time filters in UTC from the page's date-time fields; the future holds nothing.
    const future = await pages.page('/admin/audit?from=2999-01-01T00:00');
    assert.equal(future.status, 200);
    assert.match(future.body, /No events match/);
    const past = await pages.page(`/admin/audit?to=2000-01-01T00:00&actor=${admin.id}`);
    assert.match(past.body, /No events match/);

    for (const [query, message] of [
      ['from=yesterday', /From: /],
      ['to=2024-13-45T99:99', /To: /],
      ['cursor=not-a-cursor', /That page link is not valid/],
      ['limit=0', /Page size: /],
    ] as const) {
      const res = await pages.page(`/admin/audit?${query}`);
      assert.equal(res.status, 400, query);
      assert.match(text(res.body), message, query);
      assert.doesNotMatch(res.body, /server_error/);
    }

    const link = text(/id="fhir-export"|href="([^"]+)" id="fhir-export"/.exec(page.body)?.[1] ?? '');
    assert.match(link, /^\/admin\/audit\/fhir\?actor=.*type=account\./);
    const fhir = await pages.agent.request(`${server.issuer}${link}`);
    assert.equal(fhir.status, 200);
    assert.match(fhir.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    const bundle = JSON.parse(fhir.body) as { resourceType: string; entry: { resource: { resourceType: string; subtype: { code: string }[] } }[] };
    assert.equal(bundle.resourceType, 'Bundle');
    assert.deepEqual(bundle.entry.map((e) => e.resource.subtype[0]!.code), ['account.mfa_reset', 'account.enabled', 'account.disabled']);
    assert.equal((await pages.agent.request(`${server.issuer}/admin/audit/fhir?from=nope`)).status, 400);
    const anonymous = await fetch(`${server.issuer}/admin/audit/fhir`, { redirect: 'manual' });
    assert.equal(anonymous.status, 302, 'no session: sent to sign in');
  });
});
