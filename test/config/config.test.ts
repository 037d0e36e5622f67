import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig, ConfigError, type Config } from '../../src/config/index.ts';

const COOKIE_KEY = 'k'.repeat(40);
const KEK = randomBytes(32).toString('base64');

/** Asserts `fn` throws a ConfigError whose message satisfies `check`, and returns the message. */
function configError(fn: () => unknown, check: RegExp | string): string {
  let message = '';
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    message = err.message;
    return true;
  });
  if (typeof check === 'string') assert.equal(message, check);
  else assert.match(message, check);
  return message;
}

/** The variable names a schema failure lists, one per "  NAME: problem" line. */
function namedVariables(message: string): string[] {
  return [...message.matchAll(/^ {2}([A-Z0-9_]+): /gm)].map((m) => m[1]!);
}

describe('loadConfig', () => {
  let dataDir: string;
  before(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'custos-config-'));
  });
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  /** A fresh, empty DATA_DIR for one case. */
  const freshDir = () => mkdtempSync(join(dataDir, 'case-'));

  const production = (extra: Record<string, string>) => ({
    NODE_ENV: 'production',
    ISSUER: 'https://auth.example.org',
    DATA_DIR: freshDir(),
    ...extra,
  });

  describe('shutdown', () => {
    const dev = (extra: Record<string, string>) => ({ DATA_DIR: freshDir(), ...extra });
    it('drains for 0 s and waits up to 20 s for requests in flight by default', () => {
      assert.deepEqual(loadConfig(dev({})).shutdown, { drainDelay: 0, grace: 20 });
      assert.deepEqual(loadConfig(dev({ SHUTDOWN_DRAIN_DELAY: '5', SHUTDOWN_GRACE: '60' })).shutdown, { drainDelay: 5, grace: 60 });
    });
    it('refuses a grace period or drain delay out of range, naming the variable', () => {
      assert.deepEqual(namedVariables(configError(() => loadConfig(dev({ SHUTDOWN_GRACE: '0' })), /SHUTDOWN_GRACE/)), ['SHUTDOWN_GRACE']);
      assert.deepEqual(namedVariables(configError(() => loadConfig(dev({ SHUTDOWN_DRAIN_DELAY: '500' })), /SHUTDOWN_DRAIN_DELAY/)), ['SHUTDOWN_DRAIN_DELAY']);
    });
  });

  describe('production secrets', () => {
    it('names both variables when COOKIE_KEYS and KEY_ENCRYPTION_KEY are missing', () => {
      const env = production({});
      configError(() => loadConfig(env), 'NODE_ENV=production requires COOKIE_KEYS and KEY_ENCRYPTION_KEY to be set; refusing to start');
      assert.equal(existsSync(join(env.DATA_DIR, 'secrets.json')), false, 'no secrets are generated in production');
    });

    it('names only COOKIE_KEYS when only it is missing', () => {
      const env = production({ KEY_ENCRYPTION_KEY: KEK });
      configError(() => loadConfig(env), 'NODE_ENV=production requires COOKIE_KEYS to be set; refusing to start');
      assert.equal(existsSync(join(env.DATA_DIR, 'secrets.json')), false);
    });

    it('names only KEY_ENCRYPTION_KEY when only it is missing', () => {
      const env = production({ COOKIE_KEYS: COOKIE_KEY });
      configError(() => loadConfig(env), 'NODE_ENV=production requires KEY_ENCRYPTION_KEY to be set; refusing to start');
      assert.equal(existsSync(join(env.DATA_DIR, 'secrets.json')), false);
    });

    it('treats an empty variable as missing', () => {
      configError(
        () => loadConfig(production({ COOKIE_KEYS: '', KEY_ENCRYPTION_KEY: KEK })),
        'NODE_ENV=production requires COOKIE_KEYS to be set; refusing to start',
      );
    });

    it('starts with both set, uses them, and writes nothing to DATA_DIR', () => {
      const env = production({ COOKIE_KEYS: `${COOKIE_KEY}, ${'o'.repeat(32)}`, KEY_ENCRYPTION_KEY: KEK });
      const logged: string[] = [];
      const config = loadConfig(env, (m) => logged.push(m));
      assert.equal(config.env, 'production');
      assert.deepEqual(config.secrets.cookieKeys, [COOKIE_KEY, 'o'.repeat(32)]);
      assert.deepEqual(config.secrets.keyEncryptionKey, Buffer.from(KEK, 'base64'));
      assert.equal(existsSync(join(env.DATA_DIR, 'secrets.json')), false);
      assert.deepEqual(logged, ['NODE_ENV=production without DATABASE_URL: using the embedded database in DATA_DIR (single instance only)']);
    });
  });

  describe('issuer', () => {
    const secrets = { COOKIE_KEYS: COOKIE_KEY, KEY_ENCRYPTION_KEY: KEK };

    it('refuses an http ISSUER in production', () => {
      configError(
        () => loadConfig(production({ ...secrets, ISSUER: 'http://auth.example.org' })),
        'ISSUER must be an https:// URL when NODE_ENV=production',
      );
    });

    it('refuses the http://localhost default in production', () => {
      const env: Record<string, string> = production(secrets);
      delete env.ISSUER;
      configError(() => loadConfig(env), 'ISSUER must be an https:// URL when NODE_ENV=production');
    });

    it('accepts http outside production and strips trailing slashes', () => {
      const config = loadConfig({ NODE_ENV: 'development', DATA_DIR: freshDir(), ISSUER: 'http://localhost:4000//', ...secrets });
      assert.equal(config.issuer, 'http://localhost:4000');
    });
  });

  describe('malformed values name the variable', () => {
    const base = () => ({ NODE_ENV: 'test', DATA_DIR: freshDir(), COOKIE_KEYS: COOKIE_KEY, KEY_ENCRYPTION_KEY: KEK });
    const cases: Array<[string, Record<string, string>]> = [
      ['PORT', { PORT: 'eighty' }],
      ['PORT', { PORT: '70000' }],
      ['ACCESS_TOKEN_TTL', { ACCESS_TOKEN_TTL: '3601' }],
      ['DATABASE_URL', { DATABASE_URL: 'not a url' }],
      ['DATABASE_URL', { DATABASE_URL: 'mysql://root@127.0.0.1/custos' }],
      ['DATABASE_CONNECT_TIMEOUT', { DATABASE_CONNECT_TIMEOUT: '0' }],
      ['DATABASE_QUERY_TIMEOUT', { DATABASE_QUERY_TIMEOUT: 'soon' }],
      ['NODE_ENV', { NODE_ENV: 'staging' }],
      ['ISSUER', { ISSUER: 'ftp://auth.example.org' }],
    ];
    for (const [variable, extra] of cases) {
      it(`${variable}=${Object.values(extra)[0]}`, () => {
        const message = configError(() => loadConfig({ ...base(), ...extra }), /^invalid configuration:\n/);
        assert.deepEqual(namedVariables(message), [variable]);
      });
    }

    it('lists every bad variable at once', () => {
      const message = configError(() => loadConfig({ ...base(), PORT: '-1', ACCESS_TOKEN_TTL: '3601' }), /^invalid configuration:\n/);
      assert.deepEqual(namedVariables(message).sort(), ['ACCESS_TOKEN_TTL', 'PORT']);
    });

    it('accepts ACCESS_TOKEN_TTL=3600 and a postgres URL', () => {
      const config = loadConfig({ ...base(), ACCESS_TOKEN_TTL: '3600', DATABASE_URL: 'postgres://custos@db.internal:5432/custos' });
      assert.equal(config.ttl.accessToken, 3600);
      assert.deepEqual(config.database, {
        kind: 'postgres',
        url: 'postgres://custos@db.internal:5432/custos',
        poolMax: 10,
        connectTimeout: 5,
        queryTimeout: 20,
      });
    });

    it('takes the database timeouts in seconds', () => {
      const config = loadConfig({ ...base(), DATABASE_URL: 'postgres://custos@db.internal/custos', DATABASE_CONNECT_TIMEOUT: '3', DATABASE_QUERY_TIMEOUT: '60' });
      assert.deepEqual(config.database.kind === 'postgres' && [config.database.connectTimeout, config.database.queryTimeout], [3, 60]);
    });
  });

  describe('argon2 cost', () => {
    const owaspMessage =
      'ARGON2_MEMORY_KIB must be at least 19456 and ARGON2_TIME_COST at least 2 (OWASP minimum for argon2id)';
    const secrets = { COOKIE_KEYS: COOKIE_KEY, KEY_ENCRYPTION_KEY: KEK };

    for (const nodeEnv of ['development', 'production']) {
      it(`refuses less than the OWASP minimum when NODE_ENV=${nodeEnv}`, () => {
        const env = nodeEnv === 'production' ? production(secrets) : { NODE_ENV: nodeEnv, DATA_DIR: freshDir(), ...secrets };
        configError(() => loadConfig({ ...env, ARGON2_MEMORY_KIB: '19455' }), owaspMessage);
        configError(() => loadConfig({ ...env, ARGON2_TIME_COST: '1' }), owaspMessage);
      });
    }

    it('accepts the OWASP minimum in development and a cheap cost under NODE_ENV=test', () => {
      const dev = loadConfig({ NODE_ENV: 'development', DATA_DIR: freshDir(), ...secrets, ARGON2_MEMORY_KIB: '19456', ARGON2_TIME_COST: '2' });
      assert.deepEqual({ ...dev.argon2 }, { memoryKiB: 19456, timeCost: 2, maxConcurrent: 4 });
      const test = loadConfig({ NODE_ENV: 'test', DATA_DIR: freshDir(), ...secrets, ARGON2_MEMORY_KIB: '1024', ARGON2_TIME_COST: '1' });
      assert.deepEqual({ ...test.argon2 }, { memoryKiB: 1024, timeCost: 1, maxConcurrent: 4 });
    });
  });

  describe('development secrets', () => {
    it('generates DATA_DIR/secrets.json once, mode 0600, and reuses it', () => {
      const dir = join(freshDir(), 'nested', 'data');
      const env = { NODE_ENV: 'development', DATA_DIR: dir };
      const logged: string[] = [];
      const first = loadConfig(env, (m) => logged.push(m));
      const file = join(dir, 'secrets.json');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(logged, [
        `generated development secrets (COOKIE_KEYS, KEY_ENCRYPTION_KEY) into ${file}; set them in the environment for production`,
      ]);
      const stored = JSON.parse(readFileSync(file, 'utf8')) as { cookieKeys: string; keyEncryptionKey: string };
      assert.deepEqual(first.secrets.cookieKeys, [stored.cookieKeys]);
      assert.deepEqual(first.secrets.keyEncryptionKey, Buffer.from(stored.keyEncryptionKey, 'base64'));
      assert.equal(first.secrets.keyEncryptionKey.length, 32);

      const second = loadConfig(env, (m) => logged.push(m));
      assert.equal(logged.length, 1, 'nothing generated the second time');
      assert.deepEqual(second.secrets.cookieKeys, first.secrets.cookieKeys);
      assert.deepEqual(second.secrets.keyEncryptionKey, first.secrets.keyEncryptionKey);
      assert.equal(readFileSync(file, 'utf8'), JSON.stringify(stored, null, 2));
    });

    it('reports a damaged secrets file as a configuration error', () => {
      const dir = freshDir();
      writeFileSync(join(dir, 'secrets.json'), '{oops');
      configError(() => loadConfig({ NODE_ENV: 'development', DATA_DIR: dir }), /secrets\.json is damaged/);
      writeFileSync(join(dir, 'secrets.json'), '{"cookieKeys": 1}');
      configError(() => loadConfig({ NODE_ENV: 'development', DATA_DIR: dir }), /secrets\.json is damaged/);
    });

    it('gives each DATA_DIR its own secrets', () => {
      const a = loadConfig({ NODE_ENV: 'development', DATA_DIR: freshDir() });
      const b = loadConfig({ NODE_ENV: 'development', DATA_DIR: freshDir() });
      assert.notDeepEqual(a.secrets.keyEncryptionKey, b.secrets.keyEncryptionKey);
      assert.notDeepEqual(a.secrets.cookieKeys, b.secrets.cookieKeys);
    });

    it('prefers secrets from the environment and generates nothing when both are given', () => {
      const dir = freshDir();
      const config = loadConfig({ NODE_ENV: 'development', DATA_DIR: dir, COOKIE_KEYS: COOKIE_KEY, KEY_ENCRYPTION_KEY: KEK });
      assert.deepEqual(config.secrets.cookieKeys, [COOKIE_KEY]);
      assert.deepEqual(config.secrets.keyEncryptionKey, Buffer.from(KEK, 'base64'));
      assert.equal(existsSync(join(dir, 'secrets.json')), false);
    });
  });

  describe('secret formats', () => {
    const kekMessage = 'KEY_ENCRYPTION_KEY must be 32 random bytes, base64-encoded (openssl rand -base64 32)';
    const env = (kek: string) => ({ NODE_ENV: 'test', DATA_DIR: freshDir(), COOKIE_KEYS: COOKIE_KEY, KEY_ENCRYPTION_KEY: kek });

    it('refuses a KEY_ENCRYPTION_KEY that is not 32 base64 bytes', () => {
      for (const bad of [
        randomBytes(16).toString('base64'),
        randomBytes(31).toString('base64'),
        randomBytes(33).toString('base64'),
        randomBytes(32).toString('hex'),
        'correct horse battery staple, definitely not base64!',
      ]) {
        configError(() => loadConfig(env(bad)), kekMessage);
      }
    });

    it('accepts 32 base64 bytes with or without padding', () => {
      const key = randomBytes(32);
      assert.deepEqual(loadConfig(env(key.toString('base64'))).secrets.keyEncryptionKey, key);
      assert.deepEqual(loadConfig(env(key.toString('base64').replace(/=+$/, ''))).secrets.keyEncryptionKey, key);
    });

    it('refuses cookie keys shorter than 32 characters', () => {
      configError(
        () => loadConfig({ NODE_ENV: 'test', DATA_DIR: freshDir(), COOKIE_KEYS: `${COOKIE_KEY},short`, KEY_ENCRYPTION_KEY: KEK }),
        'COOKIE_KEYS must be a comma-separated list of keys of at least 32 characters each',
      );
    });
  });

  describe('the config object', () => {
    let config: Config;
    before(() => {
      config = loadConfig({ NODE_ENV: 'test', DATA_DIR: freshDir(), COOKIE_KEYS: COOKIE_KEY, KEY_ENCRYPTION_KEY: KEK, FHIR_BASE_URLS: 'https://fhir.example.org/r4/' });
    });

    it('is frozen, with its nested settings', () => {
      for (const part of [config, config.database, config.ttl, config.argon2, config.secrets, config.secrets.cookieKeys, config.fhirBaseUrls]) {
        assert.ok(Object.isFrozen(part));
      }
      const mutable = config as unknown as Record<string, unknown> & { ttl: Record<string, number>; fhirBaseUrls: string[] };
      assert.throws(() => {
        mutable.issuer = 'https://evil.example';
      }, TypeError);
      assert.throws(() => {
        mutable.ttl.accessToken = 86_400;
      }, TypeError);
      assert.throws(() => {
        mutable.fhirBaseUrls.push('https://evil.example');
      }, TypeError);
      assert.equal(config.issuer, 'http://localhost:3000');
      assert.equal(config.ttl.accessToken, 300);
      assert.deepEqual(config.fhirBaseUrls, ['https://fhir.example.org/r4']);
    });
  });
});
