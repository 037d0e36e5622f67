/**
 * Holds the live oidc-provider instance and swaps it when the signing keys change, so a key
 * rotation reaches every instance without a restart. oidc-provider fixes its keystore at
 * construction; everything else it needs lives in the database, so a fresh instance picks up
 * where the old one left off and requests already in flight finish on the old one.
 */
import type { Context, Next } from 'koa';
import mount from 'koa-mount';
import type Provider from 'oidc-provider';
import type { JWK } from 'jose';
import type { LoadedKeys } from '../keys/index.ts';

export interface ProviderHost {
  readonly current: Provider;
  /** Koa middleware delegating to the current provider. */
  middleware(): (ctx: Context, next: Next) => Promise<void>;
  /** Rebuilds the provider when `keys` differ from the ones it was built with; true if it did. */
  update(keys: LoadedKeys): boolean;
}

export function createProviderHost(build: (jwks: JWK[]) => Provider, initial: LoadedKeys): ProviderHost {
  let provider = build(initial.jwks);
  let mounted = mount(provider);
  let fingerprint = initial.fingerprint;
  return {
    get current() {
      return provider;
    },
    middleware() {
      return (ctx, next) => mounted(ctx, next) as Promise<void>;
    },
    update(keys) {
      if (keys.fingerprint === fingerprint) return false;
      provider = build(keys.jwks);
      mounted = mount(provider);
      fingerprint = keys.fingerprint;
      return true;
    },
  };
}
