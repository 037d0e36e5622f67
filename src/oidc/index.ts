export { buildProvider, signedTokenMaxLifetime, COOKIE_NAMES, type ProviderDeps } from './provider.ts';
export { createKnexAdapter, deleteExpiredPayloads } from './adapter.ts';
export { interactionRoutes } from './interactions.ts';
