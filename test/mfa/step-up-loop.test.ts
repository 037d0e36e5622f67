import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generate } from 'otplib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, type PageResponse } from '../helpers/browserless.ts';
import { ACR_MFA } from '../../src/mfa/index.ts';
import { stepUpChallenge } from '../../src/resource-server/index.ts';

const FHIR = 'https://fhir.example.org/r4';

/**
 * The whole RFC 9470 loop: a resource server that wants multi-factor (and a login at most five
 * minutes old) for reading lab results challenges a password-level token; the app re-authorizes
 * with the challenge's acr_values and max_age; the user steps up; the new token is accepted.
 */
describe('RFC 9470 step-up loop', () => {
  let server: TestServer;
  let rs: Server;
  let rsUrl: string;
  let config: oidc.Configuration;
  let pat: { id: string; username: string; password: string };
  let secret = '';

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    pat = await server.createAccount({ username: 'pat', role: 'patient', fhirId: 'pat-1' });
    const app = await server.createClient({ client_name: 'Lab viewer', redirect_uris: [REDIRECT_URI], scope: 'openid patient/*.rs' });
    config = await discover(server.issuer, app.clientId, app.clientSecret);
    const resourceServer = await server.createClient({ client_name: 'Lab FHIR', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const rsConfig = await discover(server.issuer, resourceServer.clientId, resourceServer.clientSecret);

    rs = createServer((req, res) => {
      void (async () => {
        const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
        const info = token ? await oidc.tokenIntrospection(rsConfig, token) : { active: false };
        if (!info.active) {
          res.writeHead(401, { 'WWW-Authenticate': 'Bearer error="invalid_token"' }).end();
          return;
        }
        const challenge = stepUpChallenge(info as { acr?: string; auth_time?: number }, { acrValues: [ACR_MFA], maxAge: 300 });
        if (challenge) {
          res.writeHead(challenge.status, { ...challenge.headers, 'content-type': 'application/json' }).end(JSON.stringify(challenge.body));
          return;
        }
        res.writeHead(200, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"Bundle","type":"searchset","total":0}');
      })().catch(() => res.writeHead(500).end());
    });
    await new Promise<void>((resolve) => rs.listen(0, '127.0.0.1', () => resolve()));
    rsUrl = `http://127.0.0.1:${(rs.address() as AddressInfo).port}/Observation?category=laboratory`;
  });
  after(async () => {
    rs?.closeAllConnections();
    await new Promise<void>((resolve) => (rs ? rs.close(() => resolve()) : resolve()));
    await server?.close();
  });

  const actionOf = (page: PageResponse, name: string) => new URL(new RegExp(`action="([^"]*/${name})"`).exec(page.body)![1]!, server.issuer).toString();

  async function toCode(agent: UserAgent, res: PageResponse, flow: Awaited<ReturnType<typeof startCodeFlow>>) {
    let page = await agent.follow(res.location!, server.issuer);
    if (page.body.includes('/confirm"')) {
      page = await agent.request(actionOf(page, 'confirm'), { form: { _csrf: csrfTokenOf(page.body) } });
      page = await agent.follow(page.location!, server.issuer);
    }
    return oidc.authorizationCodeGrant(config, new URL(page.location!), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
  }

  it('challenges, re-authorizes with the challenge, steps up, and then serves', async () => {
    const agent = new UserAgent();
    // 1. A password-level token.
    const first = await startCodeFlow(config, { scope: 'openid patient/Observation.rs', aud: FHIR });
    const login = await agent.follow(first.url.toString(), server.issuer);
    const afterPassword = await agent.request(actionOf(login, 'login'), { form: { _csrf: csrfTokenOf(login.body), username: pat.username, password: pat.password } });
    const weak = await toCode(agent, afterPassword, first);

    // 2. The resource server challenges it.
    const refused = await fetch(rsUrl, { headers: { authorization: `Bearer ${weak.access_token}` } });
    assert.equal(refused.status, 401);
    const header = refused.headers.get('www-authenticate') ?? '';
    assert.match(header, /error="insufficient_user_authentication"/);
    const acrValues = /acr_values="([^"]+)"/.exec(header)![1]!;
    const maxAge = /max_age=(\d+)/.exec(header)![1]!;
    assert.equal(acrValues, ACR_MFA);

    // 3. The app re-authorizes with what the challenge asked for; the user steps up (here: enrols).
    const second = await startCodeFlow(config, { scope: 'openid patient/Observation.rs', aud: FHIR, acr_values: acrValues, max_age: maxAge });
    const relogin = await agent.follow(second.url.toString(), server.issuer);
    assert.match(relogin.body, /Sign in/, 'the password session is not enough');
    const enrol = await agent.request(actionOf(relogin, 'login'), { form: { _csrf: csrfTokenOf(relogin.body), username: pat.username, password: pat.password } });
    secret = /id="totp-key">([^<]+)</.exec(enrol.body)![1]!.replace(/\s/g, '');
    const enrolled = await agent.request(actionOf(enrol, 'enrol'), { form: { _csrf: csrfTokenOf(enrol.body), code: await generate({ secret }) } });
    const done = await agent.request(actionOf(enrolled, 'enrolled'), { form: { _csrf: csrfTokenOf(enrolled.body) } });
    const strong = await toCode(agent, done, second);
    assert.equal(strong.claims()?.acr, ACR_MFA);

    // 4. The new token satisfies the resource server.
    const served = await fetch(rsUrl, { headers: { authorization: `Bearer ${strong.access_token}` } });
    assert.equal(served.status, 200);
  });

  it('forces a fresh login for max_age=0 even with a strong session', async () => {
    const agent = new UserAgent();
    const flow = await startCodeFlow(config, { scope: 'openid', max_age: '0' });
    const login = await agent.follow(flow.url.toString(), server.issuer);
    const otp = await agent.request(actionOf(login, 'login'), { form: { _csrf: csrfTokenOf(login.body), username: pat.username, password: pat.password } });
    const done = await agent.request(actionOf(otp, 'otp'), { form: { _csrf: csrfTokenOf(otp.body), code: await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 }) } });
    const first = await toCode(agent, done, flow);
    const again = await startCodeFlow(config, { scope: 'openid', max_age: '0' });
    const page = await agent.follow(again.url.toString(), server.issuer);
    assert.match(page.body, /Sign in/, 'max_age=0 always asks again');
    assert.ok(first.claims()?.auth_time);
  });
});
