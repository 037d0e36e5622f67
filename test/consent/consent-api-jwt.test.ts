import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize } from '../helpers/browserless.ts';
import { CONSENT_DETAILS_TYPE, type ConsentDetailsEntry } from '../../src/consent/index.ts';
import { adminApi, adminToken, createAdminTool } from '../helpers/admin.ts';

const FHIR = 'https://fhir.example.org/r4';
const OBS = 'patient/Observation.rs';

async function setUp(env: Record<string, string> = {}) {
  const server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR, ...env } });
  const app = await server.createClient({
    client_name: 'Sleep Tracker',
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    scope: 'openid launch/patient offline_access patient/*.rs',
  });
  const config = await discover(server.issuer, app.clientId, app.clientSecret);
  const rs = await server.createClient({ client_name: 'FHIR server', grant_types: ['client_credentials'], scope: 'custos:introspect' });
  const rsConfig = await discover(server.issuer, rs.clientId, rs.clientSecret);
  let n = 0;
  async function patientTokens(limits: (f: [string, string][]) => [string, string][] = (f) => f) {
    n += 1;
    const who = await server.createAccount({ username: `p${n}`, role: 'patient', fhirId: `pj-${n}` });
    const start = await startCodeFlow(config, { scope: `openid launch/patient offline_access ${OBS} patient/Condition.rs`, aud: FHIR });
    const res = await authorize(new UserAgent(), start.url.toString(), server.issuer, who, { consentForm: limits });
    const tokens = await oidc.authorizationCodeGrant(config, new URL(res.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    return { who, tokens };
  }
  return { server, config, rsConfig, patientTokens, appId: app.clientId };
}

describe('consents for resource servers as FHIR R4 Consent', () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  let server: TestServer;
  before(async () => {
    env = await setUp();
    server = env.server;
  });
  after(() => server.close());

  const get = (path: string, token?: string) =>
    fetch(`${server.issuer}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });

  it('serves the current consent and each version to a client holding custos:introspect', async () => {
    const { who, tokens } = await env.patientTokens();
    const info = await oidc.tokenIntrospection(env.rsConfig, tokens.access_token);
    const consentId = info.consent_id as string;
    const rsToken = (await oidc.clientCredentialsGrant(env.rsConfig, { scope: 'custos:introspect' })).access_token;
    const first = await get(`/fhir/Consent/${consentId}`, rsToken);
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type') ?? '', /application\/fhir\+json/);
    const v1 = (await first.json()) as { resourceType: string; id: string; meta: { versionId: string }; patient: { reference: string } };
    assert.deepEqual([v1.resourceType, v1.id, v1.meta.versionId, v1.patient.reference], ['Consent', consentId, '1', 'Patient/pj-1']);

    await server.running.services.consents.change(
      consentId,
      { scopes: [OBS] },
      { accountId: who.id, acr: null, strongRecentLogin: false },
    );
    const current = (await (await get(`/fhir/Consent/${consentId}`, rsToken)).json()) as { meta: { versionId: string }; provision: { class: { code: string }[] } };
    assert.equal(current.meta.versionId, '2');
    assert.deepEqual(current.provision.class.map((c) => c.code), ['Observation']);
    const old = (await (await get(`/fhir/Consent/${consentId}/_history/1`, rsToken)).json()) as { meta: { versionId: string }; provision: { class: { code: string }[] } };
    assert.equal(old.meta.versionId, '1');
    assert.deepEqual(old.provision.class.map((c) => c.code).sort(), ['Condition', 'Observation']);

    const missing = await get(`/fhir/Consent/${consentId}/_history/9`, rsToken);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { resourceType: string }).resourceType, 'OperationOutcome');
    assert.equal((await get('/fhir/Consent/00000000-0000-0000-0000-000000000000', rsToken)).status, 404);
    assert.equal((await get('/fhir/Consent/not-a-uuid', rsToken)).status, 404);
    assert.equal((await get(`/fhir/Consent/${consentId}/_history/x`, rsToken)).status, 404);
  });

  it('counts the patients who consented in the admin inventory', async () => {
    const counted = async () => {
      const tool = await createAdminTool(server);
      const { token } = await adminToken(server, tool);
      const res = await adminApi(server, token)('GET', `/clients/${env.appId}`);
      assert.equal(res.status, 200, res.text);
      return res.json.consented_patients;
    };
    const before = (await counted()) as number;
    const one = await env.patientTokens();
    await env.patientTokens();
    assert.equal(await counted(), before + 2);
    const id = (await oidc.tokenIntrospection(env.rsConfig, one.tokens.access_token)).consent_id as string;
    await server.running.services.consents.revoke(id, { accountId: one.who.id, acr: null, strongRecentLogin: false });
    assert.equal(await counted(), before + 1, 'a revoked consent no longer counts');
  });

  it('introspects for a resource server that authenticates with a Bearer token of its own (SMART token-introspection)', async () => {
    const { who, tokens } = await env.patientTokens();
    const rsToken = (await oidc.clientCredentialsGrant(env.rsConfig, { scope: 'custos:introspect' })).access_token;
    const introspect = (bearer: string, token: string) =>
      fetch(`${server.issuer}/token/introspection`, {
        method: 'POST',
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }).toString(),
      });
    const res = await introspect(rsToken, tokens.access_token);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const info = (await res.json()) as Record<string, unknown>;
    const viaBasic = await oidc.tokenIntrospection(env.rsConfig, tokens.access_token);
    for (const key of ['active', 'scope', 'client_id', 'sub', 'aud', 'exp', 'patient', 'consent_id', 'consent_version', 'authorization_details']) {
      assert.deepEqual(info[key], viaBasic[key], key);
    }
    assert.equal(info.active, true);
    assert.equal(((await (await introspect(rsToken, 'not-a-token')).json()) as { active: boolean }).active, false);

    await server.running.services.consents.revoke(info.consent_id as string, { accountId: who.id, acr: null, strongRecentLogin: false });
    assert.deepEqual(await (await introspect(rsToken, tokens.access_token)).json(), { active: false });

    assert.equal((await introspect('forged', tokens.access_token)).status, 401);
    assert.equal((await introspect(tokens.access_token, tokens.access_token)).status, 401, "an app's patient token is no introspection credential");
    const other = await server.createClient({ client_name: 'Backend', grant_types: ['client_credentials'], scope: 'system/Observation.rs' });
    const otherConfig = await discover(server.issuer, other.clientId, other.clientSecret);
    const weak = (await oidc.clientCredentialsGrant(otherConfig, { scope: 'system/Observation.rs' })).access_token;
    assert.ok([401, 403].includes((await introspect(weak, rsToken)).status));
    const noBody = await fetch(`${server.issuer}/token/introspection`, { method: 'POST', headers: { authorization: `Bearer ${rsToken}` } });
    assert.equal(noBody.status, 400);
  });

  it('refuses callers without the right token', async () => {
    const { tokens } = await env.patientTokens();
    const consentId = (await oidc.tokenIntrospection(env.rsConfig, tokens.access_token)).consent_id as string;
    const none = await get(`/fhir/Consent/${consentId}`);
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate') ?? '', /Bearer realm="custos"/);
    assert.equal((await get(`/fhir/Consent/${consentId}`, tokens.access_token)).status, 401, "the app's own patient token does not open it");
    assert.equal((await get(`/fhir/Consent/${consentId}`, 'forged.token.value')).status, 401);
    const other = await server.createClient({ client_name: 'No scope', grant_types: ['client_credentials'], scope: 'system/Observation.rs' });
    const otherConfig = await discover(server.issuer, other.clientId, other.clientSecret);
    const weak = (await oidc.clientCredentialsGrant(otherConfig, { scope: 'system/Observation.rs' })).access_token;
    const res = await get(`/fhir/Consent/${consentId}`, weak);
    assert.ok([401, 403].includes(res.status), String(res.status));
  });
});

describe('JWT access tokens (ACCESS_TOKEN_FORMAT=jwt) carry the consent', () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp({ ACCESS_TOKEN_FORMAT: 'jwt' });
  });
  after(() => env.server.close());

  it('puts authorization_details, consent id and version in the signed token; the consent resource shows a revocation at once', async () => {
    const { who, tokens } = await env.patientTokens((f) => [...f, ['from', '2021-01-01']].filter(([k, v]) => !(k === 'from' && v === '')) as [string, string][]);
    assert.equal(tokens.access_token.split('.').length, 3, 'a JWT');
    const jwks = createRemoteJWKSet(new URL(`${env.server.issuer}/jwks`));
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, { issuer: env.server.issuer, audience: FHIR, typ: 'at+jwt' });
    assert.equal(protectedHeader.alg, 'RS256');
    const entry = (payload.authorization_details as ConsentDetailsEntry[]).find((d) => d.type === CONSENT_DETAILS_TYPE);
    assert.ok(entry);
    assert.equal(entry.patient, 'Patient/pj-1');
    assert.deepEqual(entry.period, { start: '2021-01-01' });
    assert.equal(entry.hidden_security_labels.length, 9);
    assert.equal(payload.consent_id, entry.consent_id);
    assert.equal(payload.consent_version, 1);
    assert.deepEqual(String(payload.scope).split(' ').sort(), [OBS, 'patient/Condition.rs'].sort());
    assert.equal(payload.patient, 'pj-1');

    // A JWT is self-contained: oidc-provider does not introspect it. A resource server learns of a
    // revocation before `exp` from the consent itself (status inactive), and refreshes stop at once.
    await env.server.running.services.consents.revoke(entry.consent_id, { accountId: who.id, acr: null, strongRecentLogin: false });
    const rsToken = (await oidc.clientCredentialsGrant(env.rsConfig, { scope: 'custos:introspect' })).access_token;
    const consent = (await (
      await fetch(`${env.server.issuer}/fhir/Consent/${entry.consent_id}`, { headers: { authorization: `Bearer ${rsToken}` } })
    ).json()) as { status: string; meta: { versionId: string } };
    assert.deepEqual([consent.status, consent.meta.versionId], ['inactive', '2']);
    await assert.rejects(oidc.refreshTokenGrant(env.config, tokens.refresh_token!), (e: oidc.ResponseBodyError) => e.error === 'invalid_grant');
  });
});
