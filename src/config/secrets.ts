/**
 * Installation secrets: the cookie signing keys and the key-encryption key (KEK) that protects
 * signing keys and other secrets at rest. They are never committed and never shared between
 * installations: production must supply them; development generates them once per DATA_DIR.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './errors.ts';

export interface Secrets {
  /** Newest first; the first signs, all verify (so keys can be rotated). */
  readonly cookieKeys: readonly string[];
  /** 32 bytes for AES-256-GCM. */
  readonly keyEncryptionKey: Buffer;
}

interface RawSecrets {
  cookieKeys: string | undefined;
  keyEncryptionKey: string | undefined;
}

const MIN_COOKIE_KEY_LENGTH = 32;

export function parseCookieKeys(raw: string): string[] {
  const keys = raw.split(',').map((k) => k.trim()).filter(Boolean);
  if (keys.length === 0 || keys.some((k) => k.length < MIN_COOKIE_KEY_LENGTH)) {
    throw new ConfigError(`COOKIE_KEYS must be a comma-separated list of keys of at least ${MIN_COOKIE_KEY_LENGTH} characters each`);
  }
  return keys;
}

export function parseKeyEncryptionKey(raw: string): Buffer {
  const key = Buffer.from(raw, 'base64');
  if (key.length !== 32 || key.toString('base64').replace(/=+$/, '') !== raw.trim().replace(/=+$/, '')) {
    throw new ConfigError('KEY_ENCRYPTION_KEY must be 32 random bytes, base64-encoded (openssl rand -base64 32)');
  }
  return key;
}

const DEV_SECRETS_FILE = 'secrets.json';

export function resolveSecrets(
  raw: RawSecrets,
  opts: { production: boolean; dataDir: string; log: (msg: string) => void },
): Secrets {
  if (opts.production) {
    const missing = [
      raw.cookieKeys ? undefined : 'COOKIE_KEYS',
      raw.keyEncryptionKey ? undefined : 'KEY_ENCRYPTION_KEY',
    ].filter(Boolean);
    if (missing.length > 0) {
      throw new ConfigError(`NODE_ENV=production requires ${missing.join(' and ')} to be set; refusing to start`);
    }
  }
  let generated: { cookieKeys: string; keyEncryptionKey: string } | undefined;
  if (!raw.cookieKeys || !raw.keyEncryptionKey) generated = loadOrCreateDevSecrets(opts.dataDir, opts.log);
  return Object.freeze({
    cookieKeys: Object.freeze(parseCookieKeys(raw.cookieKeys ?? generated!.cookieKeys)),
    keyEncryptionKey: parseKeyEncryptionKey(raw.keyEncryptionKey ?? generated!.keyEncryptionKey),
  });
}

function readDevSecrets(file: string): { cookieKeys: string; keyEncryptionKey: string } {
  let stored: unknown;
  try {
    stored = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    stored = undefined;
  }
  const s = stored as { cookieKeys?: unknown; keyEncryptionKey?: unknown } | undefined;
  if (typeof s?.cookieKeys !== 'string' || typeof s.keyEncryptionKey !== 'string') {
    throw new ConfigError(`${file} is damaged; restore it from a backup (without it stored keys cannot be decrypted), or delete it to start over`);
  }
  return { cookieKeys: s.cookieKeys, keyEncryptionKey: s.keyEncryptionKey };
}

function loadOrCreateDevSecrets(dataDir: string, log: (msg: string) => void) {
  const file = join(dataDir, DEV_SECRETS_FILE);
  if (existsSync(file)) return readDevSecrets(file);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secrets = {
    cookieKeys: randomBytes(32).toString('base64url'),
    keyEncryptionKey: randomBytes(32).toString('base64'),
  };
  try {
    writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process starting at the same moment wrote them first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readDevSecrets(file);
    throw err;
  }
  log(`generated development secrets (COOKIE_KEYS, KEY_ENCRYPTION_KEY) into ${file}; set them in the environment for production`);
  return secrets;
}
