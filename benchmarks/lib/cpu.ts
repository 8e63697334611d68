// CPU accounting from /proc: what a server, the load generator (fio as our
// reaped child), this process and everything else used during a measured
// window, so a result says how disturbed the machine was.
import fs from 'node:fs'
import { spawnSync } from 'node:child_process'

export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100

function statFields(p: string): string[] | null {
  try {
    const s = fs.readFileSync(p, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

/** CPU seconds (user + system) of a live process: all threads, and its main thread (the JS event loop for node). */
export function processCpu(pid: number): { total: number; main: number } {
  const f = statFields(`/proc/${pid}/stat`)
  const m = statFields(`/proc/${pid}/task/${pid}/stat`)
  return {
    total: f ? (Number(f[11]) + Number(f[12])) / CLK_TCK : NaN,
    main: m ? (Number(m[11]) + Number(m[12])) / CLK_TCK : NaN,
  }
}

/**
 * This process's own CPU seconds, and its reaped children's (cutime + cstime):
 * the latter grows by exactly fio's CPU (its job processes included) when fio
 * is waited for.
 */
export function selfCpu(): { own: number; children: number } {
  const f = statFields('/proc/self/stat')!
  return { own: (Number(f[11]) + Number(f[12])) / CLK_TCK, children: (Number(f[13]) + Number(f[14])) / CLK_TCK }
}

export type ProcessCpu = Map<number, { comm: string; cpu: number }>

/** Every process's name and CPU seconds so far (kernel threads included). */
export function allProcesses(): ProcessCpu {
  const m: ProcessCpu = new Map()
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    try {
      const s = fs.readFileSync(`/proc/${e}/stat`, 'utf8')
      const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'))
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
      m.set(Number(e), { comm, cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK })
    } catch {
      // exited meanwhile
    }
  }
  return m
}

/** The (at most four) other processes that used the most CPU between two snapshots, in cores, by name. */
export function topOthers(a: ProcessCpu, b: ProcessCpu, exclude: Set<number>, wall: number, minCores = 0.01): Array<{ comm: string; cores: number }> {
  const by = new Map<string, number>()
  for (const [pid, p] of b) {
    if (exclude.has(pid)) continue
    const d = p.cpu - (a.get(pid)?.cpu ?? 0)
    if (d <= 0) continue
    const name = p.comm.startsWith('kworker') ? 'kworker' : p.comm.trim()
    by.set(name, (by.get(name) ?? 0) + d / wall)
  }
  return [...by.entries()]
    .map(([comm, cores]) => ({ comm, cores: Math.round(cores * 100) / 100 }))
    .filter((x) => x.cores >= minCores)
    .sort((x, y) => y.cores - x.cores)
    .slice(0, 4)
}

/** Machine-wide busy and total CPU time (seconds, summed over CPUs). */
export function machineCpu(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = v[3] + (v[4] || 0)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK }
}

// ---- a measured window: the tracked servers by role, our tools, the rest of the machine

export interface CpuSnap {
  at: number
  machine: number
  self: { own: number; children: number }
  procs: ProcessCpu
  tracked: Map<number, { total: number; main: number }>
}

export function cpuSnap(tracked: number[]): CpuSnap {
  return {
    at: performance.now(),
    machine: machineCpu().busy,
    self: selfCpu(),
    procs: allProcesses(),
    tracked: new Map(tracked.map((pid) => [pid, processCpu(pid)])),
  }
}

export interface CpuWindow {
  seconds: number
  /** per tracked role, in cores (1.0 = one core busy for the whole window) */
  roles: Record<string, { cores: number; mainCores: number; cpuSeconds: number }>
  /** reaped child tools (fio, sqlite3, ...) */
  toolsCores: number
  benchCores: number
  machineCores: number
  /** neither ours nor our tools: other processes, kernel threads; how disturbed the window was */
  otherCores: number
  others: Array<{ comm: string; cores: number }>
}

export function cpuWindow(a: CpuSnap, b: CpuSnap, roles: Record<string, number[]>): CpuWindow {
  const wall = (b.at - a.at) / 1000
  const out: CpuWindow['roles'] = {}
  let ours = 0
  const exclude = new Set<number>([process.pid])
  for (const [role, pids] of Object.entries(roles)) {
    let total = 0
    let main = 0
    for (const pid of pids) {
      exclude.add(pid)
      const x = a.tracked.get(pid)
      const y = b.tracked.get(pid)
      if (!x || !y || !Number.isFinite(y.total)) continue
      total += y.total - x.total
      main += y.main - x.main
    }
    ours += total
    out[role] = { cores: total / wall, mainCores: main / wall, cpuSeconds: total }
  }
  const tools = b.self.children - a.self.children
  const bench = b.self.own - a.self.own
  const machine = b.machine - a.machine
  // Children still running at b (e.g. fio under way) are in neither snapshot's cutime: exclude them by name too.
  const others = topOthers(a.procs, b.procs, exclude, wall, 0.02)
  return {
    seconds: wall,
    roles: out,
    toolsCores: tools / wall,
    benchCores: bench / wall,
    machineCores: machine / wall,
    otherCores: Math.max(0, (machine - ours - tools - bench) / wall),
    others,
  }
}
