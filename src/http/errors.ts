/**
 * The closed set of errors our own routes throw. Each carries an HTTP status, an OAuth-style
 * `error` code and a description that is safe to show; anything else becomes `server_error`.
 */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: number;
  readonly error: string;
  readonly description: string;
  readonly headers: Record<string, string>;
  /** Field problems (RFC 9457 extension member `errors`), each naming the field by JSON Pointer. */
  readonly fieldErrors: readonly FieldError[];

  constructor(status: number, error: string, description: string, headers: Record<string, string> = {}, fieldErrors: readonly FieldError[] = []) {
    super(description);
    this.status = status;
    this.error = error;
    this.description = description;
    this.headers = headers;
    this.fieldErrors = fieldErrors;
  }
}

/** One field problem: `pointer` (RFC 6901, into the JSON body) or `parameter` (query or path). */
export interface FieldError {
  pointer?: string;
  parameter?: string;
  detail: string;
}

/** Short titles for problem details (RFC 9457 section 3.1.3), by `error` code. */
const TITLES: Record<string, string> = {
  invalid_request: 'The request is not valid',
  not_found: 'Not found',
  conflict: 'Conflict with the current state',
  unauthorized: 'Authentication required',
  invalid_token: 'The access token is not valid',
  insufficient_scope: 'Not allowed',
  insufficient_user_authentication: 'A stronger or more recent sign-in is needed',
  forbidden: 'Not allowed',
  method_not_allowed: 'Method not allowed',
  server_error: 'Server error',
  temporarily_unavailable: 'Temporarily unavailable',
};

/** The problem details object (RFC 9457) for an error, as the admin API returns it. */
export function problemDetails(err: HttpError) {
  return {
    type: `urn:custos:problem:${err.error}`,
    title: TITLES[err.error] ?? err.error,
    status: err.status,
    detail: err.description,
    ...(err.fieldErrors.length ? { errors: err.fieldErrors } : {}),
  };
}

export const badRequest = (description: string) => new HttpError(400, 'invalid_request', description);
export const conflict = (description: string) => new HttpError(409, 'conflict', description);
export const forbidden = (description: string) => new HttpError(403, 'forbidden', description);
export const notFound = (description = 'the requested resource does not exist') => new HttpError(404, 'not_found', description);
export const payloadTooLarge = () => new HttpError(413, 'invalid_request', 'the request body is too large');
