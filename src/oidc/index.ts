export { buildProvider, signedTokenMaxLifetime, rotationTiming, COOKIE_NAMES, EHR_LAUNCH_SCOPE, ADMIN_SCOPE, type ProviderDeps } from './provider.ts';
export { smartLaunch, type SmartLaunch } from './smart-launch.ts';
export { createKnexAdapter, deleteExpiredPayloads, deleteClientPayloads, deleteAccountPayloads } from './adapter.ts';
export { interactionRoutes } from './interactions.ts';
export { createProviderHost, type ProviderHost } from './provider-host.ts';
export { smartRoutes } from './smart-routes.ts';
export { sessionLevelTooLow } from './authentication-level.ts';
