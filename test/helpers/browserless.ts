/**
 * Drives the login and consent pages over plain HTTP the way a browser would: a cookie jar,
 * manual redirects, and form posts carrying the page's CSRF token. Browser tests use Playwright;
 * this keeps protocol tests fast and precise about each response.
 */
import { CookieJar } from 'tough-cookie';

export interface PageResponse {
  status: number;
  url: string;
  location?: string;
  body: string;
  headers: Headers;
}

export class UserAgent {
  readonly jar = new CookieJar();
  /**
   * Behind an https-terminating proxy: the server sees `X-Forwarded-Proto: https` and its URLs
   * say https, while this agent talks plain http to it (so Secure cookies work as in a browser).
   */
  readonly behindHttpsProxy: boolean;

  constructor(opts: { behindHttpsProxy?: boolean } = {}) {
    this.behindHttpsProxy = opts.behindHttpsProxy ?? false;
  }

  async request(url: string, init: { method?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}): Promise<PageResponse> {
    const headers: Record<string, string> = { ...init.headers };
    const publicUrl = this.behindHttpsProxy ? url.replace(/^http:/, 'https:') : url;
    url = this.behindHttpsProxy ? url.replace(/^https:/, 'http:') : url;
    if (this.behindHttpsProxy) headers['x-forwarded-proto'] = 'https';
    const cookie = await this.jar.getCookieString(publicUrl);
    if (cookie) headers.cookie = cookie;
    let body: string | undefined;
    if (init.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(init.form).toString();
    }
    const res = await fetch(url, { method: init.method ?? (init.form ? 'POST' : 'GET'), headers, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) await this.jar.setCookie(c, publicUrl);
    const location = res.headers.get('location');
    return {
      status: res.status,
      url,
      body: await res.text(),
      headers: res.headers,
      ...(location ? { location: new URL(location, url).toString() } : {}),
    };
  }

  /** Follows redirects until one leaves `origin` (the client's redirect URI) or a page is shown. */
  async follow(url: string, origin: string): Promise<PageResponse> {
    let res = await this.request(url);
    for (let hops = 0; res.location && hops < 10; hops += 1) {
      if (!res.location.replace(/^https:/, 'http:').startsWith(origin.replace(/^https:/, 'http:'))) return res;
      res = await this.request(res.location);
    }
    return res;
  }
}

export function csrfTokenOf(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m?.[1]) throw new Error('no CSRF token in page');
  return m[1];
}

export function formActionOf(html: string, suffix: string): string {
  const m = new RegExp(`action="([^"]*/${suffix})"`).exec(html);
  if (!m?.[1]) throw new Error(`no form posting to ${suffix}`);
  return m[1];
}

/**
 * Logs in and approves consent for an authorization URL; returns the final redirect to the
 * client (its `location`) or the page where the flow stopped.
 */
export async function authorize(
  agent: UserAgent,
  authorizationUrl: string,
  issuer: string,
  credentials?: { username: string; password: string },
  opts: { consent?: 'approve' | 'deny' } = {},
): Promise<PageResponse> {
  let res = await agent.follow(authorizationUrl, issuer);
  for (let step = 0; step < 4; step += 1) {
    if (res.status !== 200) return res;
    const token = csrfTokenOf(res.body);
    if (res.body.includes('/login"') && credentials) {
      const action = formActionOf(res.body, 'login');
      res = await agent.request(new URL(action, issuer).toString(), { form: { _csrf: token, ...credentials } });
    } else if (res.body.includes('/confirm"')) {
      const action = formActionOf(res.body, opts.consent === 'deny' ? 'abort' : 'confirm');
      res = await agent.request(new URL(action, issuer).toString(), { form: { _csrf: token } });
    } else {
      return res;
    }
    if (!res.location) return res;
    res = await agent.follow(res.location, issuer);
  }
  return res;
}
