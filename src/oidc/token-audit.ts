/**
 * Audit events for the token endpoints: every issuance and refresh, every introspection (which
 * resource server asked about which app's token, the patient's access log), every revocation and
 * every refusal. Recorded after the provider answered, from what it decided.
 */
import type { Knex } from 'knex';
import type { AdapterPayload, KoaContextWithOIDC } from 'oidc-provider';
import { currentRequest } from '../http/request-context.ts';
import type { AuditTrail } from '../audit/index.ts';

interface TokenLike {
  accountId?: string;
  clientId?: string;
  grantId?: string;
  scope?: string;
  extra?: Record<string, unknown>;
}

const bodyOf = (ctx: KoaContextWithOIDC) => (ctx.body && typeof ctx.body === 'object' ? (ctx.body as Record<string, unknown>) : undefined);
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const param = (ctx: KoaContextWithOIDC, name: string) => str((ctx.oidc.params as Record<string, unknown> | undefined)?.[name]);

/** The FHIR Patient a token is about: its launch context, or the consent's patient. */
function patientOf(token: TokenLike | undefined, body?: Record<string, unknown>): string | undefined {
  const fromContext = str(body?.patient) ?? str(token?.extra?.patient);
  if (fromContext) return fromContext;
  const details = token?.extra?.authorization_details as { patient?: string }[] | undefined;
  return details?.[0]?.patient?.replace(/^Patient\//, '');
}

export function tokenAudit(audit: AuditTrail) {
  /**
   * `token.issued` / `token.refreshed`, written in the statement that stores the access token
   * (`write`): the event exists exactly when the token does.
   */
  async function issued(write: Knex.QueryBuilder, kind: 'AccessToken' | 'ClientCredentials', payload: AdapterPayload): Promise<void> {
    const p = payload as AdapterPayload & { gty?: string; extra?: Record<string, unknown>; scope?: string };
    const clientId = p.clientId;
    const grantTypes = kind === 'ClientCredentials' ? ['client_credentials'] : (p.gty ?? '').split(' ');
    const ctx = currentRequest();
    await audit.recordAlong(write, {
      type: grantTypes.includes('refresh_token') ? 'token.refreshed' : 'token.issued',
      outcome: 'success',
      actor: p.accountId ?? (clientId ? `client:${clientId}` : undefined),
      clientId,
      patientId: patientOf(p as TokenLike),
      ip: ctx?.ip,
      details: { grant_type: grantTypes.at(-1) || undefined, scope: p.scope, consent_id: str(p.extra?.consent_id) },
    });
  }

  async function afterIntrospection(ctx: KoaContextWithOIDC): Promise<void> {
    const body = bodyOf(ctx);
    if (ctx.status !== 200 || !body) return;
    const token = (ctx.oidc.entities.AccessToken ?? ctx.oidc.entities.ClientCredentials ?? ctx.oidc.entities.RefreshToken) as TokenLike | undefined;
    const asker = ctx.oidc.client?.clientId;
    await audit.record({
      type: 'token.introspected',
      outcome: 'success',
      actor: asker ? `client:${asker}` : undefined,
      // The app whose token it is, so the patient's access log for that app shows who checked it.
      clientId: token?.clientId ?? asker,
      patientId: patientOf(token),
      ip: ctx.ip,
      details: { resource_server: asker, active: body.active === true, consent_id: str(body.consent_id) },
    });
  }

  async function afterRevocation(ctx: KoaContextWithOIDC): Promise<void> {
    if (ctx.status !== 200) return;
    const clientId = ctx.oidc.client?.clientId;
    await audit.record({
      type: 'token.revoked',
      outcome: 'success',
      actor: clientId ? `client:${clientId}` : undefined,
      clientId,
      ip: ctx.ip,
      details: { token_type_hint: param(ctx, 'token_type_hint') },
    });
  }

  /** A refused token, introspection or revocation request (bad client, code, grant...). */
  async function refused(ctx: KoaContextWithOIDC, route: string, err: Error & { error?: string }): Promise<void> {
    const clientId = ctx.oidc?.client?.clientId;
    await audit.record({
      type: `${route}.refused`,
      outcome: 'failure',
      actor: clientId ? `client:${clientId}` : undefined,
      clientId,
      ip: ctx.ip,
      details: { error: err.error ?? err.message, grant_type: ctx.oidc ? param(ctx, 'grant_type') : undefined },
    });
  }

  return { issued, afterIntrospection, afterRevocation, refused };
}
