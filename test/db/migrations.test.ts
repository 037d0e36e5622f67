import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase, migrateLatest, migrateDown, migrationStatus, type Db } from '../../src/db/index.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { testEnv } from '../helpers/server.ts';

const CORE_TABLES = ['accounts', 'clients', 'oidc_payloads', 'signing_keys'];

/** Every migration file, in the order the runner applies them. */
const MIGRATIONS = readdirSync(new URL('../../migrations/', import.meta.url))
  .filter((f) => /^\d{3}_[a-z0-9_]+\.ts$/.test(f))
  .sort();

/** Tables in the public schema, without knex's own bookkeeping tables. */
async function tables(db: Db): Promise<string[]> {
  const rows: Array<{ table_name: string }> = await db('information_schema.tables')
    .select('table_name')
    .where({ table_schema: 'public' })
    .whereNot('table_name', 'like', 'knex\\_migrations%')
    .orderBy('table_name');
  return rows.map((r) => r.table_name);
}

describe('migrations up, down, up', () => {
  let database: TestDatabase;
  let db: Db;
  let initial: string[];
  let afterUp: string[];

  before(async () => {
    database = await createTestDatabase();
    db = await openDatabase(loadConfig(testEnv(database, 0)).database);
    initial = await tables(db);
  });
  after(async () => {
    await closeDatabase(db);
    await database.drop();
  });

  it('starts from a clean database with every migration pending', async () => {
    assert.deepEqual(initial, []);
    assert.ok(MIGRATIONS.length >= 2 && MIGRATIONS[0] === '001_core.ts', `found ${MIGRATIONS.join(', ')}`);
    assert.deepEqual(await migrationStatus(db), { applied: [], pending: MIGRATIONS });
  });

  it('up: applies every migration in order and creates the tables', async () => {
    assert.deepEqual(await migrateLatest(db), MIGRATIONS);
    afterUp = await tables(db);
    for (const table of CORE_TABLES) assert.ok(afterUp.includes(table), `${table} exists`);
    assert.deepEqual(await migrationStatus(db), { applied: MIGRATIONS, pending: [] });
  });

  it('a second up applies nothing and changes nothing', async () => {
    assert.deepEqual(await migrateLatest(db), []);
    assert.deepEqual(await tables(db), afterUp);
    assert.deepEqual(await migrationStatus(db), { applied: MIGRATIONS, pending: [] });
  });

  it('the schema works after up: the constraints hold', async () => {
    await db('accounts').insert({ username: 'Alice', role: 'admin', password_hash: 'x' });
    await assert.rejects(db('accounts').insert({ username: 'alice', role: 'admin', password_hash: 'x' }), { code: '23505' });
    await assert.rejects(db('accounts').insert({ username: 'bob', role: 'root', password_hash: 'x' }), { code: '23514' });
    await assert.rejects(db('clients').insert({ client_id: 'c', name: 'c', metadata: {}, status: 'deleted' }), { code: '23514' });
  });

  it('down: reverts every migration, newest first, and drops every table up created', async () => {
    assert.deepEqual(await migrateDown(db), [...MIGRATIONS].reverse());
    assert.deepEqual(await tables(db), initial);
    for (const table of CORE_TABLES) assert.equal(await db.schema.hasTable(table), false, `${table} is gone`);
    assert.deepEqual(await migrationStatus(db), { applied: [], pending: MIGRATIONS });
  });

  it('a second down reverts nothing', async () => {
    assert.deepEqual(await migrateDown(db), []);
    assert.deepEqual(await migrationStatus(db), { applied: [], pending: MIGRATIONS });
  });

  it('up again: recreates the same tables, empty', async () => {
    assert.deepEqual(await migrateLatest(db), MIGRATIONS);
    assert.deepEqual(await tables(db), afterUp);
    for (const table of CORE_TABLES) assert.equal(await db.schema.hasTable(table), true, `${table} exists again`);
    const rows = await db('accounts').count<Array<{ count: string | number }>>({ count: '*' });
    assert.equal(Number(rows[0]?.count), 0, 'the account inserted before down is gone');
    assert.deepEqual(await migrateLatest(db), []);
    assert.deepEqual(await migrationStatus(db), { applied: MIGRATIONS, pending: [] });
  });
});
