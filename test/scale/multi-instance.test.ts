/**
 * Three Custos processes on one PostgreSQL database (and Redis for the rate-limit counters when
 * it answers), behind a health-checking round-robin balancer: nothing that matters lives in one
 * process, a key rotation reaches every instance without a restart, and a rolling restart under
 * load loses no request.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import * as jose from 'jose';
import { createTestDatabase, adminUrl, type TestDatabase } from '../helpers/database.ts';
import { freePort, testEnv, TEST_PASSWORD } from '../helpers/server.ts';
import { startInstance, type Instance } from '../helpers/instances.ts';
import { startLoadBalancer, type LoadBalancer } from '../helpers/load-balancer.ts';
import { codeFlow, discover, REDIRECT_URI } from '../helpers/oidc-client.ts';
import { loadConfig } from '../../src/config/index.ts';
import { openServices } from '../../src/main.ts';
import { closeDatabase } from '../../src/db/index.ts';
import { createLogger } from '../../src/logging/index.ts';

const FHIR = 'https://fhir.example.org/r4';
const PER_CLIENT_LIMIT = 40;
const LOAD_CLIENTS = 100;
const ROTATION_CLIENTS = 10;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function redisAnswers(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(6379, '127.0.0.1');
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.end();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
interface Secret {
  clientId: string;
  clientSecret: string;
}

describe('many instances on one database', { skip: adminUrl ? false : 'needs DATABASE_URL: the embedded database belongs to a single process' }, () => {
  let database: TestDatabase;
  let lb: LoadBalancer;
  let issuer: string;
  let env: Record<string, string>;
  const instances: Instance[] = [];
  let patient: { username: string; password: string };
  let webApp: Secret;
  let services: Secret[];
  let rotationApps: Secret[];
  let loadClients: Secret[];
  let limited: Secret;
  let backend: { clientId: string; key: jose.CryptoKey; kid: string };

  async function token(client: Secret, pin?: number) {
    if (pin !== undefined) lb.pin = pin;
    try {
      const res = await fetch(new URL('/token', issuer), {
        method: 'POST',
        headers: { authorization: basic(client.clientId, client.clientSecret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/Observation.rs' }),
      });
      return { status: res.status, body: (await res.json()) as { access_token?: string; error?: string } };
    } finally {
      if (pin !== undefined) lb.pin = undefined;
    }
  }

  async function introspect(client: Secret, accessToken: string, pin?: number) {
    if (pin !== undefined) lb.pin = pin;
    try {
      const res = await fetch(new URL('/token/introspection', issuer), {
        method: 'POST',
        headers: { authorization: basic(client.clientId, client.clientSecret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: accessToken }),
      });
      return { status: res.status, body: (await res.json()) as { active?: boolean } };
    } finally {
      if (pin !== undefined) lb.pin = undefined;
    }
  }

  async function waitUntilHealthy(i: number) {
    for (let tries = 0; tries < 300 && !lb.healthy[i]; tries += 1) await new Promise((r) => setTimeout(r, 50));
    assert.ok(lb.healthy[i], `instance ${i} never became ready behind the balancer`);
  }

  before(async () => {
    database = await createTestDatabase();
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    lb = await startLoadBalancer(ports.map((p) => `http://127.0.0.1:${p}`));
    issuer = `http://localhost:${lb.port}`;
    const redis = await redisAnswers();
    if (!redis) console.log('# Redis is not reachable on 127.0.0.1:6379: rate-limit counters are shared through PostgreSQL instead');
    env = testEnv(database, ports[0]!, {
      ISSUER: issuer,
      TRUST_PROXY: '127.0.0.1',
      FHIR_BASE_URLS: FHIR,
      SIGNING_KEY_REFRESH_INTERVAL: '1',
      SHUTDOWN_DRAIN_DELAY: '1',
      SHUTDOWN_GRACE: '10',
      RATE_LIMIT_PER_CLIENT: String(PER_CLIENT_LIMIT),
      RATE_LIMIT_KEY_PREFIX: `mi${randomBytes(4).toString('hex')}`,
      COOKIE_KEYS: randomBytes(32).toString('base64url'),
      KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      ...(redis ? { REDIS_URL: 'redis://127.0.0.1:6379' } : {}),
    });
    // The first instance migrates the database; the others start against it together.
    instances[0] = await startInstance(env, ports[0]!);
    const [second, third] = await Promise.all([startInstance(env, ports[1]!), startInstance(env, ports[2]!)]);
    instances[1] = second;
    instances[2] = third;

    const seed = await openServices(loadConfig(env), createLogger('silent'));
    try {
      await seed.accounts.create({ role: 'patient', username: 'pat', password: TEST_PASSWORD, fhirId: 'pat-1' });
      patient = { username: 'pat', password: TEST_PASSWORD };
      const secretClient = async (name: string, extra: Record<string, unknown> = {}) => {
        const { client, clientSecret } = await seed.clients.create({ client_name: name, ...extra });
        return { clientId: client.clientId, clientSecret: clientSecret! };
      };
      const service = (name: string) => secretClient(name, { grant_types: ['client_credentials'], scope: 'system/Observation.rs' });
      webApp = await secretClient('Web app', { redirect_uris: [REDIRECT_URI] });
      services = [await service('svc-a'), await service('svc-b')];
      limited = await service('limited');
      rotationApps = await Promise.all(Array.from({ length: ROTATION_CLIENTS }, (_, i) => secretClient(`rotation-${i}`, { redirect_uris: [REDIRECT_URI] })));
      loadClients = await Promise.all(Array.from({ length: LOAD_CLIENTS }, (_, i) => service(`load-${i}`)));
      const { privateKey, publicKey } = await jose.generateKeyPair('ES384');
      const kid = 'backend-key';
      const { client } = await seed.clients.create({
        client_name: 'Backend',
        grant_types: ['client_credentials'],
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: { keys: [{ ...(await jose.exportJWK(publicKey)), kid, alg: 'ES384', use: 'sig' }] },
        scope: 'system/Observation.rs',
      });
      backend = { clientId: client.clientId, key: privateKey as jose.CryptoKey, kid };
    } finally {
      await closeDatabase(seed.db);
    }
    await Promise.all([0, 1, 2].map(waitUntilHealthy));
  });

  after(async () => {
    const codes = await Promise.all(instances.map((i) => i?.stop()));
    await lb?.close();
    await database?.drop();
    assert.deepEqual(codes, [0, 0, 0], 'every instance stops cleanly on SIGTERM');
  });

  it('finishes on other instances a login started on one, and redeems the code where it was not issued', async () => {
    const from = lb.served.length;
    const config = await discover(issuer, webApp.clientId, webApp.clientSecret);
    const { tokens } = await codeFlow(config, issuer, patient);
    assert.ok(tokens.access_token);
    assert.ok(tokens.id_token);
    const flow = lb.served.slice(from);
    const issued = flow.find((r) => r.location?.startsWith(REDIRECT_URI));
    const redeemed = flow.find((r) => r.method === 'POST' && r.path === '/token');
    const login = flow.find((r) => r.method === 'POST' && r.path.endsWith('/login'));
    const started = flow.find((r) => r.method === 'GET' && r.path === '/auth');
    assert.ok(issued && redeemed && login && started, JSON.stringify(flow));
    assert.notEqual(login.backend, started.backend, 'the login form was posted to another instance than the one that started the flow');
    assert.notEqual(redeemed.backend, issued.backend, 'the code was redeemed at another instance than the one that issued it');
    assert.equal(new Set(flow.map((r) => r.backend)).size, 3, 'the flow crossed all three instances');
  });

  it('sees a revocation made at one instance at every other one at once', async () => {
    const [client] = services as [Secret];
    const issued = await token(client, 0);
    assert.equal(issued.status, 200, JSON.stringify(issued.body));
    const accessToken = issued.body.access_token!;
    for (const i of [1, 2]) assert.equal((await introspect(client, accessToken, i)).body.active, true);
    lb.pin = 1;
    const revoked = await fetch(new URL('/token/revocation', issuer), {
      method: 'POST',
      headers: { authorization: basic(client.clientId, client.clientSecret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: accessToken }),
    });
    lb.pin = undefined;
    assert.equal(revoked.status, 200);
    for (const i of [0, 2]) assert.equal((await introspect(client, accessToken, i)).body.active, false, `instance ${i} still honours the revoked token`);
  });

  it('refuses at another instance a client assertion already used at one (shared replay records)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new jose.SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384', kid: backend.kid, typ: 'JWT' })
      .setIssuer(backend.clientId)
      .setSubject(backend.clientId)
      .setAudience(`${issuer}/token`)
      .setIssuedAt(now)
      .setExpirationTime(now + 120)
      .sign(backend.key);
    const present = async (pin: number) => {
      lb.pin = pin;
      const res = await fetch(new URL('/token', issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          scope: 'system/Observation.rs',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }),
      });
      lb.pin = undefined;
      return { status: res.status, body: (await res.json()) as { error?: string } };
    };
    assert.equal((await present(0)).status, 200);
    const replay = await present(2);
    assert.equal(replay.status, 401);
    assert.equal(replay.body.error, 'invalid_client');
  });

  it('shares rate-limit counters: a client gets its limit across all instances, not once per instance', async () => {
    const statuses: number[] = [];
    for (let n = 0; n < PER_CLIENT_LIMIT + 20; n += 1) statuses.push((await token(limited)).status);
    assert.equal(statuses.filter((s) => s === 200).length, PER_CLIENT_LIMIT);
    assert.equal(statuses.filter((s) => s === 429).length, 20);
    const perBackend = new Set(lb.served.slice(-statuses.length).map((r) => r.backend));
    assert.equal(perBackend.size, 3, 'the requests were spread over all instances');
  });

  it('picks up a key rotation on every instance without a restart and without one failed verification', async () => {
    let n = 0;
    // A whole login on one instance; its ID token (RS256, as SMART requires) checked against the
    // key set another instance publishes at that moment.
    const idTokenFrom = async (i: number) => {
      const app = rotationApps[n++ % ROTATION_CLIENTS]!;
      lb.pin = i;
      try {
        const config = await discover(issuer, app.clientId, app.clientSecret);
        return (await codeFlow(config, issuer, patient)).tokens.id_token!;
      } finally {
        lb.pin = undefined;
      }
    };
    const before = jose.decodeProtectedHeader(await idTokenFrom(0));
    assert.equal(before.alg, 'RS256');
    const { stdout } = await promisify(execFile)(process.execPath, ['src/cli/main.ts', 'keys', 'rotate', '--json'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    const rotation = JSON.parse(stdout) as { created: { kid: string; alg: string; activates_at: string }[] };
    const fresh = rotation.created.find((k) => k.alg === 'RS256')!;
    const activatesAt = Date.parse(fresh.activates_at);
    const failures: string[] = [];
    const signedBy: { instance: number; kid: string }[] = [];
    // Until every instance has had time to see the new key active (it reloads keys every second).
    while (Date.now() < activatesAt + 3_000) {
      for (const i of [0, 1, 2]) {
        let idToken: string;
        try {
          idToken = await idTokenFrom(i);
        } catch (err) {
          failures.push(`login at instance ${i}: ${(err as Error).message}`);
          continue;
        }
        lb.pin = (i + 1) % 3;
        const jwks = (await (await fetch(new URL('/jwks', issuer))).json()) as jose.JSONWebKeySet;
        lb.pin = undefined;
        try {
          await jose.jwtVerify(idToken, jose.createLocalJWKSet(jwks), { issuer });
          signedBy.push({ instance: i, kid: jose.decodeProtectedHeader(idToken).kid! });
        } catch (err) {
          failures.push(`ID token from instance ${i} against the keys of instance ${(i + 1) % 3}: ${(err as Error).message}`);
        }
      }
    }
    assert.deepEqual(failures, []);
    assert.ok(signedBy.some((s) => s.kid === before.kid), 'the old key signed until the new one activated');
    for (const i of [0, 1, 2]) {
      const last = signedBy.filter((s) => s.instance === i).at(-1);
      assert.equal(last?.kid, fresh.kid, `instance ${i} signs with the new key`);
    }
  });

  it('loses no request during a rolling restart under load', async () => {
    const failures: string[] = [];
    let sent = 0;
    let stop = false;
    const budget = LOAD_CLIENTS * (PER_CLIENT_LIMIT - 2);
    const worker = async () => {
      while (!stop && sent < budget) {
        const client = loadClients[Math.floor(sent / 2) % LOAD_CLIENTS]!;
        sent += 2;
        try {
          const issued = await token(client);
          if (issued.status !== 200) {
            failures.push(`token: ${issued.status} ${JSON.stringify(issued.body)}`);
            continue;
          }
          const info = await introspect(client, issued.body.access_token!);
          if (info.status !== 200 || info.body.active !== true) failures.push(`introspection: ${info.status} ${JSON.stringify(info.body)}`);
        } catch (err) {
          failures.push(`network: ${(err as Error).message}`);
        }
      }
    };
    const from = lb.served.length;
    const load = Promise.all(Array.from({ length: 4 }, worker));
    try {
      for (const i of [0, 1, 2]) {
        const old = instances[i]!;
        assert.equal(await old.stop('SIGTERM'), 0, `instance ${i} exits cleanly`);
        assert.ok(old.logs().some((l) => l.msg === 'stopped'), `instance ${i} drained and closed its pool`);
        instances[i] = await startInstance(env, old.port);
        await waitUntilHealthy(i);
      }
    } finally {
      stop = true;
      await load;
    }
    assert.equal(failures.length, 0, `${failures.length} failed requests, for example: ${failures.slice(0, 5).join('; ')}`);
    const during = lb.served.slice(from);
    assert.ok(during.length >= 60, `the load kept going through the restarts (${during.length} requests)`);
    assert.equal(new Set(during.map((r) => r.backend)).size, 3);
  });
});
