/**
 * Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database answers and
 * the instance is not shutting down, so a load balancer stops sending it work while it drains).
 */
import Router from '@koa/router';

export type Readiness = 'ready' | 'draining' | 'unavailable';

export function healthRoutes(readiness: () => Promise<Readiness>): Router {
  const router = new Router();
  router.get('/healthz', (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const status = await readiness();
    ctx.status = status === 'ready' ? 200 : 503;
    ctx.body = { status };
  });
  return router;
}
