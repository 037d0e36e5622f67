export { newTotpSecret, totpUri, matchTotp, TOTP_PERIOD } from './totp.ts';
export { newRecoveryCodes, normaliseRecoveryCode, hashRecoveryCode, RECOVERY_CODE_COUNT } from './recovery-codes.ts';
export { createMfaRepository, type MfaRepository, type MfaStatus } from './repository.ts';
export { ACR_PASSWORD, ACR_MFA, ACR_VALUES, levelOf, requiredLevel, type MfaPolicy, type LevelRequest, type RequiredLevel } from './policy.ts';
