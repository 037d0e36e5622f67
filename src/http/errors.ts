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

  constructor(status: number, error: string, description: string, headers: Record<string, string> = {}) {
    super(description);
    this.status = status;
    this.error = error;
    this.description = description;
    this.headers = headers;
  }
}

export const badRequest = (description: string) => new HttpError(400, 'invalid_request', description);
export const notFound = (description = 'the requested resource does not exist') => new HttpError(404, 'not_found', description);
export const payloadTooLarge = () => new HttpError(413, 'invalid_request', 'the request body is too large');
