import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { startTestServer } from '../helpers/server.ts';

/** A request on its own connection, sent up to the middle of its body and left there. */
async function halfSentTokenRequest(port: number): Promise<{ socket: Socket; finish(): void; response: Promise<string> }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const body = 'grant_type=client_credentials&client_id=nobody';
  socket.write(`POST /token HTTP/1.1\r\nHost: localhost:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n`);
  socket.write(body.slice(0, 10));
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString()));
  const response = new Promise<string>((resolve) => {
    socket.once('close', () => resolve(received));
  });
  return { socket, finish: () => socket.write(body.slice(10)), response };
}

async function refusesConnections(port: number): Promise<boolean> {
  const socket = connect(port, '127.0.0.1');
  try {
    await once(socket, 'connect');
    socket.destroy();
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  }
}

describe('graceful shutdown', () => {
  it('reports draining, stops accepting, and lets a request in flight finish', async () => {
    const server = await startTestServer({ env: { SHUTDOWN_DRAIN_DELAY: '1', SHUTDOWN_GRACE: '30' } });
    const port = server.config.port;
    const inFlight = await halfSentTokenRequest(port);
    const closing = server.stop();

    // During the drain delay the instance still serves, but tells balancers to take it out.
    const ready = await fetch(new URL('/readyz', server.issuer));
    assert.equal(ready.status, 503);
    assert.deepEqual(await ready.json(), { status: 'draining' });
    assert.equal(ready.headers.get('connection'), 'close');

    while (!(await refusesConnections(port))) await new Promise((r) => setTimeout(r, 50));
    inFlight.finish();
    const response = await inFlight.response;
    assert.match(response, /^HTTP\/1\.1 401 /, 'the request in flight got its answer after the server stopped listening');
    assert.match(response, /"error":"invalid_client"/);
    await closing;
    await server.close();
  });

  it('cuts what is still open once the grace period is over, and closes anyway', async () => {
    const server = await startTestServer({ env: { SHUTDOWN_GRACE: '1' } });
    const stuck = await halfSentTokenRequest(server.config.port);
    await server.stop();
    assert.equal(await stuck.response, '', 'the stalled connection was closed without an answer');
    assert.ok(stuck.socket.destroyed);
    await server.close();
  });
});
