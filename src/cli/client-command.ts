import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { RegisteredClient } from '../clients/index.ts';
import { CliError, pageLimit, table, type CliContext } from './context.ts';

function clientJson(c: RegisteredClient) {
  return { client_id: c.clientId, status: c.status, created_at: c.createdAt.toISOString(), ...c.metadata };
}

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
    .option('--json', 'print JSON')
    .action(async (opts: Record<string, unknown>) => {
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
        const { client: created, clientSecret } = await clients.create(metadata);
        const lines = [`created client "${created.name}"`, `client_id:     ${created.clientId}`];
        if (clientSecret) lines.push(`client_secret: ${clientSecret}`, 'Store the secret now: it is not shown again.');
        cli.print(Boolean(opts.json), { ...clientJson(created), ...(clientSecret ? { client_secret: clientSecret } : {}) }, lines.join('\n'));
      });
    });

  client
    .command('list')
    .description('list clients, ordered by client_id')
    .option('--limit <n>', 'at most this many (1-500)', '100')
    .option('--after <client_id>', 'start after this client_id (paging)')
    .option('--json', 'print JSON')
    .action(async (opts: { limit: string; after?: string; json?: boolean }) => {
      const limit = pageLimit.parse(opts.limit);
      await cli.withServices(async ({ clients }) => {
        const list = await clients.list({ limit, ...(opts.after ? { after: opts.after } : {}) });
        cli.print(
          Boolean(opts.json),
          list.map(clientJson),
          table(
            ['CLIENT_ID', 'NAME', 'AUTH', 'GRANTS', 'STATUS'],
            list.map((c) => [c.clientId, c.name, c.metadata.token_endpoint_auth_method, c.metadata.grant_types.join(','), c.status]),
          ),
        );
      });
    });
}
