/**
 * Telling "the database is not there right now" apart from every other failure, so callers can
 * answer 503 with Retry-After (and the provider `temporarily_unavailable`) instead of a 500.
 */

/** How long clients are asked to wait before retrying while the database is away. */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = 5;

/**
 * The database cannot be reached or did not answer in time. Shaped like an exposed OAuth error
 * (`error`, `error_description`, status 503) so that oidc-provider, which renders any such
 * error as is, answers `temporarily_unavailable` (RFC 6749 sections 4.1.2.1 and 5.2) on its own
 * routes, without this module depending on it. The driver's error is kept as `cause`, for the log.
 */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
  readonly status = 503;
  readonly statusCode = 503;
  readonly expose = true;
  readonly error = 'temporarily_unavailable';
  readonly error_description = 'the service is temporarily unavailable; please try again in a few seconds';

  constructor(cause: unknown) {
    // oidc-provider reports `message` as the OAuth error code.
    super('temporarily_unavailable', { cause });
  }
}

// Socket and DNS failures on the way to the server.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
// SQLSTATEs: connection exceptions (class 08), the server shutting down or starting up (57P01-03),
// too many connections (53300) and a statement cancelled by statement_timeout (57014).
const SQLSTATES = /^(08...|57P0[123]|53300|57014)$/;
// pg's own connection failures carry no code. knex prefixes messages with the failed SQL and " - ".
const PG_MESSAGES = /(?:^| - )(Connection terminated|Query read timeout|Client has encountered a connection error|Client was closed and is not queryable|timeout exceeded when trying to connect)/;
// pg.Client's connect timeout says only this, and reaches callers unwrapped when a pool opens a
// connection (the first query after the pool lost its connections).
const PG_CONNECT_TIMEOUT = /^timeout expired$/;

/** True when `err` (or what caused it) says the database is unreachable or not answering. */
export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
  if (!(err instanceof Error) || depth > 5) return false;
  if (err instanceof DatabaseUnavailableError || err.name === 'KnexTimeoutError') return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code) || SQLSTATES.test(code)) return true;
  } else if (PG_MESSAGES.test(err.message) || PG_CONNECT_TIMEOUT.test(err.message)) {
    return true;
  }
  if (err instanceof AggregateError && err.errors.some((e) => isDatabaseUnavailable(e, depth + 1))) return true;
  return isDatabaseUnavailable(err.cause, depth + 1);
}

/** What to tell an operator when the database cannot be reached (the CLI, a failed start). */
export function unavailableMessage(err: unknown): string {
  let code: string | undefined;
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 6 && !code; e = e.cause, depth += 1) {
    const c = (e as { code?: unknown }).code;
    if (typeof c === 'string') code = c;
  }
  return `the database is unreachable or not answering${code ? ` (${code})` : ''}; check DATABASE_URL and that PostgreSQL is running`;
}
