/**
 * The account page in a browser: enrolling an authenticator app (QR code and key), recovery
 * codes, and removing the factor, which demands a fresh login with that factor (step-up).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import type { Browser } from 'playwright-core';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ARTIFACTS, launchChromium } from '../helpers/browser.ts';

describe('account page: two-step verification', () => {
  let server: TestServer;
  let browser: Browser;
  let pat: { username: string; password: string };

  before(async () => {
    server = await startTestServer();
    pat = await server.createAccount({ username: 'pat', role: 'patient', fhirId: 'pat-1', displayName: 'Pat Doe' });
    browser = await launchChromium();
  });
  after(async () => {
    try {
      await browser?.close();
    } finally {
      await server?.close();
    }
  });

  it('enrols from the account page and needs the factor to remove it', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${server.issuer}/account`);
      await page.getByLabel('Username').fill(pat.username);
      await page.getByLabel('Password').fill(pat.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(`${server.issuer}/account`);
      await assert.doesNotReject(page.getByText('Signed in as').waitFor());
      assert.match((await page.locator('#mfa-status').textContent()) ?? '', /^Off/);

      await page.getByRole('link', { name: 'Set up an authenticator app' }).click();
      await page.locator('.qr svg').waitFor();
      await page.screenshot({ path: `${ARTIFACTS}account-enrol-totp.png`, fullPage: true });
      const secret = ((await page.locator('#totp-key').textContent()) ?? '').replace(/\s/g, '');
      await page.getByLabel('Code from the app').fill('000000');
      await page.getByRole('button', { name: 'Turn on two-step verification' }).click();
      await page.getByText('That code is not valid').waitFor();
      await page.getByLabel('Code from the app').fill(await generate({ secret }));
      await page.getByRole('button', { name: 'Turn on two-step verification' }).click();
      await page.locator('#recovery-codes').waitFor();
      assert.equal(await page.locator('#recovery-codes li').count(), 10);
      await page.getByRole('link', { name: /back to my account/ }).click();
      assert.match((await page.locator('#mfa-status').textContent()) ?? '', /^On.*Recovery codes left: 10/s);

      // This session signed in with a password only: turning the factor off needs a login with it.
      await page.getByRole('button', { name: 'Turn off two-step verification' }).click();
      await page.getByLabel('Password').fill(pat.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByLabel('Authentication code').waitFor();
      await page.screenshot({ path: `${ARTIFACTS}step-up-totp.png`, fullPage: true });
      const next = await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 });
      await page.getByLabel('Authentication code').fill(next);
      await page.getByRole('button', { name: 'Verify' }).click();
      await page.waitForURL(`${server.issuer}/account`);
      assert.match((await page.locator('#mfa-status').textContent()) ?? '', /^On/, 'not removed without asking again');
      await page.getByRole('button', { name: 'Turn off two-step verification' }).click();
      await page.getByText('Two-step verification is off.').waitFor();
      assert.match((await page.locator('#mfa-status').textContent()) ?? '', /^Off/);
    } finally {
      await context.close();
    }
  });

  it('sends a visitor without a session to sign in, and refuses a forged account cookie', async () => {
    const res = await fetch(`${server.issuer}/account`, { redirect: 'manual', headers: { cookie: 'custos_account=eyJzdWIiOiJ4In0; custos_account.sig=forged' } });
    assert.equal(res.status, 302);
    assert.match(res.headers.get('location') ?? '', /\/auth\?client_id=custos-account/);
  });
});
