import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { newClientId } from '../../src/clients/index.ts';

describe('generated client ids', () => {
  it('are 128-bit base64url and never start with "-" (a command line would take them for an option)', () => {
    // One id in 64 would start with '-' if nothing prevented it: 5,000 make a miss all but impossible.
    const ids = Array.from({ length: 5000 }, newClientId);
    for (const id of ids) {
      assert.match(id, /^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
    }
    assert.equal(new Set(ids).size, ids.length);
  });
});
