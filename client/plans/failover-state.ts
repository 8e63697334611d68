// What a failed-over plan leaves on the recovery host, and the one module that
// reads and writes it. A plan's run lives in STATE/PLAN/:
//
//   failover.json     the run: phase, point, deadline, every process and tap it started
//   disks/VOL.img     the recovered disks (restored at the point, then written by the VMs)
//   agent/            the failover agent's --state
//   nbd.sock          the failover agent's NBD exports (the VMs' disks)
//   control.sock      its control socket (TimeMarks; once committed)
//   agent.log         its log
//   watcher.log       the commit deadline's watcher's log (--at-deadline rollback|commit)
//   MACHINE.console   a VM's serial console; MACHINE.qmp its QMP socket; MACHINE.qemu.log its stderr
//   history/          the final report of every run that was rolled back or failed back
//   production.json   the production VMs plan failback started (for plan status)
//
// failover.json is replaced atomically (a temporary file, fsync, rename,
// fsync of the directory), so a crash leaves the old run or the new one,
// never half of one. A run exists exactly when failover.json does.
//
// A failover claims the plan by creating failover.json (phase failing-over)
// before it restores a disk or starts a process: written whole to a file of
// its own, then hard-linked to failover.json, which fails when the name
// exists (O_EXCL's atomicity, with the content already in place), so of two
// failovers started together exactly one has a run and the other is refused
// naming it. From there the run is rewritten as each process starts (the
// watcher, the agent, each VM) and before each tap is made, so a SIGKILL at
// any point leaves a run naming everything there is to remove: plan status
// calls it interrupted (phase failing-over, its failover process gone) and
// plan rollback removes it.
//
// Processes are named by pid and their start time (/proc/PID/stat field 22,
// clock ticks since boot): a pid the kernel handed to someone else since is
// not ours, and is neither reported alive nor killed.
import fs from 'node:fs'
import path from 'node:path'
import { TidemarkError } from '../../proto/errors'

export const DEFAULT_STATE_DIR = '/var/lib/tidemark/plans'

/** A process this module may signal: its pid and when it started. */
export interface ProcessRef {
  pid: number
  /** /proc/PID/stat starttime: clock ticks after boot */
  startTicks: number
  startedAt: string
}

export interface RunVm extends ProcessRef {
  machine: string
  console: string
  qmp: string
  log: string
  /** the tap device on the failover bridge ('' when the machine has no network) */
  tap: string
}

export interface FailoverState {
  version: 1
  plan: string
  /** the plan file, absolute */
  planFile: string
  /** the recovery appliance (--appliance as given), read at failover; the audit trail is there */
  appliance: string
  /** --tls-* of the failover, absolute; commit and rollback record with them */
  applianceTls?: { cert: string; key: string; ca: string }
  runId: string
  /** failing-over: the failover is running (or was interrupted: its process is gone) */
  phase: 'failing-over' | 'failed-over' | 'committed'
  /** the `plan failover` process that owns a failing-over run */
  failover: ProcessRef
  startedAt: string
  /** what the point named, for a person */
  point: string
  disks: Array<{ machine: string; volume: string; seq: number; image: string }>
  /** '' while failing over */
  failedOverAt: string
  /** plan commit is refused after this; plan status says "rollback due" ('' while failing over) */
  commitDeadline: string
  commitWithinMs: number
  /** what happens at the deadline: none (the operator decides), or the watcher rolls back or commits */
  atDeadline: AtDeadline
  /** the deadline's watcher (`plan watch`), with --at-deadline rollback|commit, until the run is committed */
  watcher?: ProcessRef
  /** null until the agent is started (failing over) */
  agent: (ProcessRef & { argv: string[] }) | null
  vms: RunVm[]
  /** every tap the run made, recorded before it is made */
  taps: string[]
  /** once committed: where the recovered volumes replicate */
  reverse?: { appliance: string; committedAt: string }
}

export type AtDeadline = 'none' | 'rollback' | 'commit'

/** Whether a failing-over run's failover process is gone: nobody will finish or tear it down but plan rollback. */
export function interrupted(s: FailoverState): boolean {
  return s.phase === 'failing-over' && !processAlive(s.failover)
}

/** The production VMs plan failback started, for plan status. */
export interface ProductionState {
  plan: string
  startedAt: string
  vms: RunVm[]
}

/** The files of one plan's run. */
export class RunPaths {
  readonly dir: string
  constructor(
    readonly stateDir: string,
    readonly plan: string
  ) {
    this.dir = path.join(path.resolve(stateDir), plan)
  }
  get file(): string {
    return path.join(this.dir, 'failover.json')
  }
  get disks(): string {
    return path.join(this.dir, 'disks')
  }
  disk(volume: string): string {
    return path.join(this.disks, `${volume}.img`)
  }
  get agentState(): string {
    return path.join(this.dir, 'agent')
  }
  get nbdSock(): string {
    return path.join(this.dir, 'nbd.sock')
  }
  get controlSock(): string {
    return path.join(this.dir, 'control.sock')
  }
  get agentLog(): string {
    return path.join(this.dir, 'agent.log')
  }
  console(machine: string): string {
    return path.join(this.dir, `${machine}.console`)
  }
  qmp(machine: string): string {
    return path.join(this.dir, `${machine}.qmp`)
  }
  qemuLog(machine: string): string {
    return path.join(this.dir, `${machine}.qemu.log`)
  }
  get history(): string {
    return path.join(this.dir, 'history')
  }
  get production(): string {
    return path.join(this.dir, 'production.json')
  }
  productionDir(): string {
    return path.join(this.dir, 'production')
  }
}

/** FILE.PID.tmp written and fsynced (a name of this process's: two processes never share one). */
function writeTemp(file: string, value: unknown): string {
  const tmp = `${file}.${process.pid}.tmp`
  const fd = fs.openSync(tmp, 'w', 0o600)
  try {
    fs.writeSync(fd, `${JSON.stringify(value, null, 2)}\n`)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  return tmp
}

function fsyncDir(dir: string): void {
  const dfd = fs.openSync(dir, 'r')
  try {
    fs.fsyncSync(dfd)
  } finally {
    fs.closeSync(dfd)
  }
}

/** Writes JSON atomically: a temporary file, fsync, rename over FILE, fsync of the directory. */
function writeAtomic(file: string, value: unknown): void {
  fs.renameSync(writeTemp(file, value), file)
  fsyncDir(path.dirname(file))
}

function readJson<T>(file: string): T | null {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  try {
    return JSON.parse(text) as T
  } catch (err) {
    throw new TidemarkError('BAD_STATE', `${file} is damaged (${(err as Error).message}): it is not a run this tidemark wrote`)
  }
}

export function readRun(p: RunPaths): FailoverState | null {
  return readJson<FailoverState>(p.file)
}

/**
 * Creates the run, or returns the one that is there (and creates nothing):
 * link(2) of a complete temporary file fails with EEXIST when failover.json
 * exists, so exactly one of two racing failovers gets the plan.
 */
export function claimRun(p: RunPaths, s: FailoverState): FailoverState | null {
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 })
  const tmp = writeTemp(p.file, s)
  try {
    for (;;) {
      try {
        fs.linkSync(tmp, p.file)
        fsyncDir(p.dir)
        return null
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      // (a run that ended between the link and this read: try again)
      const other = readRun(p)
      if (other) return other
    }
  } finally {
    fs.rmSync(tmp, { force: true })
  }
}

export function writeRun(p: RunPaths, s: FailoverState): void {
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 })
  writeAtomic(p.file, s)
}

export function readProduction(p: RunPaths): ProductionState | null {
  return readJson<ProductionState>(p.production)
}

export function writeProduction(p: RunPaths, s: ProductionState): void {
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 })
  writeAtomic(p.production, s)
}

/** Every plan in the state directory that has a run or production VMs, by name. */
export function listPlans(stateDir: string): string[] {
  let names: string[]
  try {
    names = fs.readdirSync(path.resolve(stateDir))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  return names.filter((n) => {
    const p = new RunPaths(stateDir, n)
    return fs.existsSync(p.file) || fs.existsSync(p.production)
  }).sort()
}

/**
 * Ends a run: its final report goes to history/, then failover.json goes
 * (the run is over from here on), then everything else the run made except
 * history/ and production.json.
 */
export function finishRun(p: RunPaths, report: { action: string; finishedAt: string }): string {
  fs.mkdirSync(p.history, { recursive: true, mode: 0o700 })
  const file = path.join(p.history, `${report.finishedAt.replace(/[:.]/g, '-')}-${report.action}.json`)
  writeAtomic(file, report)
  fs.rmSync(p.file, { force: true })
  for (const name of fs.readdirSync(p.dir)) {
    if (name === 'history' || name === 'production.json' || name === 'production') continue
    fs.rmSync(path.join(p.dir, name), { recursive: true, force: true })
  }
  return file
}

/** A process's start time in clock ticks after boot, or null when there is no such process (or it is a zombie). */
export function processStartTicks(pid: number): number | null {
  let stat: string
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // "PID (COMM) STATE ..." with COMM possibly holding spaces and parentheses: the fields follow the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  if (fields[0] === 'Z' || fields[0] === 'X') return null
  return Number(fields[19])
}

export function processRef(pid: number): ProcessRef {
  const startTicks = processStartTicks(pid)
  if (startTicks === null) throw new TidemarkError('PROCESS_GONE', `process ${pid} exited as soon as it started`)
  return { pid, startTicks, startedAt: new Date().toISOString() }
}

/** Whether the process is still the one that was started (not a reused pid). */
export function processAlive(ref: ProcessRef): boolean {
  return processStartTicks(ref.pid) === ref.startTicks
}

/**
 * Signals the process and waits until it is gone (polling /proc: it is not
 * necessarily our child, so there is no exit event to wait for). A process
 * still there after the timeout is killed with SIGKILL and waited for.
 */
export async function stopProcess(ref: ProcessRef, signal: NodeJS.Signals, timeoutMs = 30_000): Promise<void> {
  if (!processAlive(ref)) return
  try {
    process.kill(ref.pid, signal)
  } catch {
    return
  }
  const end = Date.now() + timeoutMs
  while (processAlive(ref)) {
    if (Date.now() > end) {
      if (signal === 'SIGKILL') throw new TidemarkError('PROCESS_STUCK', `process ${ref.pid} did not exit within ${timeoutMs / 1000} s of SIGKILL`)
      return stopProcess(ref, 'SIGKILL', 10_000)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}
