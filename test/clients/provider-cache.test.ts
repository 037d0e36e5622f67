import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase, migrateLatest, type Db } from '../../src/db/index.ts';
import { createClientRegistry, CLIENT_CACHE_MS, type ClientRegistry } from '../../src/clients/index.ts';
import { createAuditTrail } from '../../src/audit/index.ts';
import { createKnexAdapter, deleteClientPayloads } from '../../src/oidc/index.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { testEnv } from '../helpers/server.ts';

/**
 * Two instances of Custos on one database, each with its own client registry: what one changes,
 * it sees at once; the other sees it within CLIENT_CACHE_MS (their clocks are driven here).
 */
describe('what the provider is told about clients, across instances', () => {
  let database: TestDatabase;
  let db: Db;
  let now = Date.now();
  let a: ClientRegistry;
  let b: ClientRegistry;
  const pepper = Buffer.alloc(32, 7);

  before(async () => {
    database = await createTestDatabase();
    db = await openDatabase(loadConfig(testEnv(database, 0)).database);
    await migrateLatest(db);
    const make = () => createClientRegistry(db, pepper, { audit: createAuditTrail(db), revokeArtifacts: deleteClientPayloads, clock: () => new Date(now) });
    a = make();
    b = make();
  });
  after(async () => {
    await closeDatabase(db);
    await database.drop();
  });

  const service = { client_name: 'Cached service', grant_types: ['client_credentials'] };

  it('a suspension applies at once where it was made and within the bound everywhere, tokens included', async () => {
    const { client } = await a.create(service);
    const tokensOnB = new (createKnexAdapter(db, b))('ClientCredentials');
    assert.equal((await b.findForProvider(client.clientId))?.client_id, client.clientId);

    await a.transition(client.clientId, 'suspend', { actor: 'admin' });
    assert.equal(await a.findForProvider(client.clientId), undefined, 'the instance that suspended it knows at once');
    // B, still inside its bound, issues a token to the client it has not yet seen suspended.
    await tokensOnB.upsert('late-token', { kind: 'ClientCredentials', jti: 'late-token', clientId: client.clientId }, 300);
    assert.ok(await b.findForProvider(client.clientId), 'another instance may lag, but only within the bound');
    assert.ok(await tokensOnB.find('late-token'));

    now += CLIENT_CACHE_MS;
    assert.equal(await b.findForProvider(client.clientId), undefined, 'past the bound the suspension is seen everywhere');
    assert.equal(await tokensOnB.find('late-token'), undefined, 'and the token issued meanwhile no longer works');
  });

  it('a secret rotation reaches the other instance within the bound', async () => {
    const { client } = await a.create(service);
    const before = (await b.findForProvider(client.clientId))?.client_secret;
    const { clientSecret } = await a.rotateSecret(client.clientId, 0, { actor: 'admin' });
    const fresh = (await a.findForProvider(client.clientId))?.client_secret as string;
    assert.ok(a.verifySecret(fresh, clientSecret));
    assert.equal((await b.findForProvider(client.clientId))?.client_secret, before);
    now += CLIENT_CACHE_MS;
    assert.equal((await b.findForProvider(client.clientId))?.client_secret, fresh);
  });

  it('a client registered on another instance appears within the bound, and answers are copies', async () => {
    assert.equal(await b.findForProvider('registered-later'), undefined);
    await a.create(service, { clientId: 'registered-later' });
    now += CLIENT_CACHE_MS;
    const found = await b.findForProvider('registered-later');
    assert.equal(found?.client_id, 'registered-later');
    found!.client_id = 'tampered';
    assert.equal((await b.findForProvider('registered-later'))?.client_id, 'registered-later');
  });
});
