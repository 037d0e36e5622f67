/**
 * A TCP proxy in front of PostgreSQL that a test can cut and restore, to take the database away
 * from a running server the two ways it happens in production: `refuse` (the database went down:
 * open connections drop, new ones are refused) and `hang` (the database or the network stalls:
 * connections stay open but nothing gets through until it is restored, then everything held is
 * delivered in order, as after SIGCONT).
 */
import { createServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface DbProxy {
  port: number;
  /** Rewrites a PostgreSQL URL to go through the proxy. */
  url(databaseUrl: string): string;
  cut(mode: 'refuse' | 'hang'): void;
  restore(): void;
  close(): Promise<void>;
}

interface Link {
  client: Socket;
  upstream?: Socket;
  /** Work held while the proxy hangs, run in order when it is restored. */
  held: (() => void)[];
}

export async function startDbProxy(target: { host: string; port: number }): Promise<DbProxy> {
  let mode: 'open' | 'refuse' | 'hang' = 'open';
  const links = new Set<Link>();

  const relay = (from: Socket, to: Socket, link: Link) => {
    from.on('data', (chunk: Buffer) => {
      if (mode === 'hang') link.held.push(() => to.write(chunk));
      else to.write(chunk);
    });
  };

  const server = createServer((client) => {
    client.on('error', () => {});
    if (mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const link: Link = { client, held: [] };
    links.add(link);
    const open = () => {
      if (client.destroyed) return;
      const upstream = connect(target.port, target.host);
      link.upstream = upstream;
      upstream.on('error', () => client.destroy());
      upstream.on('close', () => client.destroy());
      relay(client, upstream, link);
      relay(upstream, client, link);
    };
    client.on('close', () => {
      link.upstream?.destroy();
      links.delete(link);
    });
    // Until a listener is attached the client's bytes wait in its socket, so nothing is lost.
    if (mode === 'hang') link.held.push(open);
    else open();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    port,
    url(databaseUrl) {
      const u = new URL(databaseUrl);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    cut(next) {
      mode = next;
      if (next === 'refuse') {
        for (const link of links) {
          link.client.resetAndDestroy();
          link.upstream?.destroy();
        }
        links.clear();
      }
    },
    restore() {
      mode = 'open';
      for (const link of links) {
        const held = link.held.splice(0);
        for (const run of held) run();
      }
    },
    async close() {
      for (const link of links) {
        link.client.destroy();
        link.upstream?.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
