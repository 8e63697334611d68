// Tap overhead: fio (nbd engine) through `tidemark agent` versus `nbdkit file`
// on the same backing file, alternated in one run.
//
//   npm run bench
//
// Scenarios: 4 KiB random write, iodepth 16, 2 jobs (one NBD connection each);
// 1 MiB sequential write, iodepth 4, 1 job. Targets: nbdkit's file plugin (the
// peer), the agent with its default consumer (records pulled, counted and
// acknowledged: capture on, no sink), and the agent with --capture-log (records
// made durable with fdatasync in a local log before they are acknowledged).
// Every run starts a fresh server process, waits until its socket accepts
// connections, runs fio, and stops the server (SIGTERM). Rounds alternate the
// targets (ABAB, with the order rotated each round) so that drift in the
// machine (page cache, writeback, other load) falls on all of them alike.
//
// Environment: TIDEMARK_BENCH_SECONDS (10), TIDEMARK_BENCH_ROUNDS (3),
// TIDEMARK_BENCH_SIZE (1G), TIDEMARK_BENCH_RAMP (1, seconds fio excludes from
// its statistics), TIDEMARK_BENCH_DIR (os.tmpdir()), TIDEMARK_BENCH_TARGETS
// (comma list of nbdkit,tidemark,tidemark-caplog), TIDEMARK_BENCH_SCENARIOS
// (comma list of randwrite-4k,write-1m), TIDEMARK_BENCH_OUT (the JSON file),
// TIDEMARK_BENCH_NBDKIT_THREADS (nbdkit --threads; unset: nbdkit's default, 16).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

const ROOT = path.resolve(__dirname, '..', '..')
const BIN = path.join(ROOT, 'bin', 'tidemark.js')
const MiB = 1024 * 1024
const EXPORT = 'bench'

// ---------------------------------------------------------------- settings

function envNumber(name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}='${v}' is not a positive number`)
  return n
}

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?$/i.exec(s.trim())
  if (!m) throw new Error(`TIDEMARK_BENCH_SIZE='${s}' is not a size (e.g. 1G, 512M)`)
  const mult: Record<string, number> = { '': 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }
  const n = Math.floor(Number(m[1]) * mult[m[2].toLowerCase()])
  if (n < 64 * MiB || n % MiB !== 0) throw new Error(`TIDEMARK_BENCH_SIZE must be a whole number of MiB, at least 64M`)
  return n
}

const SECONDS = envNumber('TIDEMARK_BENCH_SECONDS', 10)
const ROUNDS = Math.floor(envNumber('TIDEMARK_BENCH_ROUNDS', 3))
const RAMP = envNumber('TIDEMARK_BENCH_RAMP', 1)
const SIZE = parseSize(process.env.TIDEMARK_BENCH_SIZE || '1G')
const BASE_DIR = process.env.TIDEMARK_BENCH_DIR || os.tmpdir()
const NBDKIT_THREADS = process.env.TIDEMARK_BENCH_NBDKIT_THREADS ? Math.floor(envNumber('TIDEMARK_BENCH_NBDKIT_THREADS', 16)) : null
const OUT = path.resolve(process.env.TIDEMARK_BENCH_OUT || path.join(ROOT, 'benchmarks', 'results', 'tap-overhead.json'))

// ---------------------------------------------------------------- scenarios and targets

interface Scenario {
  id: string
  title: string
  fio: string[]
}

const ALL_SCENARIOS: Scenario[] = [
  {
    id: 'randwrite-4k',
    title: '4 KiB random write, iodepth 16, 2 jobs',
    fio: ['--rw=randwrite', '--bs=4k', '--iodepth=16', '--numjobs=2'],
  },
  {
    id: 'write-1m',
    title: '1 MiB sequential write, iodepth 4, 1 job',
    fio: ['--rw=write', '--bs=1M', '--iodepth=4', '--numjobs=1'],
  },
]

type TargetId = 'nbdkit' | 'tidemark' | 'tidemark-caplog'

interface Target {
  id: TargetId
  title: string
}

const ALL_TARGETS: Target[] = [
  { id: 'nbdkit', title: 'nbdkit file (peer)' },
  { id: 'tidemark', title: 'tidemark agent, capture on (records pulled + acked)' },
  { id: 'tidemark-caplog', title: 'tidemark agent, capture to a durable local log (--capture-log)' },
]

function pick<T extends { id: string }>(all: T[], env: string | undefined, what: string): T[] {
  if (!env) return all
  const ids = env.split(',').map((s) => s.trim()).filter(Boolean)
  for (const id of ids) if (!all.some((x) => x.id === id)) throw new Error(`unknown ${what} '${id}' (known: ${all.map((x) => x.id).join(', ')})`)
  return all.filter((x) => ids.includes(x.id))
}

const SCENARIOS = pick(ALL_SCENARIOS, process.env.TIDEMARK_BENCH_SCENARIOS, 'scenario')
const TARGETS = pick(ALL_TARGETS, process.env.TIDEMARK_BENCH_TARGETS, 'target')
if (!TARGETS.some((t) => t.id === 'nbdkit')) throw new Error('TIDEMARK_BENCH_TARGETS must include nbdkit: every figure is a ratio against it')

// ---------------------------------------------------------------- small helpers

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

function commandOutput(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.error) throw new Error(`${cmd} is needed: ${r.error.message}`)
  return `${r.stdout}${r.stderr}`.trim()
}

function connectable(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock)
    c.on('connect', () => {
      c.destroy()
      resolve(true)
    })
    c.on('error', () => resolve(false))
  })
}

const CLK_TCK = Number(commandOutput('getconf', ['CLK_TCK'])) || 100

function statFields(pid: number | 'self'): string[] | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

/** CPU seconds (user + system, all threads) a live process has used so far. */
function processCpu(pid: number): number {
  const f = statFields(pid)
  return f ? (Number(f[11]) + Number(f[12])) / CLK_TCK : NaN
}

/**
 * This process's own CPU seconds, and its reaped children's (cutime + cstime):
 * the latter grows by exactly fio's CPU (its job processes included) when fio
 * is waited for.
 */
function selfCpu(): { own: number; children: number } {
  const f = statFields('self')!
  return { own: (Number(f[11]) + Number(f[12])) / CLK_TCK, children: (Number(f[13]) + Number(f[14])) / CLK_TCK }
}

/** Every process's name and CPU seconds so far (kernel threads included). */
function allProcesses(): Map<number, { comm: string; cpu: number }> {
  const m = new Map<number, { comm: string; cpu: number }>()
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

/** The other processes that used the most CPU between two snapshots, in cores. */
function topOthers(
  a: Map<number, { comm: string; cpu: number }>,
  b: Map<number, { comm: string; cpu: number }>,
  exclude: Set<number>,
  wall: number
): Array<{ comm: string; cores: number }> {
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
    .filter((x) => x.cores >= 0.01)
    .sort((x, y) => y.cores - x.cores)
    .slice(0, 4)
}

/** Machine-wide busy and total CPU time (seconds, summed over CPUs). */
function machineCpu(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = v[3] + (v[4] || 0)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK }
}

/** Runs a command to completion without blocking the event loop. */
function run(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d) => (stdout += d))
    p.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs)
    p.on('error', reject)
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

// ---------------------------------------------------------------- servers

interface Server {
  proc: ChildProcess
  uri: string
  out: () => string
  err: () => string
}

async function startServer(target: TargetId, work: string, backing: string): Promise<Server> {
  const sock = path.join(work, 'nbd.sock')
  let proc: ChildProcess
  let uri: string
  if (target === 'nbdkit') {
    // The peer: nbdkit's file plugin with its defaults (parallel thread model).
    const threads = NBDKIT_THREADS === null ? [] : [`--threads=${NBDKIT_THREADS}`]
    proc = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', sock, ...threads, 'file', backing], { stdio: ['ignore', 'pipe', 'pipe'] })
    uri = `nbd+unix:///?socket=${sock}`
  } else {
    // The agent as a user starts it.
    const argv = [BIN, 'agent', '--state', path.join(work, 'state'), '--nbd', `unix:${sock}`, '--volume', `${EXPORT}=${backing}`, '--stats-interval', '0']
    if (target === 'tidemark-caplog') argv.push('--capture-log', path.join(work, 'capture'))
    proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
    uri = `nbd+unix:///${EXPORT}?socket=${sock}`
  }
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d) => (out += d))
  proc.stderr!.on('data', (d) => (err += d))
  const server: Server = { proc, uri, out: () => out, err: () => err }
  const deadline = Date.now() + 30_000
  while (!(await connectable(sock))) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${target} exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${out}\n${err}`)
    if (Date.now() > deadline) {
      proc.kill('SIGKILL')
      throw new Error(`${target} did not listen on ${sock} within 30 s:\n${out}\n${err}`)
    }
    await sleep(25)
  }
  return server
}

async function stopServer(s: Server): Promise<void> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return
  const exited = new Promise<void>((r) => s.proc.once('exit', () => r()))
  s.proc.kill('SIGTERM')
  const timeout = sleep(30_000).then(() => 'timeout' as const)
  if ((await Promise.race([exited, timeout])) === 'timeout') {
    s.proc.kill('SIGKILL')
    await exited
    throw new Error(`server pid ${s.proc.pid} did not stop within 30 s of SIGTERM:\n${s.out()}\n${s.err()}`)
  }
}

interface CaptureStats {
  mode: string
  writes: number
  bytesWritten: number
  records: number
  recordBytes: number
  droppedRecords: number
  resyncRecords: number
  lastSeq: number
  ackedSeq: number
  captureLogBytes?: number
}

function finalStats(out: string): CaptureStats | null {
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue
    let j: Record<string, unknown>
    try {
      j = JSON.parse(line)
    } catch {
      continue
    }
    if (j.msg !== 'final stats') continue
    const n = (k: string): number => Number(j[k] ?? NaN)
    return {
      mode: String(j.mode),
      writes: n('writes'),
      bytesWritten: n('bytesWritten'),
      records: n('records'),
      recordBytes: n('recordBytes'),
      droppedRecords: n('droppedRecords'),
      resyncRecords: n('resyncRecords'),
      lastSeq: n('lastSeq'),
      ackedSeq: n('ackedSeq'),
    }
  }
  return null
}

// ---------------------------------------------------------------- one measured run

interface RunResult {
  round: number
  scenario: string
  target: TargetId
  order: number
  bwBytes: number
  iops: number
  p99Us: number
  p50Us: number
  meanUs: number
  fioErrors: number
  /** CPU used by the server process during fio, in cores (1.0 = one core busy) */
  serverCores: number
  /** fio's CPU (all its processes), in cores */
  fioCores: number
  /** all CPUs busy during fio, in cores (of os.cpus().length) */
  machineCores: number
  /** what neither the server nor fio used: other processes, kernel writeback, ... */
  otherCores: number
  /** the biggest of those other consumers still alive at the end of the run (exited ones are missed) */
  others: Array<{ comm: string; cores: number }>
  loadavg1: number
  capture: CaptureStats | null
}

function clatPercentile(w: Record<string, any>, p: string): number {
  const v = w.clat_ns?.percentile?.[p]
  return typeof v === 'number' ? v / 1000 : NaN
}

async function measure(
  round: number,
  order: number,
  sc: Scenario,
  target: TargetId,
  backing: string,
  seconds: number,
  ramp: number
): Promise<RunResult> {
  const work = fs.mkdtempSync(path.join(BASE_DIR, `tidemark-bench-${target}-`))
  try {
    const loadavg1 = os.loadavg()[0]
    const server = await startServer(target, work, backing)
    let fioOut: Awaited<ReturnType<typeof run>>
    const procs0 = allProcesses()
    const self0 = selfCpu()
    const cpu0 = processCpu(server.proc.pid!)
    const m0 = machineCpu()
    const t0 = process.hrtime.bigint()
    let cpu1 = NaN
    let m1 = m0
    let self1 = self0
    let procs1 = procs0
    let wall = NaN
    try {
      fioOut = await run(
        'fio',
        [
          `--name=${sc.id}`,
          '--ioengine=nbd',
          `--uri=${server.uri}`,
          ...sc.fio,
          '--time_based',
          `--runtime=${seconds}`,
          `--ramp_time=${ramp}`,
          '--group_reporting',
          '--output-format=json',
        ],
        work,
        (seconds + ramp + 120) * 1000
      )
    } finally {
      // taken before stopping, so the drain at stop is not counted
      cpu1 = processCpu(server.proc.pid!)
      m1 = machineCpu()
      self1 = selfCpu()
      procs1 = allProcesses()
      wall = Number(process.hrtime.bigint() - t0) / 1e9
      await stopServer(server)
    }
    if (fioOut.code !== 0) throw new Error(`fio against ${target} exited ${fioOut.code}:\n${fioOut.stdout}\n${fioOut.stderr}\n--- server:\n${server.out()}\n${server.err()}`)
    const json = JSON.parse(fioOut.stdout.slice(fioOut.stdout.indexOf('{')))
    const job = json.jobs[0]
    const w = job.write
    let capture: CaptureStats | null = null
    if (target !== 'nbdkit') {
      capture = finalStats(server.out())
      if (!capture) throw new Error(`no "final stats" line from the agent:\n${server.out()}\n${server.err()}`)
      if (target === 'tidemark-caplog') {
        const f = path.join(work, 'capture', `${EXPORT}.tmcap`)
        capture.captureLogBytes = fs.existsSync(f) ? fs.statSync(f).size : 0
      }
    }
    const fioCores = (self1.children - self0.children) / wall
    const benchCores = (self1.own - self0.own) / wall
    const serverCores = (cpu1 - cpu0) / wall
    const machineCores = (m1.busy - m0.busy) / wall
    const others = topOthers(procs0, procs1, new Set([process.pid, server.proc.pid!]), wall)
    return {
      round,
      scenario: sc.id,
      target,
      order,
      bwBytes: w.bw_bytes,
      iops: w.iops,
      p99Us: clatPercentile(w, '99.000000'),
      p50Us: clatPercentile(w, '50.000000'),
      meanUs: (w.clat_ns?.mean ?? NaN) / 1000,
      fioErrors: job.error,
      serverCores,
      fioCores,
      machineCores,
      otherCores: Math.max(0, machineCores - serverCores - fioCores - benchCores),
      others,
      loadavg1,
      capture,
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
    // Write back what this run dirtied (and the deleted capture log) before the
    // next run starts, so no run pays for its predecessor's writeback.
    spawnSync('sync')
  }
}

// ---------------------------------------------------------------- setup

function makeBacking(file: string, size: number): void {
  // Every block written (not sparse, not unwritten extents): both servers then
  // overwrite allocated blocks, as a protected disk image would be.
  const fd = fs.openSync(file, 'w')
  const chunk = Buffer.alloc(8 * MiB, 0x5a)
  for (let off = 0; off < size; off += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
}

function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir)
  return s.bavail * s.bsize
}

/** The tidemark revision measured, and whether tracked files differ from it. */
function gitRevision(): { commit: string; modified: boolean } | 'unknown' {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' })
  if (head.status !== 0) return 'unknown'
  const st = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' })
  return { commit: head.stdout.trim(), modified: st.stdout.trim() !== '' }
}

function machineInfo(dir: string): Record<string, unknown> {
  const cpus = os.cpus()
  const dfLine = commandOutput('df', ['-T', dir]).split('\n')[1]?.split(/\s+/) ?? []
  return {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    fio: commandOutput('fio', ['--version']),
    nbdkit: commandOutput('nbdkit', ['--version']),
    benchDir: dir,
    benchFs: dfLine[1] ?? 'unknown',
    benchDevice: dfLine[0] ?? 'unknown',
    loadavgAtStart: os.loadavg(),
    tidemark: gitRevision(),
  }
}

// ---------------------------------------------------------------- report

interface Summary {
  scenario: string
  target: TargetId
  runs: number
  mbps: number
  mbpsMin: number
  mbpsMax: number
  iops: number
  p99Us: number
  p99UsMin: number
  p99UsMax: number
  p50Us: number
  serverCores: number
  fioCores: number
  otherCores: number
  /** median over rounds of this target / nbdkit in the same round */
  throughputRatio: number | null
  p99Ratio: number | null
  throughputRatioOfMedians: number | null
  p99RatioOfMedians: number | null
  meetsTarget: boolean | null
  records: number | null
  droppedRecords: number | null
  resyncRecords: number | null
  modes: string[] | null
  captureLogMiBps: number | null
}

const TARGET_THROUGHPUT = 0.9
const TARGET_P99 = 1.2

function summarize(results: RunResult[]): Summary[] {
  const out: Summary[] = []
  for (const sc of SCENARIOS) {
    const peer = results.filter((r) => r.scenario === sc.id && r.target === 'nbdkit')
    const peerMbps = median(peer.map((r) => r.bwBytes / 1e6))
    const peerP99 = median(peer.map((r) => r.p99Us))
    for (const t of TARGETS) {
      const rs = results.filter((r) => r.scenario === sc.id && r.target === t.id)
      const mbps = rs.map((r) => r.bwBytes / 1e6)
      const p99 = rs.map((r) => r.p99Us)
      const isPeer = t.id === 'nbdkit'
      const paired = rs
        .map((r) => ({ r, p: peer.find((p) => p.round === r.round) }))
        .filter((x): x is { r: RunResult; p: RunResult } => x.p !== undefined)
      const thrRatio = isPeer ? null : median(paired.map((x) => x.r.bwBytes / x.p.bwBytes))
      const p99Ratio = isPeer ? null : median(paired.map((x) => x.r.p99Us / x.p.p99Us))
      const caps = rs.map((r) => r.capture).filter((c): c is CaptureStats => c !== null)
      out.push({
        scenario: sc.id,
        target: t.id,
        runs: rs.length,
        mbps: median(mbps),
        mbpsMin: Math.min(...mbps),
        mbpsMax: Math.max(...mbps),
        iops: median(rs.map((r) => r.iops)),
        p99Us: median(p99),
        p99UsMin: Math.min(...p99),
        p99UsMax: Math.max(...p99),
        p50Us: median(rs.map((r) => r.p50Us)),
        serverCores: median(rs.map((r) => r.serverCores)),
        fioCores: median(rs.map((r) => r.fioCores)),
        otherCores: median(rs.map((r) => r.otherCores)),
        throughputRatio: thrRatio,
        p99Ratio,
        throughputRatioOfMedians: isPeer ? null : median(mbps) / peerMbps,
        p99RatioOfMedians: isPeer ? null : median(p99) / peerP99,
        meetsTarget: isPeer ? null : thrRatio! >= TARGET_THROUGHPUT && p99Ratio! <= TARGET_P99,
        records: isPeer ? null : median(caps.map((c) => c.records)),
        droppedRecords: isPeer ? null : caps.reduce((a, c) => a + c.droppedRecords, 0),
        resyncRecords: isPeer ? null : caps.reduce((a, c) => a + c.resyncRecords, 0),
        modes: isPeer ? null : [...new Set(caps.map((c) => c.mode))],
        captureLogMiBps:
          t.id === 'tidemark-caplog' ? median(caps.map((c) => (c.captureLogBytes ?? 0) / MiB / (SECONDS + RAMP))) : null,
      })
    }
  }
  return out
}

const f0 = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a')
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a')
const f2 = (x: number | null): string => (x !== null && Number.isFinite(x) ? x.toFixed(2) : '—')

function markdown(summary: Summary[], results: RunResult[], info: Record<string, unknown>): string {
  const lines: string[] = []
  lines.push(`## Tap overhead: fio through tidemark vs nbdkit file`)
  lines.push('')
  lines.push(
    `${info.date} · ${info.cpus} × ${info.cpuModel} · ${info.kernel} · Node ${info.node} · ${info.fio} · ${String(info.nbdkit).split('\n')[0]} · ` +
      `backing file ${SIZE / MiB} MiB on ${info.benchFs} (${info.benchDir}) · ${ROUNDS} alternated round(s) of ${SECONDS} s (+${RAMP} s ramp) per run · nbdkit threads: ${NBDKIT_THREADS ?? 'default (16)'} · ` +
      `tidemark ${typeof info.tidemark === 'object' && info.tidemark ? `${(info.tidemark as { commit: string }).commit.slice(0, 7)}${(info.tidemark as { modified: boolean }).modified ? ' (modified)' : ''}` : 'unknown'}`
  )
  lines.push('')
  lines.push(
    `Medians over rounds (min–max in brackets). Ratios are tidemark / nbdkit, the median of the per-round ratios (each round runs every target back to back). ` +
      `Target: throughput ratio ≥ ${TARGET_THROUGHPUT}, p99 ratio ≤ ${TARGET_P99}.`
  )
  lines.push('')
  lines.push('| scenario | target | MB/s | IOPS | p50 clat µs | p99 clat µs | throughput ratio | p99 ratio | meets target |')
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|:---:|')
  for (const s of summary) {
    lines.push(
      `| ${s.scenario} | ${s.target} | ${f1(s.mbps)} [${f1(s.mbpsMin)}–${f1(s.mbpsMax)}] | ${f0(s.iops)} | ${f0(s.p50Us)} | ${f0(s.p99Us)} [${f0(s.p99UsMin)}–${f0(s.p99UsMax)}] | ` +
        `${f2(s.throughputRatio)} | ${f2(s.p99Ratio)} | ${s.meetsTarget === null ? '—' : s.meetsTarget ? 'yes' : 'no'} |`
    )
  }
  lines.push('')
  lines.push('Capture and CPU (medians per run; dropped/resync summed over runs). CPU figures are in cores (of ' + String(info.cpus) + '): ')
  lines.push('"server" is the server process (all threads), "fio" all of fio\'s processes, "other" the rest of the machine\'s busy time ')
  lines.push('(other processes, kernel threads such as writeback), a measure of how disturbed the run was.')
  lines.push('')
  lines.push('| scenario | target | server CPU | fio CPU | other CPU | records / run | dropped | resync records | mode at stop | capture log MiB/s of run |')
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---|---:|')
  for (const s of summary) {
    lines.push(
      `| ${s.scenario} | ${s.target} | ${f2(s.serverCores)} | ${f2(s.fioCores)} | ${f2(s.otherCores)} | ${s.records === null ? '—' : f0(s.records)} | ` +
        `${s.droppedRecords ?? '—'} | ${s.resyncRecords ?? '—'} | ${s.modes ? s.modes.join(', ') : '—'} | ${s.captureLogMiBps === null ? '—' : f1(s.captureLogMiBps)} |`
    )
  }
  lines.push('')
  lines.push('Every run, in the order run:')
  lines.push('')
  lines.push('| round | scenario | target | MB/s | p99 µs | server CPU | fio CPU | other CPU | biggest other consumers (cores) |')
  lines.push('|---:|---|---|---:|---:|---:|---:|---:|---|')
  for (const r of results) {
    lines.push(
      `| ${r.round} | ${r.scenario} | ${r.target} | ${f1(r.bwBytes / 1e6)} | ${f0(r.p99Us)} | ${f2(r.serverCores)} | ${f2(r.fioCores)} | ${f2(r.otherCores)} | ${r.others.map((o) => `${o.comm} ${o.cores.toFixed(2)}`).join(', ') || '—'} |`
    )
  }
  return lines.join('\n')
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing`)
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('run `npm run build:ts` first')
  const info = machineInfo(BASE_DIR)
  const free = freeBytes(BASE_DIR)
  // The backing file, plus a capture log of up to a run's worth of writes.
  const need = SIZE + 4 * 1024 * MiB
  if (free < need) throw new Error(`${BASE_DIR} has ${(free / 1024 / MiB).toFixed(1)} GiB free; the benchmark needs about ${(need / 1024 / MiB).toFixed(1)} GiB (set TIDEMARK_BENCH_DIR or TIDEMARK_BENCH_SIZE)`)

  const dir = fs.mkdtempSync(path.join(BASE_DIR, 'tidemark-bench-'))
  const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true })
  process.once('SIGINT', () => {
    cleanup()
    process.exit(130)
  })
  const results: RunResult[] = []
  try {
    const backing = path.join(dir, 'backing.img')
    process.stderr.write(`writing a ${SIZE / MiB} MiB backing file in ${dir}\n`)
    makeBacking(backing, SIZE)

    // Warm-up: one short, discarded run of each scenario on each target.
    for (const sc of SCENARIOS) {
      for (const t of TARGETS) {
        process.stderr.write(`warm-up ${sc.id} on ${t.id}\n`)
        await measure(0, 0, sc, t.id, backing, Math.min(2, SECONDS), 0)
      }
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const sc of SCENARIOS) {
        const k = (round - 1) % TARGETS.length
        const order = [...TARGETS.slice(k), ...TARGETS.slice(0, k)]
        for (let i = 0; i < order.length; i++) {
          const r = await measure(round, i, sc, order[i].id, backing, SECONDS, RAMP)
          results.push(r)
          process.stderr.write(
            `round ${round}/${ROUNDS} ${sc.id} ${r.target}: ${f1(r.bwBytes / 1e6)} MB/s, ${f0(r.iops)} IOPS, p99 ${f0(r.p99Us)} µs` +
              `${r.capture ? `, records ${r.capture.records}, dropped ${r.capture.droppedRecords}` : ''}, cores: server ${f2(r.serverCores)} fio ${f2(r.fioCores)} other ${f2(r.otherCores)}` +
              ` (${r.others.map((o) => `${o.comm} ${o.cores.toFixed(2)}`).join(', ')})\n`
          )
        }
      }
    }
  } finally {
    cleanup()
  }
  info.loadavgAtEnd = os.loadavg()
  const summary = summarize(results)
  const md = markdown(summary, results, info)
  process.stdout.write(`${md}\n`)
  fs.mkdirSync(path.dirname(OUT), { recursive: true })
  const json = {
    benchmark: 'tap-overhead',
    machine: info,
    settings: { seconds: SECONDS, rampSeconds: RAMP, rounds: ROUNDS, backingBytes: SIZE, nbdkitThreads: NBDKIT_THREADS ?? 'default (16)', scenarios: SCENARIOS, targets: TARGETS },
    targets: { throughputRatioAtLeast: TARGET_THROUGHPUT, p99RatioAtMost: TARGET_P99 },
    summary,
    runs: results,
  }
  const tmp = `${OUT}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(json, null, 2)}\n`)
  fs.renameSync(tmp, OUT)
  process.stderr.write(`wrote ${path.relative(process.cwd(), OUT) || OUT}\n`)
}

main().catch((err) => {
  process.stderr.write(`tap-overhead: ${(err as Error).stack ?? err}\n`)
  process.exit(1)
})
