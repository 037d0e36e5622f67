/**
 * What the differential and regression tests run: Medplum's FHIR server (test/helpers), a tiny
 * JWKS endpoint with one RS256 key, the real token validator reading it, and the real proxy in
 * front of Medplum. Tokens are RFC 9068 JWTs carrying the facts an {@link OracleToken} names, the
 * consent as Custos writes it (`consentDetails`).
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { createFhirProxy, createTokenValidator } from '../../../src/enforcement/index.ts';
import { consentDetails } from '../../../src/consent/visibility.ts';
import type { SensitiveLabel } from '../../../src/consent/security-labels.ts';
import { startMedplumFhirServer, type MedplumFhirServer, type SeedHistory } from '../../helpers/medplum-fhir-server.ts';
import type { OracleToken } from './visibility-oracle.ts';

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  text: string;
}

export interface Rig {
  fhir: MedplumFhirServer;
  /** The proxy's public base URL (the tokens' audience). */
  proxyUrl: string;
  issuer: string;
  /** `extra` claims go into the JWT as they are (a `cnf`, say). */
  mint(token: OracleToken, clientId?: string, extra?: Record<string, unknown>): Promise<string>;
  /** GET through the proxy: a path below its base, or an absolute URL (a paging link). */
  get(pathOrUrl: string, jwt: string): Promise<Answer>;
  /**
   * Any method through node:http, with the path sent byte for byte (fetch would resolve dot
   * segments before they left) and a JSON body when one is given.
   */
  send(method: string, path: string, jwt: string, body?: unknown, contentType?: string, headers?: Record<string, string>): Promise<Answer>;
  /** Empties the FHIR server and stores `world` in it. */
  reseed(world: readonly SeedHistory[]): Promise<void>;
  /** A new proxy instance in place of the running one, at the same address (as behind a load balancer). */
  replaceProxy(opts?: { pageKey?: Buffer }): void;
  close(): Promise<void>;
}

const listen = (server: Server) => new Promise<string>((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
const shut = (server: Server) =>
  new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });

function answer(status: number, text: string): Answer {
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // Left empty: the assertions on status and text say what went wrong.
  }
  return { status, body, text };
}

export async function startRig(): Promise<Rig> {
  const fhir = await startMedplumFhirServer();
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'differential', alg: 'RS256', use: 'sig' };
  const jwksServer = createServer((req, res) => {
    if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    else res.writeHead(404).end();
  });
  const issuer = await listen(jwksServer);
  // The proxy's port is known before the proxy is made, so its public URL can be given.
  const proxyHolder: { handle?: (req: IncomingMessage, res: ServerResponse) => void } = {};
  const proxyServer = createServer((req, res) => proxyHolder.handle!(req, res));
  const proxyUrl = await listen(proxyServer);
  const tokens = createTokenValidator({ issuer, jwt: { jwksUri: `${issuer}/jwks` } });
  const useProxy = (opts: { pageKey?: Buffer } = {}) => {
    const proxy = createFhirProxy({ upstream: fhir.url, publicUrl: proxyUrl, tokens, ...opts });
    proxyHolder.handle = (req, res) => proxy.handle(req, res);
  };
  useProxy();
  let serial = 0;

  return {
    fhir,
    proxyUrl,
    issuer,
    replaceProxy: useProxy,
    async reseed(world) {
      fhir.reset();
      await fhir.seed(world);
    },
    async mint(token, clientId = 'differential-app', extra = {}) {
      serial += 1;
      const now = Math.floor(Date.now() / 1000);
      const claims: Record<string, unknown> = { ...extra, client_id: clientId, scope: token.scopes.join(' '), jti: `t${serial}` };
      if (token.sub) claims.sub = token.sub;
      if (token.patient) claims.patient = token.patient;
      if (token.fhirUser) claims.fhirUser = `${fhir.url}/${token.fhirUser}`;
      if (token.consent) {
        const c = token.consent;
        claims.authorization_details = [
          consentDetails({
            consentId: `consent-${serial}`,
            version: 1,
            patientFhirId: token.patient,
            limits: { hiddenLabels: c.hiddenLabels as SensitiveLabel[], ...(c.start ? { from: c.start } : {}), ...(c.end ? { until: c.end } : {}), ...(c.resourceTypes ? { resourceTypes: [...c.resourceTypes] } : {}) },
          }),
        ];
      }
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'differential' })
        .setIssuer(issuer)
        .setAudience(proxyUrl)
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey);
    },
    async get(pathOrUrl, jwt) {
      const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${proxyUrl}${pathOrUrl}`;
      const res = await fetch(url, { headers: { authorization: `Bearer ${jwt}`, accept: 'application/fhir+json' } });
      return answer(res.status, await res.text());
    },
    send(method, path, jwt, body, contentType = 'application/fhir+json', extraHeaders = {}) {
      const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      const headers: Record<string, string> = { authorization: `Bearer ${jwt}`, accept: 'application/fhir+json', ...extraHeaders };
      if (payload !== undefined) Object.assign(headers, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(payload)) });
      return new Promise<Answer>((resolve, reject) => {
        const req = request(`${proxyUrl}/`, { method, path, headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(answer(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'))));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(payload);
      });
    },
    async close() {
      await shut(proxyServer);
      await shut(jwksServer);
      await fhir.close();
    },
  };
}
