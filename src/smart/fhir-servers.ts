/**
 * The FHIR servers Custos protects. An authorization request names one with `aud` (SMART) or
 * `resource` (RFC 8707); the access token is issued for it.
 */
export interface FhirServers {
  readonly all: readonly string[];
  /** The audience for requests that name none (backend services, refresh). */
  readonly primary: string | undefined;
  /** The registered base URL `value` denotes (a trailing slash is ignored), if any. */
  find(value: string | undefined): string | undefined;
}

export function createFhirServers(baseUrls: readonly string[]): FhirServers {
  const set = new Set(baseUrls);
  return {
    all: baseUrls,
    primary: baseUrls[0],
    find(value) {
      if (!value) return undefined;
      const normalised = value.replace(/\/+$/, '');
      return set.has(normalised) ? normalised : undefined;
    },
  };
}
