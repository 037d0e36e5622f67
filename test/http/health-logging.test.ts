import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { createLogger } from '../../src/logging/index.ts';

describe('health endpoints', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('reports liveness and readiness, and unready when the database is gone', async () => {
    const live = await fetch(new URL('/healthz', server.issuer));
    assert.equal(live.status, 200);
    assert.deepEqual(await live.json(), { status: 'ok' });
    const ready = await fetch(new URL('/readyz', server.issuer));
    assert.equal(ready.status, 200);
    await server.running.services.db.destroy();
    const unready = await fetch(new URL('/readyz', server.issuer));
    assert.equal(unready.status, 503);
    assert.deepEqual(await unready.json(), { status: 'unavailable' });
    assert.equal((await fetch(new URL('/healthz', server.issuer))).status, 200);
  });
});

describe('structured logs', () => {
  it('redact credentials wherever they appear', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const log = createLogger('info', sink);
    log.info({
      password: 'hunter2-hunter2',
      body: { client_secret: 's3cret', refresh_token: 'rt-value', code: 'auth-code' },
      req: { headers: { authorization: 'Basic abc', cookie: 'custos_session=xyz' } },
      token: 'at-value',
      harmless: 'visible',
    }, 'test');
    const out = lines.join('');
    for (const secret of ['hunter2-hunter2', 's3cret', 'rt-value', 'auth-code', 'Basic abc', 'custos_session=xyz', 'at-value']) {
      assert.ok(!out.includes(secret), `${secret} must not be logged`);
    }
    assert.ok(out.includes('visible'));
    assert.ok(out.includes('[redacted]'));
  });
});
