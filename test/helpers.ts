// Shared test helpers: temp dirs, starting and stopping a real agent process,
// running the real NBD clients, hashing images.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { connectable } from '../client/socket-probe'
export { connectable }

export const ROOT = path.resolve(__dirname, '..')
export const BIN = path.join(ROOT, 'bin', 'tidemark.js')

export function tmpdir(t: { teardown(fn: () => unknown): void }, prefix = 'tidemark-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  return d
}

/** A file of `size` bytes of seeded pseudo-random data (or zeroes). */
export function makeImage(file: string, size: number, seed: number | null = 1): void {
  const fd = fs.openSync(file, 'w')
  if (seed === null) {
    fs.ftruncateSync(fd, size)
  } else {
    const chunk = Buffer.alloc(1 << 20)
    let x = seed >>> 0 || 1
    for (let off = 0; off < size; off += chunk.length) {
      for (let i = 0; i < chunk.length; i += 4) {
        x ^= x << 13
        x ^= x >>> 17
        x ^= x << 5
        chunk.writeUInt32LE(x >>> 0, i)
      }
      fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off)
    }
  }
  fs.closeSync(fd)
}

export function sha256(file: string): string {
  const h = crypto.createHash('sha256')
  const fd = fs.openSync(file, 'r')
  const buf = Buffer.alloc(1 << 20)
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null)
    if (n === 0) break
    h.update(buf.subarray(0, n))
  }
  fs.closeSync(fd)
  return h.digest('hex')
}

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a command to completion (asynchronously: the tap keeps serving meanwhile). */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string; env?: Record<string, string> } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.cwd, env: opts.env ? { ...process.env, ...opts.env } : undefined })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d) => (stdout += d))
    p.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 240_000)
    p.on('error', reject)
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    if (opts.input !== undefined) p.stdin.end(opts.input)
    else p.stdin.end()
  })
}

/** Runs a command and fails with its output if it does not exit 0. */
export async function must(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

export function nbdUri(sock: string, name: string): string {
  return `nbd+unix:///${name}?socket=${sock}`
}


/** A tidemark process started by a test: its output, its pino lines, stopping it. */
export class ServiceProcess {
  readonly proc: ChildProcess
  out = ''
  err = ''
  exited: Promise<number | null>

  constructor(proc: ChildProcess) {
    this.proc = proc
    proc.stdout!.on('data', (d) => (this.out += d))
    proc.stderr!.on('data', (d) => (this.err += d))
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)))
  }

  /** The pino lines logged so far. */
  logs(): Array<Record<string, unknown>> {
    return this.out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l))
  }

  async waitForLog(re: RegExp, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const end = Date.now() + timeoutMs
    for (;;) {
      const hit = this.logs().find((l) => re.test(String(l.msg)))
      if (hit) return hit
      if (Date.now() > end) throw new Error(`no log line matching ${re} within ${timeoutMs} ms; log:\n${this.out}\n${this.err}`)
      await sleep(50)
    }
  }

  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM')
    return this.exited
  }

  async kill9(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL')
    await this.exited
  }
}

export class AgentProcess extends ServiceProcess {
  readonly sock: string

  constructor(proc: ChildProcess, sock: string) {
    super(proc)
    this.sock = sock
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/**
 * Polls `check` (every `everyMs`) until it returns something truthy, and
 * returns that; after `timeoutMs` returns its last answer instead, so the
 * test's own assertion says what went wrong. For waiting on an event a test
 * can observe (a counter, a file, a log line), not for passing time.
 */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v || Date.now() > end) return v
    await sleep(everyMs)
  }
}

/**
 * The appliance holds a complete initial copy of the volume (`tidemark stats`);
 * false also while the agent's first Hello has not made the volume yet, which
 * on a busy machine can be after the test's first look.
 */
export async function initialCopyDone(address: string, volume: string): Promise<boolean> {
  const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', volume, '--json'])
  if (r.code !== 0) {
    if (/UNKNOWN_VOLUME/.test(r.stderr)) return false
    throw new Error(`tidemark stats exited ${r.code}: ${r.stderr}`)
  }
  return JSON.parse(r.stdout).volumes[0].fullSyncDone === true
}

/** As eventually(), but throws "`what` did not happen within N ms" at the timeout. */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 30_000, everyMs = 50): Promise<NonNullable<T>> {
  const v = await eventually(check, timeoutMs, everyMs)
  if (!v) throw new Error(`${what}: did not happen within ${timeoutMs} ms`)
  return v as NonNullable<T>
}

/** Resolves with the exit code (or signal name) of a child process, at once if it has exited. */
export function exitOf(proc: ChildProcess): Promise<number | string | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode ?? proc.signalCode)
  return new Promise((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal)))
}

/** Sends `signal` to a child process (or, with `group`, to its process group) and waits until it has exited. */
export async function killAndWait(proc: ChildProcess, signal: NodeJS.Signals = 'SIGKILL', group = false): Promise<void> {
  const done = exitOf(proc)
  if (proc.exitCode === null && proc.signalCode === null) {
    try {
      if (group && proc.pid) process.kill(-proc.pid, signal)
      else proc.kill(signal)
    } catch {
      // already gone
    }
  }
  await done
  if (group && proc.pid) await waitFor(() => !processGroupAlive(proc.pid!), `process group ${proc.pid} to end`, 30_000)
}

/**
 * Kills a process that is not our child (started by a hook, say) by pid, and
 * waits until it is gone; only if its working directory is `cwd` (a pid from
 * a file may have been reused by someone else's process since).
 */
export async function killPidAndWait(pid: number, cwd: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  try {
    if (fs.readlinkSync(`/proc/${pid}/cwd`) !== cwd) return
    process.kill(pid, signal)
  } catch {
    return // gone already
  }
  await waitFor(() => !fs.existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8')), `process ${pid} to end`, 30_000, 20)
}

function processGroupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

/** Waits until the wall clock has passed `ms` (a millisecond timestamp): for tests that need distinct timestamps. */
export async function clockPast(ms: number): Promise<void> {
  while (Date.now() <= ms) await sleep(Math.max(1, ms - Date.now() + 1))
}

/** Processes that hold a file, a working directory or a mapping under `dir` (from /proc): "pid command". */
export function processesUsing(dir: string): string[] {
  const out: string[] = []
  const under = (p: string): boolean => p === dir || p.startsWith(`${dir}/`)
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue
    let uses = false
    try {
      uses = under(fs.readlinkSync(`/proc/${pid}/cwd`))
      if (!uses) uses = fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try {
          return under(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
        } catch {
          return false
        }
      })
    } catch {
      continue // gone, or not ours to look at
    }
    if (uses) {
      let cmd = ''
      try {
        cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim()
      } catch {
        // gone meanwhile
      }
      out.push(`${pid} ${cmd}`)
    }
  }
  return out
}

/**
 * Unmounts `target` once no process uses it any more (waiting up to
 * `timeoutMs` for them to let go); with `killUsers`, kills those still there
 * at the timeout and waits for them to go. Throws, naming the processes,
 * if the file system stays busy or umount fails.
 */
export async function unmountWhenFree(target: string, opts: { timeoutMs?: number; killUsers?: boolean } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000
  let users = await eventually(() => processesUsing(target).length === 0 || null, timeoutMs, 50).then(() => processesUsing(target))
  if (users.length > 0 && opts.killUsers) {
    for (const u of users) {
      try {
        process.kill(Number(u.split(' ')[0]), 'SIGKILL')
      } catch {
        // gone meanwhile
      }
    }
    await eventually(() => processesUsing(target).length === 0, 10_000)
    users = processesUsing(target)
  }
  if (users.length > 0) throw new Error(`${target} is still in use by:\n${users.join('\n')}`)
  const r = await run('umount', [target])
  if (r.code !== 0) throw new Error(`umount ${target} exited ${r.code}: ${r.stderr.trim()}; in use by: ${processesUsing(target).join('; ') || 'nobody we can see'}`)
}

/**
 * fusermount3 -u MNT, retried for up to `timeoutMs` while the mount is busy
 * with no process of ours holding it: a loop device over MNT's file may not
 * have let go yet when umount of the file system on it returns. (The busy
 * mounts CI saw had another cause, fixed in PlanNetns.exec: a test VM's
 * private copy of the host's mounts.) With `lazyAtLast` (teardown), a mount
 * still busy then is detached lazily, so nothing is left behind, and the test
 * still fails, naming it.
 */
export async function unmountFuse(mnt: string, opts: { timeoutMs?: number; lazyAtLast?: boolean } = {}): Promise<void> {
  let r: RunResult | undefined
  await eventually(async () => {
    r = await run('fusermount3', ['-u', mnt])
    return r.code === 0 || !/busy/i.test(r.stderr)
  }, opts.timeoutMs ?? 20_000, 100)
  if (!r || r.code === 0) return
  if (opts.lazyAtLast) await run('fusermount3', ['-u', '-z', mnt])
  throw new Error(`fusermount3 -u ${mnt} exited ${r.code}: ${r.stderr.trim()}; in use by: ${processesUsing(mnt).join('; ') || 'nobody we can see'}`)
}

/** Starts `tidemark agent` as the CLI would and waits until its socket answers. */
export async function startAgent(
  t: { teardown(fn: () => unknown): void },
  args: { state: string; sock: string; volumes: Record<string, string>; captureLog?: string; extra?: string[] }
): Promise<AgentProcess> {
  const argv = [BIN, 'agent', '--state', args.state, '--nbd', `unix:${args.sock}`]
  if (!args.extra?.includes('--stats-interval')) argv.push('--stats-interval', '0')
  // Tests that ask for stats lines read them as a probe of the agent's counters
  // (replicatedSeq: "a line logged after this call"): at debug the agent logs
  // every tick's line, not only the ones whose counts changed.
  else if (!args.extra.includes('--log-level')) argv.push('--log-level', 'debug')
  for (const [n, p] of Object.entries(args.volumes)) argv.push('--volume', `${n}=${p}`)
  if (args.captureLog) argv.push('--capture-log', args.captureLog)
  argv.push(...(args.extra ?? []))
  const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  const a = new AgentProcess(proc, args.sock)
  t.teardown(() => a.stop())
  const end = Date.now() + 30_000
  while (!(await connectable(args.sock))) {
    if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}:\n${a.out}\n${a.err}`)
    if (Date.now() > end) throw new Error(`agent did not listen on ${args.sock}:\n${a.out}\n${a.err}`)
    await sleep(30)
  }
  return a
}

/** A `tidemark timeview` server: `served` is the JSON line it printed first (what it serves). */
export class TimeviewProcess extends ServiceProcess {
  served: Record<string, unknown> = {}
}

/**
 * Starts `tidemark timeview ARGS... --json` (with --stats-interval 0 unless
 * ARGS give one) and resolves once it printed what it serves.
 */
export async function startTimeview(
  t: { teardown(fn: () => unknown): void },
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}
): Promise<TimeviewProcess> {
  const argv = [BIN, 'timeview', ...args, '--json']
  if (!args.includes('--stats-interval')) argv.push('--stats-interval', '0')
  const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env })
  const v = new TimeviewProcess(proc)
  t.teardown(() => v.stop())
  const timeoutMs = opts.timeoutMs ?? 60_000
  const end = Date.now() + timeoutMs
  while (!v.out.includes('\n')) {
    if (proc.exitCode !== null) throw new Error(`timeview exited ${proc.exitCode}: ${v.err}`)
    if (Date.now() > end) throw new Error(`timeview did not start within ${timeoutMs} ms: ${v.out}\n${v.err}`)
    await sleep(30)
  }
  v.served = JSON.parse(v.out.split('\n')[0])
  return v
}

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
}

/** Reads a dirty map file (native/src/dirty_map.h): the set of dirty region indexes. */
export function readDirtyMapFile(file: string): { regionSize: number; regions: Set<number> } {
  const b = fs.readFileSync(file)
  if (b.subarray(0, 8).toString() !== 'TMDIRTY1') throw new Error(`${file} is not a dirty map`)
  const shift = b.readUInt32LE(12)
  const count = Number(b.readBigUInt64LE(24))
  const regions = new Set<number>()
  for (let r = 0; r < count; r++) if (b[4096 + (r >> 3)] & (1 << (r & 7))) regions.add(r)
  return { regionSize: 2 ** shift, regions }
}

/** Sector indexes (512 B) where two equal-sized files differ. */
export function differingSectors(a: string, b: string): number[] {
  const fa = fs.openSync(a, 'r')
  const fb = fs.openSync(b, 'r')
  const ba = Buffer.alloc(1 << 20)
  const bb = Buffer.alloc(1 << 20)
  const out: number[] = []
  try {
    for (let off = 0; ; off += ba.length) {
      const na = fs.readSync(fa, ba, 0, ba.length, off)
      const nb = fs.readSync(fb, bb, 0, bb.length, off)
      if (na !== nb) throw new Error(`${a} and ${b} differ in size`)
      if (na === 0) break
      if (ba.subarray(0, na).equals(bb.subarray(0, nb))) continue
      for (let s = 0; s < na; s += 512) {
        if (!ba.subarray(s, s + 512).equals(bb.subarray(s, s + 512))) out.push((off + s) / 512)
      }
    }
  } finally {
    fs.closeSync(fa)
    fs.closeSync(fb)
  }
  return out
}

export class ApplianceProcess extends ServiceProcess {
  port = 0
  host = '127.0.0.1'

  get address(): string {
    return `${this.host}:${this.port}`
  }
}

/**
 * Starts `tidemark appliance` as the CLI would, on 127.0.0.1 (port 0 picks a
 * free one unless `port` is given: a restart reuses the old port so agents
 * find it again), and waits for its "listening on" line.
 */
export async function startAppliance(
  t: { teardown(fn: () => unknown): void },
  args: { data: string; port?: number; host?: string; extra?: string[]; env?: Record<string, string> }
): Promise<ApplianceProcess> {
  const host = args.host ?? '127.0.0.1'
  const argv = [BIN, 'appliance', '--data', args.data, '--listen', `${host}:${args.port ?? 0}`]
  if (!args.extra?.includes('--stats-interval')) argv.push('--stats-interval', '0')
  argv.push(...(args.extra ?? []))
  const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...args.env } })
  const a = new ApplianceProcess(proc)
  a.host = host
  t.teardown(() => a.stop())
  const end = Date.now() + 30_000
  for (;;) {
    const m = /listening on [^\s]+:(\d+)/.exec(a.err)
    if (m) {
      a.port = Number(m[1])
      return a
    }
    if (proc.exitCode !== null) throw new Error(`appliance exited ${proc.exitCode}:\n${a.out}\n${a.err}`)
    if (Date.now() > end) throw new Error(`appliance did not start:\n${a.out}\n${a.err}`)
    await sleep(30)
  }
}

/**
 * A volume an agent protects and replicates to an appliance: DIR/prod.img
 * (`size` bytes of makeImage(seed)), served by the agent on DIR/nbd.sock
 * (`uri`) with --stats-interval 0.2 (what replicatedSeq reads), once the
 * appliance holds its initial copy.
 */
export async function protectedVolume(
  t: { teardown(fn: () => unknown): void },
  dir: string,
  opts: { size: number; seed: number | null; applianceExtra?: string[]; agentExtra?: string[] }
): Promise<{ img: string; app: ApplianceProcess; sock: string; agent: AgentProcess; uri: string; agentArgs: Parameters<typeof startAgent>[1] }> {
  const img = path.join(dir, 'prod.img')
  makeImage(img, opts.size, opts.seed)
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: opts.applianceExtra })
  const sock = path.join(dir, 'nbd.sock')
  // The arguments, for a test that restarts the agent as it was.
  const agentArgs = {
    state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--stats-interval', '0.2', ...(opts.agentExtra ?? [])],
  }
  const agent = await startAgent(t, agentArgs)
  await app.waitForLog(/initial copy complete/, 120_000)
  return { img, app, sock, agent, uri: nbdUri(sock, 'vol'), agentArgs }
}

/** `tidemark restore ... --seq SEQ --out FILE`; returns the parsed --json result. */
export async function restore(appliance: string, volume: string, seq: number | 'latest', out: string, extra: string[] = []): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [BIN, 'restore', '--appliance', appliance, '--volume', volume, '--seq', String(seq), '--out', out, '--json', ...extra])
  if (r.code !== 0) throw new Error(`restore exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/**
 * The kernel's ext4 on an NBD export, with no nbd module: nbdfuse exposes the
 * export as DIR/fuse/disk, mkfs.ext4 formats it, mount -o loop mounts it on
 * DIR/fs. unmount() takes it all down (also done at teardown if the test did
 * not), before the server stops.
 */
export function mountExt4OverNbd(
  t: { teardown(fn: () => unknown): void },
  uri: string,
  dir: string
): Promise<{ fsdir: string; unmount(): Promise<void> }> {
  return mountOverNbd(t, uri, dir, { mkfs: true })
}

/**
 * nbdfuse exposing an export as DIR/fuse/disk and the kernel's file system on
 * it (mount -o loop on DIR/fs); with `mkfs`, formatted as ext4 first; with
 * `readOnly`, both read-only (and no journal replay).
 *
 * unmount(), in the test: waits for processes the test ended to let go; a file
 * system still in use after that is the test's own bug and fails it, naming
 * the processes. At teardown (the test failed or did not unmount): whatever
 * still uses the file system is killed and waited for, then it is unmounted;
 * a failure to unmount fails the test rather than leaving a mount behind.
 * Both wait for nbdfuse to exit.
 */
export async function mountOverNbd(
  t: { teardown(fn: () => unknown): void },
  uri: string,
  dir: string,
  opts: { mkfs?: boolean; readOnly?: boolean } = {}
): Promise<{ fsdir: string; unmount(): Promise<void> }> {
  const mnt = path.join(dir, 'fuse')
  const fsdir = path.join(dir, 'fs')
  fs.mkdirSync(mnt, { recursive: true })
  fs.mkdirSync(fsdir, { recursive: true })
  const fuse = spawn('nbdfuse', [...(opts.readOnly ? ['--readonly'] : []), path.join(mnt, 'disk'), uri], { stdio: 'ignore' })
  let fuseUp = true
  let mounted = false
  const takeDown = async (killUsers: boolean): Promise<void> => {
    try {
      if (mounted) await unmountWhenFree(fsdir, { killUsers })
      mounted = false
      if (fuseUp) await unmountFuse(mnt, { lazyAtLast: killUsers })
      fuseUp = false
    } finally {
      // At teardown nbdfuse goes whatever happened above: a test never hangs on it.
      if (killUsers) await killAndWait(fuse, 'SIGTERM')
    }
    await exitOf(fuse)
  }
  t.teardown(() => takeDown(true))
  await waitFor(() => fs.existsSync(path.join(mnt, 'disk')) || fuse.exitCode !== null, 'nbdfuse to expose the volume', 10_000, 20)
  if (fuse.exitCode !== null) throw new Error(`nbdfuse exited ${fuse.exitCode} before exposing the volume`)
  if (opts.mkfs) await must('mkfs.ext4', ['-F', '-q', path.join(mnt, 'disk')])
  await must('mount', ['-o', opts.readOnly ? 'loop,ro,noload' : 'loop', path.join(mnt, 'disk'), fsdir])
  mounted = true
  return { fsdir, unmount: () => takeDown(false) }
}

/** A CA (CA.pem, CA.key) in dir and certificates it signs: NAME.pem/.key with CN=NAME and SANs for 127.0.0.1 and localhost. */
export async function makePki(dir: string, names: string[], caName = 'ca'): Promise<void> {
  fs.mkdirSync(dir, { recursive: true })
  const ssl = (args: string[]): Promise<string> => must('openssl', args, { cwd: dir })
  await ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=tidemark test ${caName}`, '-keyout', `${caName}.key`, '-out', `${caName}.pem`])
  for (const n of names) {
    fs.writeFileSync(path.join(dir, `${n}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
    await ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${n}`, '-keyout', `${n}.key`, '-out', `${n}.csr`])
    await ssl(['x509', '-req', '-in', `${n}.csr`, '-CA', `${caName}.pem`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-days', '2', '-extfile', `${n}.ext`, '-out', `${n}.pem`])
  }
}

/** --tls-cert/--tls-key/--tls-ca for `who`'s certificate in a makePki directory. */
export function tlsArgs(dir: string, who: string): string[] {
  return ['--tls-cert', path.join(dir, `${who}.pem`), '--tls-key', path.join(dir, `${who}.key`), '--tls-ca', path.join(dir, 'ca.pem')]
}

/**
 * A command run as another local user (uid; gid 65534, no groups) with a
 * clean environment (the test runner's NODE_OPTIONS name files only we may
 * read): what the appliance's unix listener and NBD socket see as uid:N.
 * `env`: extra variables. Needs root and setpriv.
 */
export function runAsUid(uid: number, cmd: string, args: string[], env: string[] = []): Promise<RunResult> {
  return run('env', ['-i', `PATH=${process.env.PATH}`, ...env, 'setpriv', '--reuid', String(uid), '--regid', '65534', '--clear-groups', cmd, ...args])
}

/**
 * Why commands cannot run as another local user here, or false: root and
 * setpriv, and a checkout other users may reach (the CLI they run is this
 * one; a clone under a 0700 directory, as mktemp -d makes, is ours alone).
 */
export function otherUsersCannotRun(): string | false {
  if (process.getuid?.() !== 0 || !have('setpriv')) return 'needs root and setpriv'
  for (let d = ROOT; ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return `other users cannot reach the checkout (${d} is not searchable by them), so they cannot run its CLI`
    if (path.dirname(d) === d) return false
  }
}
