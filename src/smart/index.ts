export {
  parseResourceScope,
  isResourceScope,
  intersect,
  covers,
  toV2,
  permissionString,
  ScopeSyntaxError,
  CONTEXTS,
  PERMISSIONS,
  type ResourceScope,
  type Permission,
  type ScopeContext,
} from './scope-grammar.ts';
export { negotiate, splitScopes, STATIC_SCOPES, type Negotiation, type NegotiationInput } from './scope-negotiation.ts';
export { createFhirServers, type FhirServers } from './fhir-servers.ts';
