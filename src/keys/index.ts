export { seal, open, EnvelopeError } from './envelope.ts';
export { deriveKey, type KeyPurpose } from './derived-keys.ts';
export {
  ensureSigningKeys,
  rotateSigningKeys,
  loadSigningKeys,
  listSigningKeys,
  purgeRetiredSigningKeys,
  SIGNING_ALGS,
  type SigningAlg,
  type SigningKeyInfo,
  type LoadedKeys,
  type RotationTiming,
} from './signing-keys.ts';
