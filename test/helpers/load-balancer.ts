/**
 * A small HTTP load balancer in front of several instances, behaving like the usual ones
 * (nginx, HAProxy, a cloud balancer): it health-checks `/readyz` and sends requests only to
 * ready backends, round robin, and tries the next backend when a connection cannot be opened
 * (the request never reached the first one, so retrying cannot apply it twice).
 *
 * Round robin is per request, so consecutive steps of one flow land on different instances;
 * `pin` sends every request to one backend instead. Each request's serving backend is recorded
 * in `served`.
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LoadBalancer {
  readonly url: string;
  readonly port: number;
  backends: string[];
  /** Index of the backend that takes every request, or undefined to balance. */
  pin: number | undefined;
  /** Requests answered, by backend index, with method and path. */
  readonly served: { backend: number; method: string; path: string; status: number; location?: string }[];
  /** Whether each backend passed its last health check. */
  readonly healthy: boolean[];
  close(): Promise<void>;
}

const HEALTH_INTERVAL_MS = 100;

export async function startLoadBalancer(backends: string[], port = 0): Promise<LoadBalancer> {
  let next = 0;
  const healthy = backends.map(() => false);

  async function check(i: number) {
    try {
      const res = await fetch(new URL('/readyz', lb.backends[i]), { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      healthy[i] = res.status === 200;
    } catch {
      healthy[i] = false;
    }
  }
  const checks = setInterval(() => {
    lb.backends.forEach((_, i) => void check(i));
  }, HEALTH_INTERVAL_MS);

  function forward(i: number, req: IncomingMessage, body: Buffer): Promise<IncomingMessage> {
    const target = new URL(req.url ?? '/', lb.backends[i]);
    return new Promise((resolve, reject) => {
      const headers = { ...req.headers, 'x-forwarded-for': req.socket.remoteAddress ?? '127.0.0.1' };
      delete headers.connection;
      // One connection per request: a draining backend closes its idle keep-alive connections,
      // and a balancer must not lose a request to that race.
      const out = request(target, { method: req.method, headers, agent: false }, resolve);
      out.once('error', reject);
      out.end(body);
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const order: number[] = [];
    if (lb.pin !== undefined) order.push(lb.pin);
    else {
      for (let k = 0; k < lb.backends.length; k += 1) order.push((next + k) % lb.backends.length);
      next = (next + 1) % lb.backends.length;
    }
    const candidates = lb.pin !== undefined ? order : [...order.filter((i) => healthy[i]), ...order.filter((i) => !healthy[i])];
    for (const i of candidates) {
      let upstream: IncomingMessage;
      try {
        upstream = await forward(i, req, body);
      } catch (err) {
        // Only failures to connect are retried elsewhere; the request never reached that backend.
        if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED') continue;
        res.writeHead(502).end(`upstream error: ${(err as Error).message}`);
        return;
      }
      lb.served.push({ backend: i, method: req.method ?? 'GET', path: (req.url ?? '/').split('?')[0]!, status: upstream.statusCode ?? 0, ...(upstream.headers.location ? { location: upstream.headers.location } : {}) });
      res.writeHead(upstream.statusCode ?? 502, upstream.headers);
      upstream.pipe(res);
      return;
    }
    res.writeHead(502).end('no backend reachable');
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actualPort = (server.address() as AddressInfo).port;
  const lb: LoadBalancer = {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    backends,
    pin: undefined,
    served: [],
    healthy,
    async close() {
      clearInterval(checks);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  await Promise.all(backends.map((_, i) => check(i)));
  return lb;
}
