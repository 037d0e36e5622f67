/**
 * Structured JSON logs (pino). Anything that could carry a credential is redacted wherever it
 * appears in a logged object: tokens, codes, secrets, passwords, cookies, authorization headers.
 */
import pino, { type Logger } from 'pino';

const SENSITIVE_KEYS = [
  'password',
  'client_secret',
  'clientSecret',
  'secret',
  'access_token',
  'refresh_token',
  'id_token',
  'code',
  'code_verifier',
  'client_assertion',
  'token',
  'cookie',
  'authorization',
  'set-cookie',
  'private_jwk',
];

export const REDACT_PATHS = [
  ...SENSITIVE_KEYS,
  ...SENSITIVE_KEYS.map((k) => `*.${k}`),
  ...SENSITIVE_KEYS.map((k) => `*.*.${k}`),
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'custos' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

export type { Logger } from 'pino';
