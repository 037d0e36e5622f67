/**
 * The fetch Custos uses for URLs that someone else chose (a client's registered `jwks_uri`):
 * names are resolved first and a connection is opened only to a public unicast address, so a
 * client cannot make the server talk to loopback, the private network or cloud metadata services
 * (OWASP API7, server-side request forgery). Checking the address the socket will actually use,
 * rather than the URL's host, also defeats DNS rebinding.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';

const SPECIAL_USE = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) SPECIAL_USE.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23],
  ['2001:db8::', 32], ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8],
] as const) SPECIAL_USE.addSubnet(net, bits, 'ipv6');

/** True for loopback, private, link-local, shared, documentation, multicast and other non-public addresses. */
export function isSpecialUseAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  // IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged as the IPv4 address it carries.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return SPECIAL_USE.check(mapped, 'ipv4');
  return SPECIAL_USE.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export class ForbiddenAddressError extends Error {
  readonly code = 'ECUSTOSFORBIDDENADDRESS';
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

const guardedLookup = (refused: (address: string) => boolean) => (hostname: string, options: { all?: boolean }, callback: LookupCallback): void => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, []);
    const list = addresses as LookupAddress[];
    if (list.length === 0 || list.some((a) => refused(a.address))) {
      return callback(new ForbiddenAddressError(`${hostname} resolves to a non-public address`), []);
    }
    if (options.all) return callback(null, list);
    const first = list[0]!;
    return callback(null, first.address, first.family);
  });
};

/**
 * A fetch for oidc-provider's `fetch` setting: public addresses only, whatever dispatcher it
 * proposes. `refused` exists so tests can exercise the fetch against a local server.
 */
export function createOutboundFetch(
  refused: (address: string) => boolean = isSpecialUseAddress,
): (url: URL | string, options: RequestInit & Record<string, unknown>) => Promise<Response> {
  const agent = new Agent({ connect: { lookup: guardedLookup(refused) as never }, connections: 32 });
  return async (url, options) => {
    // An address literal is connected to without a lookup, so it is judged here.
    const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
    if (isIP(host) !== 0 && refused(host)) throw new ForbiddenAddressError(`${host} is not a public address`);
    const { dispatcher: _ignored, ...rest } = options;
    return (await undiciFetch(url, { ...(rest as object), dispatcher: agent })) as unknown as Response;
  };
}
