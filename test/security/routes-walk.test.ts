/**
 * Walks every route the server has, ours (read from the Koa routers themselves, so a new route is
 * walked without touching this file) and oidc-provider's (from discovery and the specs), with
 * every method: used methods answer without a server error, unused ones get 405 with an Allow
 * header, and every response, whatever its status, carries the security headers and no stack
 * trace, internal message or version banner.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type Router from '@koa/router';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { adminToken, createAdminTool } from '../helpers/admin.ts';
import { discover, oidc } from '../helpers/oidc-client.ts';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const SAMPLE_PARAM = '00000000-0000-4000-8000-000000000000';

interface Route {
  path: string;
  methods: Set<string>;
  /** An OAuth endpoint or API: its answers must never be cached. */
  api: boolean;
}

/** Paths whose answers carry tokens, secrets or personal data. */
const API_PATHS = [/^\/token(\/|$)/, /^\/me$/, /^\/request$/, /^\/register(\/|$)/, /^\/admin\/api(\/|$)/, /^\/fhir\//, /^\/smart\/launch$/];

/** Our routes, as the routers mounted in the app declare them. */
function ourRoutes(server: TestServer): Route[] {
  const byPath = new Map<string, Route>();
  for (const middleware of server.running.app.middleware) {
    const router = (middleware as { router?: Router }).router;
    if (!router) continue;
    for (const layer of router.stack) {
      // router.use() middleware is not a route.
      if (layer.methods.length === 0 || typeof layer.path !== 'string') continue;
      const path = layer.path.replace(/:\w+/g, SAMPLE_PARAM);
      const route = byPath.get(path) ?? { path, methods: new Set<string>(), api: API_PATHS.some((p) => p.test(path)) };
      for (const m of layer.methods) route.methods.add(m);
      byPath.set(path, route);
    }
  }
  return [...byPath.values()];
}

/** oidc-provider's endpoints and the methods the specs give them (GET implies HEAD). */
async function providerRoutes(server: TestServer): Promise<Route[]> {
  const meta = (await (await fetch(new URL('/.well-known/openid-configuration', server.issuer))).json()) as Record<string, string>;
  const path = (url: string | undefined) => {
    assert.ok(url, 'discovery names the endpoint');
    return new URL(url).pathname;
  };
  const route = (p: string, methods: string[], api: boolean): Route => ({ path: p, methods: new Set(methods.includes('GET') ? [...methods, 'HEAD'] : methods), api });
  return [
    route('/.well-known/openid-configuration', ['GET'], false),
    route('/.well-known/oauth-authorization-server', ['GET'], false),
    route(path(meta.jwks_uri), ['GET'], false),
    // POST at the authorization endpoint only over https (SMART authorize-post); this server is http.
    route(path(meta.authorization_endpoint), ['GET'], false),
    route(`${path(meta.authorization_endpoint)}/${SAMPLE_PARAM}`, ['GET'], false),
    route(path(meta.token_endpoint), ['POST'], true),
    route(path(meta.userinfo_endpoint), ['GET', 'POST'], true),
    route(path(meta.introspection_endpoint), ['POST'], true),
    route(path(meta.revocation_endpoint), ['POST'], true),
    route(path(meta.pushed_authorization_request_endpoint), ['POST'], true),
    route(path(meta.end_session_endpoint), ['GET'], false),
    route(`${path(meta.end_session_endpoint)}/confirm`, ['POST'], false),
    route(`${path(meta.end_session_endpoint)}/success`, ['GET'], false),
  ];
}

/** What is wrong with a response's headers or body, if anything. */
function headerProblems(res: Response, body: string, what: string, api: boolean): string[] {
  const h = res.headers;
  const csp = h.get('content-security-policy') ?? '';
  const checks: Array<[boolean, string]> = [
    [/frame-ancestors 'none'/.test(csp), 'CSP does not forbid framing'],
    [/default-src 'self'/.test(csp), 'CSP has no default-src'],
    [!/unsafe-inline|unsafe-eval/.test(csp), 'CSP allows unsafe sources'],
    [h.get('x-content-type-options') === 'nosniff', 'no X-Content-Type-Options: nosniff'],
    [h.get('x-frame-options') === 'DENY', 'no X-Frame-Options: DENY'],
    [h.get('referrer-policy') === 'no-referrer', 'no Referrer-Policy: no-referrer'],
    [h.get('x-powered-by') === null, `X-Powered-By: ${h.get('x-powered-by')}`],
    [h.get('server') === null, `Server: ${h.get('server')}`],
    [!(api || res.status >= 400) || /no-store/.test(h.get('cache-control') ?? ''), `Cache-Control: ${h.get('cache-control')}`],
    [!/\n\s+at .+[(:]\d+|node_modules|\.ts:\d+|\.js:\d+/.test(body), 'stack trace in the body'],
    [!/oidc-provider|\bkoa\b|knex|pglite|postgres|TypeError|ReferenceError|SyntaxError/i.test(body), 'internals named in the body'],
    // Successful answers hold data with dotted numbers (addresses, the OpenAPI version); refusals do not.
    [res.status < 300 || !/\bv?\d+\.\d+\.\d+\b/.test(body), 'a version number in an error body'],
    [!/\bnode\/?v?\d|\bcustos\/\d|express|nginx/i.test(body), 'a software banner in the body'],
  ];
  return checks.filter(([ok]) => !ok).map(([, problem]) => `${what}: ${problem}`);
}

describe('every route, every method', () => {
  let server: TestServer;
  let routes: Route[];

  before(async () => {
    server = await startTestServer();
    routes = [...ourRoutes(server), ...(await providerRoutes(server))];
  });
  after(() => server.close());

  it('finds the routes to walk in the routers', () => {
    const paths = routes.map((r) => r.path);
    for (const expected of ['/healthz', `/interaction/${SAMPLE_PARAM}/login`, '/admin/api/clients', '/register', '/account', '/token', '/jwks']) {
      assert.ok(paths.includes(expected), `${expected} is walked`);
    }
    assert.ok(routes.length > 60, `${routes.length} routes`);
  });

  it('answers unused methods with 405 and an Allow header naming the used ones', async () => {
    const problems: string[] = [];
    for (const route of routes) {
      for (const method of METHODS) {
        if (route.methods.has(method) || method === 'OPTIONS') continue;
        const res = await fetch(new URL(route.path, server.issuer), { method, redirect: 'manual', headers: { accept: 'application/json' } });
        const body = await res.text();
        const allow = new Set((res.headers.get('allow') ?? '').split(/,\s*/).filter(Boolean));
        if (res.status !== 405) problems.push(`${method} ${route.path}: ${res.status}`);
        else if ([...route.methods].some((m) => !allow.has(m))) problems.push(`${method} ${route.path}: Allow "${res.headers.get('allow')}"`);
        else if (method !== 'HEAD' && !body.includes('method_not_allowed')) problems.push(`${method} ${route.path}: body ${body.slice(0, 100)}`);
        problems.push(...headerProblems(res, body, `${method} ${route.path}`, true));
      }
    }
    assert.deepEqual(problems, []);
  });

  it('answers OPTIONS (without a CORS preflight) with the allowed methods', async () => {
    const problems: string[] = [];
    for (const route of routes) {
      const res = await fetch(new URL(route.path, server.issuer), { method: 'OPTIONS', redirect: 'manual' });
      const body = await res.text();
      const allow = new Set((res.headers.get('allow') ?? '').split(/,\s*/).filter(Boolean));
      if (res.status >= 300) problems.push(`OPTIONS ${route.path}: ${res.status}`);
      else if ([...route.methods].some((m) => m !== 'OPTIONS' && !allow.has(m))) problems.push(`OPTIONS ${route.path}: Allow "${res.headers.get('allow')}"`);
      // An empty OPTIONS answer holds nothing worth keeping out of caches.
      problems.push(...headerProblems(res, body, `OPTIONS ${route.path}`, false));
    }
    assert.deepEqual(problems, []);
  });

  it('answers the used methods without a server error, with the security headers on every status', async () => {
    const problems: string[] = [];
    const seen = new Set<number>();
    for (const route of routes) {
      for (const method of route.methods) {
        if (method === 'OPTIONS') continue;
        const withBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
        // As an API client and as a browser: errors render as JSON or as a page.
        for (const accept of ['*/*', 'text/html']) {
          const res = await fetch(new URL(route.path, server.issuer), {
            method,
            redirect: 'manual',
            headers: { accept, ...(withBody ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
            body: withBody ? '' : undefined,
          });
          const body = await res.text();
          seen.add(Math.floor(res.status / 100));
          const what = `${method} ${route.path} (${accept}, ${res.status})`;
          if (res.status >= 500) problems.push(`${what}: ${body.slice(0, 120)}`);
          problems.push(...headerProblems(res, body, what, route.api));
        }
      }
    }
    assert.deepEqual(problems, []);
    assert.deepEqual([...seen].sort(), [2, 3, 4], 'the walk saw successes, redirects and refusals');
  });

  it('keeps successful API and OAuth answers out of caches too', async () => {
    const problems: string[] = [];
    const { token } = await adminToken(server, await createAdminTool(server));
    const ok = new Set<string>();
    for (const route of routes.filter((r) => r.path.startsWith('/admin/api') && r.methods.has('GET'))) {
      const res = await fetch(new URL(route.path, server.issuer), { headers: { authorization: `Bearer ${token}` } });
      const body = await res.text();
      if (res.status >= 500) problems.push(`GET ${route.path}: ${res.status}`);
      if (res.status === 200) ok.add(route.path);
      problems.push(...headerProblems(res, body, `GET ${route.path} as an admin (${res.status})`, true));
    }
    assert.ok(ok.has('/admin/api/clients') && ok.has('/admin/api/accounts') && ok.has('/admin/api/audit'), [...ok].join(' '));

    // Past authentication, every body the admin API parses: broken JSON, the wrong JSON, a form.
    const refusals = new Set<number>();
    for (const route of routes.filter((r) => r.path.startsWith('/admin/api'))) {
      for (const method of [...route.methods].filter((m) => m === 'POST' || m === 'PUT' || m === 'PATCH')) {
        for (const [type, payload] of [['application/json', '{"client_name":'], ['application/json', '[1,2]'], ['application/json', '"x"'], ['application/x-www-form-urlencoded', 'a=b']]) {
          const res = await fetch(new URL(route.path, server.issuer), { method, headers: { authorization: `Bearer ${token}`, 'content-type': type! }, body: payload });
          const body = await res.text();
          refusals.add(res.status);
          if (res.status < 400 || res.status >= 500) problems.push(`${method} ${route.path} ${payload}: ${res.status} ${body.slice(0, 120)}`);
          if (!/application\/problem\+json/.test(res.headers.get('content-type') ?? '')) problems.push(`${method} ${route.path} ${payload}: ${res.headers.get('content-type')}`);
          problems.push(...headerProblems(res, body, `${method} ${route.path} ${payload} (${res.status})`, true));
        }
      }
    }
    assert.ok(refusals.has(400), `malformed bodies were parsed and refused (${[...refusals].join(', ')})`);

    const svc = await server.createClient({ client_name: 'Walk svc', grant_types: ['client_credentials'] });
    const config = await discover(server.issuer, svc.clientId, svc.clientSecret);
    const basic = `Basic ${Buffer.from(`${svc.clientId}:${svc.clientSecret}`).toString('base64')}`;
    const form = { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' };
    const issued = await fetch(new URL('/token', server.issuer), { method: 'POST', headers: form, body: 'grant_type=client_credentials' });
    const issuedBody = await issued.text();
    assert.equal(issued.status, 200);
    problems.push(...headerProblems(issued, issuedBody, 'POST /token (200)', true));
    const accessToken = (JSON.parse(issuedBody) as { access_token: string }).access_token;
    const introspected = await fetch(new URL('/token/introspection', server.issuer), { method: 'POST', headers: form, body: `token=${accessToken}` });
    assert.equal(introspected.status, 200);
    problems.push(...headerProblems(introspected, await introspected.text(), 'POST /token/introspection (200)', true));
    const revoked = await fetch(new URL('/token/revocation', server.issuer), { method: 'POST', headers: form, body: `token=${accessToken}` });
    assert.equal(revoked.status, 200);
    problems.push(...headerProblems(revoked, await revoked.text(), 'POST /token/revocation (200)', true));
    assert.equal((await oidc.tokenIntrospection(config, accessToken)).active, false);
    assert.deepEqual(problems, []);
  });

  it('answers unknown paths with 404 whatever the method, with the same headers', async () => {
    const problems: string[] = [];
    for (const path of ['/no/such/route', '/admin/api/no-such-thing', '/interaction', '/account/no-such-page', '/.well-known/no-such-document', '/token/nope']) {
      for (const method of METHODS) {
        for (const accept of ['application/json', 'text/html']) {
          const res = await fetch(new URL(path, server.issuer), { method, redirect: 'manual', headers: { accept } });
          const body = await res.text();
          if (res.status !== 404) problems.push(`${method} ${path} (${accept}): ${res.status}`);
          problems.push(...headerProblems(res, body, `${method} ${path} (${accept})`, true));
        }
      }
    }
    assert.deepEqual(problems, []);
  });

  it('refuses a request that breaks the HTTP layer itself with a plain error and no details', async () => {
    const res = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' },
      body: 'not gzip at all',
    });
    const body = await res.text();
    assert.ok(res.status >= 400 && res.status < 500, `status ${res.status}`);
    assert.deepEqual(headerProblems(res, body, 'POST /token with a broken body', true), []);
  });
});

describe('behind an https proxy', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ behindHttpsProxy: true });
  });
  after(() => server.close());

  it('adds HSTS to every kind of answer: pages, provider endpoints, refusals, 404 and 405', async () => {
    const requests: Array<[string, string]> = [
      ['GET', '/healthz'],
      ['GET', '/.well-known/openid-configuration'],
      ['GET', '/jwks'],
      ['POST', '/token'],
      ['GET', '/token'],
      ['DELETE', '/healthz'],
      ['GET', '/no/such/route'],
      ['GET', '/account'],
    ];
    for (const [method, path] of requests) {
      const res = await fetch(new URL(path, server.issuer.replace(/^https:/, 'http:')), { method, redirect: 'manual', headers: { 'x-forwarded-proto': 'https' } });
      const body = await res.text();
      assert.equal(res.headers.get('strict-transport-security'), 'max-age=31536000; includeSubDomains', `${method} ${path} (${res.status})`);
      assert.deepEqual(headerProblems(res, body, `${method} ${path}`, false), []);
    }
  });

  it('serves POST at the authorization and end-session endpoints over https (SMART authorize-post), and 405 for the rest', async () => {
    const plain = server.issuer.replace(/^https:/, 'http:');
    const https = { 'x-forwarded-proto': 'https', accept: 'application/json' };
    for (const path of ['/auth', '/session/end']) {
      const post = await fetch(new URL(path, plain), { method: 'POST', redirect: 'manual', headers: { ...https, 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
      assert.notEqual(post.status, 405, `POST ${path}`);
      assert.ok(post.status < 500, `POST ${path}: ${post.status}`);
      const put = await fetch(new URL(path, plain), { method: 'PUT', redirect: 'manual', headers: https });
      assert.equal(put.status, 405, `PUT ${path}`);
      assert.deepEqual((put.headers.get('allow') ?? '').split(/,\s*/).sort(), ['GET', 'HEAD', 'POST']);
    }
  });
});
