import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createPageLinkSeal } from '../../src/enforcement/page-link-seal.ts';

describe('paging link seal', () => {
  const request = '/Observation?category=laboratory&_sort=-date&_count=1';
  const state = (skip: number, offset: number) => ({ u: `${request}&_offset=${offset}`, k: skip, r: request, e: 1_800_000_000_000 });

  it('opens what it sealed, and nothing else', () => {
    const secret = randomBytes(32);
    const seal = createPageLinkSeal(secret);
    const sealed = seal.seal(state(3, 100), request.length);
    assert.deepEqual(seal.open(sealed), state(3, 100));
    assert.deepEqual(createPageLinkSeal(Buffer.from(secret)).open(sealed), state(3, 100), 'the same secret elsewhere opens it');
    assert.equal(createPageLinkSeal(randomBytes(32)).open(sealed), undefined, 'another secret does not');
    const raw = Buffer.from(sealed, 'base64url');
    for (const i of [0, 12, raw.length - 1]) {
      const changed = Buffer.from(raw);
      changed[i]! ^= 1;
      assert.equal(seal.open(changed.toString('base64url')), undefined, `a bit changed at ${i}`);
    }
    for (const junk of ['', 'a', 'not base64!', sealed.slice(0, 40), `${sealed}.x`, Buffer.alloc(40).toString('base64url')]) assert.equal(seal.open(junk), undefined, junk);
  });

  it('is as long whatever the counts inside it, and never the same twice', () => {
    const seal = createPageLinkSeal(randomBytes(32));
    const lengths = new Set([0, 9, 10, 99_999, 12_345_678].map((n) => seal.seal(state(n, n * 100), request.length).length));
    assert.equal(lengths.size, 1);
    assert.notEqual(seal.seal(state(1, 1), request.length), seal.seal(state(1, 1), request.length));
    // A state that outgrows the room its request leaves still seals, only coarser.
    const huge = { ...state(1, 1), u: `${request}&${'x'.repeat(5000)}` };
    assert.deepEqual(seal.open(seal.seal(huge, request.length)), huge);
  });

  it('refuses a sealed value that is not an object', () => {
    const seal = createPageLinkSeal(randomBytes(32));
    for (const value of [[1, 2], 'text', 42, null]) assert.equal(seal.open(seal.seal(value as unknown as object, 10)), undefined, JSON.stringify(value));
  });
});
