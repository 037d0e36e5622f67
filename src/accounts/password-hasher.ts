/**
 * Password hashing with argon2id. Each hash holds `memoryKiB` of memory, so the number running at
 * once is capped: a burst of logins queues instead of exhausting the process's memory.
 */
import argon2 from 'argon2';
import pLimit from 'p-limit';

export interface PasswordHasherOptions {
  memoryKiB: number;
  timeCost: number;
  maxConcurrent: number;
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  /** Constant-shape check: verifies against a dummy hash when `hash` is undefined. */
  verify(hash: string | undefined, password: string): Promise<boolean>;
}

export function createPasswordHasher(opts: PasswordHasherOptions): PasswordHasher {
  const limit = pLimit(opts.maxConcurrent);
  const params = { type: argon2.argon2id as 2, memoryCost: opts.memoryKiB, timeCost: opts.timeCost, parallelism: 1 };
  // Hashed lazily with the live parameters so that an unknown account costs the same as a known one.
  let dummy: Promise<string> | undefined;
  return {
    hash: (password) => limit(() => argon2.hash(password, params)),
    async verify(hash, password) {
      dummy ??= limit(() => argon2.hash('custos-timing-equaliser', params));
      const target = hash ?? (await dummy);
      try {
        const ok = await limit(() => argon2.verify(target, password));
        return ok && hash !== undefined;
      } catch {
        return false;
      }
    },
  };
}
