import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { discover, oidc } from '../helpers/oidc-client.ts';

/**
 * Token counts are held in memory and written in batches: every token response must still be
 * counted exactly once, whether the counts are read through the registry, written in the
 * background, or written at shutdown.
 */
describe('client usage figures', () => {
  let server: TestServer;
  let a: { clientId: string; clientSecret?: string };
  let b: { clientId: string; clientSecret?: string };

  const grants = async (client: { clientId: string; clientSecret?: string }, n: number) => {
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    await Promise.all(Array.from({ length: n }, () => oidc.clientCredentialsGrant(config)));
  };
  const stored = async (clientId: string) => {
    const rows: { tokens: number }[] = await server.running.services.db('client_usage_hourly').where({ client_id: clientId }).select('tokens');
    return rows.reduce((sum, r) => sum + Number(r.tokens), 0);
  };

  before(async () => {
    server = await startTestServer();
    a = await server.createClient({ client_name: 'Usage A', grant_types: ['client_credentials'] });
    b = await server.createClient({ client_name: 'Usage B', grant_types: ['client_credentials'] });
  });
  after(() => server.close());

  it('counts every one of many concurrent token responses, per client', async () => {
    await Promise.all([grants(a, 25), grants(b, 7)]);
    const usage = await server.running.services.clients.usage([a.clientId, b.clientId]);
    assert.deepEqual(usage.get(a.clientId), { tokensLastDay: 25, tokensLast30Days: 25 });
    assert.deepEqual(usage.get(b.clientId), { tokensLastDay: 7, tokensLast30Days: 7 });
    const client = await server.running.services.clients.get(a.clientId);
    assert.ok(client?.lastUsedAt, 'the client is marked used');
  });

  it('writes the counts in the background without anyone reading them', async () => {
    const before = await stored(b.clientId);
    await grants(b, 3);
    // Polled rather than timed: the figure must arrive, however slow the machine.
    for (let i = 0; i < 300 && (await stored(b.clientId)) !== before + 3; i += 1) await sleep(100);
    assert.equal(await stored(b.clientId), before + 3);
  });

  it('writes what it holds when the server stops, and ignores clients that no longer exist', async () => {
    const before = await stored(a.clientId);
    await grants(a, 4);
    await server.running.services.clients.recordTokenIssued('no-such-client');
    await server.restart();
    assert.equal(await stored(a.clientId), before + 4);
    assert.equal((await server.running.services.db('client_usage_hourly').where({ client_id: 'no-such-client' })).length, 0);
  });
});
