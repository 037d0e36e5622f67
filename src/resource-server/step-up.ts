/**
 * RFC 9470 (OAuth 2.0 Step Up Authentication Challenge) for resource servers: given what
 * introspection (or a JWT access token) says about how the user authenticated, decide whether the
 * request may proceed, and if not, the exact 401 challenge that tells the app how to re-authorize.
 *
 * Plain TypeScript with no dependencies, so a FHIR server can use it as it is.
 */

/** What this needs from an introspection response (RFC 7662 plus RFC 9470 section 4). */
export interface AuthenticationFacts {
  active?: boolean;
  acr?: string;
  auth_time?: number;
}

export interface StepUpRequirement {
  /** Acceptable ACR values, in preference order; the token's `acr` must be one of them. */
  acrValues?: readonly string[];
  /** The user must have authenticated at most this many seconds ago. */
  maxAge?: number;
}

export interface StepUpChallenge {
  status: 401;
  headers: { 'WWW-Authenticate': string };
  body: { error: 'insufficient_user_authentication'; error_description: string };
}

const quote = (v: string) => `"${v.replace(/["\\]/g, '\\$&')}"`;

/**
 * Undefined when the token's authentication satisfies `required`; otherwise the challenge to send
 * (401, `WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values=..., max_age=...`).
 * Callers check `active` and scopes first: an inactive token deserves `invalid_token`, not this.
 */
export function stepUpChallenge(
  facts: AuthenticationFacts,
  required: StepUpRequirement,
  now: number = Math.floor(Date.now() / 1000),
): StepUpChallenge | undefined {
  const reasons: string[] = [];
  if (required.acrValues?.length && (!facts.acr || !required.acrValues.includes(facts.acr))) {
    reasons.push('a stronger authentication level is required');
  }
  if (required.maxAge !== undefined && (facts.auth_time === undefined || now - facts.auth_time > required.maxAge)) {
    reasons.push('a more recent authentication is required');
  }
  if (reasons.length === 0) return undefined;
  const description = reasons.join('; ');
  const params = [`error="insufficient_user_authentication"`, `error_description=${quote(description)}`];
  if (required.acrValues?.length) params.push(`acr_values=${quote(required.acrValues.join(' '))}`);
  if (required.maxAge !== undefined) params.push(`max_age=${required.maxAge}`);
  return {
    status: 401,
    headers: { 'WWW-Authenticate': `Bearer ${params.join(', ')}` },
    body: { error: 'insufficient_user_authentication', error_description: description },
  };
}
