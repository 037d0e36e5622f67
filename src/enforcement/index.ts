/**
 * `custos/enforcement`: consent enforcement for FHIR R4 servers. Use the pieces in your own server
 * (validate the token, decide the request, filter the answer) or run `custos fhir-proxy`.
 */
export { parseFhirRequest, type FhirInteraction, type InteractionKind, type ParsedRequest } from './fhir-request.ts';
export { accessFactsFromClaims, type AccessFacts, type ConsentLimits, type SecurityLabelRef, type TokenVerdict } from './access-token.ts';
export { createTokenValidator, TokenServiceUnavailable, type TokenValidator, type TokenValidatorOptions } from './token-validator.ts';
export { decide, DEFAULT_WRITE_ACR, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, type Decision, type Denial, type Permit, type EnforcementPolicy, type DenyCode } from './decision.ts';
export { checkResource, inPatientCompartment, medicationReferences, type AccessFilter, type CheckOptions, type HiddenReason, type ReferencedMedications, type ResourceVerdict } from './resource-visibility.ts';
export { checkSingle, judgeEntries, judgeEntry, pageEntries, bundleResources, rewriteEntry, type JudgedEntry, type PageEntry, type FilterReport } from './response-filter.ts';
export { collectPage, type Cursor, type CollectedPage, type CollectOptions } from './paging.ts';
export { confineToUser, type ConfinedAccess } from './scope-confinement.ts';
export { operationOutcome, type OperationOutcome, type IssueCode } from './operation-outcome.ts';
export { PATIENT_LINKS, DATE_ELEMENTS, UNDATED_TYPES, SENSITIVE_CODES, SCOPE_PARAMETERS } from './resource-rules.ts';
export { createFhirProxy, type FhirProxy, type FhirProxyOptions } from './fhir-proxy.ts';
