/**
 * What the proxy regression suites share on top of the rig (proxy-rig.ts): the two patients most
 * worlds start from, a one-resource history, the claims of a strong recent login (writes need
 * one), and the text of an OperationOutcome.
 */
import type { FhirResource, SeedHistory } from '../../helpers/medplum-fhir-server.ts';
import type { Answer } from './proxy-rig.ts';

export const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const PATCH = 'application/json-patch+json';
export const patients: SeedHistory[] = ['p1', 'p2'].map((id) => ({ versions: [{ resourceType: 'Patient', id }] }));
export const one = (...versions: FhirResource[]): SeedHistory => ({ versions });
export const MFA = () => ({ acr: 'urn:custos:acr:mfa', auth_time: Math.floor(Date.now() / 1000) });
export const diagnostics = (a: Answer) => String((a.body as { issue?: { diagnostics?: string }[] }).issue?.[0]?.diagnostics);
