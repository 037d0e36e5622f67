export { buildProvider, signedTokenMaxLifetime, rotationTiming, COOKIE_NAMES, EHR_LAUNCH_SCOPE, type ProviderDeps } from './provider.ts';
export { smartLaunch, type SmartLaunch } from './smart-launch.ts';
export { createKnexAdapter, deleteExpiredPayloads } from './adapter.ts';
export { interactionRoutes } from './interactions.ts';
export { createProviderHost, type ProviderHost } from './provider-host.ts';
export { smartRoutes } from './smart-routes.ts';
export { sessionLevelTooLow } from './authentication-level.ts';
export { consentTokens, type ConsentTokens } from './consent-tokens.ts';
export { grantStore } from './grant-store.ts';
