export { adminApiRoutes, adminApiRouteTable, clientJson, inventoryRow, accountJson, ADMIN_API_PREFIX, type ApiRoute, type AdminApiDeps } from './api-routes.ts';
export { openApiDocument, openApiPath } from './openapi.ts';
export { createAccountAdmin, AccountNotFoundError, AccountStateError, MFA_RESET_NOTICE, type AccountAdmin } from './account-admin.ts';
export { dcrRoutes } from './dcr-routes.ts';
export { adminPages, ADMIN_CLIENT_ID } from './pages.ts';
export { toFhirAuditEvent, auditBundle } from './audit-fhir.ts';
