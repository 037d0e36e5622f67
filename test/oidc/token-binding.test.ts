import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';
import { randomUUID } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';

describe('token binding', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('does not offer DPoP, and issues plain bearer tokens even when a DPoP proof is sent', async () => {
    const discovery = (await (await fetch(new URL('/.well-known/openid-configuration', server.issuer))).json()) as Record<string, unknown>;
    assert.equal(discovery.dpop_signing_alg_values_supported, undefined);
    const client = await server.createClient({ client_name: 'svc', grant_types: ['client_credentials'] });
    const { privateKey, publicKey } = await jose.generateKeyPair('ES256');
    const proof = await new jose.SignJWT({ htm: 'POST', htu: `${server.issuer}/token`, jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jose.exportJWK(publicKey) })
      .setIssuedAt()
      .sign(privateKey);
    const res = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        dpop: proof,
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { token_type: string; access_token: string };
    assert.equal(body.token_type, 'Bearer');
  });
});
