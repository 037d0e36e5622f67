/**
 * Reads remembered for the rest of one request, never longer: what oidc-provider and our hooks
 * ask for several times while serving one request (the signed-in account, a grant's launch
 * context) costs one query, and is never older than the request itself.
 */
import type { Account, AccountRepository } from '../accounts/index.ts';
import type { LaunchContext, LaunchRepository } from '../smart/index.ts';
import { currentRequest } from '../http/request-context.ts';

/** A per-request map for each kind of read; undefined outside a request (then nothing is kept). */
function requestMemo<T>() {
  const perRequest = new WeakMap<object, Map<string, Promise<T>>>();
  return () => {
    const ctx = currentRequest();
    if (!ctx) return undefined;
    let memo = perRequest.get(ctx);
    if (!memo) {
      memo = new Map();
      perRequest.set(ctx, memo);
    }
    return memo;
  };
}

/** Reads `key` through `memo` (when there is one); a failed read is not remembered. */
async function remembered<T>(memo: Map<string, Promise<T>> | undefined, key: string, read: () => Promise<T>): Promise<T> {
  if (!memo) return read();
  let found = memo.get(key);
  if (!found) {
    found = read();
    memo.set(key, found);
    found.catch(() => memo.delete(key));
  }
  // Each caller gets its own copy.
  return structuredClone(await found);
}

/**
 * Accounts by id. Serving one authorization or token request looks the signed-in account up
 * about ten times (findAccount, the authentication level, launch context, consent...). Any
 * other call through this repository (a write, for one) forgets what the request read.
 */
export function accountsPerRequest(accounts: AccountRepository): AccountRepository {
  const memoOf = requestMemo<Account | undefined>();
  const wrapped = { ...accounts } as Record<string, unknown>;
  for (const [name, fn] of Object.entries(accounts) as [string, (...a: unknown[]) => unknown][]) {
    wrapped[name] = (...args: unknown[]) => {
      memoOf()?.clear();
      return fn.apply(accounts, args);
    };
  }
  wrapped.findById = (id: string) => remembered(memoOf(), id, () => accounts.findById(id));
  return wrapped as unknown as AccountRepository;
}

/**
 * A grant's launch context. Issuing a token reads it for the token's claims, for the consent
 * check (its patient) and for the token response: one query serves all three.
 */
export function grantContextsPerRequest(launches: LaunchRepository): LaunchRepository {
  const memoOf = requestMemo<LaunchContext | undefined>();
  return {
    ...launches,
    forGrant: (grantId) => remembered(memoOf(), grantId, () => launches.forGrant(grantId)),
    async attachToGrant(grantId, context, ttlSeconds) {
      memoOf()?.delete(grantId);
      await launches.attachToGrant(grantId, context, ttlSeconds);
      memoOf()?.delete(grantId);
    },
  };
}
