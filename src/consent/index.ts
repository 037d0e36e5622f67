export * from './security-labels.ts';
export * from './visibility.ts';
export * from './scope-choices.ts';
export * from './consent-record.ts';
export { createConsentRepository, CLIENT_CATEGORIES, DEFAULT_PREFERENCES, type ConsentRepository, type PrivacyPreferences, type ClientCategory } from './repository.ts';
export * from './consent-service.ts';
export { toFhirConsent, type FhirConsentInput } from './fhir-consent.ts';
