/**
 * HIPAA 164.312(a)(2)(iii) automatic logoff: the account and admin pages end a session left idle
 * longer than ACCOUNT_IDLE_TIMEOUT, or older than ACCOUNT_SESSION_TTL however busy. Waiting out
 * a 15-minute timeout in a test is not practical, so the test ages a real session instead: it
 * takes the cookie the server issued, moves its timestamps back, and signs it with the server's
 * cookie key, exactly as the server would have after that much time.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { UserAgent, authorize } from '../helpers/browserless.ts';
import { adminPagesAgent, createMfaAdmin } from '../helpers/admin.ts';

const IDLE = 120;
const LIFETIME = 600;

describe('automatic logoff of the account and admin pages', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { ACCOUNT_IDLE_TIMEOUT: String(IDLE), ACCOUNT_SESSION_TTL: String(LIFETIME) } });
  });
  after(() => server.close());

  /** The session cookie `name` of `agent`, with its timestamps moved back, signed as the server signs. */
  async function aged(agent: UserAgent, name: string, path: string, shift: { idle: number; age: number }) {
    const cookies = await agent.jar.getCookies(`${server.issuer}${path}`);
    const raw = cookies.find((c) => c.key === name)?.value;
    assert.ok(raw, `signed in: ${name} is set`);
    const session = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as { startedAt: number; lastSeen: number };
    const now = Math.floor(Date.now() / 1000);
    const value = Buffer.from(JSON.stringify({ ...session, startedAt: now - shift.age, lastSeen: now - shift.idle })).toString('base64url');
    // What Koa's signed cookies (keygrip) send alongside: HMAC-SHA1 of "name=value", base64url.
    const sig = createHmac('sha1', server.config.secrets.cookieKeys[0]!).update(`${name}=${value}`).digest('base64url');
    return `${name}=${value}; ${name}.sig=${sig}`;
  }

  async function status(path: string, cookie: string) {
    const res = await fetch(`${server.issuer}${path}`, { redirect: 'manual', headers: { cookie } });
    await res.body?.cancel();
    return { status: res.status, location: res.headers.get('location') ?? '' };
  }

  it('signs a patient out of the account pages after the idle timeout and after the absolute lifetime', async () => {
    const who = await server.createAccount({ username: 'idle-patient' });
    const agent = new UserAgent();
    const page = await authorize(agent, `${server.issuer}/account`, server.issuer, who);
    assert.equal(page.status, 200, page.body.slice(0, 200));

    // A session used a moment ago is still good: the aging itself is accepted by the server.
    const fresh = await status('/account', await aged(agent, 'custos_account', '/account', { idle: 5, age: 60 }));
    assert.equal(fresh.status, 200);
    const idle = await status('/account', await aged(agent, 'custos_account', '/account', { idle: IDLE + 5, age: IDLE + 5 }));
    assert.equal(idle.status, 302, 'idle too long: back to sign-in');
    assert.doesNotMatch(idle.location, /^\/account$/);
    const old = await status('/account', await aged(agent, 'custos_account', '/account', { idle: 5, age: LIFETIME + 5 }));
    assert.equal(old.status, 302, 'older than the lifetime: back to sign-in, however recently used');
  });

  it('does the same on the admin pages', async () => {
    const admin = await createMfaAdmin(server);
    const pages = await adminPagesAgent(server, admin);
    const fresh = await status('/admin/clients', await aged(pages.agent, 'custos_admin', '/admin', { idle: 5, age: 60 }));
    assert.equal(fresh.status, 200);
    const idle = await status('/admin/clients', await aged(pages.agent, 'custos_admin', '/admin', { idle: IDLE + 5, age: IDLE + 5 }));
    assert.notEqual(idle.status, 200);
    assert.ok([302, 303].includes(idle.status), `redirected to sign in, got ${idle.status}`);
    const old = await status('/admin/clients', await aged(pages.agent, 'custos_admin', '/admin', { idle: 5, age: LIFETIME + 5 }));
    assert.ok([302, 303].includes(old.status), `redirected to sign in, got ${old.status}`);
  });
});
