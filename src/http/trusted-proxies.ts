/**
 * Forwarded headers are believed only from the proxies named in TRUST_PROXY: from anyone else they
 * are removed before Koa or oidc-provider read them, so a client cannot claim another IP (and
 * dodge rate limits or poison the audit trail) or pretend the request came over https.
 */
import { BlockList, isIP } from 'node:net';
import type { Context, Next } from 'koa';

const FORWARDED = ['forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port'];

export function trustedProxiesOnly(proxies: readonly string[]) {
  const allowed = new BlockList();
  for (const entry of proxies) {
    const [address = '', bits] = entry.split('/');
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) allowed.addAddress(address, family);
    else allowed.addSubnet(address, Number(bits), family);
  }
  return async function stripUntrustedForwarding(ctx: Context, next: Next) {
    let peer = ctx.req.socket.remoteAddress ?? '';
    if (peer.startsWith('::ffff:') && isIP(peer.slice(7)) === 4) peer = peer.slice(7);
    const family = isIP(peer) === 6 ? 'ipv6' : 'ipv4';
    if (!peer || !allowed.check(peer, family)) {
      for (const header of FORWARDED) delete ctx.req.headers[header];
    }
    await next();
  };
}
