/**
 * The stylesheet for our pages, served from `views/static` (CSP forbids inline styles).
 */
import Router from '@koa/router';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VIEWS_DIR } from './views.ts';

export function staticAssets(): Router {
  const css = readFileSync(join(VIEWS_DIR, 'static', 'custos.css'));
  const router = new Router();
  router.get('/static/custos.css', (ctx) => {
    ctx.type = 'text/css; charset=utf-8';
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.body = css;
  });
  // Browsers ask for it on every page; answer without an error (and without a body).
  router.get('/favicon.ico', (ctx) => {
    ctx.set('Cache-Control', 'public, max-age=86400');
    ctx.status = 204;
  });
  return router;
}
