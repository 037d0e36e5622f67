/**
 * What the proxy knows about FHIR R4 resource types: which element ties a resource to its patient
 * (from the R4 Patient CompartmentDefinition, keeping only the element naming the person the data
 * is about), which element dates it, and which codes reveal a sensitive category. Tables, no logic.
 */

/** The reference element naming the patient, and the search parameter that filters on it. */
export interface PatientLink {
  element: string;
  search: string;
}

/** Deeper than any real resource: the visibility walk reads no further, and a body may nest no deeper. */
export const MAX_NESTING = 64;

/**
 * A table keyed by names that come from the data (resource types, parameter names): without a
 * prototype, `toString` or `__proto__` find nothing, as any other unknown name does.
 */
function lookupTable<T>(entries: Record<string, T>): Readonly<Record<string, T>> {
  return Object.freeze(Object.assign(Object.create(null) as Record<string, T>, entries));
}

/**
 * Types in the patient compartment that the proxy can check. A `patient/` scope reaches only
 * these (and Patient itself); others, even when a server links them to a patient some other way,
 * are refused, because the proxy could not tell whose they are.
 */
export const PATIENT_LINKS: Readonly<Record<string, PatientLink>> = lookupTable({
  AllergyIntolerance: { element: 'patient', search: 'patient' },
  CarePlan: { element: 'subject', search: 'patient' },
  CareTeam: { element: 'subject', search: 'patient' },
  ClinicalImpression: { element: 'subject', search: 'patient' },
  Condition: { element: 'subject', search: 'patient' },
  Consent: { element: 'patient', search: 'patient' },
  Coverage: { element: 'beneficiary', search: 'beneficiary' },
  DetectedIssue: { element: 'patient', search: 'patient' },
  Device: { element: 'patient', search: 'patient' },
  DiagnosticReport: { element: 'subject', search: 'patient' },
  DocumentReference: { element: 'subject', search: 'patient' },
  Encounter: { element: 'subject', search: 'patient' },
  FamilyMemberHistory: { element: 'patient', search: 'patient' },
  Flag: { element: 'subject', search: 'patient' },
  Goal: { element: 'subject', search: 'patient' },
  ImagingStudy: { element: 'subject', search: 'patient' },
  Immunization: { element: 'patient', search: 'patient' },
  MedicationAdministration: { element: 'subject', search: 'patient' },
  MedicationDispense: { element: 'subject', search: 'patient' },
  MedicationRequest: { element: 'subject', search: 'patient' },
  MedicationStatement: { element: 'subject', search: 'patient' },
  Observation: { element: 'subject', search: 'patient' },
  Procedure: { element: 'subject', search: 'patient' },
  QuestionnaireResponse: { element: 'subject', search: 'patient' },
  RiskAssessment: { element: 'subject', search: 'patient' },
  ServiceRequest: { element: 'subject', search: 'patient' },
  Specimen: { element: 'subject', search: 'patient' },
});

/**
 * Types that hold reference data (catalogues, directories, definitions), about no patient: a
 * written reference to one says nothing of a patient's record, so it is not read first. A
 * reference to any other type outside {@link PATIENT_LINKS} (an EpisodeOfCare, a Communication...)
 * names data the proxy cannot judge, and a write carrying one is refused.
 */
export const REFERENCE_DATA_TYPES: ReadonlySet<string> = new Set([
  'ActivityDefinition',
  'CodeSystem',
  'ConceptMap',
  'DeviceDefinition',
  'Endpoint',
  'HealthcareService',
  'InsurancePlan',
  'Library',
  'Location',
  'Measure',
  'Medication',
  'MedicationKnowledge',
  'MedicinalProduct',
  'ObservationDefinition',
  'Organization',
  'OrganizationAffiliation',
  'PlanDefinition',
  'Practitioner',
  'PractitionerRole',
  'Questionnaire',
  'ResearchStudy',
  'SpecimenDefinition',
  'StructureDefinition',
  'Substance',
  'ValueSet',
]);

/** Search parameters that name the patient of a search, per type (besides the one in PATIENT_LINKS). */
export const PATIENT_SEARCH_ALIASES = ['patient', 'subject', 'beneficiary'];

/**
 * The element(s) that date a resource, in order of preference: the first one present counts.
 * A Period counts by its start and end. Chosen as "when the thing happened" (clinically), falling
 * back to when it was recorded.
 */
export const DATE_ELEMENTS: Readonly<Record<string, readonly string[]>> = lookupTable({
  AllergyIntolerance: ['recordedDate', 'onsetDateTime', 'onsetPeriod'],
  CarePlan: ['period', 'created'],
  CareTeam: ['period'],
  ClinicalImpression: ['effectiveDateTime', 'effectivePeriod', 'date'],
  Condition: ['recordedDate', 'onsetDateTime', 'onsetPeriod'],
  Consent: ['dateTime'],
  Coverage: ['period'],
  DetectedIssue: ['identifiedDateTime', 'identifiedPeriod'],
  DiagnosticReport: ['effectiveDateTime', 'effectivePeriod', 'issued'],
  DocumentReference: ['date', 'context.period'],
  Encounter: ['period'],
  FamilyMemberHistory: ['date'],
  Flag: ['period'],
  Goal: ['startDate', 'statusDate'],
  ImagingStudy: ['started'],
  Immunization: ['occurrenceDateTime', 'recorded'],
  MedicationAdministration: ['effectiveDateTime', 'effectivePeriod'],
  MedicationDispense: ['whenHandedOver', 'whenPrepared'],
  MedicationRequest: ['authoredOn'],
  MedicationStatement: ['effectiveDateTime', 'effectivePeriod', 'dateAsserted'],
  Observation: ['effectiveDateTime', 'effectivePeriod', 'effectiveInstant', 'effectiveTiming', 'issued'],
  Procedure: ['performedDateTime', 'performedPeriod'],
  QuestionnaireResponse: ['authored'],
  RiskAssessment: ['occurrenceDateTime', 'occurrencePeriod'],
  ServiceRequest: ['authoredOn', 'occurrenceDateTime', 'occurrencePeriod'],
  Specimen: ['collection.collectedDateTime', 'collection.collectedPeriod', 'receivedTime'],
});

/** Types that describe people, places and things rather than events: a date range does not apply. */
export const UNDATED_TYPES: ReadonlySet<string> = new Set(['Patient', 'Device', 'Practitioner', 'PractitionerRole', 'Organization', 'Location', 'Medication', 'RelatedPerson']);

// Each code system under every name FHIR data carries it with: its canonical URL and its HL7 OID.
const ICD10 = ['http://hl7.org/fhir/sid/icd-10', 'urn:oid:2.16.840.1.113883.6.3', 'http://hl7.org/fhir/sid/icd-10-cm', 'urn:oid:2.16.840.1.113883.6.90'];
const SNOMED = ['http://snomed.info/sct', 'urn:oid:2.16.840.1.113883.6.96'];
const LOINC = ['http://loinc.org', 'urn:oid:2.16.840.1.113883.6.1'];

export interface SensitiveCode {
  systems: readonly string[];
  /** Code prefixes (ICD-10 blocks, written without their dot) or exact codes (`exact: true`). */
  codes: readonly string[];
  exact?: boolean;
  /** The v3-ActCode sensitivity label it reveals. */
  label: 'ETH' | 'PSY' | 'HIV' | 'STD';
}

/**
 * Codes that reveal a sensitive category even when a resource carries no security label. A short,
 * deliberately incomplete list (ICD-10 chapters and a few SNOMED CT and LOINC codes): labelling
 * data with `meta.security` at the source stays the way to make hiding reliable.
 */
export const SENSITIVE_CODES: readonly SensitiveCode[] = [
  // ICD-10 F10-F19: mental and behavioural disorders due to psychoactive substance use.
  { systems: ICD10, codes: ['F10', 'F11', 'F12', 'F13', 'F14', 'F15', 'F16', 'F17', 'F18', 'F19'], label: 'ETH' },
  // The rest of chapter V (F00-F99): mental and behavioural disorders.
  { systems: ICD10, codes: ['F0', 'F2', 'F3', 'F4', 'F5', 'F6', 'F7', 'F8', 'F9'], label: 'PSY' },
  // B20-B24 HIV disease, Z21 asymptomatic HIV infection status, R75 inconclusive HIV test, O98.7.
  { systems: ICD10, codes: ['B20', 'B21', 'B22', 'B23', 'B24', 'Z21', 'R75', 'O987'], label: 'HIV' },
  // A50-A64: infections with a predominantly sexual mode of transmission.
  { systems: ICD10, codes: ['A50', 'A51', 'A52', 'A53', 'A54', 'A55', 'A56', 'A57', 'A58', 'A59', 'A60', 'A61', 'A62', 'A63', 'A64'], label: 'STD' },
  { systems: SNOMED, codes: ['86406008', '165816005', '91947003'], exact: true, label: 'HIV' },
  { systems: SNOMED, codes: ['66214007', '7200002', '191816009'], exact: true, label: 'ETH' },
  { systems: SNOMED, codes: ['74732009', '35489007', '13746004', '58214004'], exact: true, label: 'PSY' },
  // LOINC HIV tests: HIV 1+2 Ab panel, HIV 1 Ab, HIV 1 RNA viral load.
  { systems: LOINC, codes: ['75622-1', '7917-8', '5221-7', '20447-9', '25836-8'], exact: true, label: 'HIV' },
];

/**
 * Types whose `medicationReference` names the drug: a Medication on the server whose code or label
 * is hidden hides the prescription, administration, dispense or statement too.
 */
export const MEDICATION_REFERENCE_TYPES: ReadonlySet<string> = new Set(['MedicationRequest', 'MedicationAdministration', 'MedicationDispense', 'MedicationStatement']);

/**
 * The systems of the labels a patient can hide, under every name they travel with: the
 * terminology.hl7.org URL, the HL7 OID, and the hl7.org/fhir/v3 URL of FHIR DSTU2 and STU3 data.
 * Compared lower-cased without a trailing `/`.
 */
export const LABEL_SYSTEM_ALIASES: Readonly<Record<string, readonly string[]>> = lookupTable({
  'http://terminology.hl7.org/CodeSystem/v3-ActCode': ['urn:oid:2.16.840.1.113883.5.4', 'http://hl7.org/fhir/v3/ActCode'],
  'http://terminology.hl7.org/CodeSystem/v3-Confidentiality': ['urn:oid:2.16.840.1.113883.5.25', 'http://hl7.org/fhir/v3/Confidentiality'],
});

/** Confidentiality is ordered: data marked V (very restricted) is also hidden by hiding R. */
export const STRICTER_LABELS: Readonly<Record<string, readonly string[]>> = lookupTable({ R: ['V'] });

/** Element a granular scope parameter (SMART `?name=value`) is matched against, and how. */
export const SCOPE_PARAMETERS: Readonly<Record<string, { element: string; kind: 'token' | 'code' }>> = lookupTable({
  category: { element: 'category', kind: 'token' },
  code: { element: 'code', kind: 'token' },
  type: { element: 'type', kind: 'token' },
  status: { element: 'status', kind: 'code' },
});
