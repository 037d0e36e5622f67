/**
 * openid-client set up as a relying party of the test server (plain http on loopback allowed).
 */
import * as oidc from 'openid-client';
import { UserAgent, authorize } from './browserless.ts';

export { oidc };

export const REDIRECT_URI = 'http://127.0.0.1:8765/callback';

export async function discover(issuer: string, clientId: string, clientSecret?: string, auth?: oidc.ClientAuth) {
  return oidc.discovery(new URL(issuer), clientId, clientSecret, auth, { execute: [oidc.allowInsecureRequests] });
}

export interface CodeFlowResult {
  tokens: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers;
  agent: UserAgent;
  callbackUrl: URL;
  verifier: string;
}

/** Starts an authorization request with PKCE and returns what is needed to finish it. */
export async function startCodeFlow(config: oidc.Configuration, params: Record<string, string> = {}) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: 'openid',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    ...params,
  });
  return { url, verifier, state };
}

/** The whole authorization-code + PKCE flow through the real login and consent forms. */
export async function codeFlow(
  config: oidc.Configuration,
  issuer: string,
  credentials: { username: string; password: string },
  params: Record<string, string> = {},
  agent = new UserAgent(),
): Promise<CodeFlowResult> {
  const { url, verifier, state } = await startCodeFlow(config, params);
  const res = await authorize(agent, url.toString(), issuer, credentials);
  if (!res.location?.startsWith(REDIRECT_URI)) throw new Error(`flow did not return to the client: ${res.status} ${res.body.slice(0, 300)}`);
  const callbackUrl = new URL(res.location);
  const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state });
  return { tokens, agent, callbackUrl, verifier };
}
