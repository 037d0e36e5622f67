import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import * as jose from 'jose';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, type PageResponse } from '../helpers/browserless.ts';
import { ACR_MFA, ACR_PASSWORD } from '../../src/mfa/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const now = () => Math.floor(Date.now() / 1000);

/** A TOTP code for the current step, or `steps` steps away (one step of drift is allowed). */
const totp = (secret: string, steps = 0) => generate({ secret, epoch: now() + steps * 30 });

describe('login with a second factor', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let admin: { id: string; username: string; password: string };
  let patient: { id: string; username: string; password: string };
  let adminSecret = '';
  // The moment the enrolment code was made: replaying it must fail even after the step has moved on.
  let enrolledAt = 0;
  let recoveryCodes: string[] = [];

  const actionOf = (page: PageResponse, name: string) => new URL(new RegExp(`action="([^"]*/${name})"`).exec(page.body)![1]!, server.issuer).toString();

  /** Starts an authorization and posts the password; returns the page that comes next. */
  async function passwordStep(agent: UserAgent, who: { username: string; password: string }, params: Record<string, string> = {}) {
    const flow = await startCodeFlow(config, params);
    const login = await agent.follow(flow.url.toString(), server.issuer);
    assert.match(login.body, /Sign in/);
    const next = await agent.request(actionOf(login, 'login'), { form: { _csrf: csrfTokenOf(login.body), username: who.username, password: who.password } });
    return { flow, next };
  }

  /** Follows the flow from a finished step through consent to the code, and redeems it. */
  async function finish(agent: UserAgent, res: PageResponse, flow: Awaited<ReturnType<typeof startCodeFlow>>) {
    assert.equal(res.status, 303, `expected the step to finish, got ${res.status}: ${res.body.slice(0, 300)}`);
    let page = await agent.follow(res.location!, server.issuer);
    if (page.status === 200 && page.body.includes('/confirm"')) {
      page = await agent.request(actionOf(page, 'confirm'), { form: { _csrf: csrfTokenOf(page.body) } });
      page = await agent.follow(page.location!, server.issuer);
    }
    assert.ok(page.location?.startsWith(REDIRECT_URI), `expected a code, got ${page.status} ${page.body.slice(0, 200)}`);
    return oidc.authorizationCodeGrant(config, new URL(page.location!), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
  }

  before(async () => {
    server = await startTestServer({ env: { FHIR_BASE_URLS: FHIR } });
    admin = await server.createAccount({ username: 'admin', role: 'admin' });
    patient = await server.createAccount({ username: 'pat', role: 'patient', fhirId: 'pat-1' });
    const client = await server.createClient({ client_name: 'MFA App', redirect_uris: [REDIRECT_URI], scope: 'openid patient/*.cruds launch/patient' });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  it('advertises the authentication levels', () => {
    assert.deepEqual(config.serverMetadata().acr_values_supported, [ACR_PASSWORD, ACR_MFA]);
  });

  it('takes an admin without a factor through enrolment before any token, then issues an MFA-level token', async () => {
    const agent = new UserAgent();
    const { flow, next } = await passwordStep(agent, admin);
    assert.equal(next.status, 200);
    assert.match(next.body, /Set up two-step verification/);
    assert.match(next.body, /<svg/, 'a QR code rendered server-side');
    adminSecret = /id="totp-key">([^<]+)</.exec(next.body)![1]!.replace(/\s/g, '');

    const wrong = await agent.request(actionOf(next, 'enrol'), { form: { _csrf: csrfTokenOf(next.body), code: '000000' } });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /That code is not valid/);
    // Skipping enrolment is refused: the password alone gets nothing.
    const skip = await agent.request(actionOf(next, 'enrol').replace(/enrol$/, 'enrolled'), { form: { _csrf: csrfTokenOf(next.body) } });
    assert.equal(skip.status, 400);

    enrolledAt = now();
    const enrolled = await agent.request(actionOf(next, 'enrol'), { form: { _csrf: csrfTokenOf(next.body), code: await generate({ secret: adminSecret, epoch: enrolledAt }) } });
    assert.equal(enrolled.status, 200);
    recoveryCodes = [...enrolled.body.matchAll(/<li><code>([0-9A-Z-]+)<\/code><\/li>/g)].map((m) => m[1]!);
    assert.equal(recoveryCodes.length, 10);
    const done = await agent.request(actionOf(enrolled, 'enrolled'), { form: { _csrf: csrfTokenOf(enrolled.body) } });
    const tokens = await finish(agent, done, flow);
    const claims = tokens.claims()!;
    assert.equal(claims.acr, ACR_MFA);
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    assert.ok(typeof claims.auth_time === 'number');
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.acr, ACR_MFA);
    assert.deepEqual(info.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(info.auth_time, claims.auth_time);
  });

  it('asks for the code on the next login; a wrong or replayed code fails, a fresh one works', async () => {
    const agent = new UserAgent();
    const { flow, next } = await passwordStep(agent, admin);
    assert.match(next.body, /Two-step verification/);
    const bad = await agent.request(actionOf(next, 'otp'), { form: { _csrf: csrfTokenOf(next.body), code: '123456' } });
    assert.equal(bad.status, 401);
    assert.match(bad.body, /That code is not valid/);
    // The code accepted at enrolment is not accepted again.
    const replay = await agent.request(actionOf(next, 'otp'), { form: { _csrf: csrfTokenOf(next.body), code: await generate({ secret: adminSecret, epoch: enrolledAt }) } });
    assert.equal(replay.status, 401);
    // The next step's code is within the allowed drift and newer: accepted once.
    const fresh = await totp(adminSecret, 1);
    const ok = await agent.request(actionOf(next, 'otp'), { form: { _csrf: csrfTokenOf(next.body), code: fresh } });
    const tokens = await finish(agent, ok, flow);
    assert.equal(tokens.claims()!.acr, ACR_MFA);

    const other = new UserAgent();
    const second = await passwordStep(other, admin);
    const again = await other.request(actionOf(second.next, 'otp'), { form: { _csrf: csrfTokenOf(second.next.body), code: fresh } });
    assert.equal(again.status, 401, 'a code is accepted once, across sessions too');
  });

  it('does not carry a passed password step over to another sign-in', async () => {
    const agent = new UserAgent();
    const { next } = await passwordStep(agent, admin);
    assert.match(next.body, /Two-step verification/);
    const first = new URL(actionOf(next, 'otp')).pathname.replace(/\/otp$/, '');
    const marker = (await agent.jar.getCookies(`${server.issuer}${first}`)).filter((c) => c.key.startsWith('custos_mfa'));
    assert.equal(marker.length, 2, 'the marker and its signature');
    // A second authorization in the same browser, with the first one's marker planted on its path.
    const other = await startCodeFlow(config);
    const login = await agent.follow(other.url.toString(), server.issuer);
    const second = new URL(actionOf(login, 'login')).pathname.replace(/\/login$/, '');
    for (const c of marker) await agent.jar.setCookie(`${c.key}=${c.value}; Path=${second}`, server.issuer);
    const page = await agent.request(`${server.issuer}${second}`);
    assert.match(page.body, /Sign in/, 'the password is asked again');
    const otp = await agent.request(`${server.issuer}${second}/otp`, { form: { _csrf: csrfTokenOf(page.body), code: '123456' } });
    assert.equal(otp.status, 400);
  });

  it('accepts each recovery code once', async () => {
    const agent = new UserAgent();
    const { flow, next } = await passwordStep(agent, admin);
    const code = recoveryCodes[0]!.toLowerCase();
    const used = await agent.request(actionOf(next, 'otp'), { form: { _csrf: csrfTokenOf(next.body), recovery_code: code } });
    assert.equal(used.status, 200);
    assert.match(used.body, /You have <strong>9<\/strong> recovery codes left/);
    const ok = await agent.request(actionOf(used, 'recovered'), { form: { _csrf: csrfTokenOf(used.body) } });
    const tokens = await finish(agent, ok, flow);
    assert.deepEqual(tokens.claims()!.amr, ['pwd', 'mfa']);
    const other = new UserAgent();
    const second = await passwordStep(other, admin);
    const reuse = await other.request(actionOf(second.next, 'otp'), { form: { _csrf: csrfTokenOf(second.next.body), recovery_code: recoveryCodes[0]! } });
    assert.equal(reuse.status, 401);
  });

  it('signs a patient in with a password for reading, and demands MFA for acr_values or for write scopes', async () => {
    const read = new UserAgent();
    const first = await passwordStep(read, patient, { scope: 'openid patient/Observation.rs', aud: FHIR });
    const readTokens = await finish(read, first.next, first.flow);
    assert.equal(readTokens.claims()!.acr, ACR_PASSWORD);
    assert.deepEqual(readTokens.claims()!.amr, ['pwd']);

    const demanding: Array<Record<string, string>> = [{ scope: 'openid', acr_values: ACR_MFA }, { scope: 'openid patient/Observation.cu', aud: FHIR }];
    for (const params of demanding) {
      const agent = new UserAgent();
      const { next } = await passwordStep(agent, patient, params);
      assert.equal(next.status, 200);
      assert.match(next.body, /Set up two-step verification/, 'never silently downgraded to a password login');
    }
  });

  it('honours a client minimum ACR set by an admin', async () => {
    const strict = await server.createClient({ client_name: 'Strict App', redirect_uris: [REDIRECT_URI], scope: 'openid', minimum_acr: ACR_MFA });
    const strictConfig = await discover(server.issuer, strict.clientId, strict.clientSecret);
    const viewer = await server.createAccount({ username: 'viewer', role: 'patient', fhirId: 'pat-v' });
    const agent = new UserAgent();
    const flow = await startCodeFlow(strictConfig, { scope: 'openid' });
    const login = await agent.follow(flow.url.toString(), server.issuer);
    const next = await agent.request(actionOf(login, 'login'), { form: { _csrf: csrfTokenOf(login.body), username: viewer.username, password: viewer.password } });
    assert.match(next.body, /Set up two-step verification/);
    assert.match(next.body, /the app requires it/);
  });

  it('re-authenticates an existing password session when a stronger level is asked for (step-up)', async () => {
    const agent = new UserAgent();
    const first = await passwordStep(agent, patient, { scope: 'openid' });
    const before = await finish(agent, first.next, first.flow);
    const oldSession = (await agent.jar.getCookies(server.issuer)).find((c) => c.key === 'custos_session')?.value;

    // Same browser, same session: asking for MFA shows the login again instead of reusing it.
    const stepUp = await startCodeFlow(config, { scope: 'openid', acr_values: ACR_MFA });
    const page = await agent.follow(stepUp.url.toString(), server.issuer);
    assert.match(page.body, /Sign in/);
    // prompt=none cannot step up silently.
    const silent = await startCodeFlow(config, { scope: 'openid', acr_values: ACR_MFA, prompt: 'none' });
    const refused = await agent.request(silent.url.toString());
    assert.equal(new URL(refused.location!).searchParams.get('error'), 'login_required');

    // The patient enrols as part of the step-up and ends with a fresh, stronger session.
    const next = await agent.request(actionOf(page, 'login'), { form: { _csrf: csrfTokenOf(page.body), username: patient.username, password: patient.password } });
    const secret = /id="totp-key">([^<]+)</.exec(next.body)![1]!.replace(/\s/g, '');
    const enrolled = await agent.request(actionOf(next, 'enrol'), { form: { _csrf: csrfTokenOf(next.body), code: await totp(secret) } });
    const done = await agent.request(actionOf(enrolled, 'enrolled'), { form: { _csrf: csrfTokenOf(enrolled.body) } });
    const after = await finish(agent, done, stepUp);
    assert.equal(after.claims()!.acr, ACR_MFA);
    assert.ok((after.claims()!.auth_time as number) >= (before.claims()!.auth_time as number));
    const newSession = (await agent.jar.getCookies(server.issuer)).find((c) => c.key === 'custos_session')?.value;
    assert.notEqual(newSession, oldSession, 'a new session');
    const idToken = jose.decodeJwt(after.id_token!);
    assert.equal(idToken.acr, ACR_MFA);
  });
});
