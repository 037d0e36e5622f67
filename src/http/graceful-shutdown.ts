/**
 * Graceful shutdown for one instance behind a load balancer. On a stop signal the instance first
 * reports not-ready (so health checks take it out of rotation), optionally keeps serving for a
 * drain delay while the balancer notices, then stops accepting connections and lets the requests
 * already in flight finish, within a bound, before the caller closes the database pool.
 */
import type { Server } from 'node:http';
import type Koa from 'koa';

export interface Drain {
  /** True from the moment shutdown starts: readiness answers 503 from then on. */
  readonly draining: boolean;
  /** Asks keep-alive clients to reconnect (elsewhere) once shutdown has started. */
  middleware: Koa.Middleware;
  /**
   * Stops the server: waits `delayMs` still serving, then stops accepting and waits up to `graceMs`
   * for in-flight requests; whatever is still open after that is cut. Resolves with how many
   * connections had to be cut.
   */
  stop(opts: { delayMs: number; graceMs: number }): Promise<{ cut: number }>;
}

// While closing, connections that fall idle between two requests are closed this often.
const IDLE_SWEEP_MS = 100;

export function createDrain(server: Server): Drain {
  let draining = false;
  const open = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });

  return {
    get draining() {
      return draining;
    },
    async middleware(ctx, next) {
      if (draining) ctx.set('Connection', 'close');
      await next();
    },
    async stop({ delayMs, graceMs }) {
      draining = true;
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), graceMs);
      });
      const outcome = await Promise.race([closed.then(() => 'closed' as const), timedOut]);
      clearInterval(sweep);
      clearTimeout(timer);
      if (outcome === 'closed') return { cut: 0 };
      const cut = open.size;
      server.closeAllConnections();
      await closed;
      return { cut };
    },
  };
}
