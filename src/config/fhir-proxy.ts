/**
 * Configuration of `custos fhir-proxy`: command-line flags over the environment, validated into
 * one frozen object. The proxy is a separate process that may run far from Custos, so it has its
 * own small schema rather than Custos's (it needs no database or signing secrets).
 */
import { z } from 'zod';
import { ConfigError } from './errors.ts';

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).transform((u) => u.replace(/\/+$/, ''));
const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

const schema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    FHIR_PROXY_UPSTREAM: httpUrl,
    FHIR_PROXY_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
    FHIR_PROXY_HOST: z.string().min(1).default('127.0.0.1'),
    FHIR_PROXY_PUBLIC_URL: httpUrl.optional(),
    FHIR_PROXY_ISSUER: httpUrl,
    FHIR_PROXY_INTROSPECTION_CLIENT_ID: z.string().min(1).optional(),
    FHIR_PROXY_INTROSPECTION_CLIENT_SECRET: z.string().min(1).optional(),
    FHIR_PROXY_JWT: bool.default(false),
    FHIR_PROXY_CACHE_TTL: z.coerce.number().int().min(0).max(60).default(5),
    FHIR_PROXY_CACHE_MAX: z.coerce.number().int().min(1).max(1_000_000).default(1000),
    FHIR_PROXY_WRITE_ACR: z.string().default('urn:custos:acr:mfa'),
    FHIR_PROXY_AUDIT: z.enum(['log', 'database']).default('log'),
    // Environment only, like every secret here should be: flags show in the process list.
    FHIR_PROXY_PAGE_SECRET: z.string().min(32, { error: 'must be at least 32 characters' }).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((c) => Boolean(c.FHIR_PROXY_INTROSPECTION_CLIENT_ID) === Boolean(c.FHIR_PROXY_INTROSPECTION_CLIENT_SECRET), {
    error: 'give both the introspection client id and its secret',
    path: ['FHIR_PROXY_INTROSPECTION_CLIENT_SECRET'],
  })
  .refine((c) => c.FHIR_PROXY_INTROSPECTION_CLIENT_ID || c.FHIR_PROXY_JWT, {
    error: 'tokens need checking: give introspection client credentials, or enable JWT validation',
    path: ['FHIR_PROXY_INTROSPECTION_CLIENT_ID'],
  });

export interface FhirProxyConfig {
  readonly upstream: string;
  readonly port: number;
  readonly host: string;
  readonly publicUrl?: string;
  readonly issuer: string;
  readonly introspection?: { readonly clientId: string; readonly clientSecret: string };
  readonly jwt: boolean;
  readonly cache: { readonly ttlSeconds: number; readonly maxEntries: number };
  /** ACR values writes need; empty for none. */
  readonly writeAcrValues: readonly string[];
  readonly audit: 'log' | 'database';
  /** Seals paging links; instances behind one address need the same one. Random when absent. */
  readonly pageSecret?: string;
  readonly logLevel: string;
}

/** The flags `custos fhir-proxy` takes, named after the variables they override. */
export const FHIR_PROXY_FLAGS = {
  upstream: 'FHIR_PROXY_UPSTREAM',
  port: 'FHIR_PROXY_PORT',
  host: 'FHIR_PROXY_HOST',
  publicUrl: 'FHIR_PROXY_PUBLIC_URL',
  issuer: 'FHIR_PROXY_ISSUER',
  introspectionClientId: 'FHIR_PROXY_INTROSPECTION_CLIENT_ID',
  introspectionClientSecret: 'FHIR_PROXY_INTROSPECTION_CLIENT_SECRET',
  jwt: 'FHIR_PROXY_JWT',
  cacheTtl: 'FHIR_PROXY_CACHE_TTL',
  cacheMax: 'FHIR_PROXY_CACHE_MAX',
  writeAcr: 'FHIR_PROXY_WRITE_ACR',
  audit: 'FHIR_PROXY_AUDIT',
} as const;

/**
 * Reads the proxy's settings: each flag given wins over its variable; `FHIR_PROXY_ISSUER` falls
 * back to `ISSUER` (a proxy started next to Custos shares its environment).
 */
export function loadFhirProxyConfig(env: NodeJS.ProcessEnv, flags: Partial<Record<keyof typeof FHIR_PROXY_FLAGS, string | boolean | undefined>> = {}): FhirProxyConfig {
  const merged: Record<string, unknown> = { ...env, FHIR_PROXY_ISSUER: env.FHIR_PROXY_ISSUER ?? env.ISSUER };
  for (const [flag, name] of Object.entries(FHIR_PROXY_FLAGS)) {
    const value = flags[flag as keyof typeof FHIR_PROXY_FLAGS];
    if (value !== undefined) merged[name] = String(value);
  }
  const parsed = schema.safeParse(merged);
  if (!parsed.success) {
    const flagOf = Object.fromEntries(Object.entries(FHIR_PROXY_FLAGS).map(([f, n]) => [n, `--${f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`]));
    const lines = parsed.error.issues.map((i) => {
      const name = String(i.path[0] ?? '');
      return `  ${flagOf[name] ? `${flagOf[name]} (${name})` : name || '(environment)'}: ${i.message}`;
    });
    throw new ConfigError(`invalid fhir-proxy configuration:\n${lines.join('\n')}`);
  }
  const c = parsed.data;
  if (c.NODE_ENV === 'production') {
    if (!c.FHIR_PROXY_ISSUER.startsWith('https://')) throw new ConfigError('the issuer must be an https:// URL when NODE_ENV=production');
    if (c.FHIR_PROXY_PUBLIC_URL && !c.FHIR_PROXY_PUBLIC_URL.startsWith('https://')) throw new ConfigError('the public URL must be https:// when NODE_ENV=production');
  }
  const writeAcr = c.FHIR_PROXY_WRITE_ACR.trim();
  return Object.freeze({
    upstream: c.FHIR_PROXY_UPSTREAM,
    port: c.FHIR_PROXY_PORT,
    host: c.FHIR_PROXY_HOST,
    ...(c.FHIR_PROXY_PUBLIC_URL ? { publicUrl: c.FHIR_PROXY_PUBLIC_URL } : {}),
    issuer: c.FHIR_PROXY_ISSUER,
    ...(c.FHIR_PROXY_INTROSPECTION_CLIENT_ID && c.FHIR_PROXY_INTROSPECTION_CLIENT_SECRET
      ? { introspection: Object.freeze({ clientId: c.FHIR_PROXY_INTROSPECTION_CLIENT_ID, clientSecret: c.FHIR_PROXY_INTROSPECTION_CLIENT_SECRET }) }
      : {}),
    jwt: c.FHIR_PROXY_JWT,
    cache: Object.freeze({ ttlSeconds: c.FHIR_PROXY_CACHE_TTL, maxEntries: c.FHIR_PROXY_CACHE_MAX }),
    writeAcrValues: Object.freeze(writeAcr === '' || writeAcr === 'none' ? [] : writeAcr.split(/[\s,]+/)),
    audit: c.FHIR_PROXY_AUDIT,
    ...(c.FHIR_PROXY_PAGE_SECRET ? { pageSecret: c.FHIR_PROXY_PAGE_SECRET } : {}),
    logLevel: c.LOG_LEVEL,
  });
}
