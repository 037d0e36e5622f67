import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { loadConfig, ConfigError } from '../../src/config/index.ts';

function httpsGet(url: string, opts: { ca?: Buffer; maxVersion?: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; minVersion?: 'TLSv1' | 'TLSv1.1'; ciphers?: string } = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string; protocol: string }>((resolve, reject) => {
    const req = request(url, { ca: opts.ca, maxVersion: opts.maxVersion, minVersion: opts.minVersion, ciphers: opts.ciphers }, (res) => {
      const protocol = (res.socket as unknown as { getProtocol(): string | null }).getProtocol() ?? '';
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, protocol }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('serving HTTPS itself', () => {
  let dir: string;
  let server: TestServer;
  let ca: Buffer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'custos-tls-'));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    ca = readFileSync(join(dir, 'cert.pem'));
    server = await startTestServer({
      env: (issuer) => ({ ISSUER: issuer.replace('http:', 'https:'), TLS_CERT_FILE: join(dir, 'cert.pem'), TLS_KEY_FILE: join(dir, 'key.pem') }),
    });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers over TLS 1.2+ with HSTS and https URLs', async () => {
    const res = await httpsGet(`${server.issuer}/.well-known/openid-configuration`, { ca });
    assert.equal(res.status, 200);
    assert.match(server.issuer, /^https:/);
    assert.equal((JSON.parse(res.body) as { issuer: string }).issuer, server.issuer);
    assert.match(String(res.headers['strict-transport-security']), /max-age=\d+/);
    assert.ok(['TLSv1.2', 'TLSv1.3'].includes(res.protocol), res.protocol);
    const tls12 = await httpsGet(`${server.issuer}/healthz`, { ca, maxVersion: 'TLSv1.2' });
    assert.equal(tls12.status, 200);
  });

  it('refuses TLS 1.1 and plain HTTP', async () => {
    // SECLEVEL=0 lets this client offer TLS 1.1 at all (OpenSSL 3 would refuse to on its own), so
    // the refusal we see is the server's protocol_version alert.
    await assert.rejects(httpsGet(`${server.issuer}/healthz`, { ca, maxVersion: 'TLSv1.1', minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }), (err: NodeJS.ErrnoException) => {
      assert.match(`${err.code} ${err.message}`, /PROTOCOL_VERSION|protocol version/i);
      return true;
    });
    const plain = await fetch(`${server.issuer.replace('https:', 'http:')}/healthz`).then(
      (r) => r.status,
      () => 'refused',
    );
    assert.notEqual(plain, 200);
  });

  it('negotiates AEAD cipher suites only on TLS 1.2', async () => {
    const gcm = await httpsGet(`${server.issuer}/healthz`, { ca, maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
    assert.equal(gcm.status, 200);
    for (const cbc of ['ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA']) {
      await assert.rejects(httpsGet(`${server.issuer}/healthz`, { ca, maxVersion: 'TLSv1.2', ciphers: `${cbc}@SECLEVEL=0` }), (err: NodeJS.ErrnoException) => {
        assert.match(`${err.code} ${err.message}`, /HANDSHAKE_FAILURE|handshake failure|NO_SHARED_CIPHER|no shared cipher/i, cbc);
        return true;
      });
    }
  });
});

describe('trusted proxies', () => {
  const servers: TestServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });
  const spoofed = (s: TestServer, ip: string) =>
    fetch(`${s.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': ip },
      body: 'grant_type=client_credentials&client_id=nobody&client_secret=x',
    }).then((r) => r.status);

  it('ignores forwarded headers from peers that are not listed, so a client cannot pick its own IP', async () => {
    const s = await startTestServer({ env: { TRUST_PROXY: '10.0.0.0/8, 192.168.1.10', RATE_LIMIT_OAUTH_PER_IP: '2' } });
    servers.push(s);
    assert.deepEqual([await spoofed(s, '1.1.1.1'), await spoofed(s, '2.2.2.2'), await spoofed(s, '3.3.3.3')], [401, 401, 429]);
  });

  it('honours them from a listed proxy', async () => {
    const s = await startTestServer({ env: { TRUST_PROXY: '127.0.0.1,::1', RATE_LIMIT_OAUTH_PER_IP: '2' } });
    servers.push(s);
    assert.deepEqual([await spoofed(s, '1.1.1.1'), await spoofed(s, '2.2.2.2'), await spoofed(s, '3.3.3.3')], [401, 401, 401]);
    assert.equal(await spoofed(s, '1.1.1.1'), 401);
    assert.equal(await spoofed(s, '1.1.1.1'), 429, 'the forwarded client is counted');
  });

  it('refuses a bad TRUST_PROXY or half a TLS configuration at start-up', () => {
    assert.throws(() => loadConfig({ NODE_ENV: 'test', TRUST_PROXY: 'everyone' }), (e: Error) => e instanceof ConfigError && /TRUST_PROXY: "everyone" is not an IP address or CIDR range/.test(e.message));
    assert.throws(() => loadConfig({ NODE_ENV: 'test', TRUST_PROXY: '10.0.0.0/33' }), ConfigError);
    assert.throws(() => loadConfig({ NODE_ENV: 'test', TLS_CERT_FILE: '/nonexistent' }), /TLS_CERT_FILE and TLS_KEY_FILE go together/);
    assert.throws(() => loadConfig({ NODE_ENV: 'test', TLS_CERT_FILE: '/nonexistent', TLS_KEY_FILE: '/nonexistent' }), /TLS_CERT_FILE: cannot read \/nonexistent/);
  });
});
