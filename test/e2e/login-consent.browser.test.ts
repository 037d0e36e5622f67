/**
 * The login and consent pages in a real browser (Debian's Chromium, headless, driven by
 * playwright-core): the authorization code flow with PKCE from the authorization request to the
 * tokens, a refused consent, and the login page on a phone-sized screen under the strict CSP.
 */
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, BrowserContextOptions, Page } from 'playwright-core';
import { ARTIFACTS, launchChromium } from '../helpers/browser.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, startCodeFlow, REDIRECT_URI } from '../helpers/oidc-client.ts';

const CLIENT_NAME = 'Browser Test App';
const WRONG_CREDENTIALS = 'The username or password is incorrect.';

describe('login and consent pages in Chromium', () => {
  let server: TestServer | undefined;
  let browser: Browser | undefined;
  let config: oidc.Configuration;
  let alice: { username: string; password: string };
  const contexts: BrowserContext[] = [];

  before(async () => {
    server = await startTestServer();
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1', displayName: 'Alice Doe' });
    const client = await server.createClient({
      client_name: CLIENT_NAME,
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      scope: 'openid profile email',
    });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
    // CI installs Chromium; a missing browser fails the run, never skips it.
    browser = await launchChromium();
  });

  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((c) => c.close()));
  });

  after(async () => {
    try {
      await browser?.close();
    } finally {
      await server?.close();
    }
  });

  /**
   * A fresh browser profile (no session, no cookies). Nothing listens on the redirect URI, so the
   * browser's final request to the client is answered here and its URL read from the page.
   */
  async function newPage(options: BrowserContextOptions = {}): Promise<Page> {
    assert.ok(browser, 'browser launched');
    const context = await browser.newContext(options);
    contexts.push(context);
    await context.route(
      (url) => url.href.startsWith(REDIRECT_URI),
      (route) => route.fulfill({ status: 200, contentType: 'text/plain', body: 'client callback' }),
    );
    return context.newPage();
  }

  /**
   * Clicks a form's submit button and checks the status the server answered the POST with (303 to
   * carry on, 401 for refused credentials); any other status fails with the page that was shown.
   */
  async function submit(page: Page, button: string, expectedStatus: number) {
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(server!.issuer)),
      page.getByRole('button', { name: button, exact: true }).click(),
    ]);
    if (response.status() === expectedStatus) return;
    await page.waitForURL(response.url());
    const shown = (await page.locator('main').innerText()).replace(/\s+/g, ' ');
    assert.fail(`"${button}" answered ${response.status()} instead of ${expectedStatus}; the page says: ${shown}`);
  }

  async function signIn(page: Page, username: string, password: string, expectedStatus = 303) {
    await page.getByLabel('Username', { exact: true }).fill(username);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await submit(page, 'Sign in', expectedStatus);
  }

  /** Waits for the browser to land on the client's redirect URI and returns that URL. */
  async function clientCallback(page: Page): Promise<URL> {
    await page.waitForURL((url) => url.href.startsWith(REDIRECT_URI));
    return new URL(page.url());
  }

  it('signs in after a wrong password, shows consent, and returns a code that yields tokens', async () => {
    const page = await newPage();
    const { url, verifier, state } = await startCodeFlow(config, { scope: 'openid profile email' });
    await page.goto(url.href);

    await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
    assert.equal(await page.title(), 'Sign in · Custos');
    assert.equal(await page.locator('p.lead strong').textContent(), CLIENT_NAME);
    // Each label is tied to its input, so assistive technology announces the field by name.
    assert.equal(await page.getByLabel('Username', { exact: true }).getAttribute('id'), 'username');
    assert.equal(await page.getByLabel('Password', { exact: true }).getAttribute('type'), 'password');
    assert.equal(await page.getByRole('alert').count(), 0, 'no error before the first attempt');
    await page.screenshot({ path: `${ARTIFACTS}login.png`, fullPage: true });

    await signIn(page, alice.username, 'not the right password', 401);
    assert.equal((await page.getByRole('alert').textContent())?.trim(), WRONG_CREDENTIALS);
    await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
    assert.equal(await page.getByLabel('Username', { exact: true }).inputValue(), alice.username, 'the username is kept');
    assert.equal(await page.getByLabel('Password', { exact: true }).inputValue(), '', 'the password is not echoed back');
    assert.equal(await page.getByLabel('Username', { exact: true }).getAttribute('aria-describedby'), 'login-error');

    await signIn(page, alice.username, alice.password);
    await page.getByRole('heading', { level: 1, name: 'Allow access?' }).waitFor();
    assert.equal(await page.locator('p.lead strong').textContent(), CLIENT_NAME);
    const requested = await page.getByRole('listitem').locator('code').allTextContents();
    assert.deepEqual([...requested].sort(), ['email', 'openid', 'profile']);
    const descriptions = await page.getByRole('listitem').allTextContents();
    assert.ok(descriptions.some((d) => d.includes('See your email address')), descriptions.join(' | '));
    await page.screenshot({ path: `${ARTIFACTS}consent.png`, fullPage: true });

    await submit(page, 'Allow', 303);
    const callback = await clientCallback(page);
    assert.ok(callback.searchParams.get('code'), 'an authorization code');
    assert.equal(callback.searchParams.get('state'), state);
    assert.equal(callback.searchParams.get('iss'), server!.issuer);
    assert.equal(callback.searchParams.get('error'), null);

    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state });
    assert.ok(tokens.access_token, 'an access token');
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.deepEqual(tokens.scope?.split(' ').sort(), ['email', 'openid', 'profile']);
  });

  it('returns access_denied to the client when the user clicks Deny', async () => {
    const page = await newPage();
    const { url, state } = await startCodeFlow(config, { scope: 'openid profile' });
    await page.goto(url.href);
    await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
    await signIn(page, alice.username, alice.password);
    await page.getByRole('heading', { level: 1, name: 'Allow access?' }).waitFor();

    await submit(page, 'Deny', 303);
    const callback = await clientCallback(page);
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    assert.equal(callback.searchParams.get('state'), state);
    assert.equal(callback.searchParams.get('iss'), server!.issuer);
    assert.equal(callback.searchParams.get('code'), null);
  });

  it('fits a phone screen without horizontal scrolling and runs no inline script', async () => {
    const page = await newPage({ viewport: { width: 375, height: 667 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    // Only CSP reports and script errors: the browser's own /favicon.ico 404 may land at any time.
    const problems: string[] = [];
    page.on('console', (msg) => {
      if (msg.text().includes('Content Security Policy')) problems.push(msg.text());
    });
    page.on('pageerror', (err) => problems.push(err.message));

    const { url } = await startCodeFlow(config);
    const response = await page.goto(url.href);
    assert.ok(response, 'a response for the login page');
    await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
    await page.screenshot({ path: `${ARTIFACTS}login-phone.png`, fullPage: true });

    // A string expression: this project compiles without the DOM library.
    const scrollWidth = await page.evaluate<number>('document.documentElement.scrollWidth');
    assert.ok(scrollWidth <= 375, `page is ${scrollWidth}px wide on a 375px screen`);

    const csp = response.headers()['content-security-policy'] ?? '';
    assert.match(csp, /(^|;)\s*script-src 'self'\s*(;|$)/, csp);
    assert.match(csp, /(^|;)\s*frame-ancestors 'none'\s*(;|$)/, csp);
    assert.ok(!csp.includes("'unsafe-inline'"), csp);
    assert.equal(await page.locator('script:not([src])').count(), 0, 'no inline <script>');
    assert.deepEqual(problems, [], 'no CSP violations or script errors');
  });
});
