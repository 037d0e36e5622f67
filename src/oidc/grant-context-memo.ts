/**
 * A grant's launch context, read once per request. Issuing a token reads it for the token's
 * claims, for the consent check (its patient) and for the token response: one query serves all
 * three. Nothing is kept beyond the request, so a context is never older than the request itself.
 */
import type { LaunchContext, LaunchRepository } from '../smart/index.ts';
import { currentRequest } from '../http/request-context.ts';

const perRequest = new WeakMap<object, Map<string, Promise<LaunchContext | undefined>>>();

export function grantContextsPerRequest(launches: LaunchRepository): LaunchRepository {
  const memoOf = () => {
    const ctx = currentRequest();
    if (!ctx) return undefined;
    let memo = perRequest.get(ctx);
    if (!memo) {
      memo = new Map();
      perRequest.set(ctx, memo);
    }
    return memo;
  };
  return {
    ...launches,
    async forGrant(grantId) {
      const memo = memoOf();
      if (!memo) return launches.forGrant(grantId);
      let found = memo.get(grantId);
      if (!found) {
        found = launches.forGrant(grantId);
        memo.set(grantId, found);
        // A failed read is not remembered: the next caller asks again.
        found.catch(() => memo.delete(grantId));
      }
      const context = await found;
      return context && structuredClone(context);
    },
    async attachToGrant(grantId, context, ttlSeconds) {
      memoOf()?.delete(grantId);
      await launches.attachToGrant(grantId, context, ttlSeconds);
      memoOf()?.delete(grantId);
    },
  };
}
