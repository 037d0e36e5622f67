import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts';
import { codeFlow, discover } from '../helpers/oidc-client.ts';
import { startFhirTestServer, type FhirTestServer } from '../helpers/fhir-test-server.ts';
import { createFhirProxy, createTokenValidator } from '../../src/enforcement/index.ts';

/** Custos issuing RFC 9068 JWT access tokens: the proxy checks them against the JWKS alone. */
describe('FHIR proxy with JWT access tokens', () => {
  let server: TestServer;
  let fhir: FhirTestServer;
  let proxyUrl: string;
  let close: () => Promise<void>;

  before(async () => {
    fhir = await startFhirTestServer();
    const port = await freePort();
    proxyUrl = `http://127.0.0.1:${port}`;
    server = await startTestServer({ env: { FHIR_BASE_URLS: proxyUrl, ACCESS_TOKEN_FORMAT: 'jwt' } });
    const proxy = createFhirProxy({ upstream: fhir.url, publicUrl: proxyUrl, tokens: createTokenValidator({ issuer: server.issuer, jwt: {} }) });
    close = (await proxy.listen(port)).close;
  });
  after(async () => {
    await close?.();
    await fhir?.close();
    await server?.close();
  });

  it('verifies the signature, reads the consent from the token and filters as with introspection', async () => {
    const pat = await server.createAccount({ username: 'alex', role: 'patient', fhirId: 'pat-1' });
    const app = await server.createClient({ client_name: 'Viewer', redirect_uris: ['http://127.0.0.1:8765/callback'], scope: 'openid launch/patient patient/*.rs' });
    const config = await discover(server.issuer, app.clientId, app.clientSecret);
    const { tokens } = await codeFlow(config, server.issuer, pat, { scope: 'openid launch/patient patient/Observation.rs', aud: proxyUrl });
    assert.equal(tokens.access_token.split('.').length, 3, 'a JWT');
    const auth = { authorization: `Bearer ${tokens.access_token}` };
    const res = await fetch(`${proxyUrl}/Observation`, { headers: auth });
    assert.equal(res.status, 200);
    const bundle = (await res.json()) as { total: number; entry: { resource: { id: string } }[] };
    assert.deepEqual(bundle.entry.map((e) => e.resource.id).sort(), ['obs-a1c-2021', 'obs-bp-2022', 'obs-glucose-2019', 'obs-weight-undated']);
    assert.equal((await fetch(`${proxyUrl}/Patient/pat-2`, { headers: auth })).status, 403);
    const forged = `${tokens.access_token.slice(0, -4)}AAAA`;
    assert.equal((await fetch(`${proxyUrl}/Observation`, { headers: { authorization: `Bearer ${forged}` } })).status, 401);
  });
});
