/**
 * The SMART configuration document (App Launch 2.2, "Conformance"), served at
 * `/.well-known/smart-configuration`.
 */
import { STATIC_SCOPES } from './scope-negotiation.ts';

export interface SmartConfigurationInput {
  issuer: string;
  authorizePost: boolean;
  tokenEndpointAuthSigningAlgs: readonly string[];
}

/** Every capability Custos implements; each is exercised by the SMART test suite. */
export function smartCapabilities(authorizePost: boolean): string[] {
  return [
    'launch-ehr',
    'launch-standalone',
    ...(authorizePost ? ['authorize-post'] : []),
    'client-public',
    'client-confidential-symmetric',
    'client-confidential-asymmetric',
    'sso-openid-connect',
    'context-banner',
    'context-style',
    'context-ehr-patient',
    'context-ehr-encounter',
    'context-standalone-patient',
    'context-standalone-encounter',
    'permission-offline',
    'permission-online',
    'permission-patient',
    'permission-user',
    'permission-v1',
    'permission-v2',
  ];
}

export function smartConfiguration(input: SmartConfigurationInput) {
  const at = (path: string) => `${input.issuer}${path}`;
  return {
    issuer: input.issuer,
    jwks_uri: at('/jwks'),
    authorization_endpoint: at('/auth'),
    token_endpoint: at('/token'),
    introspection_endpoint: at('/token/introspection'),
    revocation_endpoint: at('/token/revocation'),
    // Dynamic client registration (RFC 7591) with an admin's initial access token.
    registration_endpoint: at('/register'),
    // Where the patient reviews, narrows and revokes what each app may do (the patient portal).
    management_endpoint: at('/account/apps'),
    userinfo_endpoint: at('/me'),
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
    token_endpoint_auth_signing_alg_values_supported: [...input.tokenEndpointAuthSigningAlgs],
    scopes_supported: [
      ...STATIC_SCOPES,
      'patient/*.cruds',
      'user/*.cruds',
      'system/*.cruds',
      'patient/*.read',
      'patient/*.write',
      'user/*.read',
      'user/*.write',
      'system/*.read',
      'system/*.write',
    ],
    capabilities: smartCapabilities(input.authorizePost),
  };
}

/** The default styling apps may follow when launched from Custos (context-style). */
export const DEFAULT_SMART_STYLE = Object.freeze({
  color_background: '#f3f5f7',
  color_error: '#a4161a',
  color_highlight: '#0b5cad',
  color_modal_backdrop: '',
  color_success: '#1a7f37',
  color_text: '#1b1f24',
  dim_border_radius: '8px',
  dim_font_size: '16px',
  dim_spacing_size: '16px',
  font_family_body: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  font_family_heading: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
});
