/**
 * Throttling of failed login steps (the password step and the second-factor step count apart):
 * per account, five quick failures and then exponential back-off, at most 100 failures an hour;
 * per client IP, at most 50 failures in 15 minutes (credential stuffing across accounts).
 * Counters live where the limiter store keeps them: Redis or PostgreSQL (shared by every
 * instance), or memory on the embedded database, which only one process can open anyway.
 */
import type { RateLimiterAbstract, IRateLimiterOptions } from 'rate-limiter-flexible';

/** Makes a named limiter in the configured store (see src/http/limiter-store.ts). */
export interface LimiterMaker {
  make(name: string, opts: IRateLimiterOptions, table?: string): RateLimiterAbstract;
}

export type LoginStep = 'password' | 'otp';

export interface LoginThrottle {
  /** Seconds the caller must wait before trying this step again; 0 when it may go ahead. */
  retryAfter(step: LoginStep, accountKey: string, ip: string): Promise<number>;
  /** Counts a failure; returns the wait it now imposes (0 when none). */
  failed(step: LoginStep, accountKey: string, ip: string): Promise<number>;
  succeeded(step: LoginStep, accountKey: string): Promise<void>;
}

const QUICK_FAILURES = 5;
const QUICK_WINDOW = 15 * 60;
const HOURLY_CAP = 100;
const IP_CAP = 50;
const FIRST_BACKOFF = 30;
const MAX_BACKOFF = 15 * 60;

export function createLoginThrottle(store: LimiterMaker): LoginThrottle {
  const make = (keyPrefix: string, opts: IRateLimiterOptions): RateLimiterAbstract => store.make(keyPrefix, opts, 'login_throttle');

  const limiters = (step: LoginStep) => ({
    quick: make(`${step}-quick`, { points: QUICK_FAILURES, duration: QUICK_WINDOW }),
    // How many times the quick limit was hit lately: each lockout doubles the next one.
    lockouts: make(`${step}-lockouts`, { points: 1000, duration: 24 * 3600 }),
    hourly: make(`${step}-hourly`, { points: HOURLY_CAP, duration: 3600 }),
    ip: make(`${step}-ip`, { points: IP_CAP, duration: QUICK_WINDOW }),
  });
  const byStep = { password: limiters('password'), otp: limiters('otp') };

  const wait = (res: { consumedPoints: number; msBeforeNext: number } | null, points: number) =>
    res && res.consumedPoints > points ? Math.ceil(res.msBeforeNext / 1000) : 0;

  return {
    async retryAfter(step, accountKey, ip) {
      const l = byStep[step];
      const [quick, hourly, perIp] = await Promise.all([l.quick.get(accountKey), l.hourly.get(accountKey), l.ip.get(ip)]);
      return Math.max(wait(quick, QUICK_FAILURES), wait(hourly, HOURLY_CAP), wait(perIp, IP_CAP));
    },
    async failed(step, accountKey, ip) {
      const l = byStep[step];
      const consume = (limiter: RateLimiterAbstract, key: string) =>
        limiter.consume(key).catch((res: unknown) => {
          if (res instanceof Error) throw res;
          return res as { consumedPoints: number; msBeforeNext: number };
        });
      const [quick, hourly, perIp] = await Promise.all([consume(l.quick, accountKey), consume(l.hourly, accountKey), consume(l.ip, ip)]);
      let backoff = 0;
      // After the first lockout every further failure locks again, each time twice as long.
      const earlier = (await l.lockouts.get(accountKey))?.consumedPoints ?? 0;
      if (quick.consumedPoints >= QUICK_FAILURES || earlier > 0) {
        const lockouts = await consume(l.lockouts, accountKey);
        backoff = Math.min(FIRST_BACKOFF * 2 ** (lockouts.consumedPoints - 1), MAX_BACKOFF);
        await l.quick.block(accountKey, backoff);
      }
      return Math.max(backoff, wait(hourly, HOURLY_CAP), wait(perIp, IP_CAP));
    },
    async succeeded(step, accountKey) {
      const l = byStep[step];
      await Promise.all([l.quick.delete(accountKey), l.lockouts.delete(accountKey)]);
    },
  };
}
