/**
 * The admin commands of the CLI: client life cycle, secret rotation, listing with filters,
 * initial access tokens, and account changes. They call the same registry and account service as
 * the admin API, and the audit trail names the operating-system user (`cli:<user>`).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { userInfo } from 'node:os';
import { PassThrough, type Readable } from 'node:stream';
import { runCli } from '../../src/cli/main.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { testEnv } from '../helpers/server.ts';

async function text(stream: Readable): Promise<string> {
  let s = '';
  for await (const chunk of stream) s += String(chunk);
  return s;
}

describe('custos CLI: admin commands', () => {
  let database: TestDatabase;
  let env: Record<string, string>;
  const actor = `cli:${userInfo().username}`;

  before(async () => {
    database = await createTestDatabase();
    env = testEnv(database, 0);
  });
  after(() => database.drop());

  async function cli(argv: string[], stdin = '') {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const input = new PassThrough();
    const out = text(stdout);
    const err = text(stderr);
    input.end(stdin);
    const code = await runCli(argv, { stdout, stderr, stdin: input, env });
    stdout.end();
    stderr.end();
    return { code, stdout: await out, stderr: await err };
  }
  const json = async (argv: string[], stdin = '') => {
    const res = await cli([...argv, '--json'], stdin);
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout) as Record<string, unknown>;
  };

  it('walks a client through its life cycle, audited as the OS user', async () => {
    const created = await json(['client', 'create', '--name', 'CLI App', '--grant-type', 'client_credentials', '--category', 'external', '--verified']);
    const id = String(created.client_id);
    const before = await json(['client', 'show', id]);
    assert.equal(before.category, 'external');
    assert.equal(before.verified, true);
    assert.equal((await json(['client', 'suspend', id, '--reason', 'testing'])).status, 'suspended');
    assert.equal((await json(['client', 'reactivate', id])).status, 'approved');
    const approveAgain = await cli(['client', 'approve', id]);
    assert.equal(approveAgain.code, 1);
    assert.match(approveAgain.stderr, /cannot approve a client that is approved/);
    const rotated = await json(['client', 'rotate-secret', id, '--grace', '300']);
    assert.ok(typeof rotated.client_secret === 'string' && rotated.previous_secret_expires_at);
    assert.equal((await cli(['client', 'rotate-secret', id, '--grace', '90000'])).code, 1);
    const shown = await json(['client', 'show', id]);
    assert.equal(shown.client_name, 'CLI App');
    assert.ok(!JSON.stringify(shown).includes(String(rotated.client_secret)) && !JSON.stringify(shown).includes('hmac'));
    assert.equal((await json(['client', 'retire', id])).status, 'retired');
    assert.equal((await cli(['client', 'show', 'nope'])).code, 1);
    assert.equal((await cli(['client', 'suspend', 'nope'])).code, 1);

    const audit = await json(['audit', 'list', '--client', id]);
    const events = (audit.events ?? audit) as { type: string; actor: string }[];
    assert.deepEqual(events.map((e) => e.type), ['client.retired', 'client.secret_rotated', 'client.reactivated', 'client.suspended', 'client.created']);
    assert.ok(events.every((e) => e.actor === actor));
  });

  it('lists with filters and sorting, and refuses bad ones', async () => {
    await json(['client', 'create', '--name', 'Zed', '--grant-type', 'client_credentials', '--category', 'internal']);
    await json(['client', 'create', '--name', 'Amy', '--grant-type', 'client_credentials', '--category', 'internal']);
    const listed = await json(['client', 'list', '--category', 'internal', '--sort', 'name', '--desc']);
    assert.deepEqual((listed as unknown as { client_name: string }[]).map((c) => c.client_name), ['Zed', 'Amy']);
    const retired = await json(['client', 'list', '--status', 'retired']);
    assert.deepEqual((retired as unknown as { client_name: string }[]).map((c) => c.client_name), ['CLI App']);
    assert.equal((await cli(['client', 'list', '--status', 'gone'])).code, 1);
    assert.equal((await cli(['client', 'list', '--sort', 'secret'])).code, 1);
    assert.equal((await cli(['client', 'create', '--name', 'X', '--grant-type', 'client_credentials', '--category', 'vip'])).code, 1);
    const text = await cli(['client', 'list', '--search', 'Amy']);
    assert.match(text.stdout, /Amy\s+approved\s+internal/);
  });

  it('issues initial access tokens', async () => {
    const issued = await json(['client', 'initial-token', '--expires-in', '600', '--note', 'for a partner']);
    assert.equal(typeof issued.initial_access_token, 'string');
    assert.match(String(issued.registration_endpoint), /\/register$/);
    assert.equal((await cli(['client', 'initial-token', '--expires-in', '5'])).code, 1);
  });

  it('disables, enables, links and resets the second factor of accounts', async () => {
    const created = await json(['user', 'create', 'cli-pat', '--role', 'patient', '--fhir-id', 'p-1', '--password-stdin'], 'correct horse battery staple\n');
    assert.equal((await json(['user', 'disable', 'cli-pat'])).disabled, true);
    assert.equal((await cli(['user', 'disable', 'cli-pat'])).code, 1, 'already disabled');
    assert.equal((await json(['user', 'enable', String(created.id)])).disabled, false);
    assert.equal((await json(['user', 'link', 'cli-pat', 'p-2'])).fhir_patient_id, 'p-2');
    assert.equal((await cli(['user', 'link', 'cli-pat', 'not valid!'])).code, 1);
    assert.equal((await json(['user', 'reset-mfa', 'cli-pat'])).username, 'cli-pat');
    assert.equal((await cli(['user', 'disable', 'nobody'])).code, 1);
    const audit = await json(['audit', 'list', '--type', 'account.']);
    const events = (audit.events ?? audit) as { type: string; actor: string }[];
    assert.deepEqual(events.map((e) => e.type), ['account.mfa_reset', 'account.fhir_linked', 'account.enabled', 'account.disabled', 'account.created']);
    assert.ok(events.every((e) => e.actor === actor));
  });
});
