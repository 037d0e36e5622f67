export {
  ROLES,
  newAccountSchema,
  fhirId,
  fhirUserReference,
  type Account,
  type NewAccount,
  type Role,
} from './account.ts';
export { createPasswordHasher, type PasswordHasher, type PasswordHasherOptions } from './password-hasher.ts';
export { createAccountRepository, UsernameTakenError, RELATIONSHIPS, type AccountRepository, type Relationship } from './repository.ts';
export { standingRepresentations } from './representation.ts';
export { createLoginThrottle, type LoginThrottle, type LoginStep } from './login-throttle.ts';
