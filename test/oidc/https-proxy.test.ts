import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { oidc, REDIRECT_URI } from '../helpers/oidc-client.ts';
import { UserAgent, authorize } from '../helpers/browserless.ts';

/**
 * Custos behind a TLS-terminating reverse proxy it trusts (TRUST_PROXY=true, https ISSUER):
 * Secure cookies, HSTS, and SMART's authorize-post (authorization requests as form posts).
 */
describe('behind a trusted https proxy', () => {
  let server: TestServer;
  let client: { clientId: string; clientSecret?: string };
  let alice: { id: string; username: string; password: string };
  let http: string;

  before(async () => {
    server = await startTestServer({ behindHttpsProxy: true, env: { FHIR_BASE_URLS: 'https://fhir.example.org/r4' } });
    http = server.issuer.replace(/^https:/, 'http:');
    alice = await server.createAccount({ username: 'alice', role: 'patient', fhirId: 'pat-1' });
    client = await server.createClient({
      client_name: 'Posting App',
      redirect_uris: [REDIRECT_URI],
      scope: 'openid launch/patient patient/*.rs',
    });
  });
  after(() => server.close());

  it('sends HSTS and advertises authorize-post', async () => {
    const res = await fetch(`${http}/.well-known/smart-configuration`, { headers: { 'x-forwarded-proto': 'https' } });
    assert.match(res.headers.get('strict-transport-security') ?? '', /max-age=\d+/);
    const doc = (await res.json()) as { capabilities: string[]; authorization_endpoint: string };
    assert.ok(doc.capabilities.includes('authorize-post'));
    assert.ok(doc.authorization_endpoint.startsWith('https://'));
  });

  it('completes an authorization requested with POST (authorize-post), with Secure SameSite=None session cookies', async () => {
    const agent = new UserAgent({ behindHttpsProxy: true });
    const verifier = oidc.randomPKCECodeVerifier();
    const start = await agent.request(`${http}/auth`, {
      form: {
        client_id: client.clientId,
        response_type: 'code',
        redirect_uri: REDIRECT_URI,
        scope: 'openid launch/patient patient/Observation.rs',
        aud: 'https://fhir.example.org/r4',
        state: 'posted',
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
      },
    });
    assert.equal(start.status, 303);
    const res = await authorize(agent, start.location!, server.issuer, alice);
    assert.ok(res.location?.startsWith(REDIRECT_URI), `${res.status} ${res.body.slice(0, 200)}`);
    const callback = new URL(res.location!);
    assert.equal(callback.searchParams.get('state'), 'posted');

    const session = (await agent.jar.getCookies(server.issuer)).find((c) => c.key === 'custos_session');
    assert.ok(session, 'a session cookie was set');
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'none');
    assert.equal(session.httpOnly, true);

    const token = await fetch(`${http}/token`, {
      method: 'POST',
      headers: {
        'x-forwarded-proto': 'https',
        authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: callback.searchParams.get('code')!, redirect_uri: REDIRECT_URI, code_verifier: verifier }),
    });
    assert.equal(token.status, 200);
    const body = (await token.json()) as { patient: string; scope: string };
    assert.equal(body.patient, 'pat-1');
  });
});
