/**
 * The session of the account pages: who signed in, how (acr, amr), and when. A signed cookie
 * with an idle timeout (HIPAA 164.312(a)(2)(iii) automatic logoff) and an absolute lifetime.
 */
import type { Context } from 'koa';

export interface AccountSession {
  sub: string;
  acr: string;
  amr: string[];
  authTime: number;
  /** When this session started and when it was last used, in epoch seconds. */
  startedAt: number;
  lastSeen: number;
}

const DEFAULT_COOKIE = 'custos_account';

/** `cookie` and `path` default to the account pages'; the admin pages use their own. */
export function accountSessions(opts: { secure: boolean; idleTimeout: number; lifetime: number; cookie?: string; path?: string }) {
  const now = () => Math.floor(Date.now() / 1000);
  const COOKIE = opts.cookie ?? DEFAULT_COOKIE;
  const path = opts.path ?? '/account';
  const write = (ctx: Context, session: AccountSession) =>
    ctx.cookies.set(COOKIE, Buffer.from(JSON.stringify(session)).toString('base64url'), {
      httpOnly: true,
      sameSite: 'strict',
      secure: opts.secure,
      signed: true,
      path,
      maxAge: opts.lifetime * 1000,
    });
  return {
    start(ctx: Context, s: Omit<AccountSession, 'startedAt' | 'lastSeen'>) {
      write(ctx, { ...s, startedAt: now(), lastSeen: now() });
    },
    /** The current session, refreshed; undefined when absent, tampered, idle too long or too old. */
    current(ctx: Context): AccountSession | undefined {
      const raw = ctx.cookies.get(COOKIE, { signed: true });
      if (!raw) return undefined;
      let s: AccountSession;
      try {
        s = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as AccountSession;
      } catch {
        return undefined;
      }
      const t = now();
      if (typeof s.sub !== 'string' || t - s.lastSeen > opts.idleTimeout || t - s.startedAt > opts.lifetime) {
        this.end(ctx);
        return undefined;
      }
      const refreshed = { ...s, lastSeen: t };
      write(ctx, refreshed);
      return refreshed;
    },
    end(ctx: Context) {
      ctx.cookies.set(COOKIE, null, { path, secure: opts.secure });
    },
  };
}
