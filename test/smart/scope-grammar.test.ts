import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  parseResourceScope,
  permissionString,
  covers,
  intersect,
  toV2,
  negotiate,
  ScopeSyntaxError,
  PERMISSIONS,
  type ResourceScope,
} from '../../src/smart/index.ts';

const LAB = 'category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const VITALS = 'category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';

describe('SMART scope grammar', () => {
  it('parses v1 scopes and normalises them to v2 permissions', () => {
    const read = parseResourceScope('patient/Observation.read');
    assert.equal(read.version, 'v1');
    assert.equal(permissionString(read.permissions), 'rs');
    assert.equal(permissionString(parseResourceScope('user/*.write').permissions), 'cud');
    assert.equal(permissionString(parseResourceScope('system/*.*').permissions), 'cruds');
    assert.equal(read.raw, 'patient/Observation.read', 'the original text is kept');
  });

  it('parses v2 scopes with granular query constraints', () => {
    const s = parseResourceScope(`patient/Observation.rs?${LAB}`);
    assert.equal(s.version, 'v2');
    assert.equal(s.context, 'patient');
    assert.equal(s.resourceType, 'Observation');
    assert.deepEqual(s.query, [['category', 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory']]);
    assert.equal(toV2(s), `patient/Observation.rs?${LAB}`);
  });

  for (const [scope, why] of [
    ['patient/Observation.sr', /subset of cruds in that order/],
    ['patient/Observation.', /subset of cruds/],
    ['patient/Observation.readwrite', /subset of cruds/],
    ['practitioner/Observation.rs', /must start with/],
    ['patient/observation.rs', /not a FHIR resource type/],
    ['patient/Observation', /needs ".permissions"/],
    ['patient/Observation.read?category=x', /need v2 permissions/],
    ['patient/Observation.rs?', /empty query/],
    ['patient/Observation.rs?category', /name=value/],
    ['patient/Observation.rs?a=1?b=2', /more than one/],
  ] as const) {
    it(`refuses "${scope}" naming it`, () => {
      assert.throws(() => parseResourceScope(scope), (err: unknown) => {
        assert.ok(err instanceof ScopeSyntaxError);
        assert.equal(err.scope, scope);
        assert.match(err.message, why);
        assert.ok(err.message.includes(scope));
        return true;
      });
    });
  }

  it('decides coverage: wildcards, permissions and constraints', () => {
    const p = parseResourceScope;
    assert.ok(covers(p('patient/*.cruds'), p('patient/Observation.rs')));
    assert.ok(covers(p('patient/Observation.read'), p('patient/Observation.rs')));
    assert.ok(covers(p('patient/Observation.rs'), p(`patient/Observation.rs?${LAB}`)));
    assert.ok(!covers(p(`patient/Observation.rs?${LAB}`), p('patient/Observation.rs')));
    assert.ok(!covers(p('patient/Observation.r'), p('patient/Observation.rs')));
    assert.ok(!covers(p('user/*.cruds'), p('patient/Observation.r')), 'user/ never covers patient/');
    assert.ok(!covers(p('patient/Condition.cruds'), p('patient/*.r')), 'a type never covers *');
  });

  it('intersects to the narrower scope', () => {
    const p = parseResourceScope;
    assert.equal(intersect(p('patient/*.cruds'), p('patient/Observation.rs'))?.raw, 'patient/Observation.rs');
    assert.equal(intersect(p('patient/Observation.rs'), p(`patient/Observation.r?${LAB}`))?.raw, `patient/Observation.r?${LAB}`);
    assert.equal(intersect(p(`patient/Observation.rs?${LAB}`), p(`patient/Observation.rs?${VITALS}`)), undefined);
    assert.equal(intersect(p('patient/Observation.c'), p('patient/Observation.rs')), undefined);
  });
});

const resourceTypes = fc.constantFrom('*', 'Observation', 'Condition', 'Patient', 'MedicationRequest');
const perms = fc.subarray([...PERMISSIONS], { minLength: 1 }).map((ps) => ps.join(''));
const constraints = fc.subarray([LAB, VITALS, 'status=final'], { maxLength: 2 });
const scopeText = fc
  .tuple(fc.constantFrom('patient', 'user', 'system'), resourceTypes, fc.oneof(perms, fc.constantFrom('read', 'write', '*')), constraints)
  .map(([ctx, type, perm, q]) => `${ctx}/${type}.${perm}${q.length && !['read', 'write', '*'].includes(perm) ? `?${q.join('&')}` : ''}`);

describe('SMART scope grammar properties', () => {
  it('parses every well-formed scope and prints it back in canonical v2 form', () => {
    fc.assert(
      fc.property(scopeText, (text) => {
        const s = parseResourceScope(text);
        const again = parseResourceScope(toV2(s));
        assert.equal(toV2(again), toV2(s));
        assert.deepEqual([...again.permissions].sort(), [...s.permissions].sort());
      }),
    );
  });

  it('intersection is covered by both sides and never wider than either', () => {
    fc.assert(
      fc.property(scopeText, scopeText, (a, b) => {
        const x = parseResourceScope(a);
        const y = parseResourceScope(b);
        const i = intersect(x, y);
        if (!i) return;
        assert.ok(covers(x, i), `${a} covers ${i.raw}`);
        assert.ok(covers(y, i), `${b} covers ${i.raw}`);
      }),
    );
  });

  it('coverage is reflexive and transitive', () => {
    fc.assert(
      fc.property(scopeText, scopeText, scopeText, (a, b, c) => {
        const [x, y, z] = [a, b, c].map(parseResourceScope) as [ResourceScope, ResourceScope, ResourceScope];
        assert.ok(covers(x, x));
        if (covers(x, y) && covers(y, z)) assert.ok(covers(x, z));
      }),
    );
  });

  it('negotiation never grants more than the ceiling or than was asked', () => {
    fc.assert(
      fc.property(fc.array(scopeText, { maxLength: 5 }), fc.array(scopeText, { maxLength: 5 }), (requested, ceiling) => {
        const { granted, rejected } = negotiate({ requested, ceiling, contexts: ['patient', 'user'] });
        for (const g of granted) {
          const s = parseResourceScope(g);
          assert.notEqual(s.context, 'system');
          assert.ok(ceiling.map(parseResourceScope).some((c) => covers(c, s)), `${g} within the ceiling`);
          assert.ok(requested.map(parseResourceScope).some((r) => covers(r, s)), `${g} within the request`);
        }
        for (const r of rejected) assert.ok(requested.includes(r));
      }),
    );
  });
});

describe('scope negotiation', () => {
  it('grants what was asked, within the ceiling, keeping the requested form', () => {
    const n = negotiate({
      requested: ['openid', 'fhirUser', 'launch/patient', 'patient/Observation.read', 'patient/Condition.rs', 'offline_access', 'made-up'],
      ceiling: ['openid', 'fhirUser', 'launch/patient', 'patient/*.rs'],
      contexts: ['patient', 'user'],
    });
    assert.deepEqual(n.granted, ['openid', 'fhirUser', 'launch/patient', 'patient/Observation.read', 'patient/Condition.rs']);
    assert.deepEqual(n.rejected, ['offline_access', 'made-up']);
  });

  it('narrows a request wider than the ceiling', () => {
    const n = negotiate({ requested: ['patient/*.cruds'], ceiling: ['patient/Observation.rs', `patient/Condition.r`], contexts: ['patient'] });
    assert.deepEqual(n.granted, ['patient/Observation.rs', 'patient/Condition.r']);
  });

  it('honours the user approval and refuses contexts the grant type does not allow', () => {
    const n = negotiate({
      requested: ['patient/Observation.rs', 'patient/Condition.rs', 'system/Patient.rs'],
      ceiling: ['patient/*.rs', 'system/*.rs'],
      approved: ['patient/Condition.rs', 'system/Patient.rs'],
      contexts: ['patient', 'user'],
    });
    assert.deepEqual(n.granted, ['patient/Condition.rs']);
    assert.deepEqual(n.rejected, ['patient/Observation.rs', 'system/Patient.rs']);
  });

  it('throws on a malformed scope', () => {
    assert.throws(() => negotiate({ requested: ['patient/Observation.xyz'], ceiling: [], contexts: ['patient'] }), ScopeSyntaxError);
  });
});
