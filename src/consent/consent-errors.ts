/** What can go wrong with a consent change, in words a patient can read. */
export type ConsentErrorKind = 'not_found' | 'invalid' | 'not_active' | 'step_up_required' | 'conflict' | 'forbidden';

export class ConsentError extends Error {
  override name = 'ConsentError';
  readonly kind: ConsentErrorKind;
  constructor(kind: ConsentErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}
