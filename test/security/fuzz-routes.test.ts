/**
 * Property-based fuzzing (fast-check) of every public route: hostile query strings (duplicated,
 * oversized, unicode, NUL, unpaired surrogates, CR/LF), wrong and missing content types, malformed
 * JSON and forms, raw bytes, oversized bodies, hostile Authorization and Cookie headers, and
 * sometimes real credentials (a client secret, a patient's and an admin's access tokens, a signed-in
 * admin's session and CSRF token, a live interaction) so the hostile part reaches deep code.
 *
 * For every case: no 5xx, no stack trace or internals in the body, nothing injected into the
 * response headers, and a refused request (4xx, or a redirect carrying `error=`) wrote nothing.
 * "Wrote nothing" is checked case by case with a checksum over every table that holds state:
 *   clients, accounts, oidc_payloads (all but a session's sliding expiry), consents, consent_versions, privacy_preferences,
 *   representatives, mfa_factors, recovery_codes, initial_access_tokens, launch_contexts,
 *   grant_contexts, signing_keys, account_notices, client_usage_hourly.
 * Tables a refusal writes by design are left out of the checksum and checked instead:
 *   - audit_events: a refusal may only add events whose outcome is `failure` or `denied` and whose
 *     type is one of REFUSAL_EVENTS (token/introspection/revocation refusals, failed or throttled
 *     logins, rate limits); audit_chain only seals those events.
 *   - login_throttle and rate_limits: counters of failed logins and requests, which is their job.
 * Requests that are accepted (a 2xx page, an authorization request that starts an interaction,
 * `active: false` from introspection, RFC 7009's 200 for an unknown token) move the baseline.
 *
 * About 3,200 cases run in about a minute on PGlite. FUZZ_RUNS_FACTOR=10 runs ten times as many
 * (a nightly job); FUZZ_LOG_ALL=1 logs every problem and carries on instead of stopping at the
 * first, which helps when triaging a batch of findings.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminPagesAgent, adminToken, createAdminTool, createMfaAdmin } from '../helpers/admin.ts';
import { codeFlow, discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, accountPagesAgent, csrfTokenOf } from '../helpers/browserless.ts';

const STATE_TABLES = [
  'clients',
  'accounts',
  'oidc_payloads',
  'consents',
  'consent_versions',
  'privacy_preferences',
  'representatives',
  'mfa_factors',
  'recovery_codes',
  'initial_access_tokens',
  'launch_contexts',
  'grant_contexts',
  'signing_keys',
  'account_notices',
  'client_usage_hourly',
];
/**
 * oidc-provider re-saves the session of every request that carries its cookie, refused ones
 * included, sliding its expiry (`exp` in the payload, and the adapter's `expires_at` derived from
 * it). Everything else about the session, and every other payload, must not change.
 */
const PAYLOAD_COLUMNS = `(select kind, id, case when kind = 'Session' then payload - 'exp' else payload end as payload, grant_id, uid, user_code, consumed_at from oidc_payloads)`;
const REFUSAL_EVENTS = new Set(['token.refused', 'introspection.refused', 'revocation.refused', 'login.failure', 'login.throttled', 'rate_limit.exceeded']);

/** Stack frames, module paths and raw error names: what an unhandled error would leak. */
const LEAK = /\n\s+at [^\n]*[(:]\d|node_modules|\/work\/|file:\/\/\/|\b(TypeError|SyntaxError|ReferenceError|RangeError|ZodError|DatabaseError)\b|invalid byte sequence|violates (not-null|unique|check)/;
const INJECTED_HEADER = 'x-fuzz-injected';
const RUNS_FACTOR = Number(process.env.FUZZ_RUNS_FACTOR ?? 1);
const runs = (n: number) => Math.max(1, Math.round(n * RUNS_FACTOR));

const NASTY: string[] = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  'x\udfff',
  '😀',
  'é',
  '\u202e\u200b',
  '%00',
  '%',
  '%zz',
  '+',
  '../../../../etc/passwd',
  '<script>alert(1)</script>',
  '"\'><img src=x onerror=alert(1)>',
  '\\',
  '{}',
  '[]',
  'null',
  'undefined',
  'NaN',
  '-1',
  '0',
  '1e999',
  '9'.repeat(40),
  '__proto__',
  'constructor',
  'hasOwnProperty',
  `\r\n${INJECTED_HEADER}: 1`,
  `x\r\nSet-Cookie: ${INJECTED_HEADER}=1`,
  'javascript:alert(1)',
  'https://evil.example/cb',
  REDIRECT_URI,
  'openid',
  'openid offline_access launch patient/*.rs custos:admin',
  'code',
  'S256',
  'none',
  'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.',
  "' OR 1=1 --",
  '$where',
  'x'.repeat(3000),
];

/** What databases and decoders choke on, drawn often on its own: one NASTY string in forty is too rare. */
const STORAGE_HOSTILE = ['\u0000', 'a\u0000b', '\ud800', 'x\udfff', '%', '_', '\\', "'", '%00'];

const hostileString = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 1, arbitrary: fc.constantFrom(...STORAGE_HOSTILE) },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 10 }) },
  { weight: 1, arbitrary: fc.nat({ max: 9000 }).map((n) => 'A'.repeat(n + 1000)) },
);

/** Header values must be Latin-1 without CR/LF/NUL or fetch refuses to send them. */
const headerSafe = (s: string) => s.replace(/[^\x20-\x7e]/g, '').slice(0, 4000);

const OAUTH_PARAMS = [
  'client_id',
  'redirect_uri',
  'response_type',
  'response_mode',
  'scope',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
  'prompt',
  'max_age',
  'acr_values',
  'claims',
  'request',
  'request_uri',
  'aud',
  'launch',
  'resource',
  'id_token_hint',
  'post_logout_redirect_uri',
  'logout',
  'xsrf',
  'grant_type',
  'code',
  'code_verifier',
  'refresh_token',
  'client_assertion',
  'client_assertion_type',
  'client_secret',
  'token',
  'token_type_hint',
  'ui_locales',
  'login_hint',
  'authorization_details',
];
const PAGE_PARAMS = ['_csrf', 'actor', 'username', 'password', 'code', 'recovery_code', 'patient', 'scope', 'scopes', 'limits', 'remember', 'action', 'reason', 'grace', 'q', 'status', 'limit', 'cursor', 'sort', 'order', 'type', 'from', 'to', 'done', 'role', 'disabled', 'category', 'verified', 'origin', 'unused_days', 'client_name', 'redirect_uris', 'jwks', 'contacts', 'fhir_id', 'note', 'expires_in', 'hidden', 'labels', 'confirm'];
const PARAM_NAMES = [...OAUTH_PARAMS, ...PAGE_PARAMS];

const paramName = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...PARAM_NAMES) }, { weight: 1, arbitrary: hostileString.map((s) => s.slice(0, 50)) });
/** [name, value] pairs; names repeat, so some parameters arrive twice (or as arrays). */
const params = fc.array(fc.tuple(paramName, hostileString), { maxLength: 8 });

/** A hostile JSON value, with our field names as keys so it reaches the schemas. */
const jsonValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    hostileString,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...PARAM_NAMES, 'client_id', 'token_endpoint_auth_method', 'grant_types', 'jwks', 'keys', 'kty', 'owner', 'status'), hostileString), tie('value'), { maxKeys: 5 }),
  ),
})).value;

type Body = { kind: 'none' } | { kind: 'raw'; type: string; data: string | Uint8Array };

const CONTENT_TYPES = [
  'application/x-www-form-urlencoded',
  'application/json',
  'application/fhir+json',
  'text/plain',
  'text/html',
  'multipart/form-data; boundary=fuzz',
  'application/jwt',
  'application/xml',
  'application/json; charset=utf-7',
  'application/x-www-form-urlencoded; charset=utf-16',
  'application/octet-stream',
  '',
  'garbage',
];

const body: fc.Arbitrary<Body> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<Body>({ kind: 'none' }) },
  {
    weight: 3,
    arbitrary: fc.tuple(params, fc.constantFrom(...CONTENT_TYPES)).map(([p, type]): Body => ({ kind: 'raw', type: type || 'application/x-www-form-urlencoded', data: new URLSearchParams(p).toString() })),
  },
  { weight: 3, arbitrary: fc.tuple(jsonValue, fc.constantFrom('application/json', 'application/json', 'application/fhir+json', 'text/plain')).map(([v, type]): Body => ({ kind: 'raw', type, data: JSON.stringify(v) ?? 'null' })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom('{', '{"a":', '[1,', '{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"x":1}}}', 'null', '"str"', '1', 'a=1&&&=&a', '%%%=%', '=', '\u0000', '\ufeff{}', '{"a":1,"a":2}'), fc.constantFrom(...CONTENT_TYPES))
      .map(([data, type]): Body => ({ kind: 'raw', type, data })),
  },
  { weight: 1, arbitrary: fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(...CONTENT_TYPES)).map(([data, type]): Body => ({ kind: 'raw', type, data })) },
  // Over the 56 KiB cap, and just under it (read in full by the parsers).
  { weight: 1, arbitrary: fc.constantFrom(60 * 1024, 50 * 1024).map((n): Body => ({ kind: 'raw', type: 'application/x-www-form-urlencoded', data: `a=${'x'.repeat(n)}` })) },
);

interface Credentials {
  clientId: string;
  clientSecret: string;
  patientToken: string;
  adminToken: string;
  /** A live interaction's URL path and its login form's CSRF token. */
  interaction: { path: string; csrf: string; agent: UserAgent };
  adminPages: { agent: UserAgent; csrf: string };
  /** A patient signed in to the account pages. */
  accountPages: { agent: UserAgent; csrf: string };
  /** Client-credentials tokens of a resource server (custos:introspect) and an EHR (custos:ehr-launch). */
  resourceServerToken: string;
  ehrToken: string;
  /** A dynamically registered client and its RFC 7592 registration access token. */
  registered: { clientId: string; token: string };
}

type Auth =
  | 'none'
  | 'hostile-bearer'
  | 'patient'
  | 'admin'
  | 'client-basic'
  | 'hostile-basic'
  | 'admin-session'
  | 'account-session'
  | 'interaction'
  | 'resource-server'
  | 'ehr'
  | 'initial-token'
  | 'registration';
const auth = fc.constantFrom<Auth>(
  'none',
  'none',
  'hostile-bearer',
  'patient',
  'admin',
  'client-basic',
  'hostile-basic',
  'admin-session',
  'account-session',
  'interaction',
  'resource-server',
  'ehr',
  'initial-token',
  'registration',
);

interface Case {
  method: string;
  path: string;
  query: [string, string][];
  body: Body;
  auth: Auth;
  hostileAuth: string;
  accept: string;
  origin: string | undefined;
  cookie: string | undefined;
  /** X-Forwarded-For/-Proto/-Host (the server trusts a proxy, so they count). */
  forwarded: [string, string, string] | undefined;
}

/** Path segments: random ids, traversal, encoded NULs and the like (encoded as a browser would). */
const segment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('x', '0', '00000000-0000-0000-0000-000000000000', 'AAAAAAAAAAAAAAAAAAAAAA', '..', '%2e%2e', '%00', '%ff', '%', 'Consent', '_history') },
  { weight: 2, arbitrary: hostileString.map((s) => encodeURIComponent(/\p{Cs}/u.test(s) ? 'x' : s).slice(0, 300) || 'y') },
);

/**
 * Every public route, with the methods it answers (plus one it does not, for 404/405 paths).
 * `:x` is replaced by a hostile segment.
 */
const ROUTES: [string[], string][] = [
  [['GET', 'OPTIONS'], '/.well-known/openid-configuration'],
  [['GET', 'OPTIONS', 'POST'], '/.well-known/smart-configuration'],
  [['GET', 'POST'], '/jwks'],
  [['GET'], '/smart/style.json'],
  [['POST'], '/smart/launch'],
  [['GET', 'POST', 'PUT'], '/auth'],
  [['POST', 'GET', 'OPTIONS'], '/token'],
  [['POST', 'GET'], '/token/introspection'],
  [['POST', 'GET'], '/token/revocation'],
  [['POST', 'GET'], '/request'],
  [['GET', 'POST', 'OPTIONS', 'DELETE'], '/me'],
  [['GET', 'POST'], '/session/end'],
  [['POST', 'GET'], '/session/end/confirm'],
  [['GET'], '/session/end/success'],
  [['GET', 'POST'], '/interaction/:x'],
  [['POST', 'GET'], '/interaction/:x/login'],
  [['POST'], '/interaction/:x/otp'],
  [['POST'], '/interaction/:x/enrol'],
  [['POST'], '/interaction/:x/recovered'],
  [['POST'], '/interaction/:x/enrolled'],
  [['POST'], '/interaction/:x/patient'],
  [['POST'], '/interaction/:x/confirm'],
  [['POST'], '/interaction/:x/abort'],
  [['GET'], '/account'],
  [['GET'], '/account/callback'],
  [['GET', 'POST'], '/account/mfa/totp'],
  [['POST'], '/account/mfa/totp/remove'],
  [['POST'], '/account/mfa/recovery-codes'],
  [['POST'], '/account/logout'],
  [['GET'], '/account/apps'],
  [['GET', 'POST'], '/account/apps/:x'],
  [['GET'], '/account/apps/:x/verify'],
  [['POST'], '/account/apps/:x/revoke'],
  [['GET'], '/account/apps/:x/fhir'],
  [['GET', 'POST'], '/account/privacy'],
  [['GET'], '/account/privacy/verify'],
  [['GET', 'POST', 'PUT', 'DELETE'], '/register'],
  [['GET', 'PUT', 'DELETE', 'POST'], '/register/:x'],
  [['GET', 'POST'], '/fhir/Consent/:x'],
  [['GET'], '/fhir/Consent/:x/_history/:x'],
  [['GET'], '/admin'],
  [['GET'], '/admin/callback'],
  [['GET', 'POST'], '/admin/clients'],
  [['GET'], '/admin/clients/new'],
  [['GET'], '/admin/clients/:x'],
  [['GET', 'POST'], '/admin/clients/:x/edit'],
  [['POST'], '/admin/clients/:x/approve'],
  [['POST'], '/admin/clients/:x/suspend'],
  [['POST'], '/admin/clients/:x/reactivate'],
  [['POST'], '/admin/clients/:x/retire'],
  [['POST'], '/admin/clients/:x/secret'],
  [['GET'], '/admin/accounts'],
  [['GET'], '/admin/accounts/:x'],
  [['POST'], '/admin/accounts/:x/disable'],
  [['POST'], '/admin/accounts/:x/enable'],
  [['POST'], '/admin/accounts/:x/mfa-reset'],
  [['GET'], '/admin/audit'],
  [['GET'], '/admin/audit/fhir'],
  [['GET'], '/admin/api/openapi.json'],
  [['GET', 'POST', 'DELETE'], '/admin/api/clients'],
  [['GET', 'PATCH', 'PUT'], '/admin/api/clients/:x'],
  [['POST'], '/admin/api/clients/:x/approve'],
  [['POST'], '/admin/api/clients/:x/suspend'],
  [['POST'], '/admin/api/clients/:x/reactivate'],
  [['POST'], '/admin/api/clients/:x/retire'],
  [['POST'], '/admin/api/clients/:x/secret'],
  [['GET'], '/admin/api/inventory/export'],
  [['POST', 'GET'], '/admin/api/initial-access-tokens'],
  [['GET', 'POST'], '/admin/api/accounts'],
  [['GET'], '/admin/api/accounts/:x'],
  [['POST'], '/admin/api/accounts/:x/disable'],
  [['POST'], '/admin/api/accounts/:x/enable'],
  [['PUT'], '/admin/api/accounts/:x/fhir-link'],
  [['POST'], '/admin/api/accounts/:x/mfa/reset'],
  [['GET'], '/admin/api/audit'],
  [['GET'], '/admin/api/audit/fhir'],
  [['GET', 'HEAD'], '/healthz'],
  [['GET'], '/readyz'],
  [['GET'], '/metrics'],
  [['GET'], '/static/custos.css'],
  [['GET'], '/favicon.ico'],
  [['GET'], '/demo'],
  [['GET'], '/demo/app/launch'],
  [['GET'], '/demo/app/callback'],
  [['GET'], '/demo/ehr'],
  [['POST'], '/demo/ehr/launch'],
  [['GET', 'POST', 'PATCH'], '/:x'],
  [['GET', 'POST'], '/:x/:x/:x'],
];

const route = fc.constantFrom(...ROUTES).chain(([methods, template]) =>
  fc.tuple(fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...methods) }, { weight: 1, arbitrary: fc.constantFrom('OPTIONS', 'PATCH', 'DELETE', 'PUT') }), fc.array(segment, { minLength: 3, maxLength: 3 })).map(([method, segs]) => {
    let i = 0;
    return { method, path: template.replace(/:x/g, () => segs[i++]!) };
  }),
);

const fuzzCase: fc.Arbitrary<Case> = fc
  .record({
    route,
    query: params,
    body,
    auth,
    hostileAuth: hostileString,
    accept: fc.constantFrom('*/*', 'text/html', 'application/json', 'application/fhir+json', 'text/csv', 'image/png', 'garbage/garbage;;q=x', ''),
    origin: fc.option(fc.constantFrom('https://evil.example', 'null', 'http://127.0.0.1:8765', 'x'), { nil: undefined, freq: 2 }),
    cookie: fc.option(hostileString.map((s) => `_session=${headerSafe(s)}; _interaction=${headerSafe(s)}; _session.legacy.sig=x`), { nil: undefined, freq: 2 }),
    // Mostly absent: a hostile forwarded host is refused up front, before the route.
    forwarded: fc.oneof(
      { weight: 6, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6(), hostileString.map(headerSafe)), fc.constantFrom('http', 'https', 'ftp', ''), fc.oneof(fc.domain(), hostileString.map(headerSafe))) },
    ),
  })
  .map(({ route: r, ...rest }) => ({ ...r, ...rest }));

describe('fuzzing every public route: no 5xx, no leaked internals, no writes from refused requests', { timeout: 600_000 }, () => {
  let server: TestServer;
  let creds: Credentials;
  let lastEventId = 0;
  let baseline = '';
  let tally = { cases: 0, refused: 0, accepted: 0, byStatus: new Map<number, number>() };
  let total = 0;

  /** This test's case count and status spread (then starts the next test's count). */
  function summary(): string {
    total += tally.cases;
    const statuses = JSON.stringify(Object.fromEntries([...tally.byStatus].sort(([a], [b]) => a - b)));
    const line = `${tally.cases} cases (${total} so far): ${tally.refused} refused, ${tally.accepted} accepted; statuses ${statuses}`;
    tally = { cases: 0, refused: 0, accepted: 0, byStatus: new Map() };
    return line;
  }

  /** The server under test: the main one, or for authorize-post the one behind an https proxy. */
  let current: TestServer;
  let proxyHeaders: Record<string, string> = {};
  const db = () => current.running.services.db;

  async function checksum(): Promise<string> {
    // Client usage counts reach the table in batches, on a timer: written now, they cannot land in
    // the middle of a later case and pass for that case's write.
    await current.running.services.clients.flushUsage();
    const parts = STATE_TABLES.map((t) => `(select count(*) || ':' || md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from ${t === 'oidc_payloads' ? PAYLOAD_COLUMNS : t} x)`);
    const row = (await db().raw(`select ${parts.join(` || ',' || `)} as sum`)) as { rows: { sum: string }[] };
    return row.rows[0]!.sum;
  }

  async function newEvents(): Promise<{ id: string; type: string; outcome: string }[]> {
    const rows = await db()('audit_events').where('id', '>', lastEventId).orderBy('id').select('id', 'type', 'outcome');
    if (rows.length) lastEventId = Number(rows.at(-1)!.id);
    return rows;
  }

  function describeCase(c: Case): string {
    const b = c.body.kind === 'none' ? 'none' : `${c.body.type} ${JSON.stringify(typeof c.body.data === 'string' ? c.body.data.slice(0, 300) : `<${c.body.data.length} bytes>`)}`;
    const extra = `${c.forwarded ? ` forwarded=${JSON.stringify(c.forwarded).slice(0, 200)}` : ''}${c.cookie ? ` cookie=${JSON.stringify(c.cookie.slice(0, 100))}` : ''}`;
    return `${c.method} ${c.path.slice(0, 300)} query=${JSON.stringify(c.query).slice(0, 500)} auth=${c.auth} body=${b}${extra}`;
  }

  async function send(c: Case): Promise<{ status: number; text: string; headers: Headers; url: string }> {
    const url = new URL(c.path, current.issuer.replace(/^https:/, 'http:'));
    url.search = new URLSearchParams(c.query).toString();
    const headers: Record<string, string> = { ...proxyHeaders };
    if (c.accept) headers.accept = c.accept;
    if (c.origin) headers.origin = c.origin;
    if (c.cookie) headers.cookie = c.cookie;
    if (c.forwarded) [headers['x-forwarded-for'], headers['x-forwarded-proto'], headers['x-forwarded-host']] = c.forwarded;
    const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
    let form: [string, string][] | undefined;
    switch (c.auth) {
      case 'hostile-bearer':
        headers.authorization = `Bearer ${headerSafe(c.hostileAuth)}`;
        break;
      case 'hostile-basic':
        headers.authorization = c.hostileAuth.length % 2 ? basic(c.hostileAuth, c.hostileAuth) : `Basic ${headerSafe(c.hostileAuth)}`;
        break;
      case 'patient':
        headers.authorization = `Bearer ${creds.patientToken}`;
        break;
      case 'admin':
        headers.authorization = `Bearer ${creds.adminToken}`;
        break;
      case 'client-basic':
        headers.authorization = basic(creds.clientId, creds.clientSecret);
        break;
      case 'resource-server':
        headers.authorization = `Bearer ${creds.resourceServerToken}`;
        break;
      case 'ehr':
        headers.authorization = `Bearer ${creds.ehrToken}`;
        break;
      case 'initial-token': {
        // A fresh single-use token each time; issuing it is not the case's write, so re-baseline.
        headers.authorization = `Bearer ${(await server.running.services.initialTokens.issue({ expiresIn: 600 }, { actor: 'fuzz' })).token}`;
        baseline = await checksum();
        await newEvents();
        break;
      }
      case 'registration':
        headers.authorization = `Bearer ${creds.registered.token}`;
        // Its own management URL (deleting it would end these cases, so DELETE becomes GET).
        if (url.pathname.startsWith('/register/')) {
          url.pathname = `/register/${creds.registered.clientId}`;
          if (c.method === 'DELETE') c = { ...c, method: 'GET' };
        }
        break;
      case 'admin-session':
      case 'account-session':
      case 'interaction': {
        // Signing out would end every later case's session.
        if (url.pathname.endsWith('/logout')) break;
        const { agent, csrf } = c.auth === 'admin-session' ? creds.adminPages : c.auth === 'account-session' ? creds.accountPages : creds.interaction;
        const cookie = await agent.jar.getCookieString(url.toString());
        if (cookie) headers.cookie = cookie;
        form = [['_csrf', csrf]];
        break;
      }
    }
    let payload: string | Uint8Array | undefined;
    if (c.body.kind === 'raw' && c.method !== 'GET' && c.method !== 'HEAD') {
      payload = c.body.data;
      headers['content-type'] = c.body.type;
      // With a session, the real CSRF token goes first so the hostile fields reach the handler.
      if (form && typeof payload === 'string' && c.body.type.startsWith('application/x-www-form-urlencoded')) payload = `${new URLSearchParams(form).toString()}&${payload}`;
    }
    const res = await fetch(url, { method: c.method, headers, body: payload, redirect: 'manual', signal: AbortSignal.timeout(20_000) });
    return { status: res.status, text: await res.text(), headers: res.headers, url: url.toString() };
  }

  /**
   * Sends one case and checks every invariant. The baseline always moves to the state after the
   * case, so one failure does not cascade into the next case's verdict.
   */
  async function check(c: Case): Promise<void> {
    const res = await send(c);
    tally.cases += 1;
    tally.byStatus.set(res.status, (tally.byStatus.get(res.status) ?? 0) + 1);
    const location = res.headers.get('location') ?? '';
    const refused = res.status >= 400 || (res.status >= 300 && /[?&#]error=/.test(location));
    const [sum, events] = [await checksum(), await newEvents()];
    const before = baseline;
    baseline = sum;
    const problems: string[] = [];
    if (res.status >= 500) problems.push('server error');
    if (LEAK.test(res.text)) problems.push('internals leaked');
    if (res.headers.get(INJECTED_HEADER) !== null || res.headers.getSetCookie().some((k) => k.startsWith(INJECTED_HEADER))) problems.push('header injected');
    if (refused) {
      tally.refused += 1;
      if (sum !== before) problems.push('a refused request changed stored state');
      for (const e of events) {
        if (!REFUSAL_EVENTS.has(e.type) || e.outcome === 'success') problems.push(`a refused request wrote audit event ${e.type}/${e.outcome}`);
      }
    } else {
      tally.accepted += 1;
    }
    if (problems.length && process.env.FUZZ_LOG_ALL) return void console.log('PROBLEM', problems.join('; '), describeCase(c).slice(0, 1200), '->', res.status, res.text.slice(0, 300));
    if (problems.length) assert.fail(`${problems.join('; ')}: ${describeCase(c)} -> ${res.status} ${res.text.slice(0, 400)}`);
  }

  before(async () => {
    server = await startTestServer({ env: { METRICS_TOKEN: 'm'.repeat(40), FHIR_BASE_URLS: 'https://fhir.example.org/r4', TRUST_PROXY: 'true' } });
    current = server;
    const patient = await server.createAccount({ username: 'fuzzpatient', role: 'patient', fhirId: 'fuzz-1' });
    const web = await server.createClient({ client_name: 'Fuzz Web', redirect_uris: [REDIRECT_URI], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    const webConfig = await discover(server.issuer, web.clientId, web.clientSecret);
    const { tokens } = await codeFlow(webConfig, server.issuer, patient, { scope: 'openid patient/*.rs', aud: 'https://fhir.example.org/r4' });
    const tool = await createAdminTool(server);
    const { token } = await adminToken(server, tool);
    const pages = await adminPagesAgent(server, await createMfaAdmin(server));
    const pagesHome = await pages.page('/admin/clients');
    // A live interaction: its login form is where hostile usernames and passwords go.
    const agent = new UserAgent();
    const flow = await startCodeFlow(webConfig, { scope: 'openid' });
    const login = await agent.follow(flow.url.toString(), server.issuer);
    assert.equal(login.status, 200);
    const accountPages = await accountPagesAgent(server.issuer, patient);
    const rs = await server.createClient({ client_name: 'Fuzz RS', grant_types: ['client_credentials'], scope: 'custos:introspect' });
    const ehr = await server.createClient({ client_name: 'Fuzz EHR', grant_types: ['client_credentials'], scope: 'custos:ehr-launch' });
    const cc = async (c: { clientId: string; clientSecret?: string }, scope: string) =>
      (await oidc.clientCredentialsGrant(await discover(server.issuer, c.clientId, c.clientSecret), { scope })).access_token;
    const iat = (await server.running.services.initialTokens.issue({ expiresIn: 600 }, { actor: 'fuzz' })).token;
    const registration = await fetch(`${server.issuer}/register`, {
      method: 'POST',
      headers: { authorization: `Bearer ${iat}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Fuzz Registered', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' }),
    });
    const registered = (await registration.json()) as { client_id: string; registration_access_token: string };
    creds = {
      accountPages,
      resourceServerToken: await cc(rs, 'custos:introspect'),
      ehrToken: await cc(ehr, 'custos:ehr-launch'),
      registered: { clientId: registered.client_id, token: registered.registration_access_token },
      clientId: web.clientId,
      clientSecret: web.clientSecret!,
      patientToken: tokens.access_token,
      adminToken: token,
      interaction: { path: new URL(login.url).pathname, csrf: csrfTokenOf(login.body), agent },
      adminPages: { agent: pages.agent, csrf: csrfTokenOf(pagesHome.body) },
    };
    // Let the audit sealer and token bookkeeping of the setup settle before the baseline.
    await new Promise((r) => setTimeout(r, 500));
    baseline = await checksum();
    await newEvents();
  });

  after(async () => {
    await server?.close();
  });

  it('every route, hostile method/path/query/headers/body, with and without real credentials', async (t) => {
    await fc.assert(
      fc.asyncProperty(fuzzCase, async (c) => {
        await check(c);
      }),
      { numRuns: runs(2500), endOnFailure: true },
    );
    t.diagnostic(summary());
  });

  it('the live interaction\'s login form: hostile usernames and passwords with a valid CSRF token', async (t) => {
    const form = fc.record({ username: hostileString, password: hostileString, extra: params, ip: fc.ipV4() });
    await fc.assert(
      fc.asyncProperty(form, async ({ username, password, extra, ip }) => {
        await check({
          method: 'POST',
          path: `${creds.interaction.path}/login`,
          query: [],
          body: { kind: 'raw', type: 'application/x-www-form-urlencoded', data: new URLSearchParams([['username', username], ['password', password], ...extra]).toString() },
          auth: 'interaction',
          hostileAuth: '',
          accept: 'text/html',
          origin: undefined,
          cookie: undefined,
          // A fresh client address each time, so the per-IP login throttle does not answer for the handler.
          forwarded: [ip, 'http', ''],
        });
      }),
      { numRuns: runs(300), endOnFailure: true },
    );
    t.diagnostic(summary());
  });

  it('the provider\'s client-authenticated endpoints (/token, introspection, revocation, PAR) with hostile forms', async (t) => {
    const form = fc.record({
      path: fc.constantFrom('/token', '/token/introspection', '/token/revocation', '/request'),
      grant: fc.constantFrom('authorization_code', 'refresh_token', 'client_credentials', 'urn:ietf:params:oauth:grant-type:device_code', 'password', 'implicit', ''),
      extra: params,
      auth: fc.constantFrom<Auth>('client-basic', 'client-basic', 'hostile-basic', 'patient', 'resource-server'),
      hostileAuth: hostileString,
      type: fc.constantFrom('application/x-www-form-urlencoded', 'application/x-www-form-urlencoded', 'application/json'),
    });
    await fc.assert(
      fc.asyncProperty(form, async ({ path, grant, extra, auth: how, hostileAuth, type }) => {
        const fields: [string, string][] = [['grant_type', grant], ['redirect_uri', REDIRECT_URI], ['client_id', creds.clientId], ...extra];
        const data = type === 'application/json' ? JSON.stringify(Object.fromEntries(fields)) : new URLSearchParams(fields).toString();
        await check({ method: 'POST', path, query: [], body: { kind: 'raw', type, data }, auth: how, hostileAuth, accept: 'application/json', origin: undefined, cookie: undefined, forwarded: undefined });
      }),
      { numRuns: runs(400), endOnFailure: true },
    );
    t.diagnostic(summary());
  });

  it('the admin searches and filters, API and pages, signed in, with hostile values for their own parameters', async (t) => {
    const CLIENT_KEYS = ['status', 'category', 'verified', 'origin', 'q', 'stale', 'sort', 'order', 'limit', 'cursor'];
    const ACCOUNT_KEYS = ['q', 'role', 'disabled', 'limit', 'cursor'];
    const AUDIT_KEYS = ['actor', 'client_id', 'patient', 'type', 'from', 'to', 'limit', 'cursor'];
    const targets: [string, string[], Auth][] = [
      ['/admin/api/clients', CLIENT_KEYS, 'admin'],
      ['/admin/api/inventory/export', CLIENT_KEYS, 'admin'],
      ['/admin/api/accounts', ACCOUNT_KEYS, 'admin'],
      ['/admin/api/audit', AUDIT_KEYS, 'admin'],
      ['/admin/api/audit/fhir', AUDIT_KEYS, 'admin'],
      ['/admin/clients', CLIENT_KEYS, 'admin-session'],
      ['/admin/accounts', ACCOUNT_KEYS, 'admin-session'],
      ['/admin/audit', AUDIT_KEYS, 'admin-session'],
      ['/admin/audit/fhir', AUDIT_KEYS, 'admin-session'],
    ];
    const value = fc.oneof(hostileString, fc.constantFrom(...STORAGE_HOSTILE), fc.constantFrom('true', 'false', '1', '100', '101', '0', '-1', 'name', 'created_at', 'desc', 'approved', 'internal', 'patient', 'login.', '2026-01-01T00:00', '2026-01-01T00:00:00Z', 'AAAA', 'WyJuYW1lIiwiYSIsImIiXQ'));
    const request = fc.constantFrom(...targets).chain(([path, keys, how]) =>
      fc.record({ path: fc.constant(path), how: fc.constant(how), query: fc.array(fc.tuple(fc.constantFrom(...keys), value), { maxLength: 4 }) }),
    );
    await fc.assert(
      fc.asyncProperty(request, async ({ path, how, query }) => {
        await check({ method: 'GET', path, query, body: { kind: 'none' }, auth: how, hostileAuth: '', accept: 'text/html', origin: undefined, cookie: undefined, forwarded: undefined });
      }),
      { numRuns: runs(300), endOnFailure: true },
    );
    t.diagnostic(summary());
  });

  /** GET or POST /auth from a real client (so its redirect URI is trusted), plus hostile parameters. */
  async function authorizationProperty(clientId: string, methods: readonly ('GET' | 'POST')[], numRuns: number) {
    const request = fc.record({ extra: params, method: fc.constantFrom(...methods), pkce: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(request, async ({ extra, method, pkce }) => {
        const base: [string, string][] = [
          ['client_id', clientId],
          ['redirect_uri', REDIRECT_URI],
          ['response_type', 'code'],
          ['scope', 'openid'],
          ...(pkce ? ([['code_challenge', 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'], ['code_challenge_method', 'S256']] as [string, string][]) : []),
        ];
        const all = [...base, ...extra];
        const post = method === 'POST';
        await check({
          method,
          path: '/auth',
          query: post ? [] : all,
          body: post ? { kind: 'raw', type: 'application/x-www-form-urlencoded', data: new URLSearchParams(all).toString() } : { kind: 'none' },
          auth: 'none',
          hostileAuth: '',
          accept: 'text/html',
          origin: undefined,
          cookie: undefined,
          forwarded: undefined,
        });
      }),
      { numRuns: runs(numRuns), endOnFailure: true },
    );
  }

  it('authorization requests from a real client with hostile extra parameters (GET)', async (t) => {
    await authorizationProperty(creds.clientId, ['GET'], 300);
    t.diagnostic(summary());
  });

  it('authorize-post (SMART; only offered over https): POST and GET /auth behind an https proxy', async (t) => {
    const secure = await startTestServer({ behindHttpsProxy: true });
    try {
      const app = await secure.createClient({ client_name: 'Fuzz Secure Web', redirect_uris: [REDIRECT_URI], scope: 'openid' });
      current = secure;
      proxyHeaders = { 'x-forwarded-proto': 'https' };
      baseline = await checksum();
      lastEventId = 0;
      await newEvents();
      await authorizationProperty(app.clientId, ['POST', 'POST', 'GET'], 300);
    } finally {
      current = server;
      proxyHeaders = {};
      await secure.close();
    }
    t.diagnostic(summary());
  });
});
