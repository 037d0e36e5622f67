/**
 * The admin pages in a browser: an app registers itself (RFC 7591, with an admin's initial
 * access token) and waits as pending; an admin signs in with the second factor, finds it in the
 * client list, approves it, rotates its secret and suspends it; registers a client through the
 * form (a mistake first, shown next to its field), edits it, and looks at an account and the
 * audit trail, on a desktop and a phone screen. Screenshots in test-artifacts/.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser } from 'playwright-core';
import { generate } from 'otplib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ARTIFACTS, launchChromium } from '../helpers/browser.ts';
import { createMfaAdmin } from '../helpers/admin.ts';

describe('admin pages: register, approve, suspend a client', () => {
  let server: TestServer;
  let browser: Browser;
  let admin: Awaited<ReturnType<typeof createMfaAdmin>>;
  let registered: { client_id: string; client_name: string };

  before(async () => {
    server = await startTestServer();
    admin = await createMfaAdmin(server, 'root');
    const { token } = await server.running.services.initialTokens.issue({ expiresIn: 600, note: 'browser test' }, { actor: 'test' });
    const res = await fetch(`${server.issuer}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ client_name: 'Partner Scheduling App', redirect_uris: ['https://partner.example/callback'], scope: 'openid', owner: 'Partner Inc.' }),
    });
    assert.equal(res.status, 201);
    registered = (await res.json()) as typeof registered;
    browser = await launchChromium();
  });
  after(async () => {
    try {
      await browser?.close();
    } finally {
      await server?.close();
    }
  });

  it('signs in with the second factor, approves the pending client, rotates its secret, suspends it', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${server.issuer}/admin`);
      await page.getByLabel('Username').fill(admin.username);
      await page.getByLabel('Password').fill(admin.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByLabel('Authentication code').fill(await generate({ secret: admin.secret }));
      await page.getByRole('button', { name: 'Verify' }).click();
      await page.waitForURL(`${server.issuer}/admin/clients`);
      await page.getByRole('heading', { name: 'Clients' }).waitFor();

      await page.getByLabel('Status').selectOption('pending');
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.getByRole('link', { name: 'Partner Scheduling App' }).waitFor();
      await page.screenshot({ path: `${ARTIFACTS}admin-clients-pending.png`, fullPage: true });
      await page.getByRole('link', { name: 'Partner Scheduling App' }).click();
      assert.equal(await page.locator('#client-status').textContent(), 'pending');
      assert.match((await page.textContent('main')) ?? '', /dynamic registration/);

      await page.getByRole('button', { name: 'Approve' }).click();
      await page.getByText('The client is approved').waitFor();
      assert.equal(await page.locator('#client-status').textContent(), 'approved');
      await page.screenshot({ path: `${ARTIFACTS}admin-client-approved.png`, fullPage: true });
      assert.equal((await server.running.services.clients.get(registered.client_id))?.status, 'approved');

      await page.getByLabel(/Old secret keeps working/).fill('300');
      await page.getByRole('button', { name: 'Rotate the secret' }).click();
      const secret = (await page.locator('#client-secret').textContent()) ?? '';
      assert.ok(secret.length >= 43);
      await page.screenshot({ path: `${ARTIFACTS}admin-client-secret.png`, fullPage: true });
      await page.getByRole('link', { name: 'Back to the client' }).click();

      await page.getByRole('button', { name: 'Suspend and revoke all tokens' }).click();
      await page.getByText('The client is suspended').waitFor();
      assert.equal(await page.locator('#client-status').textContent(), 'suspended');
      await page.screenshot({ path: `${ARTIFACTS}admin-client-suspended.png`, fullPage: true });

      const events = await server.running.services.audit.list({ clientId: registered.client_id, type: 'client.' }, { limit: 10 });
      assert.deepEqual(events.events.map((e) => e.type), ['client.suspended', 'client.secret_rotated', 'client.approved', 'client.created', 'client.initial_token_used']);
      assert.ok(events.events.slice(0, 3).every((e) => e.actor === admin.id));
    } finally {
      await context.close();
    }
  });

  it('registers a client through the form (a mistake shown next to its field first), edits it, and reads accounts and the audit trail', async () => {
    // A second admin: the first one's current TOTP code is spent (codes are never accepted twice).
    const editor = await createMfaAdmin(server, 'editor');
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${server.issuer}/admin/clients/new`);
      await page.getByLabel('Username').fill(editor.username);
      await page.getByLabel('Password').fill(editor.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByLabel('Authentication code').fill(await generate({ secret: editor.secret }));
      await page.getByRole('button', { name: 'Verify' }).click();
      await page.waitForURL(`${server.issuer}/admin/clients/new`);
      await page.getByRole('heading', { name: 'Register a client' }).waitFor();

      await page.getByLabel('Name').fill('Clinic Portal');
      await page.getByLabel('Owner').fill('Clinic IT');
      await page.getByLabel('Contact emails').fill('it@clinic.example');
      await page.getByLabel('Category').selectOption('external');
      await page.getByLabel(/Confidential with a secret/).check();
      await page.getByLabel(/Refresh tokens/).check();
      await page.getByLabel('Redirect URIs').fill('http://portal.clinic.example/callback');
      await page.getByLabel('Scope ceiling').fill('openid fhirUser launch launch/patient offline_access patient/*.rs');
      await page.getByLabel('SMART launch modes').selectOption('ehr');
      await page.getByRole('button', { name: 'Register the client' }).click();
      await page.getByText('Nothing was saved.').waitFor();
      assert.match((await page.locator('#error-redirect_uris').textContent()) ?? '', /must use https/);
      assert.equal(await page.getByLabel('Scope ceiling').inputValue(), 'openid fhirUser launch launch/patient offline_access patient/*.rs', 'what was typed stays');
      await page.screenshot({ path: `${ARTIFACTS}admin-client-form-error.png`, fullPage: true });

      await page.getByLabel('Redirect URIs').fill('https://portal.clinic.example/callback');
      await page.getByRole('button', { name: 'Register the client' }).click();
      await page.getByRole('heading', { name: 'Client registered' }).waitFor();
      const clientId = (await page.locator('#client-id').textContent()) ?? '';
      const secret = (await page.locator('#client-secret').textContent()) ?? '';
      assert.ok(secret.length >= 43);
      await page.screenshot({ path: `${ARTIFACTS}admin-client-created.png`, fullPage: true });
      const created = await server.running.services.clients.get(clientId);
      assert.equal(created?.status, 'approved');
      assert.deepEqual(created?.metadata.launch_modes, ['ehr']);
      assert.equal(created?.type, 'confidential');

      await page.getByRole('link', { name: 'Go to the client' }).click();
      await page.getByRole('link', { name: 'Edit this client' }).click();
      await page.getByRole('heading', { name: 'Edit Clinic Portal' }).waitFor();
      assert.equal(await page.getByLabel('Owner').inputValue(), 'Clinic IT');
      await page.getByLabel('Name').fill('Clinic Portal (new)');
      await page.getByLabel(/^Verified/).check();
      await page.getByLabel('SMART launch modes').selectOption('both');
      await page.screenshot({ path: `${ARTIFACTS}admin-client-edit.png`, fullPage: true });
      await page.getByRole('button', { name: 'Save the changes' }).click();
      await page.getByText('The changes are saved.').waitFor();
      assert.match((await page.textContent('main')) ?? '', /ehr, standalone/);
      const edited = await server.running.services.clients.get(clientId);
      assert.equal(edited?.name, 'Clinic Portal (new)');
      assert.equal(edited?.verified, true);

      // On a phone: the form and the lists fit the screen.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.goto(`${server.issuer}/admin/clients/${clientId}/edit`);
      const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
      assert.ok(overflow <= 1, `no sideways scrolling on a phone (${overflow}px)`);
      await page.screenshot({ path: `${ARTIFACTS}admin-client-edit-phone.png`, fullPage: true });

      await page.setViewportSize({ width: 1280, height: 900 });
      await page.getByRole('link', { name: 'Accounts' }).click();
      await page.getByRole('heading', { name: 'Accounts' }).waitFor();
      await page.getByLabel(/Username, name, email/).fill('root');
      await page.getByRole('button', { name: 'Search' }).click();
      await page.getByRole('link', { name: 'root' }).click();
      assert.equal(await page.locator('#account-status').textContent(), 'enabled');
      await page.screenshot({ path: `${ARTIFACTS}admin-account.png`, fullPage: true });

      await page.getByRole('link', { name: 'Audit trail' }).click();
      await page.getByLabel('Client').fill(clientId);
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.getByText('client.updated').waitFor();
      assert.match((await page.textContent('main')) ?? '', /client\.created/);
      await page.screenshot({ path: `${ARTIFACTS}admin-audit.png`, fullPage: true });
      const href = (await page.locator('#fhir-export').getAttribute('href')) ?? '';
      const bundle = (await (await page.request.get(`${server.issuer}${href}`)).json()) as { resourceType: string; entry: unknown[] };
      assert.equal(bundle.resourceType, 'Bundle');
      assert.equal(bundle.entry.length, 2);
    } finally {
      await context.close();
    }
  });

  it('sends visitors without an admin session to sign in with the second factor, changing nothing', async () => {
    const res = await fetch(`${server.issuer}/admin/clients/${registered.client_id}/retire`, { method: 'POST', redirect: 'manual' });
    assert.equal(res.status, 302, 'no session: sent to sign in, nothing changed');
    assert.equal((await server.running.services.clients.get(registered.client_id))?.status, 'suspended');
    const anonymous = await fetch(`${server.issuer}/admin/clients`, { redirect: 'manual' });
    assert.match(anonymous.headers.get('location') ?? '', /\/auth\?client_id=custos-admin.*acr_values=urn%3Acustos%3Aacr%3Amfa/);
  });
});
