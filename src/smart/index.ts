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
export { launchContextSchema, mergeContexts, CONTEXT_PARAMETERS, type LaunchContext } from './launch-context.ts';
export { createLaunchRepository, type LaunchRepository } from './launch-repository.ts';
export { describeScope } from './scope-descriptions.ts';
export { smartConfiguration, smartCapabilities, DEFAULT_SMART_STYLE, type SmartConfigurationInput } from './smart-configuration.ts';
export { scopeContextsForRole, scopesAllowedForRole } from './role-contexts.ts';
