export { buildProvider, signedTokenMaxLifetime, rotationTiming, COOKIE_NAMES, type ProviderDeps } from './provider.ts';
export { createKnexAdapter, deleteExpiredPayloads } from './adapter.ts';
export { interactionRoutes } from './interactions.ts';
export { createProviderHost, type ProviderHost } from './provider-host.ts';
