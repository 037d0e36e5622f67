import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PassThrough } from 'node:stream';
import { text } from 'node:stream/consumers';
import { runCli } from '../../src/cli/main.ts';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase } from '../../src/db/index.ts';
import { openServices, type Services } from '../../src/main.ts';
import { createLogger } from '../../src/logging/index.ts';
import { ensureSigningKeys } from '../../src/keys/index.ts';
import { rotationTiming } from '../../src/oidc/index.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { testEnv, TEST_PASSWORD } from '../helpers/server.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MIGRATIONS = readdirSync(join(ROOT, 'migrations'))
  .filter((f) => /^\d{3}_[a-z0-9_]+\.ts$/.test(f))
  .sort();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

interface AccountJson {
  id: string;
  username: string;
  role: string;
  fhir_patient_id: string | null;
  fhir_practitioner_id: string | null;
  [key: string]: unknown;
}

interface ClientJson {
  client_id: string;
  client_name: string;
  client_secret?: string;
  [key: string]: unknown;
}

interface KeyJson {
  kid: string;
  alg: string;
  created_at: string;
  activates_at: string;
  retire_at: string | null;
}

describe('custos CLI', () => {
  let database: TestDatabase;
  let env: Record<string, string>;

  before(async () => {
    database = await createTestDatabase();
    env = testEnv(database, 0);
  });
  after(() => database.drop());

  /** Runs the CLI in this process, as `custos ...argv` with `stdin` piped in. */
  async function cli(argv: string[], stdin = ''): Promise<Result> {
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

  /** Runs the real binary in a child process. */
  async function spawnCli(argv: string[], stdin = ''): Promise<Result> {
    const child = spawn(process.execPath, ['src/cli/main.ts', ...argv], {
      cwd: ROOT,
      env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out = text(child.stdout);
    const err = text(child.stderr);
    child.stdin.end(stdin);
    const code = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c) => resolve(c ?? -1));
    });
    return { code, stdout: await out, stderr: await err };
  }

  /** Runs a command that must succeed and returns its parsed JSON output. */
  async function json<T>(argv: string[], stdin = ''): Promise<T> {
    const r = await cli(argv, stdin);
    assert.equal(r.code, 0, `custos ${argv.join(' ')} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  /** Runs a command that must fail and checks its exit code and message. */
  async function fails(argv: string[], expected: RegExp | string, opts: { stdin?: string; code?: number } = {}): Promise<Result> {
    const r = await cli(argv, opts.stdin);
    assert.equal(r.code, opts.code ?? 1, `custos ${argv.join(' ')} should fail; stdout: ${r.stdout}`);
    if (typeof expected === 'string') assert.equal(r.stderr, expected);
    else assert.match(r.stderr, expected);
    assert.equal(r.stdout, '', 'nothing printed on stdout');
    return r;
  }

  const listAccounts = () => json<AccountJson[]>(['user', 'list', '--json']);
  const listClients = () => json<ClientJson[]>(['client', 'list', '--json']);
  const listKeys = () => json<KeyJson[]>(['keys', 'list', '--json']);

  /** Opens the same services the CLI uses, for checks the CLI cannot make itself. */
  async function withServices<T>(fn: (services: Services) => Promise<T>): Promise<T> {
    const services = await openServices(loadConfig(env), createLogger('silent'));
    try {
      return await fn(services);
    } finally {
      await closeDatabase(services.db);
    }
  }

  /** Asserts that the failing command `run` left accounts and clients exactly as they were. */
  async function writesNothing(run: () => Promise<unknown>): Promise<void> {
    const accounts = await listAccounts();
    const clients = await listClients();
    await run();
    assert.deepEqual(await listAccounts(), accounts, 'no account written');
    assert.deepEqual(await listClients(), clients, 'no client written');
  }

  describe('migrate', () => {
    it('--status --json lists every migration as pending on a fresh database', async () => {
      assert.deepEqual(await json(['migrate', '--status', '--json']), { applied: [], pending: MIGRATIONS });
    });

    it('applies the pending migrations once', async () => {
      assert.deepEqual(await json(['migrate', '--json']), { applied: MIGRATIONS });
      assert.deepEqual(await json(['migrate', '--status', '--json']), { applied: MIGRATIONS, pending: [] });
      assert.deepEqual(await json(['migrate', '--json']), { applied: [] });
      assert.deepEqual(await cli(['migrate']), { code: 0, stdout: 'database is up to date\n', stderr: '' });
    });
  });

  describe('user', () => {
    it('creates a patient with --fhir-id, reading the password from stdin', async () => {
      const alice = await json<AccountJson>(
        ['user', 'create', 'alice', '--role', 'patient', '--fhir-id', 'pat-123', '--display-name', 'Alice Liddell', '--password-stdin', '--json'],
        `${TEST_PASSWORD}\n`,
      );
      assert.match(alice.id, /^[0-9a-f-]{36}$/);
      assert.deepEqual(
        { ...alice, id: undefined, created_at: undefined },
        {
          id: undefined,
          username: 'alice',
          role: 'patient',
          display_name: 'Alice Liddell',
          email: null,
          fhir_patient_id: 'pat-123',
          fhir_practitioner_id: null,
          disabled: false,
          created_at: undefined,
        },
      );
      // The trailing newline is not part of the password.
      const verified = await withServices(({ accounts }) => accounts.verifyCredentials('alice', TEST_PASSWORD));
      assert.equal(verified?.id, alice.id);
      const withNewline = await withServices(({ accounts }) => accounts.verifyCredentials('alice', `${TEST_PASSWORD}\n`));
      assert.equal(withNewline, undefined);
    });

    it('creates an admin (text output)', async () => {
      const r = await cli(['user', 'create', 'root-admin', '--role', 'admin', '--password-stdin'], TEST_PASSWORD);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^created admin "root-admin" \(id [0-9a-f-]{36}\)\n$/);
    });

    it('creates a practitioner through the real binary', async () => {
      const r = await spawnCli(
        ['user', 'create', 'dr-carol', '--role', 'practitioner', '--fhir-id', 'prac-7', '--password-stdin', '--json'],
        `${TEST_PASSWORD}\n`,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      const carol = JSON.parse(r.stdout) as AccountJson;
      assert.equal(carol.role, 'practitioner');
      assert.equal(carol.fhir_practitioner_id, 'prac-7');
      assert.equal(carol.fhir_patient_id, null);
    });

    it('user list --json shows them, ordered by username, without any password hash', async () => {
      const r = await cli(['user', 'list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const list = JSON.parse(r.stdout) as AccountJson[];
      assert.deepEqual(
        list.map((a) => [a.username, a.role, a.fhir_patient_id ?? a.fhir_practitioner_id]),
        [
          ['alice', 'patient', 'pat-123'],
          ['dr-carol', 'practitioner', 'prac-7'],
          ['root-admin', 'admin', null],
        ],
      );
      for (const account of list) assert.ok(!Object.keys(account).some((k) => /password|hash/i.test(k)), Object.keys(account).join());
      assert.doesNotMatch(r.stdout, /\$argon2|password/i);
      const plain = await cli(['user', 'list']);
      assert.doesNotMatch(plain.stdout, /\$argon2/);
      assert.match(plain.stdout, /^USERNAME +ROLE +FHIR +STATUS +ID\nalice +patient +pat-123 +active +[0-9a-f-]{36}\n/);
    });

    it('pages with --limit and --after', async () => {
      const page = await json<AccountJson[]>(['user', 'list', '--limit', '1', '--after', 'alice', '--json']);
      assert.deepEqual(page.map((a) => a.username), ['dr-carol']);
    });

    describe('refuses bad input and writes nothing', () => {
      it('an unknown role', async () => {
        await writesNothing(() =>
          fails(['user', 'create', 'mallory', '--role', 'superuser', '--fhir-id', 'pat-9', '--password-stdin'], /^error: role: Invalid option: expected one of "patient"\|"practitioner"\|"admin"\n$/, {
            stdin: TEST_PASSWORD,
          }),
        );
      });

      it('a patient without --fhir-id', async () => {
        await writesNothing(() =>
          fails(['user', 'create', 'bob', '--role', 'patient', '--password-stdin'], 'error: fhirId: a patient account must be linked to a FHIR Patient id\n', {
            stdin: TEST_PASSWORD,
          }),
        );
      });

      it('a password shorter than 12 characters', async () => {
        await writesNothing(() =>
          fails(['user', 'create', 'bob', '--role', 'admin', '--password-stdin'], 'error: password: must be at least 12 characters\n', {
            stdin: 'short pass\n',
          }),
        );
      });

      it('a username taken in another case', async () => {
        await writesNothing(() =>
          fails(['user', 'create', 'Alice', '--role', 'admin', '--password-stdin'], 'error: username "Alice" is already taken\n', {
            stdin: TEST_PASSWORD,
          }),
        );
        const alice = await withServices(({ accounts }) => accounts.verifyCredentials('alice', TEST_PASSWORD));
        assert.equal(alice?.role, 'patient', 'the existing account is untouched');
      });

      it('a bad role through the real binary', async () => {
        await writesNothing(async () => {
          const r = await spawnCli(['user', 'create', 'mallory', '--role', 'root', '--password-stdin'], TEST_PASSWORD);
          assert.equal(r.code, 1);
          assert.equal(r.stdout, '');
          assert.match(r.stderr, /^error: role: Invalid option: expected one of "patient"\|"practitioner"\|"admin"\n$/);
        });
      });
    });
  });

  describe('client', () => {
    const secrets: string[] = [];

    /** The stored secret hash of a client, read straight from the database. */
    const secretHash = (clientId: string) =>
      withServices(async ({ db, clients }) => {
        const row: { secret_hash: string | null } = await db('clients').select('secret_hash').where({ client_id: clientId }).first();
        return { hash: row.secret_hash, verify: (secret: string) => row.secret_hash !== null && clients.verifySecret(row.secret_hash, secret) };
      });

    it('creates a confidential client from flags and prints its secret once', async () => {
      const created = await json<ClientJson>([
        'client', 'create',
        '--name', 'Flag App',
        '--redirect-uri', 'https://app.example.org/callback',
        '--redirect-uri', 'http://127.0.0.1:8080/callback',
        '--grant-type', 'authorization_code',
        '--grant-type', 'refresh_token',
        '--scope', 'openid fhirUser launch/patient patient/*.rs',
        '--json',
      ]);
      assert.match(created.client_id, /^[A-Za-z0-9_-]{22}$/);
      assert.match(created.client_secret ?? '', /^[A-Za-z0-9_-]{43}$/);
      assert.equal(created.client_name, 'Flag App');
      assert.deepEqual(created.redirect_uris, ['https://app.example.org/callback', 'http://127.0.0.1:8080/callback']);
      assert.deepEqual(created.grant_types, ['authorization_code', 'refresh_token']);
      assert.equal(created.token_endpoint_auth_method, 'client_secret_basic');
      assert.equal(created.scope, 'openid fhirUser launch/patient patient/*.rs');
      const stored = await secretHash(created.client_id);
      assert.ok(stored.verify(created.client_secret!), 'the printed secret is the one stored');
      assert.ok(!stored.hash!.includes(created.client_secret!), 'only a hash is stored');
      secrets.push(created.client_secret!);
    });

    it('creates a client from an RFC 7591 metadata file', async () => {
      const file = join(database.dataDir, 'client.json');
      const metadata = {
        client_name: 'File App',
        redirect_uris: ['https://file.example.org/cb'],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
        scope: 'openid profile',
        client_uri: 'https://file.example.org',
        contacts: ['ops@file.example.org'],
      };
      writeFileSync(file, JSON.stringify(metadata));
      const created = await json<ClientJson>(['client', 'create', '--file', file, '--json']);
      const { client_id: _id, client_secret, status, created_at: _at, ...echoed } = created;
      assert.deepEqual(echoed, metadata);
      assert.equal(status, 'approved');
      assert.match(client_secret ?? '', /^[A-Za-z0-9_-]{43}$/);
      assert.ok((await secretHash(created.client_id)).verify(client_secret!));
      assert.ok(!secrets.includes(client_secret!), 'every client gets its own secret');
      secrets.push(client_secret!);
    });

    it('creates a public client with no secret at all', async () => {
      const file = join(database.dataDir, 'public.json');
      writeFileSync(file, JSON.stringify({ client_name: 'SPA', redirect_uris: ['https://spa.example.org/'], token_endpoint_auth_method: 'none' }));
      const created = await json<ClientJson>(['client', 'create', '--file', file, '--json']);
      assert.equal(created.token_endpoint_auth_method, 'none');
      assert.equal('client_secret' in created, false);
      assert.deepEqual(await secretHash(created.client_id).then((s) => s.hash), null);
    });

    it('prints the secret in text output with a warning', async () => {
      const r = await cli(['client', 'create', '--name', 'Service', '--grant-type', 'client_credentials', '--scope', 'system/Patient.rs']);
      assert.equal(r.code, 0, r.stderr);
      const match = /^created client "Service"\nclient_id: +(\S+)\nclient_secret: (\S+)\nStore the secret now: it is not shown again\.\n$/.exec(r.stdout);
      assert.ok(match, r.stdout);
      assert.ok((await secretHash(match[1]!)).verify(match[2]!));
      secrets.push(match[2]!);
    });

    it('client list --json never includes a secret or its hash', async () => {
      const r = await cli(['client', 'list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const list = JSON.parse(r.stdout) as ClientJson[];
      assert.deepEqual(list.map((c) => c.client_name).sort(), ['File App', 'Flag App', 'SPA', 'Service']);
      assert.deepEqual(list.map((c) => c.client_id), list.map((c) => c.client_id).sort(), 'ordered by client_id');
      for (const client of list) assert.ok(!Object.keys(client).some((k) => /secret|hash/i.test(k)), Object.keys(client).join());
      assert.equal(secrets.length, 3);
      for (const secret of secrets) assert.ok(!r.stdout.includes(secret));
      assert.doesNotMatch(r.stdout, /hmac-sha256/);
    });

    it('client list from the real binary sees the same clients, still without secrets', async () => {
      const r = await spawnCli(['client', 'list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), await listClients());
      for (const secret of secrets) assert.ok(!r.stdout.includes(secret));
      assert.doesNotMatch(r.stdout, /hmac-sha256/);
    });

    describe('refuses bad input and writes nothing', () => {
      const file = (name: string, content: string) => {
        const path = join(database.dataDir, name);
        writeFileSync(path, content);
        return path;
      };

      it('an http redirect URI on a host that is not loopback', async () => {
        await writesNothing(() =>
          fails(
            ['client', 'create', '--name', 'Bad', '--redirect-uri', 'http://app.example.org/cb'],
            'error: redirect_uris.0: "http://app.example.org/cb" must use https (http is allowed only for loopback addresses)\n',
          ),
        );
      });

      it('a redirect URI with a fragment', async () => {
        await writesNothing(() =>
          fails(
            ['client', 'create', '--name', 'Bad', '--redirect-uri', 'https://app.example.org/cb#frag'],
            'error: redirect_uris.0: "https://app.example.org/cb#frag" must not contain a fragment\n',
          ),
        );
      });

      it('a --file that is not valid JSON', async () => {
        const path = file('broken.json', '{"client_name": "Broken",');
        await writesNothing(() => fails(['client', 'create', '--file', path], `error: ${path} is not valid JSON\n`));
      });

      it('a --file that is JSON but not an object', async () => {
        const path = file('array.json', '[{"client_name": "Array"}]');
        await writesNothing(() => fails(['client', 'create', '--file', path], 'error: the metadata file must hold a JSON object\n'));
      });

      it('a --file that does not exist', async () => {
        const path = join(database.dataDir, 'missing.json');
        await writesNothing(() => fails(['client', 'create', '--file', path], `error: cannot read ${path}\n`));
      });

      it('a --file with an unknown metadata field', async () => {
        const path = file(
          'unknown.json',
          JSON.stringify({ client_name: 'Unknown', redirect_uris: ['https://u.example.org/cb'], software_statement: 'eyJ...' }),
        );
        await writesNothing(() => fails(['client', 'create', '--file', path], /^error: Unrecognized key: "software_statement"\n$/));
      });

      it('both --file and --name', async () => {
        const path = file('both.json', JSON.stringify({ client_name: 'Both', redirect_uris: ['https://b.example.org/cb'] }));
        await writesNothing(() =>
          fails(['client', 'create', '--file', path, '--name', 'Both'], 'error: use either --file or metadata flags, not both\n'),
        );
      });

      it('client_credentials with token_endpoint_auth_method none', async () => {
        await writesNothing(() =>
          fails(
            ['client', 'create', '--name', 'Public Service', '--grant-type', 'client_credentials', '--auth-method', 'none'],
            'error: grant_types: client_credentials needs a confidential client (not token_endpoint_auth_method "none")\n',
          ),
        );
      });

      it('private_key_jwt without jwks or jwks_uri', async () => {
        await writesNothing(() =>
          fails(
            ['client', 'create', '--name', 'JWT Service', '--grant-type', 'client_credentials', '--auth-method', 'private_key_jwt'],
            'error: jwks: private_key_jwt needs exactly one of jwks or jwks_uri\n',
          ),
        );
      });

      it('no --name and no --file', async () => {
        await writesNothing(() =>
          fails(['client', 'create', '--redirect-uri', 'https://app.example.org/cb'], 'error: --name is required (or use --file)\n'),
        );
      });
    });
  });

  describe('keys', () => {
    it('keys list --json is empty until a server (or a rotation) creates keys', async () => {
      assert.deepEqual(await listKeys(), []);
    });

    it('keys list --json shows the keys a server creates, none retiring', async () => {
      const kids = await withServices(({ db, config }) => ensureSigningKeys(db, config.secrets.keyEncryptionKey));
      const list = await listKeys();
      assert.deepEqual(list.map((k) => k.kid).sort(), [...kids].sort());
      assert.deepEqual(list.map((k) => k.alg).sort(), ['ES256', 'RS256']);
      for (const key of list) assert.equal(key.retire_at, null);
      assert.doesNotMatch(JSON.stringify(list), /"d"|private/);
    });

    it('keys rotate --json adds new keys and schedules the previous ones to retire', async () => {
      const previous = await listKeys();
      const timing = rotationTiming(loadConfig(env));
      const rotated = await json<{ created: Array<{ kid: string; alg: string; activates_at: string }>; previous_keys_retire_in_seconds: number }>([
        'keys', 'rotate', '--json',
      ]);
      assert.deepEqual(rotated.created.map((k) => k.alg).sort(), ['ES256', 'RS256']);
      const previousKids = previous.map((k) => k.kid);
      for (const key of rotated.created) assert.ok(!previousKids.includes(key.kid), `${key.kid} is new`);
      assert.equal(rotated.previous_keys_retire_in_seconds, timing.activateAfterSeconds + timing.maxSignedLifetimeSeconds);

      const after = await listKeys();
      assert.equal(after.length, 4);
      const fresh = after.filter((k) => !previousKids.includes(k.kid));
      const old = after.filter((k) => previousKids.includes(k.kid));
      assert.deepEqual(fresh.map((k) => k.kid).sort(), rotated.created.map((k) => k.kid).sort());
      for (const key of fresh) {
        assert.equal(key.retire_at, null);
        // Published now, signing only once every instance has had time to load it.
        assert.equal(Date.parse(key.activates_at) - Date.parse(key.created_at), timing.activateAfterSeconds * 1000);
      }
      const rotatedAt = Date.parse(fresh[0]!.created_at);
      for (const key of old) {
        assert.ok(key.retire_at, `${key.kid} retires`);
        const retireAt = Date.parse(key.retire_at);
        assert.equal(retireAt - rotatedAt, rotated.previous_keys_retire_in_seconds * 1000, 'retires when what it signed has expired');
        assert.ok(retireAt > Date.now(), 'retire_at is in the future');
      }
    });
  });

  describe('bad commands and options', () => {
    it('an unknown command exits 2 with commander\'s message', async () => {
      await writesNothing(async () => {
        const r = await fails(['frobnicate'], /^error: unknown command 'frobnicate'\n/, { code: 2 });
        assert.match(r.stderr, /\nCommands:\n/);
      });
    });

    it('an unknown subcommand exits 2', async () => {
      await writesNothing(() => fails(['user', 'delete', 'alice'], /^error: unknown command 'delete'\n/, { code: 2 }));
    });

    for (const group of ['user', 'client']) {
      it(`${group} list --limit 0 and --limit 9999 are refused`, async () => {
        await writesNothing(async () => {
          await fails([group, 'list', '--limit', '0', '--json'], 'error: --limit must be a whole number from 1 to 500\n');
          await fails([group, 'list', '--limit', '9999', '--json'], 'error: --limit must be a whole number from 1 to 500\n');
          await fails([group, 'list', '--limit', 'ten', '--json'], 'error: --limit must be a whole number from 1 to 500\n');
        });
      });
    }
  });

  describe('the embedded database is one process at a time', () => {
    it('a second process gets a clear "in use by process" error', async (t) => {
      if (database.kind === 'postgres') {
        t.skip('PostgreSQL serves many processes: there is no data-folder lock to test');
        return;
      }
      const config = loadConfig(env);
      assert.equal(config.database.kind, 'pglite');
      const accounts = await listAccounts();
      const db = await openDatabase(config.database);
      let write: Result;
      let read: Result;
      try {
        write = await spawnCli(['user', 'create', 'dave', '--role', 'admin', '--password-stdin'], TEST_PASSWORD);
        read = await spawnCli(['user', 'list', '--json']);
      } finally {
        await closeDatabase(db);
      }
      const dataDir = config.database.kind === 'pglite' ? config.database.dataDir : '';
      const expected =
        `error: the embedded database in ${dataDir} is in use by process ${process.pid} (is the server running?). ` +
        'Stop it first, or point DATABASE_URL at a PostgreSQL server to share one database between processes.\n';
      for (const r of [write, read]) {
        assert.equal(r.code, 1);
        assert.equal(r.stdout, '');
        assert.equal(r.stderr, expected);
      }
      assert.deepEqual(await listAccounts(), accounts, 'dave was not created');
      // Released: the CLI works again.
      assert.equal((await spawnCli(['user', 'list', '--json'])).code, 0);
    });
  });
});
