export { clientMetadataSchema, needsSecret, AUTH_METHODS, GRANT_TYPES, type ClientMetadata, type ClientMetadataInput } from './client-metadata.ts';
export { createClientRegistry, CLIENT_STATUSES, type ClientRegistry, type ClientStatus, type RegisteredClient } from './registry.ts';
