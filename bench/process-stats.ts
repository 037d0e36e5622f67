/**
 * What the kernel knows about a process and the machine: CPU time from /proc/<pid>/stat, resident
 * memory from /proc/<pid>/status, and the machine's busy time from /proc/stat. Linux only, which
 * is where the figures are taken.
 */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User plus system CPU seconds a process has used so far; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** Resident set size in MiB (VmRSS), and its peak so far (VmHWM). */
export function memoryMiB(pid: number): { rss: number; peak: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
  } catch {
    return { rss: 0, peak: 0 };
  }
}

/** Busy and total jiffies of the whole machine, to say how loaded it was during a run. */
export function machineTicks(): { busy: number; total: number } {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = cpu.reduce((a, b) => a + b, 0);
  // idle and iowait are the fourth and fifth columns.
  const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
  return { busy: total - idle, total };
}

export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/** Samples a process's RSS while a run lasts and keeps the highest value. */
export function rssSampler(pid: number, everyMs = 250) {
  let max = memoryMiB(pid).rss;
  const timer = setInterval(() => {
    max = Math.max(max, memoryMiB(pid).rss);
  }, everyMs);
  return {
    stop(): number {
      clearInterval(timer);
      return Math.max(max, memoryMiB(pid).rss);
    },
  };
}

/** CPU used by a set of processes over a run: take `start()` before and `stop()` after. */
export function cpuMeter(pids: () => Promise<number[]> | number[]) {
  let before = new Map<number, number>();
  let startedAt = 0;
  return {
    async start() {
      before = new Map((await pids()).map((p) => [p, cpuSeconds(p)]));
      startedAt = performance.now();
    },
    /** CPU seconds per wall second (how many cores were busy) since `start()`. */
    async stop(): Promise<number> {
      const wall = (performance.now() - startedAt) / 1000;
      const now = new Set([...before.keys(), ...(await pids())]);
      let used = 0;
      for (const p of now) used += Math.max(0, cpuSeconds(p) - (before.get(p) ?? 0));
      return wall > 0 ? used / wall : 0;
    },
  };
}
