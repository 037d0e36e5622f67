/**
 * The sensitive categories a patient can hide, as HL7 security labels: sensitivity codes from
 * v3-ActCode and the confidentiality codes R and V from v3-Confidentiality (FHIR R4 security
 * labels, "Security Labels" in the FHIR security module).
 */
export const ACT_CODE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const CONFIDENTIALITY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';

export interface SecurityLabel {
  code: SensitiveLabel;
  system: string;
  /** How the patient sees it. */
  label: string;
}

export const SENSITIVE_LABELS = ['ETH', 'PSY', 'HIV', 'STD', 'SEX', 'SDV', 'GDIS', 'R', 'V'] as const;
export type SensitiveLabel = (typeof SENSITIVE_LABELS)[number];

const LABELS: Record<SensitiveLabel, Omit<SecurityLabel, 'code'>> = {
  ETH: { system: ACT_CODE_SYSTEM, label: 'Substance use' },
  PSY: { system: ACT_CODE_SYSTEM, label: 'Mental health' },
  HIV: { system: ACT_CODE_SYSTEM, label: 'HIV and AIDS' },
  STD: { system: ACT_CODE_SYSTEM, label: 'Sexually transmitted diseases' },
  SEX: { system: ACT_CODE_SYSTEM, label: 'Sexual and reproductive health' },
  SDV: { system: ACT_CODE_SYSTEM, label: 'Sexual violence' },
  GDIS: { system: ACT_CODE_SYSTEM, label: 'Genetic information' },
  R: { system: CONFIDENTIALITY_SYSTEM, label: 'Records marked restricted' },
  V: { system: CONFIDENTIALITY_SYSTEM, label: 'Records marked very restricted' },
};

export function securityLabel(code: SensitiveLabel): SecurityLabel {
  return { code, ...LABELS[code] };
}

export function isSensitiveLabel(value: unknown): value is SensitiveLabel {
  return typeof value === 'string' && (SENSITIVE_LABELS as readonly string[]).includes(value);
}

/** Labels in their canonical order, without repeats. */
export function sortLabels(labels: Iterable<SensitiveLabel>): SensitiveLabel[] {
  const set = new Set(labels);
  return SENSITIVE_LABELS.filter((l) => set.has(l));
}
