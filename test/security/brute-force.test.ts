/**
 * Online guessing against the sign-in pages: wrong passwords for one account, wrong passwords
 * spread over many accounts from one address, wrong second-factor codes; and the answers never
 * tell a real username from an unknown one, throttled or not.
 *
 * The server trusts X-Forwarded-For from loopback here, so each test plays its own client address
 * and the counters of one test do not leak into the next.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import pg from 'pg';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { enrolTotp } from '../helpers/totp.ts';
import { discover, REDIRECT_URI, startCodeFlow, type oidc } from '../helpers/oidc-client.ts';
import { UserAgent, csrfTokenOf, formActionOf, type PageResponse } from '../helpers/browserless.ts';

/** The login throttle's limits (src/accounts/login-throttle.ts). */
const QUICK_FAILURES = 5;
const FIRST_LOCKOUT_SECONDS = 30;
const IP_CAP = 50;

describe('brute force against the sign-in pages', () => {
  let server: TestServer;
  let config: oidc.Configuration;

  before(async () => {
    server = await startTestServer({ env: { TRUST_PROXY: '127.0.0.1' } });
    const client = await server.createClient({ client_name: 'Guessed App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  const from = (ip: string) => ({ 'x-forwarded-for': ip });

  /** Opens a fresh sign-in page (a new interaction) as a client at `ip`. */
  async function loginPage(ip: string) {
    const agent = new UserAgent();
    const { url } = await startCodeFlow(config);
    let page = await agent.request(url.toString(), { headers: from(ip) });
    while (page.location?.startsWith(server.issuer)) page = await agent.request(page.location, { headers: from(ip) });
    assert.equal(page.status, 200);
    return { agent, page };
  }

  async function tryPassword(ip: string, username: string, password: string) {
    const { agent, page } = await loginPage(ip);
    const action = new URL(formActionOf(page.body, 'login'), server.issuer).toString();
    return agent.request(action, { form: { _csrf: csrfTokenOf(page.body), username, password }, headers: from(ip) });
  }

  const alertOf = (res: PageResponse) => /role="alert"[^>]*>([^<]*)</.exec(res.body)?.[1];

  async function auditCount(type: string, filter: (e: { details: Record<string, unknown>; ip?: string | null }) => boolean = () => true) {
    const { events } = await server.running.services.audit.list({ type }, { limit: 500 });
    return events.filter((e) => filter(e as { details: Record<string, unknown>; ip?: string | null })).length;
  }

  it('locks one account after five wrong passwords, from any address, and the right password waits too', async () => {
    const victim = await server.createAccount({ username: 'victim' });
    const failuresBefore = await auditCount('login.failure');
    // A distributed guesser: every attempt from another address, so only the account's counter adds up.
    const statuses: number[] = [];
    for (let i = 1; i <= QUICK_FAILURES; i += 1) statuses.push((await tryPassword(`198.51.100.${i}`, 'victim', `guess number ${i}`)).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 429]);
    assert.equal(await auditCount('login.failure') - failuresBefore, QUICK_FAILURES);

    const locked = await tryPassword('198.51.100.99', 'VICTIM', 'guess number 6');
    assert.equal(locked.status, 429, 'the username is matched case-insensitively');
    const wait = Number(locked.headers.get('retry-after'));
    assert.ok(wait > 0 && wait <= FIRST_LOCKOUT_SECONDS, `Retry-After ${wait}`);
    assert.equal(alertOf(locked), `Too many failed attempts. Wait ${wait} seconds, then try again.`);
    assert.equal(await auditCount('login.failure') - failuresBefore, QUICK_FAILURES, 'refused before the password is even checked');

    const right = await tryPassword('198.51.100.100', 'victim', victim.password);
    assert.equal(right.status, 429);
    assert.equal(right.location, undefined, 'nobody was signed in');
    assert.ok((await auditCount('login.throttled', (e) => e.details.step === 'password')) >= 3);
    // Someone else's account is not affected.
    const bystander = await server.createAccount({ username: 'bystander' });
    assert.equal((await tryPassword('198.51.100.1', 'bystander', bystander.password)).status, 303);
  });

  it('caps wrong passwords spread across accounts from one address at fifty, and only for that address', async () => {
    const ip = '203.0.113.7';
    const real = await Promise.all([0, 1, 2, 3, 4].map((i) => server.createAccount({ username: `spread${i}` })));
    const statuses: number[] = [];
    for (let i = 0; i < IP_CAP + 1; i += 1) {
      // Real and unknown names alike, four tries at most each: no account reaches its own lock.
      const username = i < 4 * real.length ? real[i % real.length]!.username : `ghost${i}`;
      statuses.push((await tryPassword(ip, username, `wrong password ${i}`)).status);
    }
    assert.deepEqual(statuses.slice(0, IP_CAP), new Array<number>(IP_CAP).fill(401));
    assert.equal(statuses[IP_CAP], 429, 'the 51st failure from one address is throttled');

    const fresh = await server.createAccount({ username: 'fresh' });
    const blocked = await tryPassword(ip, 'fresh', fresh.password);
    assert.equal(blocked.status, 429, 'even a correct password waits at that address');
    assert.ok(Number(blocked.headers.get('retry-after')) > 0);
    assert.equal((await tryPassword('203.0.113.8', 'fresh', fresh.password)).status, 303, 'another address signs in');
    assert.equal((await tryPassword('203.0.113.8', real[0]!.username, real[0]!.password)).status, 303, 'and the guessed accounts are not locked');
    const throttled = (await server.running.services.audit.list({ type: 'login.throttled' }, { limit: 500 })).events.filter((e) => e.ip === ip);
    assert.ok(throttled.length >= 2, 'the refusals are audited with the address');
  });

  /** An account with a confirmed authenticator app; returns its TOTP secret too. */
  async function mfaAccount(username: string) {
    const account = await server.createAccount({ username });
    const { mfa } = server.running.services;
    const secret = await enrolTotp(mfa, account.id);
    return { ...account, secret };
  }

  /** A six-digit code that none of the time steps around now accepts. */
  async function wrongCode(secret: string, i: number) {
    const now = Math.floor(Date.now() / 1000);
    const valid = new Set(await Promise.all([-60, -30, 0, 30, 60].map((d) => generate({ secret, epoch: now + d }))));
    for (let n = 100000 + i; ; n += 7) if (!valid.has(String(n))) return String(n);
  }

  /** Passes the password step at `ip`; returns the agent on the second-factor page. */
  async function atSecondFactor(ip: string, who: { username: string; password: string }) {
    const { agent, page } = await loginPage(ip);
    const otp = await agent.request(new URL(formActionOf(page.body, 'login'), server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(page.body), username: who.username, password: who.password },
      headers: from(ip),
    });
    assert.equal(otp.status, 200);
    assert.match(otp.body, /Two-step verification/);
    const action = new URL(formActionOf(otp.body, 'otp'), server.issuer).toString();
    return {
      agent,
      otp,
      action,
      submit: (code: string) => agent.request(action, { form: { _csrf: csrfTokenOf(otp.body), code }, headers: from(ip) }),
    };
  }

  it('throttles wrong second-factor codes per account across sign-ins, audited with the account', async () => {
    const ip = '192.0.2.44';
    const erin = await mfaAccount('erin');
    const { secret } = erin;
    const atSecond = () => atSecondFactor(ip, erin);

    const first = await atSecond();
    const statuses: number[] = [];
    // Spread over two sign-ins: starting over does not reset the count.
    for (let i = 0; i < 3; i += 1) statuses.push((await first.submit(await wrongCode(secret, i))).status);
    const second = await atSecond();
    for (let i = 3; i < QUICK_FAILURES; i += 1) statuses.push((await second.submit(await wrongCode(secret, i))).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 429]);

    const right = await second.submit(await generate({ secret }));
    assert.equal(right.status, 429, 'the right code waits out the lock too');
    assert.match(right.body, /Too many failed attempts/);
    assert.equal(right.location, undefined);

    const { events } = await server.running.services.audit.list({ actor: erin.id }, { limit: 50 });
    const failures = events.filter((e) => e.type === 'login.failure');
    assert.equal(failures.length, QUICK_FAILURES);
    assert.ok(failures.every((e) => e.details.step === 'totp' && e.ip === ip));
    const throttled = events.filter((e) => e.type === 'login.throttled');
    assert.ok(throttled.length >= 2);
    assert.ok(throttled.every((e) => e.details.step === 'otp' && Number(e.details.retry_after) > 0));
    assert.equal(events.filter((e) => e.type === 'login.success').length, 0, 'the account was never signed in');
  });

  it('caps wrong second-factor codes spread across accounts from one address', async () => {
    const ip = '192.0.2.77';
    // Four wrong codes per account (one short of its own lock), over enough accounts to pass fifty.
    const accounts = await Promise.all(Array.from({ length: Math.ceil((IP_CAP + 1) / 4) }, (_, i) => mfaAccount(`otpspread${i}`)));
    const statuses: number[] = [];
    for (const account of accounts) {
      if (statuses.length > IP_CAP) break;
      const step = await atSecondFactor(ip, account);
      for (let i = 0; i < 4 && statuses.length <= IP_CAP; i += 1) statuses.push((await step.submit(await wrongCode(account.secret, i))).status);
    }
    assert.deepEqual(statuses.slice(0, IP_CAP), new Array<number>(IP_CAP).fill(401));
    assert.equal(statuses[IP_CAP], 429, 'the 51st wrong code from one address is throttled');

    // A fresh account's right code waits at that address too, and goes through from another.
    const fresh = await mfaAccount('otpfresh');
    const blocked = await atSecondFactor(ip, fresh);
    assert.equal((await blocked.submit(await generate({ secret: fresh.secret }))).status, 429);
    const elsewhere = await atSecondFactor('192.0.2.78', fresh);
    const done = await elsewhere.submit(await generate({ secret: fresh.secret }));
    assert.equal(done.status, 303, 'signed in from another address');
    const throttled = (await server.running.services.audit.list({ type: 'login.throttled' }, { limit: 500 })).events.filter((e) => e.ip === ip);
    assert.ok(throttled.length >= 2 && throttled.every((e) => e.details.step === 'otp'));
  });

  it('keeps counting when the database drops the counter store\'s connections', async (t) => {
    const { database } = server.config;
    if (database.kind !== 'postgres') return t.skip('the counters live in memory on the embedded database');
    const ip = '192.0.2.90';
    // Idle connections in every pool first, then PostgreSQL cuts them all (a restart, a failover, an idle timeout).
    for (let i = 0; i < 2; i += 1) assert.equal((await tryPassword(ip, 'cutover', 'wrong')).status, 401);
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    const { rowCount } = await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()');
    await admin.end();
    assert.ok((rowCount ?? 0) > 0, 'connections were cut');
    await new Promise((r) => setTimeout(r, 200));

    // The server is still up, and the failures before the cut still count towards the lock.
    const statuses: number[] = [];
    for (let i = 0; i < 3; i += 1) statuses.push((await tryPassword(ip, 'cutover', 'wrong')).status);
    assert.deepEqual(statuses, [401, 401, 429]);
  });

  it('answers a real username with a wrong password exactly as an unknown username, before and while throttled', async () => {
    // Same length as "alice", so even Content-Length cannot differ.
    await server.createAccount({ username: 'alice' });
    const names = { real: 'alice', unknown: 'zelda' } as const;
    const answers: Record<'real' | 'unknown', PageResponse[]> = { real: [], unknown: [] };
    for (const kind of ['real', 'unknown'] as const) {
      for (let i = 0; i < QUICK_FAILURES + 1; i += 1) answers[kind].push(await tryPassword(`192.0.2.${kind === 'real' ? 10 : 11}`, names[kind], 'not the password'));
    }
    assert.deepEqual(answers.real.map((r) => r.status), [401, 401, 401, 401, 429, 429]);

    /** What is specific to one interaction or one request is masked; everything else must match. */
    const normalise = (res: PageResponse, username: string) => ({
      status: res.status,
      body: res.body
        .replace(/\/interaction\/[A-Za-z0-9_-]+\//g, '/interaction/UID/')
        .replace(/name="_csrf" value="[^"]+"/g, 'name="_csrf" value="CSRF"')
        .replaceAll(`value="${username}"`, 'value="USERNAME"'),
      headers: [...res.headers.entries()]
        .filter(([name]) => name !== 'date' && name !== 'set-cookie')
        .map(([name, value]) => (name === 'retry-after' ? [name, String(Number(value) > 0)] : [name, value]))
        .sort(),
      cookies: res.headers.getSetCookie().map((c) => c.split('=')[0]).sort(),
    });
    for (let i = 0; i < answers.real.length; i += 1) {
      assert.deepEqual(normalise(answers.real[i]!, names.real), normalise(answers.unknown[i]!, names.unknown), `attempt ${i + 1}`);
    }
    assert.equal(alertOf(answers.unknown[0]!), 'The username or password is incorrect.');
    assert.match(alertOf(answers.unknown[QUICK_FAILURES]!) ?? '', /^Too many failed attempts\. Wait \d+ seconds, then try again\.$/);

    // A disabled account answers the same as well.
    const dora = await server.createAccount({ username: 'dorax' });
    const { db, accounts } = server.running.services;
    await db.transaction((trx) => accounts.setDisabled(dora.id, true, trx));
    const disabled = await tryPassword('192.0.2.12', 'dorax', dora.password);
    const unknown = await tryPassword('192.0.2.13', 'zorax', dora.password);
    assert.deepEqual(normalise(disabled, 'dorax'), normalise(unknown, 'zorax'));

    // The audit trail does not tell them apart either, nor keep the name typed (often a password).
    const { events } = await server.running.services.audit.list({ type: 'login.failure' }, { limit: 100 });
    const shape = (ip: string) => {
      const e = events.find((x) => x.ip === ip);
      assert.ok(e, `a failure audited for ${ip}`);
      return { type: e.type, outcome: e.outcome, actor: e.actor, details: e.details };
    };
    assert.deepEqual(shape('192.0.2.12'), shape('192.0.2.13'));
    assert.doesNotMatch(JSON.stringify(events), /dorax|zorax|zelda/);
  });
});

describe('brute force against a server with a low page rate limit', () => {
  let server: TestServer;
  let config: oidc.Configuration;
  const PAGES_PER_MINUTE = 12;

  before(async () => {
    server = await startTestServer({ env: { RATE_LIMIT_PAGES_PER_IP: String(PAGES_PER_MINUTE), TRUST_PROXY: '127.0.0.1' } });
    const client = await server.createClient({ client_name: 'Guessed App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    config = await discover(server.issuer, client.clientId, client.clientSecret);
  });
  after(() => server.close());

  it('stops a guessing run at the page request limit before the login throttle, and before any password is checked', async () => {
    const carol = await server.createAccount({ username: 'carol' });
    const ip = '198.51.100.200';
    const headers = { 'x-forwarded-for': ip, accept: 'text/html' };
    const failuresBefore = (await server.running.services.audit.list({ type: 'login.failure' }, { limit: 100 })).events.length;
    // Each guess costs three page requests (authorization, login page, form post).
    const outcomes: number[] = [];
    const limited: PageResponse[] = [];
    for (let i = 0; i < PAGES_PER_MINUTE; i += 1) {
      const agent = new UserAgent();
      const { url } = await startCodeFlow(config);
      let res = await agent.request(url.toString(), { headers });
      while (res.location?.startsWith(server.issuer)) res = await agent.request(res.location, { headers });
      if (res.status === 200) {
        const action = new URL(formActionOf(res.body, 'login'), server.issuer).toString();
        res = await agent.request(action, { form: { _csrf: csrfTokenOf(res.body), username: i % 2 ? 'carol' : 'nobody', password: 'a wrong guess' }, headers });
      }
      outcomes.push(res.status);
      if (res.status === 429) limited.push(res);
    }
    const guesses = outcomes.filter((s) => s === 401).length;
    assert.equal(guesses, PAGES_PER_MINUTE / 3, `guesses that got through: ${outcomes.join(',')}`);
    assert.ok(limited.length > 0);
    for (const res of limited) {
      assert.ok(Number(res.headers.get('retry-after')) >= 1);
      assert.match(res.headers.get('content-type') ?? '', /text\/html/);
      assert.match(res.body, /too many requests; try again in \d+ seconds/);
    }
    const failures = (await server.running.services.audit.list({ type: 'login.failure' }, { limit: 100 })).events.length - failuresBefore;
    assert.equal(failures, guesses, 'no password was checked once the limit was hit');
    const exceeded = (await server.running.services.audit.list({ type: 'rate_limit.exceeded' }, { limit: 10 })).events;
    assert.ok(exceeded.some((e) => e.ip === ip && e.details.limit === 'pages_ip'), 'the flood is audited with its address');

    // Another address is unaffected, and carol's own account is not locked by the stranger's guesses.
    const agent = new UserAgent();
    const { url } = await startCodeFlow(config);
    const other = { 'x-forwarded-for': '198.51.100.201' };
    let res = await agent.request(url.toString(), { headers: other });
    while (res.location?.startsWith(server.issuer)) res = await agent.request(res.location, { headers: other });
    const action = new URL(formActionOf(res.body, 'login'), server.issuer).toString();
    res = await agent.request(action, { form: { _csrf: csrfTokenOf(res.body), username: 'carol', password: carol.password }, headers: other });
    assert.equal(res.status, 303);
  });
});
