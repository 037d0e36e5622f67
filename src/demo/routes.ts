/**
 * The development demo (never mounted in production): a tiny SMART app that runs its launch on
 * the server (PKCE, state, code exchange) and shows the token response and launch context, and a
 * pretend EHR that creates launch contexts for it.
 */
import Router from '@koa/router';
import { createHash, randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import type { AccountRepository } from '../accounts/index.ts';
import type { ClientRegistry } from '../clients/index.ts';
import { badRequest } from '../http/errors.ts';
import { csrfToken, verifyCsrf, CSRF_FIELD } from '../http/csrf.ts';
import type { Views } from '../http/views.ts';
import type { LaunchRepository } from '../smart/index.ts';
import { DEMO_APP_ID, DEMO_REQUEST_SCOPE } from './seed.ts';
import { formBody } from '../http/request-body.ts';

interface DemoDeps {
  issuer: string;
  fhirBase: string | undefined;
  accounts: AccountRepository;
  clients: ClientRegistry;
  launches: LaunchRepository;
  views: Views;
}

const COOKIE = 'custos_demo';

export function demoRoutes(deps: DemoDeps): Router {
  const router = new Router({ prefix: '/demo' });
  const secure = deps.issuer.startsWith('https://');
  const callback = `${deps.issuer}/demo/app/callback`;

  function render(ctx: Context, template: string, data: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = deps.views.render(template, { csrfField: CSRF_FIELD, csrfToken: ctx.state.csrfToken, ...data });
  }

  async function ready(): Promise<boolean> {
    return Boolean(deps.fhirBase && (await deps.clients.get(DEMO_APP_ID)));
  }

  router.get('/', csrfToken({ secure }), async (ctx) => {
    render(ctx, 'demo', { title: 'Demo', ready: await ready(), fhirBase: deps.fhirBase });
  });

  // The app's launch URL: standalone (no `launch`) or from the EHR (`iss` and `launch`).
  router.get('/app/launch', async (ctx) => {
    if (!(await ready())) throw badRequest('the demo is not set up: run `npx custos demo` first');
    const launch = typeof ctx.query.launch === 'string' ? ctx.query.launch : undefined;
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(16).toString('base64url');
    ctx.cookies.set(COOKIE, JSON.stringify({ verifier, state }), { httpOnly: true, sameSite: 'lax', secure, signed: true, path: '/demo', maxAge: 600_000 });
    const scope = launch ? DEMO_REQUEST_SCOPE.replace('launch/patient ', '') : DEMO_REQUEST_SCOPE.replace('launch ', '');
    const url = new URL('/auth', deps.issuer);
    url.search = new URLSearchParams({
      client_id: DEMO_APP_ID,
      response_type: 'code',
      redirect_uri: callback,
      scope,
      aud: deps.fhirBase!,
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      ...(launch ? { launch } : {}),
    }).toString();
    ctx.redirect(url.toString());
  });

  router.get('/app/callback', async (ctx) => {
    const raw = ctx.cookies.get(COOKIE, { signed: true });
    const saved = raw ? (JSON.parse(raw) as { verifier: string; state: string }) : undefined;
    if (typeof ctx.query.error === 'string') {
      return render(ctx, 'demo-result', { title: 'Demo app', error: `${ctx.query.error}: ${String(ctx.query.error_description ?? '')}` }, 400);
    }
    if (!saved || ctx.query.state !== saved.state || typeof ctx.query.code !== 'string') {
      throw badRequest('this demo callback does not match a launch started in this browser; start again from /demo');
    }
    const res = await fetch(new URL('/token', deps.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: ctx.query.code, redirect_uri: callback, client_id: DEMO_APP_ID, code_verifier: saved.verifier }),
    });
    const body = (await res.json()) as Record<string, unknown>;
    ctx.cookies.set(COOKIE, null, { path: '/demo' });
    // Shown to the developer, but never in full: the page is a demo, the token is real.
    const shown = { ...body };
    for (const key of ['access_token', 'refresh_token', 'id_token']) {
      if (typeof shown[key] === 'string') shown[key] = `${String(shown[key]).slice(0, 8)}… (${String(shown[key]).length} characters)`;
    }
    const idToken = typeof body.id_token === 'string' ? JSON.parse(Buffer.from(body.id_token.split('.')[1] ?? '', 'base64url').toString()) : undefined;
    render(ctx, 'demo-result', { title: 'Demo app', tokenResponse: JSON.stringify(shown, null, 2), idToken: idToken ? JSON.stringify(idToken, null, 2) : undefined, patient: body.patient }, res.ok ? 200 : 400);
  });

  router.get('/ehr', csrfToken({ secure }), async (ctx) => {
    const patients = await deps.accounts.searchPatients('', 20);
    render(ctx, 'demo-ehr', { title: 'Demo EHR', ready: await ready(), patients: patients.map((p) => ({ id: p.fhirPatientId, name: p.displayName ?? p.username })) });
  });

  router.post('/ehr/launch', csrfToken({ secure }), formBody({ limit: '4kb' }), verifyCsrf(new URL(deps.issuer).origin), async (ctx) => {
    if (!(await ready())) throw badRequest('the demo is not set up: run `npx custos demo` first');
    const body = ctx.request.body as Record<string, unknown>;
    const patient = typeof body.patient === 'string' ? await deps.accounts.findPatientByFhirId(body.patient) : undefined;
    if (!patient?.fhirPatientId) throw badRequest('choose one of the listed patients');
    const launch = await deps.launches.create({
      clientId: DEMO_APP_ID,
      createdBy: 'demo-ehr',
      context: { patient: patient.fhirPatientId, encounter: 'demo-encounter', need_patient_banner: false, intent: 'demo' },
      ttlSeconds: 300,
    });
    ctx.redirect(`/demo/app/launch?${new URLSearchParams({ iss: deps.fhirBase!, launch })}`);
  });

  return router;
}
