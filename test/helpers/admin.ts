/**
 * Admin fixtures: an internal client allowed the `custos:admin` scope, admin accounts with an
 * authenticator app, and real access tokens obtained through the login, second-factor and consent
 * pages (no shortcuts), for the admin API tests.
 */
import { generate } from 'otplib';
import { UserAgent, csrfTokenOf, formActionOf, formDefaults } from './browserless.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from './oidc-client.ts';
import type { TestServer } from './server.ts';
import { enrolTotp } from './totp.ts';

export const ADMIN_TOOL = { client_name: 'Admin tool', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', scope: 'openid custos:admin' };

let counter = 0;

/** An admin account with a confirmed authenticator app; returns its TOTP secret too. */
export async function createMfaAdmin(server: TestServer, username = `admin${(counter += 1)}`) {
  const account = await server.createAccount({ username, role: 'admin' });
  const { mfa } = server.running.services;
  const secret = await enrolTotp(mfa, account.id);
  return { ...account, secret };
}

/** An internal public client that may ask for custos:admin. */
export async function createAdminTool(server: TestServer, overrides: Record<string, unknown> = {}) {
  const { client } = await server.running.services.clients.create({ ...ADMIN_TOOL, ...overrides }, { category: 'internal', verified: true });
  return discover(server.issuer, client.clientId, undefined, oidc.None());
}

/**
 * Signs in through the real pages (password, then the TOTP code when `secret` is given, then
 * consent) and redeems the code. Returns the token response.
 */
export async function signInForTokens(
  server: TestServer,
  config: oidc.Configuration,
  who: { username: string; password: string; secret?: string },
  params: Record<string, string> = {},
) {
  const agent = new UserAgent();
  const flow = await startCodeFlow(config, { scope: 'openid custos:admin', ...params });
  let res = await agent.follow(flow.url.toString(), server.issuer);
  for (let step = 0; step < 6 && res.status === 200; step += 1) {
    let form: Record<string, string> | [string, string][] = { _csrf: csrfTokenOf(res.body) };
    let action: string;
    if (res.body.includes('/login"')) {
      action = formActionOf(res.body, 'login');
      Object.assign(form, { username: who.username, password: who.password });
    } else if (res.body.includes('/otp"') && who.secret) {
      action = formActionOf(res.body, 'otp');
      Object.assign(form, { code: await generate({ secret: who.secret }) });
    } else if (res.body.includes('/confirm"')) {
      // What a browser submits untouched (every scope ticked by default).
      action = formActionOf(res.body, 'confirm');
      form = formDefaults(res.body, 'confirm');
    } else {
      break;
    }
    res = await agent.request(new URL(action, server.issuer).toString(), { form });
    if (res.location) res = await agent.follow(res.location, server.issuer);
  }
  if (!res.location?.startsWith(REDIRECT_URI)) throw new Error(`sign-in did not finish: ${res.status} ${res.body.slice(0, 300)}`);
  return oidc.authorizationCodeGrant(config, new URL(res.location), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
}

/** A fresh admin with a factor, and an MFA access token with custos:admin for them. */
export async function adminToken(server: TestServer, config: oidc.Configuration): Promise<{ token: string; admin: Awaited<ReturnType<typeof createMfaAdmin>> }> {
  const admin = await createMfaAdmin(server);
  const tokens = await signInForTokens(server, config, admin);
  return { token: tokens.access_token, admin };
}

/** A small fetch wrapper for the admin API. */
export function adminApi(server: TestServer, token: string | undefined) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${server.issuer}/admin/api${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      /* CSV and other bodies */
    }
    return { status: res.status, headers: res.headers, json, text };
  };
}

/**
 * A browser-like agent signed in to the admin pages (password, then the TOTP code), ready to get
 * pages and post their forms. `page(path)` returns the page; `post(path, form)` posts with the
 * CSRF token from the last page seen.
 */
export async function adminPagesAgent(server: TestServer, admin: { username: string; password: string; secret: string }) {
  const agent = new UserAgent();
  let res = await agent.follow(`${server.issuer}/admin`, server.issuer);
  for (let step = 0; step < 4 && res.status === 200 && !res.url.includes('/admin/'); step += 1) {
    const form: Record<string, string> = { _csrf: csrfTokenOf(res.body) };
    let action: string;
    if (res.body.includes('/login"')) {
      action = formActionOf(res.body, 'login');
      Object.assign(form, { username: admin.username, password: admin.password });
    } else if (res.body.includes('/otp"')) {
      action = formActionOf(res.body, 'otp');
      Object.assign(form, { code: await generate({ secret: admin.secret }) });
    } else {
      break;
    }
    res = await agent.request(new URL(action, server.issuer).toString(), { form });
    if (res.location) res = await agent.follow(res.location, server.issuer);
  }
  if (!res.url.startsWith(`${server.issuer}/admin/clients`) || res.status !== 200) throw new Error(`admin sign-in did not finish: ${res.status} ${res.url} ${res.body.slice(0, 300)}`);
  let last = res.body;
  return {
    agent,
    async page(path: string) {
      const r = await agent.request(`${server.issuer}${path}`);
      if (r.status === 200) last = r.body;
      return r;
    },
    async post(path: string, form: Record<string, string> | [string, string][] = {}) {
      const fields: [string, string][] = Array.isArray(form) ? form : Object.entries(form);
      return agent.request(`${server.issuer}${path}`, { form: [['_csrf', csrfTokenOf(last)], ...fields] });
    },
  };
}
