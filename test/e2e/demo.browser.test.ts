/**
 * The development demo in a browser: `custos demo` seeds accounts and clients, then a standalone
 * launch and an EHR launch run through the real pages and show the launch context.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ARTIFACTS, launchChromium } from '../helpers/browser.ts';
import { seedDemo, type DemoSeed } from '../../src/demo/index.ts';

describe('the development demo', () => {
  let server: TestServer;
  let browser: Browser;
  let seed: DemoSeed;

  const passwordOf = (username: string) => seed.created.find((c) => c.name === username)!.secret!;

  async function signInAndAllow(page: Page, username: string) {
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(passwordOf(username));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.locator('#token-response').waitFor();
  }

  async function tokenResponse(page: Page): Promise<Record<string, unknown>> {
    return JSON.parse((await page.locator('#token-response').textContent()) ?? '{}') as Record<string, unknown>;
  }

  before(async () => {
    server = await startTestServer({ env: (issuer) => ({ FHIR_BASE_URLS: `${issuer}/demo/fhir` }) });
    const { accounts, clients } = server.running.services;
    seed = await seedDemo(accounts, clients, server.issuer);
    browser = await launchChromium();
  });
  after(async () => {
    try {
      await browser?.close();
    } finally {
      await server?.close();
    }
  });

  it('runs a standalone patient launch and shows the patient context', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${server.issuer}/demo`);
      await page.getByRole('link', { name: 'Standalone launch' }).click();
      await signInAndAllow(page, 'demo-patient');
      const body = await tokenResponse(page);
      assert.equal(body.patient, 'demo-patient');
      assert.match(String(body.access_token), /characters\)$/, 'the token is not shown in full');
      assert.match(String(body.scope), /launch\/patient/);
      await page.screenshot({ path: `${ARTIFACTS}demo-standalone.png`, fullPage: true });
    } finally {
      await context.close();
    }
  });

  it('runs an EHR launch for the patient the EHR chose', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${server.issuer}/demo/ehr`);
      await page.getByLabel(/Sam Example/).check();
      await page.getByRole('button', { name: 'Launch the app' }).click();
      await signInAndAllow(page, 'demo-doctor');
      const body = await tokenResponse(page);
      assert.equal(body.patient, 'demo-patient-2');
      assert.equal(body.encounter, 'demo-encounter');
      assert.equal(body.need_patient_banner, false);
      assert.match(await page.locator('#id-token').textContent() ?? '', /Practitioner\/demo-practitioner/);
      await page.screenshot({ path: `${ARTIFACTS}demo-ehr.png`, fullPage: true });
    } finally {
      await context.close();
    }
  });

  it('is idempotent: seeding again creates nothing new', async () => {
    const { accounts, clients } = server.running.services;
    const again = await seedDemo(accounts, clients, server.issuer);
    assert.deepEqual(again.created, []);
    assert.equal(again.skipped.length, 5);
  });
});
