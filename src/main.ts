/**
 * Composition root: reads the configuration, opens the database, builds the app and listens.
 * `startServer` is also what the tests boot, so they run exactly what production runs.
 */
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type Koa from 'koa';
import { loadConfig, ConfigError, type Config } from './config/index.ts';
import {
  openDatabase,
  closeDatabase,
  migrateLatest,
  databaseReachable,
  DatabaseBusyError,
  isDatabaseUnavailable,
  unavailableMessage,
  type Db,
} from './db/index.ts';
import { createAccountRepository, createLoginThrottle, createPasswordHasher, type AccountRepository } from './accounts/index.ts';
import { createClientRegistry, createInitialAccessTokens, type ClientRegistry, type InitialAccessTokens } from './clients/index.ts';
import { adminApiRoutes, adminPages, createAccountAdmin, dcrRoutes, ADMIN_CLIENT_ID, type AccountAdmin } from './admin/index.ts';
import { deriveKey, ensureSigningKeys, loadSigningKeys, purgeRetiredSigningKeys } from './keys/index.ts';
import {
  buildProvider,
  createProviderHost,
  deleteAccountPayloads,
  deleteClientPayloads,
  deleteExpiredPayloads,
  interactionRoutes,
  sessionLevelTooLow,
  smartLaunch,
  smartRoutes,
  consentTokens,
  consentApiRoutes,
  bearerIntrospectionRoutes,
  introspectionReview,
  grantStore,
  completeProviderResponses,
  providerEndpointMethods,
  grantContextsPerRequest,
  accountsPerRequest,
} from './oidc/index.ts';
import { createLaunchRepository, type LaunchRepository } from './smart/index.ts';
import { demoRoutes } from './demo/index.ts';
import { accountRoutes, ACCOUNT_CLIENT_ID } from './account/index.ts';
import { createMfaRepository, type MfaRepository } from './mfa/index.ts';
import { createAuditTrail, type AuditTrail } from './audit/index.ts';
import { createConsentRepository, createConsentService, type ConsentService } from './consent/index.ts';
import { createApp } from './http/app.ts';
import { createLimiterStore } from './http/limiter-store.ts';
import { requestRateLimits } from './http/rate-limits.ts';
import { createMetrics, metricsRoutes } from './http/metrics.ts';
import { createViews } from './http/views.ts';
import { healthRoutes } from './http/health.ts';
import { createDrain } from './http/graceful-shutdown.ts';
import { staticAssets } from './http/static-assets.ts';
import { createLogger } from './logging/index.ts';

/** The services a running Custos is made of; the CLI builds the same ones without HTTP. */
export interface Services {
  config: Config;
  db: Db;
  accounts: AccountRepository;
  clients: ClientRegistry;
  launches: LaunchRepository;
  mfa: MfaRepository;
  audit: AuditTrail;
  consents: ConsentService;
  accountAdmin: AccountAdmin;
  initialTokens: InitialAccessTokens;
  log: Logger;
}

/** What tests may replace: the clock consent expiry is judged by. */
export interface ServiceOverrides {
  clock?: () => Date;
}

export async function openServices(config: Config, log: Logger, overrides: ServiceOverrides = {}): Promise<Services> {
  const db = await openDatabase(config.database, log);
  try {
    await migrateLatest(db);
  } catch (err) {
    await closeDatabase(db);
    throw err;
  }
  const accounts = createAccountRepository(db, createPasswordHasher(config.argon2));
  const clock = overrides.clock ?? (() => new Date());
  const audit = createAuditTrail(db, { log, clock });
  const clients = createClientRegistry(db, deriveKey(config.secrets.keyEncryptionKey, 'client-secret-hmac'), {
    audit,
    caps: { accessToken: config.ttl.accessToken, refreshToken: config.ttl.refreshToken },
    revokeArtifacts: deleteClientPayloads,
    clock,
    onUsageError: (err) => log.warn({ err }, 'writing client usage counts failed; they will be tried again'),
  });
  const kek = config.secrets.keyEncryptionKey;
  const mfa = createMfaRepository(db, kek, deriveKey(kek, 'recovery-code-hmac'));
  const consents = createConsentService({ db, repo: createConsentRepository(db), audit, grants: grantStore, representatives: accounts, clock });
  const accountAdmin = createAccountAdmin({ db, accounts, mfa, audit, revokeArtifacts: deleteAccountPayloads });
  const initialTokens = createInitialAccessTokens(db, deriveKey(kek, 'initial-access-token-hmac'), audit);
  return { config, db, accounts, clients, launches: createLaunchRepository(db), mfa, audit, consents, accountAdmin, initialTokens, log };
}

export interface RunningServer {
  url: string;
  server: Server;
  /** The Koa application (its middleware holds the routers, which tests walk). */
  app: Koa;
  services: Services;
  close(): Promise<void>;
}

const TLS_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
].join(':');

const CLEANUP_INTERVAL_MS = 10 * 60 * 1000;
// New audit events join the hash chain within this time (see migrations/005_audit_trail.ts).
const AUDIT_SEAL_INTERVAL_MS = 5_000;

export async function startServer(
  config: Config,
  log: Logger = createLogger(config.logLevel),
  overrides: ServiceOverrides = {},
): Promise<RunningServer> {
  const services = await openServices(config, log, overrides);
  const { db, accounts, clients, launches, mfa, audit, consents, accountAdmin, initialTokens } = services;
  try {
    const kek = config.secrets.keyEncryptionKey;
    const created = await ensureSigningKeys(db, kek);
    if (created.length > 0) log.info({ kids: created }, 'generated signing keys');
    // The account pages sign in through Custos itself, as a first-party public client.
    await clients.ensureInternal(ACCOUNT_CLIENT_ID, {
      client_name: 'Your Custos account',
      redirect_uris: [`${config.issuer}/account/callback`],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'none',
      scope: 'openid',
    });
    // So do the admin pages (always with the second factor).
    await clients.ensureInternal(ADMIN_CLIENT_ID, {
      client_name: 'Custos administration',
      redirect_uris: [`${config.issuer}/admin/callback`],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'none',
      scope: 'openid',
      minimum_acr: 'urn:custos:acr:mfa',
    });
    let selfUrl = config.issuer;
    const limiterStore = createLimiterStore({ database: config.database, redisUrl: config.redisUrl, keyPrefix: config.rateLimits.keyPrefix });
    const throttle = createLoginThrottle(limiterStore);
    const metrics = createMetrics();
    audit.observe((event) => metrics.observe(event));
    // Served over TLS directly when a certificate is configured: TLS 1.2 at least, AEAD suites only.
    const server = config.tls
      ? createHttpsServer({ cert: config.tls.cert, key: config.tls.key, minVersion: 'TLSv1.2', ciphers: TLS_CIPHERS, honorCipherOrder: true })
      : createServer();
    const drain = createDrain(server);
    const rateLimits = requestRateLimits({ store: limiterStore, limits: config.rateLimits, audit, log, onLimited: (limit) => metrics.rateLimited(limit) });
    const views = createViews({ cache: config.env === 'production' });
    // The OAuth and sign-in paths read the same rows several times per request.
    const grantContexts = grantContextsPerRequest(launches);
    const oidcAccounts = accountsPerRequest(accounts);
    const launch = smartLaunch({
      launches: grantContexts,
      accounts: oidcAccounts,
      defaultStyleUrl: `${config.issuer}/smart/style.json`,
      grantTtl: config.ttl.grant,
      fhirBase: config.fhirBaseUrls[0],
    });
    const levelCheck = sessionLevelTooLow(oidcAccounts, config.mfa);
    const tokensObeyConsent = consentTokens({ consents, accounts: oidcAccounts, launches: grantContexts, firstPartyClients: [ACCOUNT_CLIENT_ID, ADMIN_CLIENT_ID] });
    const reviewIntrospection = introspectionReview({ consentTokens: tokensObeyConsent, accounts: oidcAccounts, fhirBase: config.fhirBaseUrls[0] });
    const providers = createProviderHost(
      (jwks) => buildProvider({ config, db, accounts: oidcAccounts, clients, launch, consentTokens: tokensObeyConsent, reviewIntrospection, audit, clientRateLimit: rateLimits.checkClient, levelCheck, views, log }, jwks),
      await loadSigningKeys(db, kek),
    );
    const app = createApp({
      provider: completeProviderResponses(providers.middleware(), providerEndpointMethods({ httpPost: config.issuer.startsWith('https://') })),
      views,
      log,
      cookieKeys: config.secrets.cookieKeys,
      https: config.issuer.startsWith('https://'),
      trustProxy: config.trustProxy,
      trustedProxies: config.trustedProxies,
      outer: [(ctx, next) => metrics.middleware(ctx, next), drain.middleware],
      guards: [(ctx, next) => rateLimits.middleware(ctx, next)],
      routers: [
        healthRoutes(async () => (drain.draining ? 'draining' : (await databaseReachable(db)) ? 'ready' : 'unavailable')),
        metricsRoutes(metrics, config.metricsToken),
        staticAssets(),
        interactionRoutes({
          providers,
          accounts: oidcAccounts,
          mfa,
          mfaPolicy: config.mfa,
          throttle,
          launch,
          firstPartyClients: [ACCOUNT_CLIENT_ID, ADMIN_CLIENT_ID],
          views,
          log,
          audit,
          clients,
          consents,
          maxConsentSeconds: config.ttl.grant,
          issuer: config.issuer,
        }),
        smartRoutes({
          issuer: config.issuer,
          fhirBaseUrls: config.fhirBaseUrls,
          authorizePost: config.issuer.startsWith('https://'),
          providers,
          clients,
          launches,
        }),
        consentApiRoutes({ issuer: config.issuer, providers, consents, clients, audit }),
        bearerIntrospectionRoutes({ providers, reviewIntrospection, audit }),
        accountRoutes({
          issuer: config.issuer,
          selfUrl: () => selfUrl,
          accounts,
          mfa,
          views,
          log,
          audit,
          consents,
          clients,
          idleTimeout: config.ttl.accountIdle,
          lifetime: config.ttl.accountSession,
        }),
        adminApiRoutes({
          issuer: config.issuer,
          providers,
          accounts,
          accountAdmin,
          clients,
          audit,
          initialTokens,
          reauthMaxAge: config.admin.reauthMaxAge,
          staleDays: config.admin.clientStaleDays,
          consents,
        }).router,
        dcrRoutes({ issuer: config.issuer, clients, initialTokens, audit, open: config.admin.registrationOpen }),
        adminPages({
          issuer: config.issuer,
          selfUrl: () => selfUrl,
          accounts,
          accountAdmin,
          mfa,
          audit,
          clients,
          views,
          idleTimeout: config.ttl.accountIdle,
          lifetime: config.ttl.accountSession,
          reauthMaxAge: config.admin.reauthMaxAge,
          staleDays: config.admin.clientStaleDays,
        }),
        // The demo app and EHR exist only outside production.
        ...(config.env === 'production'
          ? []
          : [demoRoutes({ issuer: config.issuer, fhirBase: config.fhirBaseUrls[0], accounts, clients, launches, views })]),
      ],
    });

    server.on('request', app.callback());
    server.headersTimeout = 20_000;
    server.requestTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const loopback = ['0.0.0.0', '::', '127.0.0.1', 'localhost'].includes(config.host) ? '127.0.0.1' : config.host;
    // Over TLS the certificate names the public host, so the server reaches itself there.
    selfUrl = config.tls ? config.issuer : `http://${loopback.includes(':') ? `[${loopback}]` : loopback}:${port}`;

    const cleanup = setInterval(() => {
      Promise.all([deleteExpiredPayloads(db), purgeRetiredSigningKeys(db), launches.deleteExpired()])
        .then(([payloads, keys, contexts]) => {
          if (payloads || keys || contexts) log.debug({ payloads, keys, contexts }, 'removed expired rows');
        })
        .catch((err: unknown) => log.warn({ err }, 'background cleanup failed'));
    }, CLEANUP_INTERVAL_MS);
    cleanup.unref();

    // Optionally suspend clients nobody used for CLIENT_STALE_DAYS (audited as system:stale-sweep).
    const staleSweep = setInterval(() => {
      if (!config.admin.clientStaleAutoSuspend) return;
      clients
        .suspendUnused(config.admin.clientStaleDays, new Date(), { actor: 'system:stale-sweep' })
        .then((ids) => {
          if (ids.length) log.info({ clients: ids }, 'suspended stale clients');
        })
        .catch((err: unknown) => log.warn({ err }, 'stale client sweep failed'));
    }, CLEANUP_INTERVAL_MS);
    staleSweep.unref();

    const sealer = setInterval(() => {
      audit.seal().catch((err: unknown) => log.warn({ err }, 'sealing the audit trail failed'));
    }, AUDIT_SEAL_INTERVAL_MS);
    sealer.unref();

    // Pick up rotated and retired signing keys without a restart.
    const keyRefresh = setInterval(() => {
      loadSigningKeys(db, kek)
        .then((keys) => {
          if (providers.update(keys)) log.info({ kids: keys.jwks.map((k) => k.kid) }, 'signing keys changed; provider reloaded');
        })
        .catch((err: unknown) => log.warn({ err }, 'signing key refresh failed'));
    }, config.signingKeyRefreshInterval * 1000);
    keyRefresh.unref();

    if ((await accounts.countByRole('admin')) === 0) {
      log.warn(
        'no admin account yet: create one with `npx custos user create <username> --role admin` ' +
          '(on the embedded database, stop the server first)',
      );
    }

    return {
      url: `${config.tls ? 'https' : 'http'}://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
      server,
      app,
      services,
      async close() {
        clearInterval(cleanup);
        clearInterval(staleSweep);
        clearInterval(sealer);
        clearInterval(keyRefresh);
        const { cut } = await drain.stop({ delayMs: config.shutdown.drainDelay * 1000, graceMs: config.shutdown.grace * 1000 });
        if (cut > 0) log.warn({ connections: cut }, 'shutdown grace period over: cut connections still open');
        // Events written by the last requests join the chain now rather than at the next start.
        await audit.seal().catch((err: unknown) => log.warn({ err }, 'sealing the audit trail failed'));
        await clients.flushUsage().catch((err: unknown) => log.warn({ err }, 'client usage counts lost at shutdown'));
        await limiterStore.close();
        await closeDatabase(db);
      },
    };
  } catch (err) {
    await closeDatabase(db);
    throw err;
  }
}

async function main() {
  const bootLog = createLogger('info');
  let config: Config;
  try {
    config = loadConfig(process.env, (msg) => bootLog.info(msg));
  } catch (err) {
    if (err instanceof ConfigError) {
      bootLog.fatal(err.message);
      process.exit(1);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  let running: RunningServer;
  try {
    running = await startServer(config, log);
  } catch (err) {
    if (err instanceof DatabaseBusyError) {
      log.fatal(err.message);
      process.exit(1);
    }
    if (isDatabaseUnavailable(err)) {
      log.fatal(unavailableMessage(err));
      process.exit(1);
    }
    throw err;
  }
  log.info({ issuer: config.issuer, listening: running.url, database: config.database.kind }, 'Custos is ready');
  let stopping = false;
  const stop = (signal: string) => {
    // A second signal while draining means "now": the operator gave up waiting.
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without waiting for requests in flight');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, drainDelay: config.shutdown.drainDelay, grace: config.shutdown.grace }, 'shutting down: draining requests in flight');
    running.close().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (import.meta.main) {
  await main();
}
