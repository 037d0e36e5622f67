import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { text } from 'node:stream/consumers';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase, migrateLatest, type Db } from '../../src/db/index.ts';
import { createAuditTrail, MAX_AUDIT_PAGE, InvalidCursorError, type AuditTrail } from '../../src/audit/index.ts';
import { runCli } from '../../src/cli/main.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { startTestServer, testEnv, type TestServer } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf, formActionOf } from '../helpers/browserless.ts';

describe('audit trail storage and hash chain', () => {
  let database: TestDatabase;
  let db: Db;
  let trail: AuditTrail;
  let now = new Date('2026-11-24T09:00:00.000Z');

  before(async () => {
    database = await createTestDatabase();
    db = await openDatabase(loadConfig(testEnv(database, 0)).database);
    await migrateLatest(db);
    trail = createAuditTrail(db, { clock: () => now });
  });
  after(async () => {
    await closeDatabase(db);
    await database.drop();
  });

  it('chains every event and verifies the chain', async () => {
    await trail.record({ type: 'login.success', outcome: 'success', actor: 'acct-1', clientId: 'app-1', ip: '10.0.0.1', details: { acr: 'urn:custos:acr:mfa' } });
    now = new Date('2026-11-24T09:01:00.000Z');
    await trail.record({ type: 'consent.granted', outcome: 'success', actor: 'acct-1', clientId: 'app-1', patientId: 'pat-1', details: { b: 1, a: [1, 'x'], skipped: undefined } });
    assert.equal((await trail.verify()).unsealed, 2, 'not chained until sealed');
    assert.equal(await trail.seal(), 2);
    assert.equal(await trail.seal(), 0, 'nothing left to seal');
    const report = await trail.verify();
    assert.deepEqual({ ok: report.ok, checked: report.checked, unsealed: report.unsealed, problems: report.problems }, { ok: true, checked: 2, unsealed: 0, problems: [] });
    assert.equal(report.head?.seq, 2);
    assert.match(report.head?.hash ?? '', /^[0-9a-f]{64}$/);
  });

  it('writes the event with its action or not at all', async () => {
    const before = (await trail.list({ type: 'client.' }, { limit: 10 })).events.length;
    await assert.rejects(
      db.transaction(async (trx) => {
        await trail.record({ type: 'client.suspended', outcome: 'success', actor: 'admin-1', clientId: 'app-9' }, trx);
        throw new Error('the action failed');
      }),
      /the action failed/,
    );
    assert.equal((await trail.list({ type: 'client.' }, { limit: 10 })).events.length, before, 'rolled back with its action');
    await db.transaction(async (trx) => trail.record({ type: 'client.suspended', outcome: 'success', actor: 'admin-1', clientId: 'app-9' }, trx));
    assert.equal((await trail.list({ type: 'client.' }, { limit: 10 })).events.length, before + 1);
  });

  it('records an event in the same statement as its write: both or neither', async () => {
    const payloads = async () => Number((await db('oidc_payloads').where({ kind: 'AlongTest' }).count<{ n: string }[]>({ n: '*' }))[0]!.n);
    const events = async () => (await trail.list({ type: 'along.' }, { limit: 50 })).events.length;
    const write = (id: string) => db('oidc_payloads').insert({ kind: 'AlongTest', id, payload: { id } });

    await trail.recordAlong(write('one'), { type: 'along.written', outcome: 'success', clientId: 'app-7', details: { n: 1 } });
    assert.equal(await payloads(), 1);
    const [event] = (await trail.list({ type: 'along.' }, { limit: 50 })).events;
    assert.equal(event?.clientId, 'app-7');
    assert.deepEqual(event?.details, { n: 1 });

    // The write fails (the key exists): no event.
    await assert.rejects(trail.recordAlong(write('one'), { type: 'along.written', outcome: 'success' }));
    assert.equal(await events(), 1);
    // The event is refused: no write.
    await db.raw(`alter table audit_events add constraint no_along check (type <> 'along.refused')`);
    await assert.rejects(trail.recordAlong(write('two'), { type: 'along.refused', outcome: 'success' }));
    await db.raw('alter table audit_events drop constraint no_along');
    assert.equal(await payloads(), 1);
    assert.equal(await events(), 1);
  });

  it('refuses UPDATE, DELETE and TRUNCATE on the trail', async () => {
    await trail.seal();
    await assert.rejects(db('audit_events').update({ outcome: 'failure' }).where('id', '>', 0), /append-only/);
    await assert.rejects(db('audit_events').delete().where('id', '>', 0), /append-only/);
    await assert.rejects(db('audit_chain').delete().where('seq', '>', 0), /append-only/);
    await assert.rejects(db.raw('truncate audit_chain, audit_events'), /append-only/);
    assert.equal((await trail.verify()).ok, true);
  });

  it('detects an event changed behind its back, and names the link', async () => {
    await trail.seal();
    const victim = await db('audit_chain').where('seq', 2).first<{ event_id: string | number }>('event_id');
    // Someone with the rights to switch the guard off (a superuser) edits an event.
    await db.raw('alter table audit_events disable trigger audit_events_append_only');
    await db('audit_events').update({ details: JSON.stringify({ b: 2 }) }).where('id', victim!.event_id);
    await db.raw('alter table audit_events enable trigger audit_events_append_only');
    const report = await trail.verify();
    assert.equal(report.ok, false);
    assert.deepEqual(report.problems, [{ seq: 2, eventId: String(victim!.event_id), problem: 'hash_mismatch' }]);
    await db.raw('alter table audit_events disable trigger audit_events_append_only');
    await db('audit_events').update({ details: JSON.stringify({ a: [1, 'x'], b: 1 }) }).where('id', victim!.event_id);
    await db.raw('alter table audit_events enable trigger audit_events_append_only');
    assert.equal((await trail.verify()).ok, true, 'restoring the original content restores the hash');
  });

  it('pages newest first with filters, a hard page cap and opaque cursors', async () => {
    for (let i = 0; i < 7; i += 1) {
      now = new Date(Date.UTC(2026, 10, 24, 10, i));
      await trail.record({ type: i % 2 ? 'token.issued' : 'token.refreshed', outcome: 'success', clientId: 'app-2', patientId: `pat-${i % 3}` });
    }
    const first = await trail.list({ clientId: 'app-2' }, { limit: 3 });
    assert.equal(first.events.length, 3);
    assert.ok(first.nextCursor);
    const second = await trail.list({ clientId: 'app-2' }, { limit: 3, cursor: first.nextCursor });
    const third = await trail.list({ clientId: 'app-2' }, { limit: 3, cursor: second.nextCursor });
    assert.equal(third.events.length, 1);
    assert.equal(third.nextCursor, undefined);
    const ids = [...first.events, ...second.events, ...third.events].map((e) => Number(e.id));
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first');
    assert.equal(new Set(ids).size, 7, 'no event twice across pages');

    assert.equal((await trail.list({ clientId: 'app-2', type: 'token.issued' }, { limit: 50 })).events.length, 3);
    assert.equal((await trail.list({ clientId: 'app-2', type: 'token.' }, { limit: 50 })).events.length, 7);
    assert.equal((await trail.list({ type: 'token%' }, { limit: 50 })).events.length, 0, 'LIKE wildcards are not wildcards');
    assert.equal((await trail.list({ patientId: 'pat-0' }, { limit: 50 })).events.length, 3);
    const window = await trail.list({ from: new Date(Date.UTC(2026, 10, 24, 10, 2)), to: new Date(Date.UTC(2026, 10, 24, 10, 4)) }, { limit: 50 });
    assert.deepEqual(window.events.map((e) => e.occurredAt.toISOString()), ['2026-11-24T10:03:00.000Z', '2026-11-24T10:02:00.000Z']);

    for (let i = 0; i < MAX_AUDIT_PAGE + 5; i += 1) await trail.record({ type: 'bulk', outcome: 'success' });
    assert.equal((await trail.list({}, { limit: 10_000 })).events.length, MAX_AUDIT_PAGE);
    await assert.rejects(trail.list({}, { limit: 10, cursor: 'not-a-cursor' }), InvalidCursorError);
    await assert.rejects(trail.list({}, { limit: 10, cursor: Buffer.from("a:1; drop table x").toString('base64url') }), InvalidCursorError);
  });
});

describe('custos audit verify and list', () => {
  let database: TestDatabase;
  let env: Record<string, string>;
  const cli = async (...argv: string[]) => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const code = await runCli(argv, { stdout, stderr, stdin: new PassThrough(), env });
    stdout.end();
    stderr.end();
    return { code, stdout: await text(stdout), stderr: await text(stderr) };
  };

  before(async () => {
    database = await createTestDatabase();
    env = testEnv(database, 0);
    const db = await openDatabase(loadConfig(env).database);
    await migrateLatest(db);
    const trail = createAuditTrail(db);
    for (let i = 0; i < 3; i += 1) await trail.record({ type: 'login.failure', outcome: 'failure', ip: '10.1.1.1' });
    await closeDatabase(db);
  });
  after(() => database.drop());

  it('seals pending events and reports an intact trail', async () => {
    const res = await cli('audit', 'verify', '--json');
    assert.equal(res.code, 0, res.stderr);
    const report = JSON.parse(res.stdout) as { ok: boolean; checked: number; unsealed: number };
    assert.deepEqual({ ok: report.ok, checked: report.checked, unsealed: report.unsealed }, { ok: true, checked: 3, unsealed: 0 });
    assert.match((await cli('audit', 'verify')).stdout, /intact: 3 events chained; head 3:[0-9a-f]{64}/);
  });

  it('exits 1 and names the altered link', async () => {
    const db = await openDatabase(loadConfig(env).database);
    await db.raw('alter table audit_events disable trigger audit_events_append_only');
    await db.raw(`update audit_events set ip = '10.6.6.6' where id = (select event_id from audit_chain where seq = 2)`);
    await db.raw('alter table audit_events enable trigger audit_events_append_only');
    await closeDatabase(db);
    const res = await cli('audit', 'verify');
    assert.equal(res.code, 1);
    assert.match(res.stdout, /altered: 1 problem\(s\) in 3 events\n {2}link 2 \(event \d+\): hash mismatch/);
    assert.match(res.stderr, /audit trail verification failed/);
  });

  it('lists with filters and refuses bad input clearly', async () => {
    const res = await cli('audit', 'list', '--type', 'login.', '--limit', '2', '--json');
    assert.equal(res.code, 0, res.stderr);
    const page = JSON.parse(res.stdout) as { events: { type: string; ip: string }[]; next_cursor: string | null };
    assert.equal(page.events.length, 2);
    assert.ok(page.next_cursor);
    const rest = JSON.parse((await cli('audit', 'list', '--type', 'login.', '--cursor', page.next_cursor!, '--json')).stdout) as typeof page;
    assert.equal(rest.events.length, 1);
    assert.equal(rest.next_cursor, null);
    const badTime = await cli('audit', 'list', '--from', 'yesterday');
    assert.equal(badTime.code, 1);
    assert.match(badTime.stderr, /--from must be an ISO 8601 date-time/);
    const badCursor = await cli('audit', 'list', '--cursor', 'zzz');
    assert.equal(badCursor.code, 1);
    assert.match(badCursor.stderr, /the cursor is not one this server gave out/);
    assert.match((await cli('audit', 'list', '--limit', '100000')).stderr, /--limit must be a whole number from 1 to 500/);
  });
});

describe('login events reach the audit trail', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('records failures without the typed name, and successes with the account, client and IP', async () => {
    const fay = await server.createAccount({ username: 'fay', role: 'patient', fhirId: 'pat-f' });
    const client = await server.createClient({ client_name: 'Audited App', redirect_uris: [REDIRECT_URI], scope: 'openid' });
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const agent = new UserAgent();
    const login = await agent.follow((await startCodeFlow(config)).url.toString(), server.issuer);
    const bad = await agent.request(new URL(formActionOf(login.body, 'login'), server.issuer).toString(), {
      form: { _csrf: csrfTokenOf(login.body), username: 'fay', password: 'hunter2-typed-by-mistake' },
    });
    assert.equal(bad.status, 401);
    const done = await authorize(agent, (await startCodeFlow(config)).url.toString(), server.issuer, { username: 'fay', password: fay.password });
    assert.match(done.location ?? '', /code=/);

    const { audit } = server.running.services;
    const events = (await audit.list({ clientId: client.clientId }, { limit: 50 })).events;
    const failure = events.find((e) => e.type === 'login.failure');
    assert.ok(failure);
    assert.equal(failure.outcome, 'failure');
    assert.equal(failure.actor, null);
    assert.match(failure.ip ?? '', /127\.0\.0\.1/);
    assert.doesNotMatch(JSON.stringify(failure), /fay|hunter2/);
    const success = events.find((e) => e.type === 'login.success');
    assert.equal(success?.actor, fay.id);
    assert.equal(success?.details.acr, 'urn:custos:acr:password');
    assert.ok(events.some((e) => e.type === 'consent.granted' && e.actor === fay.id));
    await audit.seal();
    assert.equal((await audit.verify()).ok, true);
  });
});

describe('token events commit with their tokens', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('stores no token whose event could not be written, and an event for every token stored', async () => {
    const client = await server.createClient({ client_name: 'Backend', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const config = await discover(server.issuer, client.clientId, client.clientSecret);
    const { db, audit } = server.running.services;
    const tokens = async () => Number((await db('oidc_payloads').where({ kind: 'ClientCredentials' }).count<{ n: string }[]>({ n: '*' }))[0]!.n);
    // The audit trail refuses the event: the token must not exist either.
    await db.raw(`alter table audit_events add constraint no_tokens_today check (type <> 'token.issued')`);
    await assert.rejects(oidcGrant(config));
    assert.equal(await tokens(), 0, 'no token without its event');
    await db.raw('alter table audit_events drop constraint no_tokens_today');
    await oidcGrant(config);
    assert.equal(await tokens(), 1);
    const events = (await audit.list({ clientId: client.clientId, type: 'token.issued' }, { limit: 10 })).events;
    assert.equal(events.length, 1);
    assert.equal(events[0]?.details.grant_type, 'client_credentials');
    assert.equal(events[0]?.actor, `client:${client.clientId}`);
    assert.match(events[0]?.ip ?? '', /127\.0\.0\.1/);
  });
});

function oidcGrant(config: oidc.Configuration) {
  return oidc.clientCredentialsGrant(config, { scope: 'custos:introspect' });
}
