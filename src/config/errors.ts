/** A configuration problem that start-up reports as a readable message, not a stack trace. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}
