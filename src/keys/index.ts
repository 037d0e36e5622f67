export { seal, open, EnvelopeError } from './envelope.ts';
export { deriveKey, type KeyPurpose } from './derived-keys.ts';
export {
  ensureSigningKeys,
  rotateSigningKeys,
  loadSigningJwks,
  listSigningKeys,
  purgeRetiredSigningKeys,
  SIGNING_ALGS,
  type SigningAlg,
  type PublishedKey,
} from './signing-keys.ts';
