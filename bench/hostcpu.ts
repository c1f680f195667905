import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/**
 * CPU time of the whole machine and of the servers beside the processes under test (Redis, PostgreSQL), from
 * Linux's /proc, so a benchmark can say whether the cores were saturated and who held them. Undefined where
 * there is no /proc. Times in seconds; /proc counts in USER_HZ, 100 a second on Linux.
 */
export interface HostCpu {
  /** All cores: busy and total time (total = busy + idle + iowait). */
  busyS: number;
  totalS: number;
  /**
   * Per process name (`comm`): user + system time of every live process of that name, plus what their exited
   * children used (PostgreSQL's postmaster reaps its backends and autovacuum workers). Absent: no such process.
   */
  byName: Map<string, number>;
}

const HZ = 100;

export function hostCpu(names: readonly string[]): HostCpu | undefined {
  let stat: string;
  try {
    stat = readFileSync('/proc/stat', 'utf8');
  } catch {
    return undefined;
  }
  const fields = stat.split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const busy = user + nice + system + irq + softirq + steal;
  const wanted = new Set(names);
  const byName = new Map<string, number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let s: string;
    try {
      s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
    if (!wanted.has(comm)) continue;
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // Fields 14–17 of stat (utime, stime, cutime, cstime) are the 12th to 15th after the command.
    const ticks = Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
    byName.set(comm, (byName.get(comm) ?? 0) + ticks / HZ);
  }
  return { busyS: busy / HZ, totalS: (busy + idle + iowait) / HZ, byName };
}

/** The share of all cores busy between two readings, and each named server's share of one core. */
export function hostCpuDelta(
  a: HostCpu | undefined,
  b: HostCpu | undefined,
): { busy: number; byName: Record<string, number> } | undefined {
  if (a === undefined || b === undefined) return undefined;
  const total = b.totalS - a.totalS;
  const wall = total / cpus().length;
  const byName: Record<string, number> = {};
  // A name seen in both readings only; a process of it that exited without a parent of the same name to reap
  // it (not PostgreSQL's case) would still be lost.
  for (const [name, t] of b.byName) {
    const before = a.byName.get(name);
    if (before !== undefined) byName[name] = (t - before) / wall;
  }
  return { busy: (b.busyS - a.busyS) / total, byName };
}
