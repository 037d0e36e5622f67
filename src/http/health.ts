/**
 * Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database answers).
 */
import Router from '@koa/router';

export function healthRoutes(isReady: () => Promise<boolean>): Router {
  const router = new Router();
  router.get('/healthz', (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const ready = await isReady();
    ctx.status = ready ? 200 : 503;
    ctx.body = { status: ready ? 'ready' : 'unavailable' };
  });
  return router;
}
