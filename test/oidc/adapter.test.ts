import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase, migrateLatest, type Db } from '../../src/db/index.ts';
import { createClientRegistry } from '../../src/clients/index.ts';
import { createAuditTrail } from '../../src/audit/index.ts';
import { createKnexAdapter, deleteExpiredPayloads } from '../../src/oidc/index.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { testEnv } from '../helpers/server.ts';

describe('knex adapter for oidc-provider', () => {
  let database: TestDatabase;
  let db: Db;
  let Adapter: ReturnType<typeof createKnexAdapter>;

  before(async () => {
    database = await createTestDatabase();
    db = await openDatabase(loadConfig(testEnv(database, 0)).database);
    await migrateLatest(db);
    Adapter = createKnexAdapter(db, createClientRegistry(db, Buffer.alloc(32, 1), { audit: createAuditTrail(db) }));
  });
  after(async () => {
    await closeDatabase(db);
    await database.drop();
  });

  it('stores, finds and overwrites payloads per model', async () => {
    const codes = new Adapter('AuthorizationCode');
    const tokens = new Adapter('AccessToken');
    await codes.upsert('same-id', { grantId: 'g1', kind: 'AuthorizationCode', jti: 'same-id' }, 60);
    await tokens.upsert('same-id', { grantId: 'g1', kind: 'AccessToken', jti: 'same-id' }, 60);
    assert.equal((await codes.find('same-id'))?.kind, 'AuthorizationCode');
    assert.equal((await tokens.find('same-id'))?.kind, 'AccessToken');
    await codes.upsert('same-id', { grantId: 'g1', kind: 'AuthorizationCode', jti: 'same-id', scope: 'openid' }, 60);
    assert.equal((await codes.find('same-id'))?.scope, 'openid');
    assert.equal(await codes.find('missing'), undefined);
  });

  it('finds by uid and by user code, and hides expired rows', async () => {
    const sessions = new Adapter('Session');
    await sessions.upsert('s1', { uid: 'uid-1', kind: 'Session', jti: 's1' }, 60);
    assert.equal((await sessions.findByUid('uid-1'))?.jti, 's1');
    const devices = new Adapter('DeviceCode');
    await devices.upsert('d1', { userCode: 'ABCD-EFGH', kind: 'DeviceCode', jti: 'd1' }, 60);
    assert.equal((await devices.findByUserCode('ABCD-EFGH'))?.jti, 'd1');
    await sessions.upsert('s2', { uid: 'uid-2', kind: 'Session', jti: 's2' }, 60);
    await db('oidc_payloads').where({ kind: 'Session', id: 's2' }).update({ expires_at: db.raw(`now() - interval '1 second'`) });
    assert.equal(await sessions.find('s2'), undefined);
    assert.equal(await sessions.findByUid('uid-2'), undefined);
  });

  it('answers lookups made together, of one id under several models and of many ids, each with its own row', async () => {
    await new Adapter('AccessToken').upsert('tok-1', { kind: 'AccessToken', jti: 'tok-1', scope: 'a' }, 60);
    await new Adapter('RefreshToken').upsert('tok-2', { kind: 'RefreshToken', jti: 'tok-2', scope: 'b' }, 60);
    await new Adapter('AccessToken').upsert('tok-3', { kind: 'AccessToken', jti: 'tok-3', scope: 'c' }, 60);
    await db('oidc_payloads').where({ kind: 'AccessToken', id: 'tok-3' }).update({ expires_at: db.raw(`now() - interval '1 second'`) });
    const queries: string[] = [];
    const count = (q: { sql: string }) => queries.push(q.sql);
    db.on('query', count);
    const kinds = ['AccessToken', 'ClientCredentials', 'RefreshToken'];
    const results = await Promise.all([
      ...kinds.map((k) => new Adapter(k).find('tok-1')),
      ...kinds.map((k) => new Adapter(k).find('tok-2')),
      new Adapter('AccessToken').find('tok-3'),
      new Adapter('AccessToken').find('tok-1'),
      ...Array.from({ length: 150 }, (_, i) => new Adapter('AccessToken').find(`absent-${i}`)),
    ]);
    db.off('query', count);
    assert.deepEqual(results.slice(0, 6).map((r) => r?.scope), ['a', undefined, undefined, undefined, undefined, 'b']);
    assert.equal(results[6], undefined, 'expired rows stay hidden');
    assert.deepEqual(results[7], results[0]);
    assert.notEqual(results[7], results[0], 'two lookups of one token do not share an object');
    assert.ok(results.slice(8).every((r) => r === undefined));
    // 157 distinct lookups: two queries (at most 100 pairs each), not 158.
    assert.equal(queries.length, 2, queries.join('\n'));
  });

  it('consumes exactly once, even when two consumers race', async () => {
    const codes = new Adapter('AuthorizationCode');
    await codes.upsert('c1', { grantId: 'g2', kind: 'AuthorizationCode', jti: 'c1' }, 60);
    const results = await Promise.allSettled([codes.consume('c1'), codes.consume('c1'), codes.consume('c1')]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results.filter((x) => x.status === 'rejected')) {
      assert.equal((r as PromiseRejectedResult).reason.error, 'invalid_grant');
    }
    const found = await codes.find('c1');
    assert.equal(typeof found?.consumed, 'number');
  });

  it('revokes every artifact of a grant and nothing else', async () => {
    const kinds = ['AuthorizationCode', 'AccessToken', 'RefreshToken'];
    for (const kind of kinds) {
      await new Adapter(kind).upsert(`${kind}-a`, { grantId: 'grant-a', kind, jti: `${kind}-a` }, 60);
      await new Adapter(kind).upsert(`${kind}-b`, { grantId: 'grant-b', kind, jti: `${kind}-b` }, 60);
    }
    await new Adapter('AccessToken').revokeByGrantId('grant-a');
    for (const kind of kinds) {
      assert.equal(await new Adapter(kind).find(`${kind}-a`), undefined, `${kind} of grant-a removed`);
      assert.ok(await new Adapter(kind).find(`${kind}-b`), `${kind} of grant-b kept`);
    }
  });

  it('cleans up expired rows in the background job', async () => {
    const tokens = new Adapter('AccessToken');
    await tokens.upsert('old', { kind: 'AccessToken', jti: 'old' }, 60);
    await tokens.upsert('live', { kind: 'AccessToken', jti: 'live' }, 60);
    await db('oidc_payloads').where({ kind: 'AccessToken', id: 'old' }).update({ expires_at: db.raw(`now() - interval '1 minute'`) });
    const removed = await deleteExpiredPayloads(db);
    assert.ok(removed >= 1);
    assert.equal(await db('oidc_payloads').where({ kind: 'AccessToken', id: 'old' }).first(), undefined);
    assert.ok(await db('oidc_payloads').where({ kind: 'AccessToken', id: 'live' }).first());
  });

  it('reads clients from the registry, approved ones only', async () => {
    const registry = createClientRegistry(db, Buffer.alloc(32, 1), { audit: createAuditTrail(db) });
    const { client } = await registry.create({ client_name: 'Registry App', grant_types: ['client_credentials'] });
    const clients = new (createKnexAdapter(db, registry))('Client');
    const found = await clients.find(client.clientId);
    assert.equal(found?.client_id, client.clientId);
    assert.match(String(found?.client_secret), /^hmac-sha256\$/, 'the provider sees only the hash');
    // Suspended through the same registry (this instance): refused at once. Other instances
    // follow within CLIENT_CACHE_MS (test/clients/provider-cache.test.ts).
    await registry.transition(client.clientId, 'suspend', { actor: 'test' });
    assert.equal(await clients.find(client.clientId), undefined);
    await assert.rejects(clients.upsert(client.clientId, {}, 60));
  });
});
