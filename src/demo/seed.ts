/**
 * `custos demo`: seeds a demo patient, a practitioner, an EHR client and a SMART app so that a
 * newcomer can see a launch in the browser a minute after `npm start`. Outside production only.
 */
import { randomBytes } from 'node:crypto';
import type { AccountRepository } from '../accounts/index.ts';
import type { ClientRegistry } from '../clients/index.ts';

export const DEMO_APP_ID = 'custos-demo-app';
export const DEMO_APP_SCOPE = 'openid fhirUser profile launch launch/patient launch/encounter offline_access online_access patient/*.cruds user/*.rs';
/** What the demo app asks for: reading only, so a password login is enough (writes need MFA). */
export const DEMO_REQUEST_SCOPE = 'openid fhirUser profile launch launch/patient offline_access patient/*.rs';

export interface DemoSeed {
  created: Array<{ kind: 'account' | 'client'; name: string; id: string; secret?: string }>;
  skipped: string[];
}

const password = () => randomBytes(12).toString('base64url');

export async function seedDemo(accounts: AccountRepository, clients: ClientRegistry, issuer: string): Promise<DemoSeed> {
  const seed: DemoSeed = { created: [], skipped: [] };
  const existing = new Set((await accounts.list({ limit: 500 })).map((a) => a.username.toLowerCase()));
  const people = [
    { username: 'demo-patient', role: 'patient' as const, fhirId: 'demo-patient', displayName: 'Pat Demo' },
    { username: 'demo-patient-2', role: 'patient' as const, fhirId: 'demo-patient-2', displayName: 'Sam Example' },
    { username: 'demo-doctor', role: 'practitioner' as const, fhirId: 'demo-practitioner', displayName: 'Dr Dana Demo' },
  ];
  for (const person of people) {
    if (existing.has(person.username)) {
      seed.skipped.push(person.username);
      continue;
    }
    const secret = password();
    const account = await accounts.create({ ...person, password: secret });
    seed.created.push({ kind: 'account', name: person.username, id: account.id, secret });
  }
  if (await clients.get(DEMO_APP_ID)) {
    seed.skipped.push(DEMO_APP_ID);
  } else {
    await clients.create(
      {
        client_name: 'Custos demo SMART app',
        redirect_uris: [`${issuer}/demo/app/callback`],
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'none',
        scope: DEMO_APP_SCOPE,
      },
      { clientId: DEMO_APP_ID },
    );
    seed.created.push({ kind: 'client', name: 'Custos demo SMART app', id: DEMO_APP_ID });
  }
  const ehrName = 'Custos demo EHR';
  const ehrExists = (await clients.list({ limit: 500 })).some((c) => c.name === ehrName);
  if (ehrExists) {
    seed.skipped.push(ehrName);
  } else {
    const ehr = await clients.create({ client_name: ehrName, grant_types: ['client_credentials'], scope: 'custos:ehr-launch' });
    seed.created.push({ kind: 'client', name: ehrName, id: ehr.client.clientId, secret: ehr.clientSecret });
  }
  return seed;
}
