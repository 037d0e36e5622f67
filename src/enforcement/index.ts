/**
 * `custos/enforcement`: consent enforcement for FHIR R4 servers. Use the pieces in your own server
 * (validate the token, decide the request, filter the answer) or run `custos fhir-proxy`.
 */
export { parseFhirRequest, type FhirInteraction, type InteractionKind, type ParsedRequest } from './fhir-request.ts';
export { accessFactsFromClaims, type AccessFacts, type ConsentLimits, type SecurityLabelRef, type TokenVerdict } from './access-token.ts';
export { createTokenValidator, TokenServiceUnavailable, type TokenValidator, type TokenValidatorOptions } from './token-validator.ts';
export { decide, DEFAULT_WRITE_ACR, type Decision, type Denial, type Permit, type EnforcementPolicy, type DenyCode } from './decision.ts';
export { checkResource, inPatientCompartment, type AccessFilter, type HiddenReason, type ResourceVerdict } from './resource-visibility.ts';
export { checkSingle, filterBundle, type LinkRewriter, type FilterReport } from './response-filter.ts';
export { operationOutcome, type OperationOutcome, type IssueCode } from './operation-outcome.ts';
export { PATIENT_LINKS, DATE_ELEMENTS, UNDATED_TYPES, SENSITIVE_CODES, SCOPE_PARAMETERS } from './resource-rules.ts';
export { createFhirProxy, type FhirProxy, type FhirProxyOptions } from './fhir-proxy.ts';
