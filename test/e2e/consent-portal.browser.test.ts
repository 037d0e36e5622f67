/**
 * Consent in a real browser (Debian's Chromium, headless): approving with some scopes unticked
 * and a granular sub-scope chosen instead of a broad one, on a phone-sized screen; then revoking
 * the app from the patient portal, which makes its tokens inactive at once. Screenshots go to
 * test-artifacts/.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { ARTIFACTS, launchChromium } from '../helpers/browser.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, startCodeFlow, REDIRECT_URI } from '../helpers/oidc-client.ts';

const FHIR = 'https://fhir.example.org/r4';
const LAB = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

describe('consent and the patient portal in Chromium', () => {
  let server: TestServer | undefined;
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let config: oidc.Configuration;
  let rs: oidc.Configuration;
  let maria: { username: string; password: string };

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    maria = await server.createAccount({ username: 'maria', role: 'patient', fhirId: 'pat-m', displayName: 'Maria Lopez' });
    const client = await server.createClient({
      client_name: 'Lab Viewer',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
    const resourceServer = await server.createClient({ client_name: 'FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = await discover(server.issuer, resourceServer.clientId, resourceServer.clientSecret);
    browser = await launchChromium();
  });

  after(async () => {
    try {
      await context?.close();
      await browser?.close();
    } finally {
      await server?.close();
    }
  });

  async function click(page: Page, button: string, expectedStatus = 303) {
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(server!.issuer)),
      page.getByRole('button', { name: button, exact: true }).click(),
    ]);
    if (response.status() !== expectedStatus) {
      await page.waitForLoadState();
      assert.fail(`"${button}" answered ${response.status()}: ${(await page.locator('main').innerText()).replace(/\s+/g, ' ')}`);
    }
  }

  it('approves with some scopes unticked, then revokes from the portal', async () => {
    assert.ok(browser);
    // A phone-sized screen: the page must work there too.
    context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    await context.route(
      (url) => url.href.startsWith(REDIRECT_URI),
      (route) => route.fulfill({ status: 200, contentType: 'text/plain', body: 'client callback' }),
    );
    const page = await context.newPage();
    const { url, verifier, state } = await startCodeFlow(config, {
      scope: 'openid fhirUser launch/patient offline_access patient/Observation.rs patient/Condition.rs patient/MedicationRequest.rs',
      aud: FHIR,
    });
    await page.goto(url.href);
    await page.getByLabel('Username', { exact: true }).fill(maria.username);
    await page.getByLabel('Password', { exact: true }).fill(maria.password);
    await click(page, 'Sign in');
    await page.getByRole('heading', { level: 1, name: 'Allow access?' }).waitFor();
    assert.match(await page.locator('.app-identity').innerText(), /Not verified by your care provider/);
    // Every checkbox has a label, so it can be reached and toggled by its name.
    await page.getByLabel('Read and search your medication request records').uncheck();
    await page.getByLabel('Read and search your observation records').uncheck();
    await page.getByLabel('Lab results').check();
    assert.equal(await page.getByLabel('Share: Mental health').isChecked(), false, 'sensitive categories start hidden');
    await page.getByLabel('Access ends on').selectOption('30');
    const scrollWidth = Number(await page.evaluate('document.documentElement.scrollWidth'));
    assert.ok(scrollWidth <= 390, `no sideways scrolling on a phone (${scrollWidth}px)`);
    await page.screenshot({ path: `${ARTIFACTS}consent-choices.png`, fullPage: true });
    await click(page, 'Allow');
    await page.waitForURL((u) => u.href.startsWith(REDIRECT_URI));
    const tokens = await oidc.authorizationCodeGrant(config, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state });
    const info = await oidc.tokenIntrospection(rs, tokens.access_token);
    assert.deepEqual(String(info.scope).split(' ').sort(), [LAB, 'patient/Condition.rs'].sort());

    await page.goto(`${server!.issuer}/account/apps`);
    await page.getByRole('heading', { level: 1, name: 'Connected apps' }).waitFor();
    await page.getByRole('link', { name: 'Lab Viewer' }).click();
    await page.getByRole('heading', { level: 1, name: 'Lab Viewer' }).waitFor();
    assert.match(await page.locator('main').innerText(), /access given/);
    await page.screenshot({ path: `${ARTIFACTS}portal-app.png`, fullPage: true });
    await click(page, 'Revoke access now', 302);
    await page.getByRole('heading', { level: 1, name: 'Connected apps' }).waitFor();
    assert.match(await page.getByRole('status').innerText(), /Access was revoked/);
    await page.screenshot({ path: `${ARTIFACTS}portal-revoked.png`, fullPage: true });
    assert.equal((await oidc.tokenIntrospection(rs, tokens.access_token)).active, false);
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token!), (e: oidc.ResponseBodyError) => e.error === 'invalid_grant');
  });
});
