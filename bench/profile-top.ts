/**
 * `node bench/profile-top.ts <file.cpuprofile> [count]`: the functions a V8 CPU profile (from
 * `npm run bench -- --profile`) spent most time in, by self time and by total time (the function
 * and everything it called), and the same totals grouped by package or source file.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

const [file, countArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-top.ts <file.cpuprofile> [count]');
  process.exit(2);
}
const count = Number(countArg ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[] };
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const shortUrl = (url: string) => {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const src = url.search(/\/(src|bench|test)\//);
  return src >= 0 ? url.slice(src + 1) : url.replace(/^file:\/\//, '') || '(native)';
};
const label = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
const moduleOf = (n: ProfileNode) => {
  const url = shortUrl(n.callFrame.url);
  if (url.startsWith('@')) return url.split('/').slice(0, 2).join('/');
  if (/^(src|bench|test)\//.test(url)) return url;
  return url.split('/')[0] || '(native)';
};

const total = profile.nodes.reduce((sum, n) => sum + (n.hitCount ?? 0), 0);
const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const modules = new Map<string, number>();
for (const n of profile.nodes) {
  const hits = n.hitCount ?? 0;
  if (!hits) continue;
  self.set(label(n), (self.get(label(n)) ?? 0) + hits);
  // Each function counts once per sample however often it recurs on the stack.
  const seen = new Set<string>();
  const seenModules = new Set<string>();
  for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
    const node = byId.get(id)!;
    const l = label(node);
    if (!seen.has(l)) {
      seen.add(l);
      inclusive.set(l, (inclusive.get(l) ?? 0) + hits);
    }
    const m = moduleOf(node);
    if (!seenModules.has(m)) {
      seenModules.add(m);
      modules.set(m, (modules.get(m) ?? 0) + hits);
    }
  }
}

const show = (title: string, map: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [name, hits] of [...map].sort((a, b) => b[1] - a[1]).slice(0, count)) {
    console.log(`${((hits / total) * 100).toFixed(1).padStart(6)}%  ${name}`);
  }
};
console.log(`${total} samples`);
show('self time', self);
show('total time (with callees)', inclusive);
show('total time by package or file', modules);
