import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Context } from 'koa';
import { accountsPerRequest, grantContextsPerRequest } from '../../src/oidc/index.ts';
import type { Account, AccountRepository } from '../../src/accounts/index.ts';
import { requestContextMiddleware } from '../../src/http/request-context.ts';
import type { LaunchContext, LaunchRepository } from '../../src/smart/index.ts';

describe('reads remembered for one request', () => {
  function repository() {
    const stored = new Map<string, LaunchContext>([['g1', { patient: 'p-1' }]]);
    const reads: string[] = [];
    const repo = {
      async forGrant(grantId: string) {
        reads.push(grantId);
        const c = stored.get(grantId);
        return c && { ...c };
      },
      async attachToGrant(grantId: string, context: LaunchContext) {
        stored.set(grantId, context);
      },
    } as unknown as LaunchRepository;
    return { repo, reads };
  }
  const inRequest = (fn: () => Promise<void>) => requestContextMiddleware()({} as Context, fn);

  it('answers every read of one request from one query, and each request reads afresh', async () => {
    const { repo, reads } = repository();
    const memo = grantContextsPerRequest(repo);
    await inRequest(async () => {
      const [a, b, c] = await Promise.all([memo.forGrant('g1'), memo.forGrant('g1'), memo.forGrant('g1')]);
      assert.deepEqual([a, b, c], [{ patient: 'p-1' }, { patient: 'p-1' }, { patient: 'p-1' }]);
      a!.patient = 'changed by a caller';
      assert.deepEqual(await memo.forGrant('g1'), { patient: 'p-1' }, 'callers get copies');
      assert.equal(await memo.forGrant('g2'), undefined);
    });
    assert.deepEqual(reads, ['g1', 'g2']);
    await inRequest(async () => {
      await memo.forGrant('g1');
    });
    assert.deepEqual(reads, ['g1', 'g2', 'g1'], 'a new request reads again');
  });

  it('reads again after the request attaches a new context, and always outside a request', async () => {
    const { repo, reads } = repository();
    const memo = grantContextsPerRequest(repo);
    await inRequest(async () => {
      assert.equal(await memo.forGrant('g3'), undefined);
      await memo.attachToGrant('g3', { patient: 'p-3' }, 60);
      assert.deepEqual(await memo.forGrant('g3'), { patient: 'p-3' });
    });
    await memo.forGrant('g1');
    await memo.forGrant('g1');
    assert.deepEqual(reads, ['g3', 'g3', 'g1', 'g1']);
  });

  it('reads an account by id once per request, and again after any other call through the repository', async () => {
    const reads: string[] = [];
    let disabled = false;
    const raw = {
      async findById(id: string) {
        reads.push(id);
        return { id, username: 'pat', role: 'patient', disabled } as unknown as Account;
      },
      async setDisabled(_id: string, value: boolean) {
        disabled = value;
      },
    } as unknown as AccountRepository;
    const accounts = accountsPerRequest(raw);
    await inRequest(async () => {
      const [a, b] = await Promise.all([accounts.findById('a1'), accounts.findById('a1')]);
      assert.notEqual(a, b, 'callers get copies');
      assert.equal((await accounts.findById('a1'))?.disabled, false);
      assert.deepEqual(reads, ['a1']);
      await accounts.setDisabled('a1', true, undefined as never);
      assert.equal((await accounts.findById('a1'))?.disabled, true, 'a write forgets what was read');
    });
    await accounts.findById('a1');
    assert.deepEqual(reads, ['a1', 'a1', 'a1']);
  });
});
