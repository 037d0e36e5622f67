/**
 * SMART's own JavaScript client library (fhirclient), unchanged, launching against Custos in
 * Chromium: discovery from the FHIR base URL, the standalone launch with PKCE through our login
 * and consent pages, the token exchange from the browser (CORS for a public client), and a FHIR
 * read that a small FHIR server accepts only after introspecting the token at Custos.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Browser } from 'playwright-core';
import { startTestServer, freePort, type TestServer } from '../helpers/server.ts';
import { discover, oidc } from '../helpers/oidc-client.ts';
import { ARTIFACTS, launchChromium } from '../helpers/browser.ts';

const require = createRequire(import.meta.url);
const FHIR_CLIENT_JS = readFileSync(require.resolve('fhirclient/build/fhir-client.js'));

function page(title: string, script: string): string {
  return `<!doctype html><html><head><title>${title}</title><script src="/fhir-client.js"></script></head>
<body><p id="status">loading</p><script>${script}</script></body></html>`;
}

describe('SMART standalone launch with the official fhirclient library', () => {
  let custos: TestServer;
  let app: Server;
  let browser: Browser;
  let appOrigin: string;
  let fhirBase: string;
  let introspection: oidc.Configuration;
  const fhirRequests: Array<{ path: string; patient?: unknown; active?: unknown }> = [];

  before(async () => {
    const appPort = await freePort();
    appOrigin = `http://127.0.0.1:${appPort}`;
    fhirBase = `${appOrigin}/fhir`;
    custos = await startTestServer({ env: { FHIR_BASE_URLS: fhirBase } });
    await custos.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1', displayName: 'Alice Doe' });
    const publicApp = await custos.createClient({
      client_name: 'fhirclient demo',
      redirect_uris: [`${appOrigin}/app/index.html`],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      scope: 'openid fhirUser launch/patient patient/*.rs',
    });
    const rs = await custos.createClient({ client_name: 'Test FHIR server', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    introspection = await discover(custos.issuer, rs.clientId, rs.clientSecret);

    const launchScript = `FHIR.oauth2.authorize({ clientId: ${JSON.stringify(publicApp.clientId)},
      scope: 'openid fhirUser launch/patient patient/Patient.rs', redirectUri: '/app/index.html',
      iss: ${JSON.stringify(fhirBase)}, pkceMode: 'required' });`;
    const readyScript = `FHIR.oauth2.ready()
      .then(function (client) { return client.patient.read().then(function (p) {
        document.getElementById('status').textContent = 'ready';
        document.body.dataset.patient = client.patient.id;
        document.body.dataset.name = p.name[0].text;
        document.body.dataset.scope = client.state.tokenResponse.scope;
      }); })
      .catch(function (e) { document.getElementById('status').textContent = 'error: ' + e.message; });`;

    // The app's pages, and a minimal FHIR server that trusts only tokens Custos says are active.
    app = createServer((req, res) => {
      void (async () => {
        const url = new URL(req.url ?? '/', appOrigin);
        if (url.pathname === '/fhir-client.js') {
          res.writeHead(200, { 'content-type': 'text/javascript' }).end(FHIR_CLIENT_JS);
        } else if (url.pathname === '/app/launch.html') {
          res.writeHead(200, { 'content-type': 'text/html' }).end(page('launch', launchScript));
        } else if (url.pathname === '/app/index.html') {
          res.writeHead(200, { 'content-type': 'text/html' }).end(page('app', readyScript));
        } else if (url.pathname === '/fhir/.well-known/smart-configuration') {
          const doc = await fetch(new URL('/.well-known/smart-configuration', custos.issuer));
          res.writeHead(200, { 'content-type': 'application/json' }).end(await doc.text());
        } else if (url.pathname.startsWith('/fhir/Patient/')) {
          const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
          const info = token ? await oidc.tokenIntrospection(introspection, token) : { active: false };
          const id = url.pathname.split('/').pop();
          fhirRequests.push({ path: url.pathname, patient: info.patient, active: info.active });
          if (!info.active || info.patient !== id || info.aud !== fhirBase) {
            res.writeHead(401, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"OperationOutcome"}');
            return;
          }
          res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(JSON.stringify({ resourceType: 'Patient', id, name: [{ text: 'Alice Doe' }] }));
        } else {
          res.writeHead(404).end();
        }
      })().catch(() => res.writeHead(500).end());
    });
    await new Promise<void>((resolve) => app.listen(appPort, '127.0.0.1', () => resolve()));
    browser = await launchChromium();
  });

  after(async () => {
    try {
      await browser?.close();
    } finally {
      app?.closeAllConnections();
      await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
      await custos?.close();
    }
  });

  it('launches, logs in, consents, gets the patient context and reads the Patient', async () => {
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      await tab.goto(`${appOrigin}/app/launch.html`);
      await tab.getByLabel('Username').fill('alice');
      await tab.getByLabel('Password').fill('correct horse battery staple');
      await tab.getByRole('button', { name: 'Sign in' }).click();
      await tab.getByRole('button', { name: 'Allow' }).click();
      await tab.waitForURL(`${appOrigin}/app/index.html*`);
      await tab.locator('#status').filter({ hasText: /ready|error/ }).waitFor();
      await tab.screenshot({ path: `${ARTIFACTS}fhirclient-app.png` });
      assert.equal(await tab.locator('#status').textContent(), 'ready');
      const data = await tab.locator('body').evaluate((body: { dataset: Record<string, string | undefined> }) => ({ ...body.dataset }));
      assert.equal(data.patient, 'pat-1');
      assert.equal(data.name, 'Alice Doe');
      assert.ok(data.scope?.split(' ').includes('patient/Patient.rs'));
      assert.ok(data.scope?.split(' ').includes('launch/patient'));
      assert.deepEqual(fhirRequests.at(-1), { path: '/fhir/Patient/pat-1', patient: 'pat-1', active: true });
    } finally {
      await context.close();
    }
  });
});
