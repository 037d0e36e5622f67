/**
 * Server-rendered pages from `views/` with Eta: one layout, escaped output by default, no inline
 * script (the CSP forbids it).
 */
import { Eta } from 'eta';
import { fileURLToPath } from 'node:url';

export const VIEWS_DIR = fileURLToPath(new URL('../../views/', import.meta.url));

export interface Views {
  render(template: string, data: Record<string, unknown>): string;
}

export function createViews(opts: { cache: boolean }): Views {
  const eta = new Eta({ views: VIEWS_DIR, autoEscape: true, cache: opts.cache, useWith: false });
  return {
    render(template, data) {
      return eta.render(template, data);
    },
  };
}
