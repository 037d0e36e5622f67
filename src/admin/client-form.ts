/**
 * The admin pages' client form, translated to and from the admin API's request bodies: a form
 * becomes exactly the JSON the API takes (`POST /clients`, `PATCH /clients/{id}`), validated by
 * the same schemas and saved by the same registry, so a page and the API refuse the same input
 * with the same messages. Only what a form cannot say (a number that is not one, JWKS that is not
 * JSON, a field sent twice) is checked here first.
 */
import { z } from 'zod';
import { CLIENT_CATEGORIES, LAUNCH_MODES, type RegisteredClient } from '../clients/index.ts';
import { ACR_VALUES } from '../mfa/index.ts';
import { clientCreateBody, clientPatchBody } from './api-schemas.ts';

/** The kinds of client the form offers (the registry derives the same from the metadata). */
export const FORM_TYPES = ['public', 'confidential', 'confidential_keys', 'backend_service'] as const;
export type FormType = (typeof FORM_TYPES)[number];

/** Launch-mode choices: unrestricted (no `launch_modes`), or exactly these modes. */
export const LAUNCH_CHOICES = { any: undefined, ehr: ['ehr'], standalone: ['standalone'], both: ['ehr', 'standalone'], none: [] } as const satisfies Record<
  string,
  readonly (typeof LAUNCH_MODES)[number][] | undefined
>;
export type LaunchChoice = keyof typeof LAUNCH_CHOICES;

/** The metadata fields the form manages; an edit leaves every other field as it is. */
const FORM_METADATA = [
  'client_name', 'owner', 'contacts', 'token_endpoint_auth_method', 'grant_types', 'jwks', 'jwks_uri', 'redirect_uris',
  'allowed_origins', 'scope', 'launch_modes', 'minimum_acr', 'access_token_ttl', 'refresh_token_ttl', 'logo_uri', 'policy_uri',
  'tos_uri', 'client_uri',
] as const;

/** What the form's fields hold, as strings and flags (the page re-renders them after an error). */
export interface ClientFormValues {
  client_name: string;
  owner: string;
  contacts: string;
  category: string;
  verified: boolean;
  type: string;
  secret_method: string;
  refresh: boolean;
  client_credentials: boolean;
  jwks_uri: string;
  jwks: string;
  redirect_uris: string;
  allowed_origins: string;
  scope: string;
  launch: string;
  minimum_acr: string;
  access_token_ttl: string;
  refresh_token_ttl: string;
  logo_uri: string;
  policy_uri: string;
  tos_uri: string;
  client_uri: string;
}

/** Problems by form field name, each a readable sentence. */
export type FormProblems = Record<string, string[]>;

export const EMPTY_FORM: ClientFormValues = {
  client_name: '', owner: '', contacts: '', category: 'third-party', verified: false, type: 'public', secret_method: 'client_secret_basic',
  refresh: false, client_credentials: false, jwks_uri: '', jwks: '', redirect_uris: '', allowed_origins: '', scope: 'openid',
  launch: 'any', minimum_acr: '', access_token_ttl: '', refresh_token_ttl: '', logo_uri: '', policy_uri: '', tos_uri: '', client_uri: '',
};

/** The form as it shows a registered client. */
export function formValuesOf(c: RegisteredClient): ClientFormValues {
  const m = c.metadata;
  const launch = (Object.entries(LAUNCH_CHOICES).find(([, modes]) => JSON.stringify(modes) === JSON.stringify(m.launch_modes))?.[0] ?? 'any') as LaunchChoice;
  return {
    client_name: m.client_name,
    owner: m.owner ?? '',
    contacts: (m.contacts ?? []).join('\n'),
    category: c.category,
    verified: c.verified,
    type: c.type === 'backend_service' ? 'backend_service' : c.type,
    secret_method: m.token_endpoint_auth_method === 'client_secret_post' ? 'client_secret_post' : 'client_secret_basic',
    refresh: m.grant_types.includes('refresh_token'),
    client_credentials: m.grant_types.includes('client_credentials'),
    jwks_uri: m.jwks_uri ?? '',
    jwks: m.jwks ? JSON.stringify(m.jwks, null, 2) : '',
    redirect_uris: m.redirect_uris.join('\n'),
    allowed_origins: (m.allowed_origins ?? []).join('\n'),
    scope: m.scope ?? '',
    launch,
    minimum_acr: m.minimum_acr ?? '',
    access_token_ttl: m.access_token_ttl === undefined ? '' : String(m.access_token_ttl),
    refresh_token_ttl: m.refresh_token_ttl === undefined ? '' : String(m.refresh_token_ttl),
    logo_uri: m.logo_uri ?? '',
    policy_uri: m.policy_uri ?? '',
    tos_uri: m.tos_uri ?? '',
    client_uri: m.client_uri ?? '',
  };
}

const TEXT_FIELDS = [
  'client_name', 'owner', 'contacts', 'category', 'type', 'secret_method', 'jwks_uri', 'jwks', 'redirect_uris', 'allowed_origins', 'scope',
  'launch', 'minimum_acr', 'access_token_ttl', 'refresh_token_ttl', 'logo_uri', 'policy_uri', 'tos_uri', 'client_uri',
] as const;
const FLAGS = ['verified', 'refresh', 'client_credentials'] as const;

/** The posted form as field values; a field sent twice (or as a nested object) is a problem. */
export function readForm(body: Record<string, unknown>): { values: ClientFormValues; problems: FormProblems } {
  const problems: FormProblems = {};
  const values = { ...EMPTY_FORM } as Record<string, string | boolean>;
  for (const name of [...TEXT_FIELDS, ...FLAGS]) {
    const raw = body[name];
    if (raw !== undefined && typeof raw !== 'string') {
      add(problems, name, 'was sent more than once or in an unexpected shape');
      continue;
    }
    if ((FLAGS as readonly string[]).includes(name)) values[name] = raw !== undefined;
    else values[name] = (raw ?? '').replace(/\r\n/g, '\n').trim();
  }
  return { values: values as unknown as ClientFormValues, problems };
}

function add(problems: FormProblems, field: string, message: string) {
  (problems[field] ??= []).push(message);
}

const lines = (text: string) => text.split('\n').map((l) => l.trim()).filter(Boolean);

/** Where each request body field's problems show on the form. */
const FIELD_OF: Record<string, string> = {
  token_endpoint_auth_method: 'type',
  grant_types: 'type',
  launch_modes: 'launch',
  category: 'category',
  verified: 'verified',
};

/** Zod issues (from the API's schemas or the registry) as problems by form field. */
export function problemsOf(err: z.ZodError, into: FormProblems = {}): FormProblems {
  for (const issue of err.issues) {
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [String(issue.path[0] ?? '')];
    for (const key of keys) {
      const field = FIELD_OF[key] ?? key;
      const at = issue.path.length > 1 ? ` (line ${Number(issue.path[1]) + 1})` : '';
      add(into, field || 'form', issue.code === 'unrecognized_keys' ? 'is not a field that can be set here' : `${issue.message}${typeof issue.path[1] === 'number' ? at : ''}`);
    }
  }
  return into;
}

/**
 * The form as the admin API's JSON body: the metadata and the admin fields, with blanks left out
 * (create) or sent as `null` (edit, which removes the field). Problems only a form can have are
 * returned; the body is still built from the rest so every problem shows at once.
 */
function toBody(v: ClientFormValues, problems: FormProblems, blank: undefined | null): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const set = (key: string, value: unknown) => {
    body[key] = value === undefined || value === '' || (Array.isArray(value) && value.length === 0) ? blank : value;
  };
  set('client_name', v.client_name);
  set('owner', v.owner);
  set('contacts', lines(v.contacts));
  if (!(CLIENT_CATEGORIES as readonly string[]).includes(v.category)) add(problems, 'category', 'choose one of the categories listed');
  else body.category = v.category;
  body.verified = v.verified;

  const type = v.type as FormType;
  if (!(FORM_TYPES as readonly string[]).includes(type)) add(problems, 'type', 'choose one of the kinds of client listed');
  const keys = type === 'confidential_keys' || (type === 'backend_service' && (v.jwks_uri !== '' || v.jwks !== ''));
  const secretMethod = v.secret_method === 'client_secret_post' ? 'client_secret_post' : 'client_secret_basic';
  body.token_endpoint_auth_method = type === 'public' ? 'none' : keys ? 'private_key_jwt' : secretMethod;
  body.grant_types =
    type === 'backend_service'
      ? ['client_credentials']
      : ['authorization_code', ...(v.refresh ? ['refresh_token'] : []), ...(v.client_credentials ? ['client_credentials'] : [])];
  set('jwks_uri', keys ? v.jwks_uri : '');
  if (keys && v.jwks) {
    try {
      body.jwks = JSON.parse(v.jwks) as unknown;
    } catch {
      add(problems, 'jwks', 'is not valid JSON (paste the JWK Set, {"keys": [...]})');
    }
  } else {
    body.jwks = blank;
  }
  // Sent as typed, even where they do not belong: the schema says so rather than the form dropping them.
  set('redirect_uris', lines(v.redirect_uris));
  if (body.redirect_uris === null) body.redirect_uris = [];
  set('allowed_origins', lines(v.allowed_origins));
  set('scope', v.scope.split(/\s+/).filter(Boolean).join(' '));
  if (!(v.launch in LAUNCH_CHOICES)) add(problems, 'launch', 'choose one of the launch options listed');
  else {
    const modes = LAUNCH_CHOICES[v.launch as LaunchChoice];
    body.launch_modes = modes === undefined ? blank : [...modes];
  }
  if (v.minimum_acr && !(ACR_VALUES as readonly string[]).includes(v.minimum_acr)) add(problems, 'minimum_acr', 'choose one of the levels listed');
  else set('minimum_acr', v.minimum_acr);
  for (const ttl of ['access_token_ttl', 'refresh_token_ttl'] as const) {
    if (v[ttl] === '') set(ttl, '');
    else if (/^\d{1,10}$/.test(v[ttl])) body[ttl] = Number(v[ttl]);
    else add(problems, ttl, 'must be a whole number of seconds (or blank for the server default)');
  }
  for (const url of ['logo_uri', 'policy_uri', 'tos_uri', 'client_uri'] as const) set(url, v[url]);
  return body;
}

/** A new client as `POST /admin/api/clients` takes it, or the problems with the form. */
export function createBodyOf(values: ClientFormValues, problems: FormProblems): { body?: z.output<typeof clientCreateBody>; problems: FormProblems } {
  const raw = toBody(values, problems, undefined);
  for (const key of Object.keys(raw)) if (raw[key] === undefined) delete raw[key];
  // A blank name is refused as blank, as the API refuses `"client_name": ""`.
  raw.client_name = values.client_name;
  const parsed = clientCreateBody.safeParse(raw);
  if (!parsed.success) problemsOf(parsed.error, problems);
  return Object.keys(problems).length || !parsed.success ? { problems } : { body: parsed.data, problems };
}

/**
 * A change as `PATCH /admin/api/clients/{id}` takes it: every field the form manages, blanks as
 * `null`; fields the form does not show (post-logout URIs, signing algorithm) are left alone.
 */
export function patchBodyOf(values: ClientFormValues, problems: FormProblems): { body?: Record<string, unknown>; problems: FormProblems } {
  const raw = toBody(values, problems, null);
  const patch: Record<string, unknown> = {};
  for (const key of [...FORM_METADATA, 'category', 'verified']) if (key in raw) patch[key] = raw[key];
  // The name is required: a blank one is refused by the create schema's rule, not removed.
  if (patch.client_name === null) patch.client_name = '';
  const parsed = clientPatchBody.safeParse(patch);
  if (!parsed.success) problemsOf(parsed.error, problems);
  return Object.keys(problems).length || !parsed.success ? { problems } : { body: parsed.data as Record<string, unknown>, problems };
}

/** Every problem in one list, for the summary at the top of the form. */
export function problemList(problems: FormProblems): { field: string; message: string }[] {
  return Object.entries(problems).flatMap(([field, messages]) => messages.map((message) => ({ field, message })));
}


/** One field of the form as the template draws it. */
export interface FormField {
  name: string;
  label: string;
  kind: 'text' | 'url' | 'number' | 'textarea' | 'select' | 'checkbox' | 'radio';
  value: string;
  checked?: boolean;
  hint?: string;
  required?: boolean;
  options?: { value: string; label: string; selected: boolean }[];
  problems: string[];
}

const TYPE_LABELS: Record<FormType, string> = {
  public: 'Public: a browser or mobile app, no secret (PKCE)',
  confidential: 'Confidential with a secret: a server-side app',
  confidential_keys: 'Confidential with keys: a server-side app signing with its private key (private_key_jwt)',
  backend_service: 'Backend service: no user, client_credentials only (keys if given below, else a secret)',
};

const LAUNCH_LABELS: Record<LaunchChoice, string> = {
  any: 'Not restricted (EHR and standalone)',
  ehr: 'EHR launch only',
  standalone: 'Standalone launch only',
  both: 'EHR and standalone (registered explicitly)',
  none: 'No SMART launch at all',
};

/** The form's sections and fields, filled with `v` and its problems. */
export function formSections(v: ClientFormValues, problems: FormProblems): { legend: string; fields: FormField[] }[] {
  const f = (name: keyof ClientFormValues, label: string, kind: FormField['kind'], extra: Partial<FormField> = {}): FormField => ({
    name,
    label,
    kind,
    value: typeof v[name] === 'string' ? (v[name] as string) : '',
    problems: problems[name] ?? [],
    ...(kind === 'checkbox' ? { checked: v[name] === true } : {}),
    ...extra,
  });
  const options = (values: readonly string[], selected: string, labels: Record<string, string> = {}) =>
    values.map((value) => ({ value, label: labels[value] ?? (value || '-'), selected: value === selected }));
  return [
    {
      legend: 'The app',
      fields: [
        f('client_name', 'Name', 'text', { required: true, hint: 'Shown to patients on the consent page.' }),
        f('owner', 'Owner', 'text', { hint: 'The organisation or team that runs the app.' }),
        f('contacts', 'Contact emails', 'textarea', { hint: 'One per line.' }),
        f('category', 'Category', 'select', { options: options(CLIENT_CATEGORIES, v.category) }),
        f('verified', 'Verified: we checked who is behind this app', 'checkbox'),
      ],
    },
    {
      legend: 'How it signs in',
      fields: [
        f('type', 'Kind of client', 'radio', { options: FORM_TYPES.map((t) => ({ value: t, label: TYPE_LABELS[t], selected: t === v.type })) }),
        f('secret_method', 'How a secret is sent', 'select', {
          options: options(['client_secret_basic', 'client_secret_post'], v.secret_method),
          hint: 'Only for clients with a secret.',
        }),
        f('refresh', 'Refresh tokens (refresh_token grant)', 'checkbox'),
        f('client_credentials', 'Also acts on its own (client_credentials grant; confidential clients)', 'checkbox'),
        f('jwks_uri', 'JWKS URL', 'url', { hint: 'For clients with keys: where its public keys are published (https). Or paste them below.' }),
        f('jwks', 'JWK Set (inline)', 'textarea', { hint: 'For clients with keys, when it has no JWKS URL: {"keys": [...]}.' }),
      ],
    },
    {
      legend: 'Where it may go',
      fields: [
        f('redirect_uris', 'Redirect URIs', 'textarea', { hint: 'One per line, exact. https, or http only on 127.0.0.1, [::1] or localhost.' }),
        f('allowed_origins', 'Extra browser origins (CORS)', 'textarea', { hint: 'One per line, like https://app.example. The redirect URIs\' origins are allowed already.' }),
      ],
    },
    {
      legend: 'What it may ask for',
      fields: [
        f('scope', 'Scope ceiling', 'textarea', { hint: 'Space-separated: openid fhirUser launch/patient patient/*.rs ...' }),
        f('launch', 'SMART launch modes', 'select', { options: (Object.keys(LAUNCH_CHOICES) as LaunchChoice[]).map((c) => ({ value: c, label: LAUNCH_LABELS[c], selected: c === v.launch })) }),
        f('minimum_acr', 'Minimum sign-in level', 'select', { options: options(['', ...ACR_VALUES], v.minimum_acr, { '': 'Server policy' }) }),
        f('access_token_ttl', 'Access token lifetime (seconds)', 'number', { hint: 'Blank for the server default; 30 to 3600, never above the server\'s.' }),
        f('refresh_token_ttl', 'Refresh token lifetime (seconds)', 'number', { hint: 'Blank for the server default; only with refresh tokens.' }),
      ],
    },
    {
      legend: 'Links',
      fields: [
        f('logo_uri', 'Logo URL', 'url'),
        f('policy_uri', 'Privacy policy URL', 'url'),
        f('tos_uri', 'Terms of service URL', 'url'),
        f('client_uri', 'Home page URL', 'url'),
      ],
    },
  ];
}

/** Labels by field name, for the problem summary. */
export function fieldLabels(): Record<string, string> {
  const labels: Record<string, string> = { form: 'The form' };
  for (const section of formSections(EMPTY_FORM, {})) for (const field of section.fields) labels[field.name] = field.label;
  return labels;
}
