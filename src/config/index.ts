/**
 * Configuration: the environment turned into one validated, frozen object.
 * This module is the only reader of `process.env` in Custos.
 */
import { z } from 'zod';
import { resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolveSecrets, type Secrets } from './secrets.ts';
import { ConfigError } from './errors.ts';

export { ConfigError } from './errors.ts';

/** Where the development demo's pseudo FHIR server lives, under the issuer. */
export const DEMO_FHIR_PATH = '/demo/fhir';

export type { Secrets } from './secrets.ts';
export { loadFhirProxyConfig, FHIR_PROXY_FLAGS, type FhirProxyConfig } from './fhir-proxy.ts';

const seconds = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  ISSUER: z.url({ protocol: /^https?$/ }).optional(),
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  DATABASE_POOL_MAX: z.coerce.number().int().min(1).max(100).default(10),
  DATABASE_CONNECT_TIMEOUT: seconds(1, 120, 5),
  DATABASE_QUERY_TIMEOUT: seconds(1, 600, 20),
  DATA_DIR: z.string().min(1).default('./data'),
  COOKIE_KEYS: z.string().optional(),
  KEY_ENCRYPTION_KEY: z.string().optional(),
  ACCESS_TOKEN_TTL: seconds(30, 3600, 300),
  ACCESS_TOKEN_FORMAT: z.enum(['opaque', 'jwt']).default('opaque'),
  AUTHORIZATION_CODE_TTL: seconds(10, 600, 60),
  ID_TOKEN_TTL: seconds(60, 3600, 3600),
  REFRESH_TOKEN_TTL: seconds(3600, 365 * 86400, 90 * 86400),
  GRANT_TTL: seconds(3600, 5 * 365 * 86400, 365 * 86400),
  SESSION_TTL: seconds(300, 30 * 86400, 8 * 3600),
  INTERACTION_TTL: seconds(60, 3600, 1800),
  SIGNING_KEY_REFRESH_INTERVAL: seconds(1, 3600, 60),
  ACCOUNT_IDLE_TIMEOUT: seconds(60, 3600, 900),
  ACCOUNT_SESSION_TTL: seconds(300, 86400, 8 * 3600),
  ARGON2_MEMORY_KIB: z.coerce.number().int().min(1024).max(1024 * 1024).default(19456),
  ARGON2_TIME_COST: z.coerce.number().int().min(1).max(10).default(2),
  ARGON2_MAX_CONCURRENT: z.coerce.number().int().min(1).max(64).default(4),
  // true, false, or the comma-separated addresses / CIDR ranges of the proxies to believe.
  TRUST_PROXY: z.string().default('false'),
  TLS_CERT_FILE: z.string().min(1).optional(),
  TLS_KEY_FILE: z.string().min(1).optional(),
  FHIR_BASE_URLS: z.string().optional(),
  MFA_FOR_WRITE_SCOPES: z.enum(['true', 'false']).default('true'),
  MFA_REQUIRED_ROLES: z
    .string()
    .default('admin')
    .refine((v) => v.split(',').map((r) => r.trim()).filter(Boolean).every((r) => ['patient', 'practitioner', 'admin'].includes(r)), {
      message: 'must be a comma-separated list of patient, practitioner, admin',
    }),
  ADMIN_REAUTH_MAX_AGE: seconds(60, 3600, 600),
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).optional(),
  RATE_LIMIT_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9_-]{1,40}$/).default('custos'),
  RATE_LIMIT_OAUTH_PER_IP: z.coerce.number().int().min(0).max(1_000_000).default(600),
  RATE_LIMIT_PER_CLIENT: z.coerce.number().int().min(0).max(1_000_000).default(1200),
  RATE_LIMIT_PAGES_PER_IP: z.coerce.number().int().min(0).max(1_000_000).default(300),
  METRICS_TOKEN: z.string().min(32, { error: 'METRICS_TOKEN must be at least 32 characters' }).optional(),
  CLIENT_STALE_DAYS: z.coerce.number().int().min(1).max(3650).default(90),
  CLIENT_STALE_AUTO_SUSPEND: z.enum(['true', 'false']).default('false'),
  REGISTRATION_OPEN: z.enum(['true', 'false']).default('false'),
  SHUTDOWN_DRAIN_DELAY: seconds(0, 120, 0),
  SHUTDOWN_GRACE: seconds(1, 300, 20),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export interface Config {
  readonly env: 'development' | 'production' | 'test';
  readonly port: number;
  readonly host: string;
  readonly issuer: string;
  readonly database:
    | {
        readonly kind: 'postgres';
        readonly url: string;
        readonly poolMax: number;
        /** Seconds to open a connection, and for one statement to answer, before giving up (503). */
        readonly connectTimeout: number;
        readonly queryTimeout: number;
      }
    | { readonly kind: 'pglite'; readonly dataDir: string };
  readonly dataDir: string;
  readonly secrets: Secrets;
  readonly ttl: {
    readonly accessToken: number;
    readonly authorizationCode: number;
    readonly idToken: number;
    readonly refreshToken: number;
    readonly grant: number;
    readonly session: number;
    readonly interaction: number;
    /** Account pages: idle timeout (automatic logoff) and absolute lifetime. */
    readonly accountIdle: number;
    readonly accountSession: number;
  };
  /** How often each instance checks the database for new or retired signing keys. */
  readonly signingKeyRefreshInterval: number;
  readonly argon2: { readonly memoryKiB: number; readonly timeCost: number; readonly maxConcurrent: number };
  readonly trustProxy: boolean;
  /** Only these peers' forwarded headers are honoured; undefined means any peer (TRUST_PROXY=true). */
  readonly trustedProxies: readonly string[] | undefined;
  /** Serve HTTPS directly with this certificate chain and key (PEM). */
  readonly tls: { readonly cert: Buffer; readonly key: Buffer } | undefined;
  /** Access tokens for FHIR servers: opaque (introspect them) or RFC 9068 JWTs. */
  readonly accessTokenFormat: 'opaque' | 'jwt';
  /** Multi-factor policy (see src/mfa/policy.ts). */
  readonly mfa: { readonly writeScopesNeedMfa: boolean; readonly mfaRoles: readonly string[] };
  /** The protected FHIR servers' base URLs (no trailing slash); the first is the default audience. */
  readonly fhirBaseUrls: readonly string[];
  /** Where shared counters live when set (rate limits); otherwise PostgreSQL or memory. */
  readonly redisUrl: string | undefined;
  /** Requests per minute; 0 turns a limit off. */
  readonly rateLimits: { readonly keyPrefix: string; readonly oauthPerIp: number; readonly perClient: number; readonly pagesPerIp: number };
  /** The bearer token /metrics wants; metrics are not served without one. */
  readonly metricsToken: string | undefined;
  readonly admin: {
    /** Destructive admin actions need a sign-in with the second factor at most this old (seconds). */
    readonly reauthMaxAge: number;
    /** Clients without a token for this many days are flagged stale in the inventory. */
    readonly clientStaleDays: number;
    /** Whether stale clients are suspended automatically. */
    readonly clientStaleAutoSuspend: boolean;
    /** Whether dynamic client registration works without an initial access token. */
    readonly registrationOpen: boolean;
  };
  /** On SIGTERM: seconds still serving while readiness says 503, then the bound on in-flight requests. */
  readonly shutdown: { readonly drainDelay: number; readonly grace: number };
  readonly logLevel: string;
}


/** OWASP's minimum for argon2id (Password Storage Cheat Sheet): m=19 MiB, t=2, p=1. */
const OWASP_MIN_MEMORY_KIB = 19456;
const OWASP_MIN_TIME_COST = 2;

/**
 * Reads and validates the environment. Secrets come from the environment; outside production
 * missing ones are generated once into `DATA_DIR` (see `secrets.ts`).
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, log: (msg: string) => void = () => {}): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(environment)'}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const production = e.NODE_ENV === 'production';

  if (e.NODE_ENV !== 'test' && (e.ARGON2_MEMORY_KIB < OWASP_MIN_MEMORY_KIB || e.ARGON2_TIME_COST < OWASP_MIN_TIME_COST)) {
    throw new ConfigError(
      `ARGON2_MEMORY_KIB must be at least ${OWASP_MIN_MEMORY_KIB} and ARGON2_TIME_COST at least ${OWASP_MIN_TIME_COST} (OWASP minimum for argon2id)`,
    );
  }

  const issuer = (e.ISSUER ?? `${e.TLS_CERT_FILE ? 'https' : 'http'}://localhost:${e.PORT}`).replace(/\/+$/, '');
  if (production && !issuer.startsWith('https://')) {
    throw new ConfigError('ISSUER must be an https:// URL when NODE_ENV=production');
  }
  if (production && !e.DATABASE_URL) {
    log('NODE_ENV=production without DATABASE_URL: using the embedded database in DATA_DIR (single instance only)');
  }

  const dataDir = resolve(e.DATA_DIR);
  const secrets = resolveSecrets(
    { cookieKeys: e.COOKIE_KEYS, keyEncryptionKey: e.KEY_ENCRYPTION_KEY },
    { production, dataDir, log },
  );

  return Object.freeze({
    env: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    issuer,
    database: Object.freeze(
      e.DATABASE_URL
        ? {
            kind: 'postgres' as const,
            url: e.DATABASE_URL,
            poolMax: e.DATABASE_POOL_MAX,
            connectTimeout: e.DATABASE_CONNECT_TIMEOUT,
            queryTimeout: e.DATABASE_QUERY_TIMEOUT,
          }
        : { kind: 'pglite' as const, dataDir: resolve(dataDir, 'pgdata') },
    ),
    dataDir,
    secrets,
    ttl: Object.freeze({
      accessToken: e.ACCESS_TOKEN_TTL,
      authorizationCode: e.AUTHORIZATION_CODE_TTL,
      idToken: e.ID_TOKEN_TTL,
      refreshToken: e.REFRESH_TOKEN_TTL,
      grant: Math.max(e.GRANT_TTL, e.REFRESH_TOKEN_TTL),
      session: e.SESSION_TTL,
      interaction: e.INTERACTION_TTL,
      accountIdle: e.ACCOUNT_IDLE_TIMEOUT,
      accountSession: e.ACCOUNT_SESSION_TTL,
    }),
    signingKeyRefreshInterval: e.SIGNING_KEY_REFRESH_INTERVAL,
    argon2: Object.freeze({
      memoryKiB: e.ARGON2_MEMORY_KIB,
      timeCost: e.ARGON2_TIME_COST,
      maxConcurrent: e.ARGON2_MAX_CONCURRENT,
    }),
    trustProxy: e.TRUST_PROXY !== 'false',
    trustedProxies: parseTrustedProxies(e.TRUST_PROXY),
    tls: readTls(e.TLS_CERT_FILE, e.TLS_KEY_FILE),
    accessTokenFormat: e.ACCESS_TOKEN_FORMAT,
    mfa: Object.freeze({
      writeScopesNeedMfa: e.MFA_FOR_WRITE_SCOPES === 'true',
      mfaRoles: Object.freeze(e.MFA_REQUIRED_ROLES.split(',').map((r) => r.trim()).filter(Boolean)),
    }),
    // In development, with no FHIR server configured, the demo's pseudo FHIR base keeps SMART usable.
    fhirBaseUrls: Object.freeze(
      parseFhirBaseUrls(e.FHIR_BASE_URLS ?? (e.NODE_ENV === 'development' ? `${issuer}${DEMO_FHIR_PATH}` : undefined), production),
    ),
    redisUrl: e.REDIS_URL,
    rateLimits: Object.freeze({
      keyPrefix: e.RATE_LIMIT_KEY_PREFIX,
      oauthPerIp: e.RATE_LIMIT_OAUTH_PER_IP,
      perClient: e.RATE_LIMIT_PER_CLIENT,
      pagesPerIp: e.RATE_LIMIT_PAGES_PER_IP,
    }),
    metricsToken: e.METRICS_TOKEN,
    admin: Object.freeze({
      reauthMaxAge: e.ADMIN_REAUTH_MAX_AGE,
      clientStaleDays: e.CLIENT_STALE_DAYS,
      clientStaleAutoSuspend: e.CLIENT_STALE_AUTO_SUSPEND === 'true',
      registrationOpen: e.REGISTRATION_OPEN === 'true',
    }),
    shutdown: Object.freeze({ drainDelay: e.SHUTDOWN_DRAIN_DELAY, grace: e.SHUTDOWN_GRACE }),
    logLevel: e.LOG_LEVEL,
  });
}

function parseTrustedProxies(raw: string): string[] | undefined {
  if (raw === 'true' || raw === 'false') return undefined;
  const entries = raw.split(',').map((p) => p.trim()).filter(Boolean);
  if (entries.length === 0) throw new ConfigError('TRUST_PROXY: use true, false, or a comma-separated list of proxy addresses or CIDR ranges');
  for (const entry of entries) {
    const [address, bits, extra] = entry.split('/');
    const family = isIP(address ?? '');
    const maxBits = family === 6 ? 128 : 32;
    const validBits = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= maxBits);
    if (!family || !validBits || extra !== undefined) throw new ConfigError(`TRUST_PROXY: "${entry}" is not an IP address or CIDR range`);
  }
  return entries;
}

function readTls(certFile: string | undefined, keyFile: string | undefined): { cert: Buffer; key: Buffer } | undefined {
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) throw new ConfigError('TLS_CERT_FILE and TLS_KEY_FILE go together: set both to serve HTTPS, or neither');
  const read = (name: string, file: string) => {
    try {
      return readFileSync(file);
    } catch {
      throw new ConfigError(`${name}: cannot read ${file}`);
    }
  };
  return Object.freeze({ cert: read('TLS_CERT_FILE', certFile), key: read('TLS_KEY_FILE', keyFile) });
}

function parseFhirBaseUrls(raw: string | undefined, production: boolean): string[] {
  const urls = (raw ?? '').split(',').map((u) => u.trim()).filter(Boolean);
  return urls.map((u) => {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new ConfigError(`FHIR_BASE_URLS: "${u}" is not an absolute URL`);
    }
    if (url.protocol !== 'https:' && (production || url.protocol !== 'http:')) {
      throw new ConfigError(`FHIR_BASE_URLS: "${u}" must use https${production ? '' : ' (http is allowed outside production)'}`);
    }
    if (url.search || url.hash) throw new ConfigError(`FHIR_BASE_URLS: "${u}" must not have a query or fragment`);
    return url.toString().replace(/\/+$/, '');
  });
}
