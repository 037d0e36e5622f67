import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import {
  CLIENT_CATEGORIES,
  CLIENT_SORTS,
  CLIENT_STATUSES,
  ClientNotFoundError,
  ClientStateError,
  MAX_INITIAL_TOKEN_TTL,
  MAX_SECRET_GRACE,
  type ClientCategory,
  type LifecycleAction,
  type RegisteredClient,
} from '../clients/index.ts';
import { clientJson as apiClientJson, inventoryRow } from '../admin/index.ts';
import { CliError, pageLimit, table, type CliContext } from './context.ts';

/** What `client create` has always printed: the id, status and creation time, and the metadata. */
function clientJson(c: RegisteredClient) {
  return { client_id: c.clientId, status: c.status, created_at: c.createdAt.toISOString(), ...c.metadata };
}

/** Domain refusals as CLI errors (a message, exit 1). */
function cliErrors(err: unknown): never {
  if (err instanceof ClientNotFoundError || err instanceof ClientStateError) throw new CliError(err.message);
  throw err;
}

const categoryOption = z.enum(CLIENT_CATEGORIES, { error: `--category must be one of ${CLIENT_CATEGORIES.join(', ')}` });

const collect = (value: string, previous: string[] = []) => [...previous, value];

async function readMetadataFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new CliError(`cannot read ${path}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${path} is not valid JSON`);
  }
}

export function registerClient(program: Command, cli: CliContext): void {
  const client = program.command('client').description('manage OAuth clients');

  client
    .command('create')
    .description('register a client from flags or from an RFC 7591 metadata file; prints the secret once')
    .option('--file <path>', 'JSON file with RFC 7591 client metadata')
    .option('--name <name>', 'client_name')
    .option('--redirect-uri <uri>', 'a redirect URI (repeatable)', collect)
    .option('--post-logout-redirect-uri <uri>', 'a post-logout redirect URI (repeatable)', collect)
    .option('--grant-type <type>', 'authorization_code, refresh_token or client_credentials (repeatable)', collect)
    .option('--auth-method <method>', 'client_secret_basic (default), client_secret_post, private_key_jwt or none')
    .option('--scope <scope>', 'space-separated scopes the client may ask for')
    .option('--jwks-uri <uri>', 'where the client publishes its keys (private_key_jwt)')
    .option('--minimum-acr <acr>', 'the weakest login the app accepts: urn:custos:acr:password or urn:custos:acr:mfa')
    .option('--category <category>', `${CLIENT_CATEGORIES.join(', ')} (default third-party)`)
    .option('--verified', 'mark the client as verified by an admin')
    .option('--json', 'print JSON')
    .action(async (opts: Record<string, unknown>) => {
      const category: ClientCategory | undefined = opts.category === undefined ? undefined : categoryOption.parse(opts.category);
      const flagNames = ['name', 'redirectUri', 'postLogoutRedirectUri', 'grantType', 'authMethod', 'scope', 'jwksUri', 'minimumAcr'];
      let metadata: Record<string, unknown>;
      if (opts.file) {
        if (flagNames.some((f) => opts[f] !== undefined)) throw new CliError('use either --file or metadata flags, not both');
        const parsed = await readMetadataFile(String(opts.file));
        if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CliError('the metadata file must hold a JSON object');
        metadata = parsed as Record<string, unknown>;
      } else {
        if (!opts.name) throw new CliError('--name is required (or use --file)');
        metadata = Object.fromEntries(
          Object.entries({
            client_name: opts.name,
            redirect_uris: opts.redirectUri,
            post_logout_redirect_uris: opts.postLogoutRedirectUri,
            grant_types: opts.grantType,
            token_endpoint_auth_method: opts.authMethod,
            scope: opts.scope,
            jwks_uri: opts.jwksUri,
            minimum_acr: opts.minimumAcr,
          }).filter(([, v]) => v !== undefined),
        );
      }
      await cli.withServices(async ({ clients }) => {
        const { client: created, clientSecret } = await clients.create(metadata, { category, verified: Boolean(opts.verified), by: cli.actor() });
        const lines = [`created client "${created.name}"`, `client_id:     ${created.clientId}`];
        if (clientSecret) lines.push(`client_secret: ${clientSecret}`, 'Store the secret now: it is not shown again.');
        cli.print(Boolean(opts.json), { ...clientJson(created), ...(clientSecret ? { client_secret: clientSecret } : {}) }, lines.join('\n'));
      });
    });

  client
    .command('list')
    .description('list clients with their use (the inventory), filtered and sorted')
    .option('--status <status>', CLIENT_STATUSES.join(', '))
    .option('--category <category>', CLIENT_CATEGORIES.join(', '))
    .option('--search <text>', 'part of the name, owner or client id')
    .option('--stale', 'only clients unused for CLIENT_STALE_DAYS days')
    .option('--sort <field>', CLIENT_SORTS.join(', '), 'client_id')
    .option('--desc', 'reverse order')
    .option('--limit <n>', 'at most this many (1-500)', '100')
    .option('--cursor <cursor>', 'continue from a previous page (printed on stderr when there is more)')
    .option('--after <client_id>', 'start after this client_id (with the default sort)')
    .option('--json', 'print JSON')
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const query = z
        .object({
          status: z.enum(CLIENT_STATUSES, { error: `--status must be one of ${CLIENT_STATUSES.join(', ')}` }).optional(),
          category: categoryOption.optional(),
          sort: z.enum(CLIENT_SORTS, { error: `--sort must be one of ${CLIENT_SORTS.join(', ')}` }),
        })
        .parse({ status: opts.status, category: opts.category, sort: opts.sort });
      const limit = pageLimit.parse(opts.limit);
      await cli.withServices(async ({ clients, config, consents }) => {
        const now = new Date();
        const page = await clients
          .search({
            ...query,
            q: typeof opts.search === 'string' ? opts.search.slice(0, 100) : undefined,
            unusedForDays: opts.stale ? config.admin.clientStaleDays : undefined,
            order: opts.desc ? 'desc' : 'asc',
            limit,
            cursor:
              typeof opts.cursor === 'string'
                ? opts.cursor
                : typeof opts.after === 'string' && query.sort === 'client_id'
                  ? Buffer.from(JSON.stringify(['client_id', opts.after, opts.after])).toString('base64url')
                  : undefined,
          })
          .catch((err: unknown) => {
            throw new CliError((err as Error).message);
          });
        const usage = await clients.usage(page.clients.map((c) => c.clientId), now);
        const consented = await consents.repo.patientCounts(page.clients.map((c) => c.clientId), now);
        const rows = page.clients.map((c) => ({ ...clientJson(c), ...inventoryRow(c, usage.get(c.clientId), config.admin.clientStaleDays, now, consented) }));
        if (page.nextCursor && opts.json) cli.io.stderr.write(`more: --cursor ${page.nextCursor}\n`);
        cli.print(
          Boolean(opts.json),
          rows,
          [
            table(
              ['CLIENT_ID', 'NAME', 'STATUS', 'CATEGORY', 'TYPE', 'LAST USED', 'TOKENS 1D/30D', 'STALE'],
              rows.map((r) => [r.client_id, r.client_name, r.status, r.category, r.client_type, r.last_used_at ?? 'never', `${r.tokens_last_day}/${r.tokens_last_30_days}`, r.stale ? 'yes' : '']),
            ),
            ...(page.nextCursor ? [`more: --cursor ${page.nextCursor}`] : []),
          ].join('\n'),
        );
      });
    });

  client
    .command('show <client_id>')
    .description('show one client (never its secret)')
    .option('--json', 'print JSON')
    .action(async (clientId: string, opts: { json?: boolean }) => {
      await cli.withServices(async ({ clients }) => {
        const c = await clients.get(clientId);
        if (!c) throw new CliError(`no client with id "${clientId}"`);
        const json = apiClientJson(c);
        cli.print(Boolean(opts.json), json, Object.entries(json).map(([k, v]) => `${k}: ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`).join('\n'));
      });
    });

  const lifecycle: [LifecycleAction, string][] = [
    ['approve', 'approve a pending client'],
    ['suspend', 'suspend a client and revoke every grant and token it holds'],
    ['reactivate', 'approve a suspended client again'],
    ['retire', 'retire a client for good and revoke everything it holds'],
  ];
  for (const [action, description] of lifecycle) {
    client
      .command(`${action} <client_id>`)
      .description(description)
      .option('--reason <text>', 'why, for the audit trail')
      .option('--json', 'print JSON')
      .action(async (clientId: string, opts: { reason?: string; json?: boolean }) => {
        await cli.withServices(async ({ clients }) => {
          const updated = await clients
            .transition(clientId, action, cli.actor(), opts.reason ? { reason: opts.reason.slice(0, 500) } : {})
            .catch(cliErrors);
          cli.print(Boolean(opts.json), apiClientJson(updated), `client ${updated.clientId} is now ${updated.status}`);
        });
      });
  }

  client
    .command('rotate-secret <client_id>')
    .description('give a client a new secret (printed once); the old one works for --grace seconds more')
    .option('--grace <seconds>', `0 to ${MAX_SECRET_GRACE}`, '0')
    .option('--json', 'print JSON')
    .action(async (clientId: string, opts: { grace: string; json?: boolean }) => {
      const grace = z.coerce.number({ error: `--grace must be a whole number from 0 to ${MAX_SECRET_GRACE}` }).int().min(0).max(MAX_SECRET_GRACE).parse(opts.grace);
      await cli.withServices(async ({ clients }) => {
        const { client: c, clientSecret } = await clients.rotateSecret(clientId, grace, cli.actor()).catch(cliErrors);
        const until = c.previousSecretExpiresAt?.toISOString() ?? null;
        cli.print(
          Boolean(opts.json),
          { client_id: c.clientId, client_secret: clientSecret, previous_secret_expires_at: until },
          [`client_secret: ${clientSecret}`, 'Store the secret now: it is not shown again.', until ? `the old secret works until ${until}` : 'the old secret no longer works'].join('\n'),
        );
      });
    });

  client
    .command('initial-token')
    .description('issue a single-use initial access token for dynamic client registration (printed once)')
    .option('--expires-in <seconds>', `60 to ${MAX_INITIAL_TOKEN_TTL}`, '86400')
    .option('--note <text>', 'who it is for')
    .option('--json', 'print JSON')
    .action(async (opts: { expiresIn: string; note?: string; json?: boolean }) => {
      const expiresIn = z.coerce.number({ error: `--expires-in must be a whole number from 60 to ${MAX_INITIAL_TOKEN_TTL}` }).int().min(60).max(MAX_INITIAL_TOKEN_TTL).parse(opts.expiresIn);
      await cli.withServices(async ({ initialTokens, config }) => {
        const issued = await initialTokens.issue({ expiresIn, note: opts.note?.slice(0, 200) }, cli.actor());
        cli.print(
          Boolean(opts.json),
          { id: issued.id, initial_access_token: issued.token, expires_at: issued.expiresAt.toISOString(), registration_endpoint: `${config.issuer}/register` },
          [`initial_access_token: ${issued.token}`, `expires: ${issued.expiresAt.toISOString()} (works once)`, `register at ${config.issuer}/register with Authorization: Bearer <token>`].join('\n'),
        );
      });
    });
}
