/**
 * HIPAA 164.312(a)(2)(iv) and (c)(1), read straight from the tables: what is secret is stored
 * sealed or hashed, a sealed value opens only with this installation's key and only for its own
 * row, and consent history cannot be rewritten.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { createMfaAdmin } from '../helpers/admin.ts';
import { open, EnvelopeError } from '../../src/keys/envelope.ts';

describe('secrets at rest', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());
  const db = () => server.running.services.db;
  const kek = () => server.config.secrets.keyEncryptionKey;
  const otherKek = randomBytes(32);

  it('stores signing keys sealed: the private part opens only with the KEK and for its own key id', async () => {
    const rows = (await db()('signing_keys').select('kid', 'private_jwk_encrypted', 'public_jwk')) as { kid: string; private_jwk_encrypted: string; public_jwk: Record<string, unknown> }[];
    assert.ok(rows.length >= 2);
    const published = (await (await fetch(new URL('/jwks', server.issuer))).json()) as { keys: { kid: string; x?: string; n?: string }[] };
    for (const row of rows) {
      assert.doesNotMatch(row.private_jwk_encrypted, /"d"|"p"|"q"/, 'no JWK private member in clear');
      const jwk = JSON.parse(open(kek(), row.private_jwk_encrypted, `signing-key:${row.kid}`)) as { kid: string; d?: string; x?: string; n?: string };
      assert.ok(jwk.d, 'the sealed value holds the private key');
      assert.ok(!row.private_jwk_encrypted.includes(jwk.d!), 'the private scalar never appears in the stored text');
      assert.equal(JSON.stringify(row.public_jwk).includes(jwk.d!), false, 'nor in the public column');
      const pub = published.keys.find((k) => k.kid === row.kid);
      if (pub) assert.equal(pub.x ?? pub.n, jwk.x ?? jwk.n, 'the published key is the public half of the sealed one');
      assert.throws(() => open(otherKek, row.private_jwk_encrypted, `signing-key:${row.kid}`), EnvelopeError);
      assert.throws(() => open(kek(), row.private_jwk_encrypted, `signing-key:${rows.find((r) => r.kid !== row.kid)!.kid}`), EnvelopeError);
    }
  });

  it('stores TOTP secrets sealed to their account, recovery codes, passwords and client secrets only as hashes', async () => {
    const admin = await createMfaAdmin(server, 'at-rest-admin');
    const factor = (await db()('mfa_factors').where({ account_id: admin.id, kind: 'totp' }).first()) as { secret_encrypted: string };
    assert.ok(!factor.secret_encrypted.includes(admin.secret));
    assert.equal(open(kek(), factor.secret_encrypted, `totp:${admin.id}`), admin.secret);
    assert.throws(() => open(otherKek, factor.secret_encrypted, `totp:${admin.id}`), EnvelopeError);
    assert.throws(() => open(kek(), factor.secret_encrypted, `totp:${randomUUID()}`), EnvelopeError);

    const codes = await server.running.services.mfa.regenerateRecoveryCodes(admin.id);
    const stored = ((await db()('recovery_codes').where({ account_id: admin.id }).select('code_hash')) as { code_hash: string }[]).map((r) => r.code_hash);
    assert.equal(stored.length, codes.length);
    for (const code of codes) assert.ok(stored.every((h) => !h.includes(code) && !h.includes(code.replace(/-/g, ''))));

    const account = (await db()('accounts').where({ id: admin.id }).first()) as { password_hash: string };
    assert.match(account.password_hash, /^\$argon2id\$/);
    assert.ok(!account.password_hash.includes(admin.password));

    const client = await server.createClient({ client_name: 'At rest', grant_types: ['client_credentials'] });
    const row = (await db()('clients').where({ client_id: client.clientId }).first()) as Record<string, unknown>;
    assert.ok(row.secret_hash, 'a hash is kept');
    assert.ok(!JSON.stringify(row).includes(client.clientSecret!), 'the secret itself appears nowhere in the row');
  });
});

describe('consent history cannot be rewritten', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('refuses UPDATE and DELETE on consent versions, even from the application role', async () => {
    const db = server.running.services.db;
    const patient = await server.createAccount({ username: 'history-patient' });
    const [consent] = (await db('consents')
      .insert({ patient_account_id: patient.id, patient_fhir_id: 'p1', client_id: 'some-app', actor_account_id: patient.id, created_at: new Date() })
      .returning('id')) as { id: string }[];
    await db('consent_versions').insert({
      consent_id: consent!.id,
      version: 1,
      status: 'active',
      scopes: 'patient/Observation.rs',
      limits: JSON.stringify({ hiddenLabels: [] }),
      changed_by: patient.id,
      change: 'granted',
      created_at: new Date(),
    });
    await assert.rejects(db('consent_versions').where({ consent_id: consent!.id }).update({ scopes: 'patient/*.cruds' }), /append-only/);
    await assert.rejects(db('consent_versions').where({ consent_id: consent!.id }).delete(), /append-only/);
    const kept = (await db('consent_versions').where({ consent_id: consent!.id })) as { scopes: string }[];
    assert.deepEqual(kept.map((v) => v.scopes), ['patient/Observation.rs']);
  });
});
