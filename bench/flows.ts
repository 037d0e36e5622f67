/**
 * The whole authorization-code + PKCE flow as a browser and a SMART app drive it: the login form
 * (argon2id), the TOTP page, the consent page, then the code redeemed at the token endpoint.
 * Forms are read and posted with the same browserless agent the tests use.
 */
import { createHash, randomBytes } from 'node:crypto';
import { generate } from 'otplib';
import { UserAgent, csrfTokenOf, formActionOf, formDefaults, type PageResponse } from '../test/helpers/browserless.ts';
import { APP_SCOPE, PASSWORD, REDIRECT_URI, type Seed } from './seed.ts';

export interface TokenResponse {
  access_token: string;
  refresh_token?: string;
}

export const basicAuth = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

export class FlowError extends Error {
  override name = 'FlowError';
}

/** One login, second factor and consent for `username`, ending with the app's tokens. */
export async function fullFlow(issuer: string, fhirBase: string, seed: Seed, username: string): Promise<TokenResponse> {
  const agent = new UserAgent({ behindHttpsProxy: issuer.startsWith('https:') });
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const url = new URL('/auth', issuer);
  url.search = new URLSearchParams({
    client_id: seed.app.clientId,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: APP_SCOPE,
    aud: fhirBase,
    state,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }).toString();

  const post = (page: PageResponse, suffix: string, form: Record<string, string> | [string, string][]) =>
    agent.request(new URL(formActionOf(page.body, suffix), issuer).toString(), { form });

  let page = await agent.follow(url.toString(), issuer);
  for (let step = 0; step < 5 && !page.location?.startsWith(REDIRECT_URI); step += 1) {
    if (page.status !== 200) throw new FlowError(`unexpected ${page.status} at ${page.url}: ${page.body.slice(0, 200)}`);
    const body = page.body;
    let next: PageResponse;
    if (body.includes('/login"')) {
      next = await post(page, 'login', { _csrf: csrfTokenOf(body), username, password: PASSWORD });
      // The password step shows the second-factor page directly.
      if (next.status === 200) {
        page = next;
        continue;
      }
    } else if (body.includes('/otp"')) {
      next = await post(page, 'otp', { _csrf: csrfTokenOf(body), code: await generate({ secret: seed.totpSecret }) });
    } else if (body.includes('/confirm"')) {
      next = await post(page, 'confirm', formDefaults(body, 'confirm'));
    } else {
      throw new FlowError(`unexpected page at ${page.url}: ${body.slice(0, 200)}`);
    }
    if (!next.location) throw new FlowError(`step did not redirect (${next.status}): ${next.body.slice(0, 200)}`);
    page = await agent.follow(next.location, issuer);
  }
  if (!page.location?.startsWith(REDIRECT_URI)) throw new FlowError(`the flow did not return to the app: ${page.status} ${page.body.slice(0, 200)}`);
  const callback = new URL(page.location);
  const code = callback.searchParams.get('code');
  if (!code || callback.searchParams.get('state') !== state) throw new FlowError(`no code in the callback: ${callback.search}`);
  return tokenRequest(issuer, seed.app, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
}

export async function tokenRequest(issuer: string, client: { clientId: string; clientSecret: string }, params: Record<string, string>): Promise<TokenResponse> {
  const res = await fetch(new URL('/token', issuer.replace(/^https:/, 'http:')), {
    method: 'POST',
    headers: {
      authorization: basicAuth(client.clientId, client.clientSecret),
      'content-type': 'application/x-www-form-urlencoded',
      'x-forwarded-proto': 'https',
    },
    body: new URLSearchParams(params),
  });
  const body = (await res.json()) as TokenResponse & { error?: string; error_description?: string };
  if (res.status !== 200) throw new FlowError(`token request failed (${res.status}): ${body.error} ${body.error_description ?? ''}`);
  return body;
}
