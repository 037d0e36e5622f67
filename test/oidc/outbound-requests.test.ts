/**
 * OWASP API7 (server-side request forgery): the only URLs Custos fetches on someone else's say are
 * a client's registered `jwks_uri`. They are fetched through src/http/outbound-fetch.ts, which
 * connects to public addresses only, judged before any packet leaves.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import * as jose from 'jose';
import { createServer as createHttpServer } from 'node:http';
import { createOutboundFetch, isSpecialUseAddress } from '../../src/http/outbound-fetch.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

describe('outbound requests', () => {
  let server: TestServer;
  let internal: Server;
  let bytesReceived = 0;
  let connections = 0;
  before(async () => {
    server = await startTestServer();
    // Stands for an internal service: it counts what reaches it.
    internal = createServer((socket) => {
      connections += 1;
      socket.on('data', (d: Buffer) => (bytesReceived += d.length));
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => internal.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => internal.close(() => resolve()));
    await server.close();
  });

  it('tells public addresses from loopback, private, link-local, metadata and other special-use ones', () => {
    for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '::ffff:127.0.0.1', 'not-an-address']) {
      assert.equal(isSpecialUseAddress(a), true, a);
    }
    for (const a of ['8.8.8.8', '151.101.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) assert.equal(isSpecialUseAddress(a), false, a);
  });

  it('fetches normally where the address is allowed (here: a local server, allowed for the test)', async () => {
    const jwks = createHttpServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[]}'));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    try {
      const port = (jwks.address() as AddressInfo).port;
      const allowAll = createOutboundFetch(() => false);
      for (const host of ['127.0.0.1', 'localhost']) {
        const res = await allowAll(`http://${host}:${port}/jwks`, { method: 'GET', headers: { accept: 'application/json' } });
        assert.equal(res.status, 200);
        assert.deepEqual(await res.json(), { keys: [] });
      }
      await assert.rejects(createOutboundFetch()(`http://localhost:${port}/jwks`, { method: 'GET' }), /fetch failed|non-public/);
    } finally {
      jwks.closeAllConnections();
      await new Promise<void>((resolve) => jwks.close(() => resolve()));
    }
  });

  for (const host of ['127.0.0.1', 'localhost']) {
    it(`never opens a connection to a jwks_uri at ${host}, and refuses the client`, async () => {
      const before = bytesReceived;
      const port = (internal.address() as AddressInfo).port;
      const { clientId } = await server.createClient({
        client_name: `Points inwards (${host})`,
        grant_types: ['client_credentials'],
        token_endpoint_auth_method: 'private_key_jwt',
        jwks_uri: `https://${host}:${port}/jwks`,
      });
      const { privateKey } = await jose.generateKeyPair('ES384');
      const now = Math.floor(Date.now() / 1000);
      const assertion = await new jose.SignJWT({ jti: randomUUID() })
        .setProtectedHeader({ alg: 'ES384', kid: 'k1' })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(`${server.issuer}/token`)
        .setIssuedAt(now)
        .setExpirationTime(now + 60)
        .sign(privateKey);
      const res = await fetch(new URL('/token', server.issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }),
      });
      assert.equal(res.status, 401);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
      assert.equal(connections, 0, 'no connection was opened to the internal address');
      assert.equal(bytesReceived - before, 0);
    });
  }
});
