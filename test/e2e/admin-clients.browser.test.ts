/**
 * The admin pages in a browser: an app registers itself (RFC 7591, with an admin's initial
 * access token) and waits as pending; an admin signs in with the second factor, finds it in the
 * client list, approves it, rotates its secret and suspends it. Screenshots in test-artifacts/.
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

  it('sends visitors without an admin session to sign in with the second factor, changing nothing', async () => {
    const res = await fetch(`${server.issuer}/admin/clients/${registered.client_id}/retire`, { method: 'POST', redirect: 'manual' });
    assert.equal(res.status, 302, 'no session: sent to sign in, nothing changed');
    assert.equal((await server.running.services.clients.get(registered.client_id))?.status, 'suspended');
    const anonymous = await fetch(`${server.issuer}/admin/clients`, { redirect: 'manual' });
    assert.match(anonymous.headers.get('location') ?? '', /\/auth\?client_id=custos-admin.*acr_values=urn%3Acustos%3Aacr%3Amfa/);
  });
});
