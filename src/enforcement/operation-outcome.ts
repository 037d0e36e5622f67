/**
 * FHIR R4 OperationOutcome bodies for the answers the proxy gives itself (refusals, failures).
 */

export type IssueCode = 'invalid' | 'not-supported' | 'forbidden' | 'security' | 'login' | 'not-found' | 'conflict' | 'too-costly' | 'exception' | 'transient' | 'timeout' | 'processing';

export interface OperationOutcome {
  resourceType: 'OperationOutcome';
  issue: { severity: 'error' | 'fatal'; code: IssueCode; diagnostics: string }[];
}

export function operationOutcome(code: IssueCode, diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}
