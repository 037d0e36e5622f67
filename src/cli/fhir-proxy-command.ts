import type { Command } from 'commander';
import { loadFhirProxyConfig, type FhirProxyConfig } from '../config/index.ts';
import { createFhirProxy, createTokenValidator } from '../enforcement/index.ts';
import { createLogger } from '../logging/index.ts';
import type { AuditEventInput } from '../audit/index.ts';
import type { CliContext } from './context.ts';

/** Resolves on SIGINT or SIGTERM: the proxy runs until it is told to stop. */
function stopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(signal);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

export function registerFhirProxy(program: Command, cli: CliContext): void {
  program
    .command('fhir-proxy')
    .description("a reverse proxy that enforces each patient's consent in front of a FHIR R4 server")
    .option('--upstream <url>', 'the FHIR server base URL (FHIR_PROXY_UPSTREAM)')
    .option('--port <port>', 'port to listen on; 0 picks one (FHIR_PROXY_PORT, default 8080)')
    .option('--host <host>', 'address to listen on (FHIR_PROXY_HOST, default 127.0.0.1)')
    .option('--public-url <url>', 'the base URL apps use, and the token audience (FHIR_PROXY_PUBLIC_URL)')
    .option('--issuer <url>', "Custos's issuer URL (FHIR_PROXY_ISSUER, or ISSUER)")
    .option('--introspection-client-id <id>', 'a client with the custos:introspect scope (FHIR_PROXY_INTROSPECTION_CLIENT_ID)')
    .option('--introspection-client-secret <secret>', 'its secret; prefer FHIR_PROXY_INTROSPECTION_CLIENT_SECRET, which stays out of the process list')
    .option('--jwt', "also accept JWT access tokens signed with Custos's keys (FHIR_PROXY_JWT)")
    .option('--cache-ttl <seconds>', 'reuse a token check for at most this long, 0-60 (FHIR_PROXY_CACHE_TTL, default 5)')
    .option('--cache-max <n>', 'remember at most this many token checks (FHIR_PROXY_CACHE_MAX, default 1000)')
    .option('--write-acr <values>', 'ACR values writes need, or "none" (FHIR_PROXY_WRITE_ACR, default urn:custos:acr:mfa)')
    .option('--audit <where>', "log: structured logs; database: Custos's audit trail (FHIR_PROXY_AUDIT, default log)")
    .action(async (flags: Record<string, string | boolean | undefined>) => {
      const config = loadFhirProxyConfig(cli.io.env, flags);
      if (config.audit === 'database') {
        await cli.withServices(({ audit }) => run(cli, config, (event) => audit.record(event)));
      } else {
        await run(cli, config);
      }
    });
}

async function run(cli: CliContext, config: FhirProxyConfig, record?: (event: AuditEventInput) => Promise<void>): Promise<void> {
  const log = createLogger(config.logLevel).child({ component: 'fhir-proxy' });
  const tokens = createTokenValidator({
    issuer: config.issuer,
    ...(config.introspection ? { introspection: config.introspection } : {}),
    ...(config.jwt ? { jwt: {} } : {}),
    cache: config.cache,
  });
  const proxy = createFhirProxy({
    upstream: config.upstream,
    ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}),
    tokens,
    policy: { writeAcrValues: config.writeAcrValues },
    ...(config.pageSecret ? { pageKey: Buffer.from(config.pageSecret, 'utf8') } : {}),
    log,
    audit: async (event) => {
      // Always a structured log line; the audit trail as well when asked for.
      log.info({ audit: event.type, outcome: event.outcome, actor: event.actor, client: event.clientId, patient: event.patientId, details: event.details }, 'fhir access');
      await record?.(event);
    },
  });
  const listening = await proxy.listen(config.port, config.host);
  cli.io.stdout.write(`fhir-proxy listening on ${listening.url} (public ${config.publicUrl ?? listening.url}), forwarding to ${config.upstream}\n`);
  const signal = await stopSignal();
  log.info({ signal }, 'fhir-proxy shutting down');
  await listening.close();
}
