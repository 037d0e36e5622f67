/**
 * Authentication levels and the policy that decides which one a request needs. Two levels, each
 * an ACR value advertised in discovery: a password login, and a multi-factor one.
 */
import { isResourceScope, parseResourceScope } from '../smart/index.ts';

export const ACR_PASSWORD = 'urn:custos:acr:password';
export const ACR_MFA = 'urn:custos:acr:mfa';
export const ACR_VALUES = [ACR_PASSWORD, ACR_MFA] as const;

const LEVEL: Record<string, number> = { [ACR_PASSWORD]: 1, [ACR_MFA]: 2 };

/** The level of an ACR value; unknown values (or none) count as the lowest. */
export function levelOf(acr: string | undefined): number {
  return (acr && LEVEL[acr]) || 0;
}

export interface MfaPolicy {
  /** Scopes that create, update or delete data need multi-factor. */
  writeScopesNeedMfa: boolean;
  /** Accounts with these roles always sign in with multi-factor. */
  mfaRoles: readonly string[];
}

export interface LevelRequest {
  /** The request's `acr_values`, space-separated, in preference order (OIDC Core 3.1.2.1). */
  acrValues?: string | undefined;
  scope?: string | undefined;
  role?: string | undefined;
  /** The client's minimum ACR, when an admin set one. */
  clientMinimumAcr?: string | undefined;
}

/** Why a request needs the level it needs, for the log and the page. */
export interface RequiredLevel {
  level: number;
  reasons: string[];
}

/**
 * The level a request needs. `acr_values` is honoured as a requirement (the weakest level it
 * names), never as a mere wish; policy can only raise it.
 */
export function requiredLevel(req: LevelRequest, policy: MfaPolicy): RequiredLevel {
  const reasons: string[] = [];
  let level = 1;
  const asked = (req.acrValues ?? '').split(' ').map(levelOf).filter((l) => l > 0);
  if (asked.length && Math.min(...asked) > level) {
    level = Math.min(...asked);
    reasons.push('the app asked for it');
  }
  if (levelOf(req.clientMinimumAcr) > level) {
    level = levelOf(req.clientMinimumAcr);
    reasons.push('the app requires it');
  }
  if (req.role && policy.mfaRoles.includes(req.role) && level < 2) {
    level = 2;
    reasons.push(`${req.role} accounts require it`);
  }
  if (policy.writeScopesNeedMfa && level < 2 && writesData(req.scope)) {
    level = 2;
    reasons.push('the app asks to change data');
  }
  return { level, reasons };
}

function writesData(scope: string | undefined): boolean {
  return (scope ?? '').split(' ').some((s) => {
    if (!isResourceScope(s)) return false;
    try {
      const p = parseResourceScope(s).permissions;
      return p.has('c') || p.has('u') || p.has('d');
    } catch {
      return false;
    }
  });
}
