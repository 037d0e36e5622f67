/**
 * What PostgreSQL cannot store: a `text` value cannot hold U+0000, and `jsonb` refuses both the
 * `\u0000` escape and an unpaired UTF-16 surrogate (JSON.stringify writes one as `\udXXX`).
 * Input carrying either must be refused where it arrives, or the INSERT fails as a server error.
 */

// In a `u` regex a surrogate pair reads as one code point, so \p{Cs} only matches unpaired halves.
const UNPAIRED_SURROGATE = /\p{Cs}/u;

/** Whether a string can be written to a text or jsonb column unchanged. */
export function isStorableText(value: string): boolean {
  return !value.includes('\u0000') && !UNPAIRED_SURROGATE.test(value);
}

/**
 * The path (keys and indexes) to the first string in a JSON-like value, key or value, that
 * PostgreSQL cannot store, or undefined when there is none. Iterative: parsed bodies may be deep.
 */
export function findUnstorableText(value: unknown): (string | number)[] | undefined {
  const stack: [unknown, (string | number)[]][] = [[value, []]];
  while (stack.length) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      if (!isStorableText(v)) return path;
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => stack.push([item, [...path, i]]));
    } else if (v && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        // The offending key itself is not repeated in the path: it may not print either.
        if (!isStorableText(k)) return path;
        stack.push([item, [...path, k]]);
      }
    }
  }
  return undefined;
}
