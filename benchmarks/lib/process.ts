// Processes a benchmark starts: commands run to completion (run, must),
// long-running servers (Proc: output kept, JSON log lines parsed, waits on
// what they print or on a socket, SIGTERM then SIGKILL on stop), and a
// registry that kills whatever is still running when the benchmark exits.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { BIN, MiB } from './env'
import { connectable } from '../../client/socket-probe'
export { connectable }

export type Log = Record<string, any>

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

export interface RunOptions {
  input?: string
  timeoutMs?: number
  cwd?: string
}

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
  /** wall time, milliseconds */
  ms: number
}

/** Runs a command to completion without blocking the event loop (SIGKILL after timeoutMs, 10 minutes by default). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout!.on('data', (d) => (stdout += d))
    p.stderr!.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 600_000)
    p.on('error', reject)
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: performance.now() - t0 })
    })
    if (opts.input !== undefined) p.stdin!.end(opts.input)
  })
}

/** run(), failing unless the command exits 0; its stdout. */
export async function must(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  return (await mustRun(cmd, args, opts)).stdout
}

/** must(), with the whole result (stderr, wall time). */
export async function mustRun(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`)
  return r
}

/** A command's output (stdout and stderr), or why it could not run. */
export function commandOutput(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.error) return `unavailable (${r.error.message})`
  return `${r.stdout}${r.stderr}`.trim()
}

/** The first line of a tool's version output. */
export function version(cmd: string, args: string[]): string {
  return commandOutput(cmd, args).split('\n')[0].trim()
}

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
}

/** Fails with what to install unless every tool is on the PATH. */
export function requireTools(tools: string[], hint: string): void {
  for (const c of tools) if (!have(c)) throw new Error(`${c} is needed (${hint})`)
}


/** Every process started through Proc and not yet stopped. */
const live = new Set<Proc>()
process.on('exit', () => {
  for (const p of live) p.proc.kill('SIGKILL')
})

/** SIGKILLs every process still running (a benchmark that failed half way). */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()))
}

/**
 * A long-running process: its output (the last few MiB of each stream), the
 * JSON lines it logged (pino, either stream), and waits on them.
 */
export class Proc {
  readonly proc: ChildProcess
  out = ''
  err = ''
  readonly exited: Promise<number | null>
  private readonly parsed: Log[] = []

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    opts: { cwd?: string } = {}
  ) {
    this.proc = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let rest = { out: '', err: '' }
    const take = (which: 'out' | 'err', d: Buffer): void => {
      const text = rest[which] + d
      const lines = text.split('\n')
      rest = { ...rest, [which]: lines.pop()! }
      for (const l of lines) {
        if (!l.startsWith('{')) continue
        try {
          this.parsed.push(JSON.parse(l))
        } catch {
          // not a log line
        }
      }
      // Memory stays bounded on long runs; the parsed lines are what waits use.
      this[which] += d
      if (this[which].length > 4 * MiB) this[which] = this[which].slice(-MiB)
    }
    this.proc.stdout!.on('data', (d: Buffer) => take('out', d))
    this.proc.stderr!.on('data', (d: Buffer) => take('err', d))
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)))
    this.proc.on('error', () => undefined) // reported by exited/alive
    live.add(this)
    void this.exited.then(() => live.delete(this))
  }

  get pid(): number {
    return this.proc.pid!
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  logs(): Log[] {
    return this.parsed
  }

  /** The tail of both streams, for error messages. */
  tail(): string {
    return `${this.out.slice(-4000)}\n${this.err.slice(-4000)}`
  }

  /** Waits until `ok` holds, failing if the process exits first or time runs out. */
  async waitFor(ok: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000, pollMs = 20): Promise<void> {
    const end = Date.now() + timeoutMs
    while (!(await ok())) {
      if (!this.alive) throw new Error(`${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}) before ${what}:\n${this.tail()}`)
      if (Date.now() > end) throw new Error(`${this.name}: no ${what} within ${timeoutMs / 1000} s:\n${this.tail()}`)
      await sleep(pollMs)
    }
  }

  /** The first log line (from the start) that `pred` accepts. */
  async waitLog(pred: (l: Log) => boolean, what: string, timeoutMs = 60_000): Promise<Log> {
    let from = 0
    let hit: Log | undefined
    await this.waitFor(
      () => {
        for (; from < this.parsed.length; from++) if (pred(this.parsed[from])) return Boolean((hit = this.parsed[from]))
        return false
      },
      what,
      timeoutMs
    )
    return hit!
  }

  /** Waits until something listens on `sock`. */
  listening(sock: string, timeoutMs = 30_000): Promise<void> {
    return this.waitFor(() => connectable(sock), `listening on ${sock}`, timeoutMs, 25)
  }

  /** SIGTERM, then SIGKILL and an error if it has not exited within timeoutMs. */
  async stop(timeoutMs = 60_000): Promise<number | null> {
    if (this.alive) this.proc.kill('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const t = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)))
    const first = await Promise.race([this.exited, t])
    clearTimeout(timer)
    if (first === 'timeout') {
      await this.kill()
      throw new Error(`${this.name} did not stop within ${timeoutMs / 1000} s of SIGTERM:\n${this.tail()}`)
    }
    return first
  }

  async kill(): Promise<number | null> {
    if (this.alive) this.proc.kill('SIGKILL')
    return this.exited
  }
}

/** `tidemark ARGS` as a long-running process. */
export function tidemark(name: string, args: string[]): Proc {
  return new Proc(name, process.execPath, [BIN, ...args])
}

/**
 * `tidemark appliance --data DATA` on 127.0.0.1 (a free port), with EXTRA
 * options, pushed onto `procs` (stopped with them); resolves with it and its
 * HOST:PORT once it says where it listens.
 */
export async function startAppliance(procs: Proc[], data: string, extra: string[] = [], timeoutMs = 30_000): Promise<{ app: Proc; address: string }> {
  const app = tidemark('appliance', ['appliance', '--data', data, '--listen', '127.0.0.1:0', '--stats-interval', '0', ...extra])
  procs.push(app)
  const listening = /listening on [^\s]+:(\d+)/
  await app.waitFor(() => listening.test(app.err), 'appliance listening', timeoutMs)
  return { app, address: `127.0.0.1:${listening.exec(app.err)![1]}` }
}

/** `tidemark agent` serving volume `vol` (the file `img`) on the unix socket `sock` and replicating it to `appliance`, pushed onto `procs`. */
export function startAgent(procs: Proc[], opts: { state: string; sock: string; img: string; appliance: string; extra?: string[] }): Proc {
  const agent = tidemark('agent', ['agent', '--state', opts.state, '--nbd', `unix:${opts.sock}`, '--volume', `vol=${opts.img}`, '--appliance', opts.appliance,
    ...(opts.extra ?? []), '--stats-interval', '0'])
  procs.push(agent)
  return agent
}
