import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase, migrateLatest } from '../../src/db/index.ts';
import { createLoginThrottle, type LoginThrottle } from '../../src/accounts/index.ts';
import { createLimiterStore, type LimiterStore } from '../../src/http/limiter-store.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { startTestServer, testEnv, type TestServer } from '../helpers/server.ts';
import { discover, REDIRECT_URI, startCodeFlow, type oidc } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, type PageResponse } from '../helpers/browserless.ts';

describe('login throttle (the store the configured database uses)', () => {
  let database: TestDatabase;
  let throttle: LoginThrottle;
  let store: LimiterStore;
  before(async () => {
    database = await createTestDatabase();
    const config = loadConfig(testEnv(database, 0));
    const db = await openDatabase(config.database);
    await migrateLatest(db);
    await closeDatabase(db);
    store = createLimiterStore({ database: config.database, keyPrefix: 'throttle-test' });
    throttle = createLoginThrottle(store);
  });
  after(async () => {
    await store.close();
    await database.drop();
  });

  it('allows five quick failures, then backs off exponentially; success resets', async () => {
    for (let i = 1; i <= 4; i += 1) assert.equal(await throttle.failed('password', 'carol', '10.0.0.1'), 0, `failure ${i} is free`);
    assert.equal(await throttle.retryAfter('password', 'carol', '10.0.0.1'), 0);
    assert.equal(await throttle.failed('password', 'carol', '10.0.0.1'), 30, 'the fifth locks for 30 s');
    const wait = await throttle.retryAfter('password', 'carol', '10.0.0.1');
    assert.ok(wait > 0 && wait <= 30);
    assert.equal(await throttle.failed('password', 'carol', '10.0.0.1'), 60, 'then twice as long');
    assert.equal(await throttle.failed('password', 'carol', '10.0.0.1'), 120);
    assert.equal(await throttle.retryAfter('otp', 'carol', '10.0.0.1'), 0, 'the second-factor step counts apart');
    await throttle.succeeded('password', 'carol');
    assert.equal(await throttle.retryAfter('password', 'carol', '10.0.0.1'), 0);
  });

  it('caps failures per client IP across accounts', async () => {
    let last = 0;
    for (let i = 0; i < 51; i += 1) last = await throttle.failed('password', `user-${i}`, '10.9.9.9');
    assert.ok(last > 0, 'the 51st failure from one IP is throttled');
    assert.ok((await throttle.retryAfter('password', 'someone-new', '10.9.9.9')) > 0);
    assert.equal(await throttle.retryAfter('password', 'someone-new', '10.9.9.10'), 0, 'another IP is not');
  });
});

describe('login pages under throttling', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  let dana: { id: string; username: string; password: string };

  before(async () => {
    server = await startTestServer();
    dana = await server.createAccount({ username: 'dana', role: 'patient', fhirId: 'pat-d' });
    const client = await server.createClient({ client_name: 'Throttled App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  const actionOf = (page: PageResponse, name: string) => new URL(new RegExp(`action="([^"]*/${name})"`).exec(page.body)![1]!, server.issuer).toString();

  async function tryPassword(username: string, password: string) {
    const agent = new UserAgent();
    const flow = await startCodeFlow(config);
    const login = await agent.follow(flow.url.toString(), server.issuer);
    return agent.request(actionOf(login, 'login'), { form: { _csrf: csrfTokenOf(login.body), username, password } });
  }

  it('answers 429 with Retry-After after five wrong passwords, for real and unknown accounts alike', async () => {
    for (const username of ['dana', 'nobody-here']) {
      for (let i = 0; i < 4; i += 1) assert.equal((await tryPassword(username, 'wrong password!')).status, 401);
      const fifth = await tryPassword(username, 'wrong password!');
      assert.equal(fifth.status, 429);
      assert.equal(fifth.headers.get('retry-after'), '30');
      assert.match(fifth.body, /Too many failed attempts\. Wait 30 seconds/);
    }
    // Even the right password waits out the lockout.
    const right = await tryPassword('dana', dana.password);
    assert.equal(right.status, 429);
  });

  it('throttles the second-factor step on its own counter', async () => {
    const erin = await server.createAccount({ username: 'erin', role: 'patient', fhirId: 'pat-e' });
    const { mfa } = server.running.services;
    const secret = await mfa.beginTotp(erin.id);
    assert.ok(await mfa.confirmTotp(erin.id, await generate({ secret })));
    const agent = new UserAgent();
    const flow = await startCodeFlow(config);
    const login = await agent.follow(flow.url.toString(), server.issuer);
    const otpPage = await agent.request(actionOf(login, 'login'), { form: { _csrf: csrfTokenOf(login.body), username: 'erin', password: erin.password } });
    let res = otpPage;
    for (let i = 0; i < 5; i += 1) res = await agent.request(actionOf(otpPage, 'otp'), { form: { _csrf: csrfTokenOf(otpPage.body), code: '000000' } });
    assert.equal(res.status, 429);
    assert.match(res.body, /Too many failed attempts/);
    // The password step for erin is unaffected.
    const again = await tryPassword('erin', erin.password);
    assert.equal(again.status, 200);
    assert.match(again.body, /Two-step verification/);
  });
});
