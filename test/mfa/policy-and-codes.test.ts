import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ACR_MFA, ACR_PASSWORD, requiredLevel, levelOf, normaliseRecoveryCode, newRecoveryCodes, hashRecoveryCode } from '../../src/mfa/index.ts';
import { stepUpChallenge } from '../../src/resource-server/index.ts';

const policy = { writeScopesNeedMfa: true, mfaRoles: ['admin'] };

describe('authentication level policy', () => {
  it('needs a password by default and MFA when acr_values, role, write scopes or the client say so', () => {
    assert.equal(requiredLevel({ scope: 'openid patient/Observation.rs' }, policy).level, 1);
    assert.equal(requiredLevel({ acrValues: ACR_MFA }, policy).level, 2);
    assert.equal(requiredLevel({ acrValues: `${ACR_PASSWORD} ${ACR_MFA}` }, policy).level, 1, 'the weakest acceptable value');
    assert.equal(requiredLevel({ acrValues: 'urn:unknown' }, policy).level, 1);
    assert.equal(requiredLevel({ role: 'admin' }, policy).level, 2);
    assert.equal(requiredLevel({ scope: 'patient/Observation.c' }, policy).level, 2);
    assert.equal(requiredLevel({ scope: 'user/*.write' }, policy).level, 2);
    assert.equal(requiredLevel({ scope: 'patient/Observation.cud' }, { ...policy, writeScopesNeedMfa: false }).level, 1);
    assert.equal(requiredLevel({ clientMinimumAcr: ACR_MFA }, policy).level, 2);
    assert.deepEqual(requiredLevel({ role: 'admin', scope: 'patient/Observation.u' }, policy).reasons, ['admin accounts require it']);
    assert.equal(levelOf(undefined), 0);
  });
});

describe('recovery codes', () => {
  it('are ten distinct codes, typed back in any case and spacing', () => {
    const codes = newRecoveryCodes();
    assert.equal(new Set(codes).size, 10);
    for (const c of codes) assert.match(c, /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/);
    const pepper = Buffer.alloc(32, 7);
    assert.equal(hashRecoveryCode(pepper, codes[0]!.toLowerCase().replace('-', ' ')), hashRecoveryCode(pepper, codes[0]!));
    assert.notEqual(hashRecoveryCode(Buffer.alloc(32, 8), codes[0]!), hashRecoveryCode(pepper, codes[0]!));
    assert.equal(normaliseRecoveryCode(' ab-cd '), 'ABCD');
  });
});

describe('RFC 9470 step-up challenge', () => {
  it('passes a token that is strong and recent enough', () => {
    assert.equal(stepUpChallenge({ active: true, acr: ACR_MFA, auth_time: 1000 }, { acrValues: [ACR_MFA], maxAge: 300 }, 1200), undefined);
  });

  it('challenges a weaker or older authentication with the exact header', () => {
    const weak = stepUpChallenge({ acr: ACR_PASSWORD, auth_time: 1000 }, { acrValues: [ACR_MFA] }, 1200)!;
    assert.equal(weak.status, 401);
    assert.equal(
      weak.headers['WWW-Authenticate'],
      `Bearer error="insufficient_user_authentication", error_description="a stronger authentication level is required", acr_values="${ACR_MFA}"`,
    );
    const old = stepUpChallenge({ acr: ACR_MFA, auth_time: 1000 }, { maxAge: 60 }, 1200)!;
    assert.match(old.headers['WWW-Authenticate'], /max_age=60$/);
    assert.equal(old.body.error, 'insufficient_user_authentication');
    assert.ok(stepUpChallenge({}, { maxAge: 60 }, 1200), 'no auth_time is not recent');
  });
});
