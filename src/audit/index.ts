export { GENESIS_HASH, chainHash, type AuditEvent, type AuditEventInput, type AuditOutcome } from './audit-event.ts';
export {
  createAuditTrail,
  InvalidCursorError,
  MAX_AUDIT_PAGE,
  type AuditTrail,
  type AuditFilter,
  type AuditPage,
  type VerifyReport,
  type VerifyProblem,
} from './audit-trail.ts';
