/**
 * Crash safety (issue 8): the server is killed with SIGKILL in the middle of a burst of token
 * grants and consent changes. After a restart on the same database every write the server had
 * acknowledged is there, nothing is half-written, and the audit chain verifies.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { text } from 'node:stream/consumers';
import { loadConfig } from '../../src/config/index.ts';
import { openDatabase, closeDatabase, type Db } from '../../src/db/index.ts';
import { openServices } from '../../src/main.ts';
import { createLogger } from '../../src/logging/index.ts';
import type { ConsentDetailsEntry } from '../../src/consent/index.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { freePort, testEnv, TEST_PASSWORD } from '../helpers/server.ts';
import { discover, oidc, REDIRECT_URI, startCodeFlow } from '../helpers/oidc-client.ts';
import { UserAgent, authorize, csrfTokenOf, formDefaults } from '../helpers/browserless.ts';
import { startServerProcess, type ServerProcess } from '../helpers/server-process.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FHIR = 'https://fhir.example.org/r4';
const OBS = 'patient/Observation.rs';
const COND = 'patient/Condition.rs';
const APP_SCOPE = `openid launch/patient offline_access ${OBS} ${COND}`;

/** What each consent patient does from the portal, in order; version n+1 is the n-th step. */
const CONSENT_STEPS = ['narrowed', 'limits_changed', 'revoked'] as const;
const CONSENT_PATIENTS = 8;
const REFRESH_PATIENTS = 2;
const GRANT_WORKERS = 4;

interface Patient {
  username: string;
  accountId: string;
  agent: UserAgent;
  consentId: string;
  tokens: { access_token: string; refresh_token?: string | undefined };
}

async function auditVerify(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['src/cli/main.ts', 'audit', 'verify', '--json'], {
    cwd: ROOT,
    env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [stdout, stderr, code] = await Promise.all([
    text(child.stdout),
    text(child.stderr),
    new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c) => resolve(c ?? -1));
    }),
  ]);
  return { code, stdout, stderr };
}

describe('crash safety: SIGKILL during a burst of writes', () => {
  let database: TestDatabase;
  let env: Record<string, string>;
  let issuer: string;
  let server: ServerProcess | undefined;
  let appId: string;
  let serviceId: string;
  let app: oidc.Configuration;
  let rs: oidc.Configuration;
  const patients: Patient[] = [];

  before(async () => {
    database = await createTestDatabase();
    const port = await freePort();
    env = testEnv(database, port, { FHIR_BASE_URLS: FHIR, LOG_LEVEL: 'warn' });
    issuer = `http://localhost:${port}`;
    // Seeded through the services before the server runs: the embedded database admits one process.
    const services = await openServices(loadConfig(env), createLogger('silent'));
    const secrets: Record<string, string | undefined> = {};
    try {
      const a = await services.clients.create({
        client_name: 'Crash App',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token'],
        scope: 'openid launch/patient offline_access patient/*.rs',
      });
      appId = a.client.clientId;
      secrets.app = a.clientSecret;
      const s = await services.clients.create({ client_name: 'Crash service', grant_types: ['client_credentials'], scope: 'custos:introspect' });
      serviceId = s.client.clientId;
      secrets.service = s.clientSecret;
      for (let i = 0; i < CONSENT_PATIENTS + REFRESH_PATIENTS; i += 1) {
        const account = await services.accounts.create({ username: `crash${i}`, role: 'patient', password: TEST_PASSWORD, fhirId: `crash-${i}` });
        patients.push({ username: account.username, accountId: account.id, agent: new UserAgent(), consentId: '', tokens: { access_token: '' } });
      }
    } finally {
      await closeDatabase(services.db);
    }
    server = await startServerProcess(env, issuer);
    app = await discover(issuer, appId, secrets.app);
    rs = await discover(issuer, serviceId, secrets.service);
    // Every patient connects the app through the real login and consent pages, then opens the portal.
    for (const p of patients) {
      const start = await startCodeFlow(app, { scope: APP_SCOPE, aud: FHIR });
      const res = await authorize(p.agent, start.url.toString(), issuer, { username: p.username, password: TEST_PASSWORD });
      p.tokens = await oidc.authorizationCodeGrant(app, new URL(res.location!), { pkceCodeVerifier: start.verifier, expectedState: start.state });
      const info = await oidc.tokenIntrospection(rs, p.tokens.access_token);
      p.consentId = (info.authorization_details as unknown as ConsentDetailsEntry[])[0]!.consent_id;
      const portal = await p.agent.follow(`${issuer}/account`, issuer);
      assert.equal(portal.status, 200, 'signed in to the portal');
    }
  });

  after(async () => {
    await server?.stop('SIGKILL');
    await database?.drop();
  });

  it('keeps every acknowledged token and consent change, half-writes nothing, and the audit chain verifies', async (t) => {
    const consentPatients = patients.slice(0, CONSENT_PATIENTS);
    const refreshPatients = patients.slice(CONSENT_PATIENTS);
    const serviceTokens: string[] = [];
    const refreshed = new Map<string, { accessTokens: string[]; refreshToken: string }>();
    const stepsDone = new Map<string, number>(consentPatients.map((p) => [p.consentId, 0]));
    let consentAcks = 0;
    let killed = false;
    const victim = server!;
    const kill = () => {
      if (killed) return;
      killed = true;
      victim.child.kill('SIGKILL');
    };

    // Consent changes start once every kind of token grant is being acknowledged, so the kill
    // falls among all of them.
    let flowing!: () => void;
    const tokensFlowing = new Promise<void>((resolve) => (flowing = resolve));
    const checkFlowing = () => {
      if (serviceTokens.length > 0 && [...refreshed.values()].every((c) => c.accessTokens.length > 0)) flowing();
    };

    // Token grants run until the process dies; every failure after the kill is expected.
    const grantWorker = async () => {
      while (!killed) {
        try {
          serviceTokens.push((await oidc.clientCredentialsGrant(rs, { scope: 'custos:introspect' })).access_token);
          checkFlowing();
        } catch (err) {
          if (!killed) throw err;
        }
      }
    };
    const refreshWorker = async (p: Patient) => {
      const chain = { accessTokens: [] as string[], refreshToken: p.tokens.refresh_token! };
      refreshed.set(p.accountId, chain);
      while (!killed) {
        try {
          const t = await oidc.refreshTokenGrant(app, chain.refreshToken);
          chain.accessTokens.push(t.access_token);
          chain.refreshToken = t.refresh_token!;
          checkFlowing();
        } catch (err) {
          if (!killed) throw err;
        }
      }
    };
    // Each patient narrows the app's scopes, then limits it to one resource type, then revokes it.
    // The kill lands when half of all these changes were acknowledged, so some are in flight.
    const consentWorker = async (p: Patient) => {
      await Promise.race([tokensFlowing, victim.exited]);
      for (const step of CONSENT_STEPS) {
        if (killed) return;
        try {
          const page = await p.agent.request(`${issuer}/account/apps/${p.consentId}`);
          assert.equal(page.status, 200);
          const form: [string, string][] = [['_csrf', csrfTokenOf(page.body)]];
          let action = `/account/apps/${p.consentId}`;
          if (step === 'revoked') action += '/revoke';
          else {
            const defaults = formDefaults(page.body, p.consentId).filter(([k, v]) => k !== '_csrf' && !(k === 'scope' && v === COND) && k !== 'types');
            form.push(...defaults);
            if (step === 'limits_changed') form.push(['types', 'Observation']);
          }
          const res = await p.agent.request(`${issuer}${action}`, { form });
          assert.equal(res.status, 302, `${step}: ${res.body.slice(0, 300)}`);
          stepsDone.set(p.consentId, stepsDone.get(p.consentId)! + 1);
          consentAcks += 1;
          if (consentAcks >= (CONSENT_PATIENTS * CONSENT_STEPS.length) / 2) kill();
        } catch (err) {
          if (!killed) throw err;
          return;
        }
      }
    };

    const burst = Promise.all([
      ...Array.from({ length: GRANT_WORKERS }, grantWorker),
      ...refreshPatients.map(refreshWorker),
      ...consentPatients.map(consentWorker),
    ]);
    // Should every consent change finish before the threshold (it cannot), the kill still comes.
    await Promise.race([burst, victim.exited]);
    kill();
    await burst;
    const exit = await victim.exited;
    assert.equal(exit.signal, 'SIGKILL', 'the server was killed, not stopped');
    assert.ok(serviceTokens.length > 0, 'some client_credentials grants were acknowledged');
    assert.ok([...refreshed.values()].some((c) => c.accessTokens.length > 0), 'some refreshes were acknowledged');
    const acked = [...stepsDone.values()];
    assert.ok(acked.some((n) => n > 0) && acked.some((n) => n < CONSENT_STEPS.length), `the kill came mid-burst (steps done: ${acked.join(',')})`);

    t.diagnostic(
      `acknowledged before the kill: ${serviceTokens.length} client_credentials, ` +
        `${[...refreshed.values()].map((c) => c.accessTokens.length).join('+')} refreshes, consent steps ${acked.join(',')}`,
    );

    if (database.kind === 'pglite') {
      assert.ok(existsSync(join(database.dataDir, 'pgdata.lock')), 'the killed process left its data-folder lock behind');
    }
    // Restart on the same data: a stale lock or an unrecovered database would stop it here.
    server = await startServerProcess(env, issuer);

    for (const token of serviceTokens) {
      const info = await oidc.tokenIntrospection(rs, token);
      assert.equal(info.active, true, 'an acknowledged client_credentials token is still active');
      assert.equal(info.client_id, serviceId);
    }
    for (const chain of refreshed.values()) {
      for (const token of chain.accessTokens) {
        const info = await oidc.tokenIntrospection(rs, token);
        assert.equal(info.active, true, 'an acknowledged refreshed access token is still active');
        assert.deepEqual(String(info.scope).split(' ').sort(), [COND, OBS].sort(), 'with the scopes it was issued with');
      }
    }
    for (const p of consentPatients) {
      const done = stepsDone.get(p.consentId)!;
      const info = await oidc.tokenIntrospection(rs, p.tokens.access_token);
      if (done >= 3) assert.equal(info.active, false, 'a revoked app token is dead');
      if (done >= 1 && done < 3 && info.active) {
        assert.ok(!String(info.scope).split(' ').includes(COND), 'a narrowed consent never gives the dropped scope back');
      }
    }

    await server.stop('SIGTERM');
    server = undefined;

    const db: Db = await openDatabase(loadConfig(env).database);
    try {
      // Consents: versions run 1..n without gaps, each is what the step made of it, and the
      // acknowledged steps are all there (at most one unacknowledged step may also have landed).
      for (const p of consentPatients) {
        const versions = await db('consent_versions').where({ consent_id: p.consentId }).orderBy('version');
        const done = stepsDone.get(p.consentId)!;
        assert.deepEqual(versions.map((v) => v.version), versions.map((_, i) => i + 1), 'no gap in the versions');
        assert.ok(versions.length >= done + 1 && versions.length <= done + 2, `consent ${p.consentId}: ${versions.length} versions for ${done} acknowledged changes`);
        assert.deepEqual(versions.map((v) => v.change), ['granted', ...CONSENT_STEPS.slice(0, versions.length - 1)]);
        for (const v of versions.slice(1)) {
          assert.ok(!v.scopes.split(' ').includes(COND), 'the narrowed scope stays out of later versions');
          assert.ok(v.scopes.split(' ').includes(OBS), 'a version keeps its scopes');
        }
        const limits = (v: { limits: unknown }) => (typeof v.limits === 'string' ? JSON.parse(v.limits) : v.limits) as { resourceTypes?: string[] };
        if (versions.length >= 3) assert.deepEqual(limits(versions[2]).resourceTypes, ['Observation']);
        const events = await db('audit_events').whereIn('type', ['consent.granted', 'consent.changed', 'consent.revoked']).whereRaw(`details->>'consent_id' = ?`, [p.consentId]);
        assert.deepEqual(
          events.map((e) => Number((typeof e.details === 'string' ? JSON.parse(e.details) : e.details).version)).sort((a, b) => a - b),
          versions.map((v) => v.version),
          'every consent version has exactly one audit event, and every event its version',
        );
        const grants = await db('oidc_payloads').where({ kind: 'Grant' }).whereRaw(`payload->>'accountId' = ?`, [p.accountId]).whereRaw(`payload->>'clientId' = ?`, [appId]);
        if (versions.at(-1)!.status === 'revoked') {
          assert.equal(grants.length, 0, 'a revoked consent leaves no grant behind');
          const tokens = await db('oidc_payloads').whereIn('kind', ['AccessToken', 'RefreshToken']).whereRaw(`payload->>'accountId' = ?`, [p.accountId]).whereRaw(`payload->>'clientId' = ?`, [appId]);
          assert.equal(tokens.length, 0, 'nor any token');
        } else if (versions.length >= 2) {
          for (const g of grants) {
            const payload = typeof g.payload === 'string' ? JSON.parse(g.payload) : g.payload;
            for (const scope of Object.values(payload.resources ?? {}) as string[]) assert.ok(!scope.split(' ').includes(COND), 'the grant was narrowed with the consent');
          }
        }
      }

      // Tokens: every acknowledged one has its row, and every token row has its audit event.
      const rows = async (kind: string, ids: string[]) => (await db('oidc_payloads').where({ kind }).whereIn('id', ids).select('id')).length;
      assert.equal(await rows('ClientCredentials', serviceTokens), serviceTokens.length);
      const serviceRows = await db('oidc_payloads').where({ kind: 'ClientCredentials' }).whereRaw(`payload->>'clientId' = ?`, [serviceId]).count<{ n: string }[]>({ n: '*' });
      const serviceEvents = await db('audit_events').where({ type: 'token.issued', client_id: serviceId }).count<{ n: string }[]>({ n: '*' });
      assert.equal(Number(serviceRows[0]!.n), Number(serviceEvents[0]!.n), 'one token.issued event per client_credentials token, no more, no fewer');
      for (const p of refreshPatients) {
        const chain = refreshed.get(p.accountId)!;
        assert.equal(await rows('AccessToken', chain.accessTokens), chain.accessTokens.length);
        assert.equal(await rows('RefreshToken', [chain.refreshToken]), 1, 'the last acknowledged refresh token is stored');
        const tokenRows = await db('oidc_payloads').where({ kind: 'AccessToken' }).whereRaw(`payload->>'accountId' = ?`, [p.accountId]).whereRaw(`payload->>'clientId' = ?`, [appId]).count<{ n: string }[]>({ n: '*' });
        const tokenEvents = await db('audit_events').whereIn('type', ['token.issued', 'token.refreshed']).where({ actor: p.accountId, client_id: appId }).count<{ n: string }[]>({ n: '*' });
        assert.equal(Number(tokenRows[0]!.n), Number(tokenEvents[0]!.n), 'one audit event per access token');
        assert.ok(Number(tokenRows[0]!.n) >= chain.accessTokens.length + 1);
      }
      // No token outlives its grant.
      const orphans = await db('oidc_payloads as t')
        .leftJoin('oidc_payloads as g', function () {
          this.on('g.id', '=', 't.grant_id').andOnVal('g.kind', '=', 'Grant');
        })
        .whereIn('t.kind', ['AccessToken', 'RefreshToken', 'AuthorizationCode'])
        .whereNotNull('t.grant_id')
        .whereNull('g.id')
        .select('t.kind', 't.id');
      assert.deepEqual(orphans, [], 'no token without its grant');
    } finally {
      await closeDatabase(db);
    }

    const verified = await auditVerify(env);
    assert.equal(verified.code, 0, `custos audit verify failed: ${verified.stdout}${verified.stderr}`);
    const report = JSON.parse(verified.stdout) as { ok: boolean; checked: number; problems: unknown[] };
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    assert.ok(report.checked > serviceTokens.length, 'the chain covers the burst');
  });
});
