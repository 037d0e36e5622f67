/**
 * What an app sends to be written, read strictly: the proxy judges the body it parsed and sends
 * the server what it judged, so nothing may let the two read different things. The charset must
 * be UTF-8 (a server that honours `charset=utf-7` would store another resource than the one
 * judged), nesting is bounded (what cannot be serialised again cannot be forwarded), and a JSON
 * Patch may not grow the resource past the body limit (a few `copy` operations double it each).
 */
import jsonPatch, { type Operation } from 'fast-json-patch';
import { MAX_NESTING } from './resource-rules.ts';


export type BodyProblem = { problem: { status: 400 | 413 | 415 | 422; code: 'invalid' | 'not-supported' | 'too-costly' | 'processing'; text: string } };

const problem = (status: BodyProblem['problem']['status'], code: BodyProblem['problem']['code'], text: string): BodyProblem => ({ problem: { status, code, text } });

/** True when the media type is `expected` and any charset it names is UTF-8. */
function isUtf8MediaType(contentType: string | undefined, expected: RegExp): boolean {
  const [type = '', ...params] = (contentType ?? '').split(';').map((p) => p.trim());
  if (!expected.test(type.toLowerCase())) return false;
  return params.every((p) => {
    const [name = '', value = ''] = p.split('=').map((s) => s.trim());
    return name.toLowerCase() !== 'charset' || /^"?utf-8"?$/i.test(value);
  });
}

/** How deep `value` nests, counted without recursion so a hostile body cannot exhaust the stack. */
function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= max) return true;
    for (const child of Object.values(v)) if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}

/** Parses a JSON body sent as `expected` (a media type pattern), or says why it is refused. */
export function parseJsonBody(body: Buffer, contentType: string | undefined, expected: RegExp, asked: string): { value: unknown } | BodyProblem {
  if (!isUtf8MediaType(contentType, expected)) return problem(415, 'not-supported', `send ${asked}, in UTF-8`);
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return problem(400, 'invalid', 'the body is not valid JSON');
  }
  if (nestsDeeperThan(value, MAX_NESTING)) return problem(400, 'invalid', `the body nests more than ${MAX_NESTING} levels deep`);
  return { value };
}

const sizeOf = (v: unknown) => (v === undefined ? 0 : Buffer.byteLength(JSON.stringify(v)));

/** Bytes a patch may make the proxy serialise and clone, as a multiple of the body limit. */
const WORK_FACTOR = 16;

/**
 * `current` with `ops` applied, one at a time, within two bounds counted before each operation is
 * made: the size of the result (what an `add`, `replace` or `copy` puts in, less what it or a
 * `remove` takes out) stays under `maxBytes`, or under the current version's size when that is
 * larger already (a patch may shrink a resource stored before the limit, one step at a time), and
 * the finished result under `maxBytes`; and the work of checking and applying them (a
 * `move` or `copy` is validated on a copy of the whole resource) under a fixed multiple of it.
 * The result must nest no deeper than a body may.
 */
export function applyPatchBounded(current: unknown, ops: Operation[], maxBytes: number, errorText: (name: string | undefined) => string): { value: unknown } | BodyProblem {
  const tooLarge = problem(413, 'too-costly', `the patched resource would be larger than ${maxBytes} bytes`);
  const tooCostly = problem(413, 'too-costly', 'the JSON Patch asks for too much copying and moving of this resource; send it as a PUT');
  let doc: unknown = jsonPatch.deepClone(current);
  let size = sizeOf(doc);
  const ceiling = Math.max(maxBytes, size);
  let work = size;
  const measure = (v: unknown) => {
    const n = sizeOf(v);
    work += n;
    return n;
  };
  const at = (pointer: string) => {
    try {
      return jsonPatch.getValueByPointer(doc, pointer) as unknown;
    } catch {
      return undefined;
    }
  };
  try {
    for (const [index, op] of ops.entries()) {
      // An `add` into an array inserts; into an object it replaces the member of that name.
      if (op.op === 'add') size += measure(op.value) - (Array.isArray(at(op.path.slice(0, op.path.lastIndexOf('/')))) ? 0 : measure(at(op.path)));
      else if (op.op === 'replace') size += measure(op.value) - measure(at(op.path));
      else if (op.op === 'remove') size -= measure(at(op.path));
      else if (op.op === 'copy') size += measure(at(op.from));
      if (op.op === 'move' || op.op === 'copy') work += Math.max(size, 0);
      if (size > ceiling) return tooLarge;
      if (work > WORK_FACTOR * maxBytes) return tooCostly;
      doc = jsonPatch.applyOperation(doc, op, true, true, true, index).newDocument;
    }
    if (nestsDeeperThan(doc, MAX_NESTING)) return problem(400, 'invalid', `the patched resource would nest more than ${MAX_NESTING} levels deep`);
    if (sizeOf(doc) > maxBytes) return tooLarge;
  } catch (err) {
    if (err instanceof RangeError) return problem(400, 'invalid', `the patched resource would nest more than ${MAX_NESTING} levels deep`);
    return problem(422, 'processing', `the JSON Patch cannot be applied to the current version (${errorText((err as { name?: string }).name)})`);
  }
  return { value: doc };
}
