import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, formActionOf, formDefaults } from '../helpers/browserless.ts';
import type { ConsentDetailsEntry } from '../../src/consent/index.ts';

const FHIR = 'https://fhir.example.org/r4';

/**
 * A representative authorizes an app for the child, then (same browser, same app) for something
 * about their own record that needs no patient context. The second authorization must be about
 * the representative alone: not land on the child's grant, carry the child's patient id or
 * consent, or survive the revocation of the consent the representative actually gave.
 */
describe("a representative's own-record authorization after one for the child", () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let rs: oidc.Configuration;
  let clientId: string;
  let parent: { id: string; username: string; password: string };

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    parent = await server.createAccount({ username: 'or-parent', role: 'patient', fhirId: 'op-1' });
    const kid = await server.createAccount({ username: 'or-kid', role: 'patient', fhirId: 'ok-1' });
    await server.running.services.accounts.addRepresentative(parent.id, kid.id, 'parent');
    const app = await server.createClient({
      client_name: 'Family Health',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid profile launch/patient offline_access patient/*.rs',
    });
    clientId = app.clientId;
    config = await discover(server.issuer, app.clientId, app.clientSecret);
    const r = await server.createClient({ client_name: 'FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    rs = await discover(server.issuer, r.clientId, r.clientSecret);
  });
  after(() => server.close());

  /** Walks the pages (sign-in, picker, consent) as they come, recording what each was. */
  async function flow(agent: UserAgent, params: Record<string, string>, patient?: string) {
    const start = await startCodeFlow(config, params);
    let page = await agent.follow(start.url.toString(), server.issuer);
    const seen: string[] = [];
    for (let i = 0; i < 5 && !page.location?.startsWith(REDIRECT_URI); i++) {
      const action = (s: string) => new URL(formActionOf(page.body, s), server.issuer).toString();
      if (page.body.includes('/login"')) {
        seen.push('login');
        page = await agent.request(action('login'), { form: { _csrf: csrfTokenOf(page.body), username: parent.username, password: parent.password } });
      } else if (page.body.includes('/patient"')) {
        seen.push('picker');
        page = await agent.request(action('patient'), { form: { _csrf: csrfTokenOf(page.body), patient: patient! } });
      } else if (page.body.includes('/confirm"')) {
        seen.push(/deciding for/i.test(page.body) ? 'consent for someone else' : 'consent for own record');
        page = await agent.request(action('confirm'), { form: formDefaults(page.body, 'confirm') });
      } else throw new Error(`unexpected page ${page.status} ${page.body.slice(0, 300)}`);
      if (page.location) page = await agent.follow(page.location, server.issuer);
    }
    assert.ok(page.location?.startsWith(REDIRECT_URI), `the flow did not return to the app: ${page.status} ${page.body.slice(0, 200)}`);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(page.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
    return { tokens, seen };
  }

  it('gets a grant of its own, and revoking its consent ends its tokens but not the child’s', async () => {
    const agent = new UserAgent();
    const forKid = await flow(agent, { scope: 'openid launch/patient offline_access patient/Observation.rs', aud: FHIR }, 'ok-1');
    assert.deepEqual(forKid.seen, ['login', 'picker', 'consent for someone else']);
    assert.equal(forKid.tokens.patient, 'ok-1');

    const own = await flow(agent, { scope: 'openid profile offline_access' });
    assert.deepEqual(own.seen, ['consent for own record']);
    assert.equal(own.tokens.patient, undefined, "the child's patient id is not given to an authorization about the parent");
    const introspected = await oidc.tokenIntrospection(rs, own.tokens.access_token);
    assert.equal(introspected.active, true);
    assert.equal(introspected.patient, undefined);
    const kidConsentId = ((await oidc.tokenIntrospection(rs, forKid.tokens.access_token)).authorization_details as unknown as ConsentDetailsEntry[])[0]!.consent_id;
    assert.notEqual((introspected.authorization_details as unknown as ConsentDetailsEntry[] | undefined)?.[0]?.consent_id, kidConsentId);

    const ownConsent = await server.running.services.consents.repo.findFor(parent.id, clientId, parent.id);
    assert.ok(ownConsent, 'the parent’s own consent was recorded');
    await server.running.services.consents.revoke(ownConsent.id, { accountId: parent.id, acr: null, strongRecentLogin: false });

    assert.deepEqual(await oidc.tokenIntrospection(rs, own.tokens.access_token), { active: false });
    await assert.rejects(oidc.refreshTokenGrant(config, own.tokens.refresh_token!), (err: oidc.ResponseBodyError) => err.error === 'invalid_grant');
    // The child's consent is another decision, and stands.
    assert.equal((await oidc.tokenIntrospection(rs, forKid.tokens.access_token)).active, true);
    const refreshed = await oidc.refreshTokenGrant(config, forKid.tokens.refresh_token!);
    assert.equal(refreshed.patient, 'ok-1');
  });
});
