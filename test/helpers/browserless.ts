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

  async request(
    url: string,
    init: { method?: string; form?: Record<string, string> | [string, string][]; headers?: Record<string, string> } = {},
  ): Promise<PageResponse> {
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

/**
 * What a browser would submit from the form posting to `suffix` if the user changed nothing:
 * ticked checkboxes, selected options, filled inputs (hidden ones included), in page order.
 */
export function formDefaults(html: string, suffix: string): [string, string][] {
  const form = new RegExp(`<form[^>]*action="[^"]*/${suffix}"[^>]*>([\\s\\S]*?)</form>`).exec(html)?.[1];
  if (form === undefined) throw new Error(`no form posting to ${suffix}`);
  const fields: [string, string][] = [];
  const attr = (tag: string, name: string) => new RegExp(`\\s${name}="([^"]*)"`).exec(tag)?.[1];
  const unescape = (v: string) => v.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  for (const m of form.matchAll(/<input\b[^>]*>|<select\b[^>]*>[\s\S]*?<\/select>/g)) {
    const tag = m[0];
    const name = attr(tag, 'name');
    if (!name) continue;
    if (tag.startsWith('<select')) {
      const selected = /<option[^>]*value="([^"]*)"[^>]*\sselected/.exec(tag) ?? /<option[^>]*value="([^"]*)"/.exec(tag);
      if (selected?.[1] !== undefined) fields.push([name, unescape(selected[1])]);
      continue;
    }
    const type = attr(tag, 'type') ?? 'text';
    if ((type === 'checkbox' || type === 'radio') && !/\schecked\b/.test(tag)) continue;
    fields.push([name, unescape(attr(tag, 'value') ?? (type === 'checkbox' ? 'on' : ''))]);
  }
  return fields;
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
  opts: {
    consent?: 'approve' | 'deny';
    /** Changes what the consent form submits (it starts as a browser would send it untouched). */
    consentForm?: (defaults: [string, string][]) => [string, string][];
  } = {},
): Promise<PageResponse> {
  let res = await agent.follow(authorizationUrl, issuer);
  for (let step = 0; step < 4; step += 1) {
    if (res.status !== 200) return res;
    const token = csrfTokenOf(res.body);
    if (res.body.includes('/login"') && credentials) {
      const action = formActionOf(res.body, 'login');
      res = await agent.request(new URL(action, issuer).toString(), { form: { _csrf: token, ...credentials } });
    } else if (res.body.includes('/confirm"')) {
      const deny = opts.consent === 'deny';
      const action = formActionOf(res.body, deny ? 'abort' : 'confirm');
      const defaults = formDefaults(res.body, deny ? 'abort' : 'confirm');
      const form = !deny && opts.consentForm ? opts.consentForm(defaults) : defaults;
      res = await agent.request(new URL(action, issuer).toString(), { form });
    } else {
      return res;
    }
    if (!res.location) return res;
    res = await agent.follow(res.location, issuer);
  }
  return res;
}

/** A browser-like agent signed in to the account pages as `who` (password, then the consent page if shown). */
export async function accountPagesAgent(issuer: string, who: { username: string; password: string }) {
  const agent = new UserAgent();
  let res = await agent.follow(`${issuer}/account`, issuer);
  for (let step = 0; step < 4 && res.status === 200 && !new URL(res.url).pathname.startsWith('/account'); step += 1) {
    const action = res.body.includes('/login"') ? formActionOf(res.body, 'login') : formActionOf(res.body, 'confirm');
    const form = res.body.includes('/login"') ? { _csrf: csrfTokenOf(res.body), username: who.username, password: who.password } : formDefaults(res.body, 'confirm');
    res = await agent.request(new URL(action, issuer).toString(), { form });
    if (res.location) res = await agent.follow(res.location, issuer);
  }
  if (res.status !== 200 || !new URL(res.url).pathname.startsWith('/account')) throw new Error(`account sign-in did not finish: ${res.status} ${res.url}`);
  return { agent, csrf: csrfTokenOf(res.body) };
}
