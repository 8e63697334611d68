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
// TIDEMARK_BENCH_NBDKIT_THREADS (nbdkit --threads; unset: nbdkit's default, 16),
// TIDEMARK_BENCH_PROFILE (1: `perf record` each tidemark run of the last
// round, and put its top symbols, and its CPU by thread name, in the results:
// what limits a figure that falls short; the NBD front's threads are named
// tm-nbd-conn (handshake, reading requests, small writes) and tm-nbd-work,
// "node" is JavaScript and V8's collector).
//
// Targets (throughput ratio to nbdkit in the same round): 4 KiB random write
// ≥ 1.0, 1 MiB sequential ≥ 0.9; p99 ratio ≤ 1.2.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { allProcesses, machineCpu, processCpu, selfCpu, topOthers } from './lib/cpu'
import { BENCH_DIR as BASE_DIR, BIN, envNumber, MiB, parseSize as parseAnySize, resultsPath, ROOT, scratchDir, removeDir } from './lib/env'
import { clatUs, fioJson } from './lib/fio'
import { commandOutput, Proc, run, tidemark } from './lib/process'
import { f0, f1, f2 as f2n, machineInfo, median, writeResults } from './lib/report'

const EXPORT = 'bench'

// ---------------------------------------------------------------- settings

function parseSize(s: string): number {
  const n = parseAnySize(s)
  if (n < 64 * MiB || n % MiB !== 0) throw new Error(`TIDEMARK_BENCH_SIZE must be a whole number of MiB, at least 64M`)
  return n
}

const SECONDS = envNumber('TIDEMARK_BENCH_SECONDS', 10)
const ROUNDS = Math.floor(envNumber('TIDEMARK_BENCH_ROUNDS', 3))
const RAMP = envNumber('TIDEMARK_BENCH_RAMP', 1)
const SIZE = parseSize(process.env.TIDEMARK_BENCH_SIZE || '1G')
const NBDKIT_THREADS = process.env.TIDEMARK_BENCH_NBDKIT_THREADS ? Math.floor(envNumber('TIDEMARK_BENCH_NBDKIT_THREADS', 16)) : null
const OUT = resultsPath('tap-overhead')
const PROFILE = process.env.TIDEMARK_BENCH_PROFILE === '1'

// ---------------------------------------------------------------- scenarios and targets

interface Scenario {
  id: string
  title: string
  fio: string[]
  /** throughput ratio to nbdkit this scenario must reach (issue 9's table) */
  target: number
}

const ALL_SCENARIOS: Scenario[] = [
  {
    id: 'randwrite-4k',
    title: '4 KiB random write, iodepth 16, 2 jobs',
    fio: ['--rw=randwrite', '--bs=4k', '--iodepth=16', '--numjobs=2'],
    target: 1.0,
  },
  {
    id: 'write-1m',
    title: '1 MiB sequential write, iodepth 4, 1 job',
    fio: ['--rw=write', '--bs=1M', '--iodepth=4', '--numjobs=1'],
    target: 0.9,
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

// ---------------------------------------------------------------- servers

interface Server {
  p: Proc
  uri: string
}

async function startServer(target: TargetId, work: string, backing: string): Promise<Server> {
  const sock = path.join(work, 'nbd.sock')
  let p: Proc
  let uri: string
  if (target === 'nbdkit') {
    // The peer: nbdkit's file plugin with its defaults (parallel thread model).
    const threads = NBDKIT_THREADS === null ? [] : [`--threads=${NBDKIT_THREADS}`]
    p = new Proc('nbdkit', 'nbdkit', ['-f', '--exit-with-parent', '-U', sock, ...threads, 'file', backing])
    uri = `nbd+unix:///?socket=${sock}`
  } else {
    // The agent as a user starts it.
    const argv = ['agent', '--state', path.join(work, 'state'), '--nbd', `unix:${sock}`, '--volume', `${EXPORT}=${backing}`, '--stats-interval', '0']
    if (target === 'tidemark-caplog') argv.push('--capture-log', path.join(work, 'capture'))
    p = tidemark(target, argv)
    uri = `nbd+unix:///${EXPORT}?socket=${sock}`
  }
  try {
    await p.listening(sock, 30_000)
  } catch (err) {
    await p.kill()
    throw err
  }
  return { p, uri }
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

function finalStats(p: Proc): CaptureStats | null {
  for (const j of p.logs()) {
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
  /** TIDEMARK_BENCH_PROFILE: the server's CPU by thread name and its top symbols, in % of its samples */
  profile?: Profile
}

interface Profile {
  threads: Array<{ name: string; percent: number }>
  symbols: Array<{ symbol: string; percent: number }>
}

/** Starts `perf record` on a process for `seconds`; resolves to its report (null if perf is missing or fails). */
async function profileProcess(pid: number, seconds: number, work: string): Promise<Profile | null> {
  const data = path.join(work, 'perf.data')
  const rec = await run('perf', ['record', '-F', '997', '-p', String(pid), '-o', data, '--', 'sleep', String(seconds)], {
    cwd: work,
    timeoutMs: (seconds + 60) * 1000,
  }).catch(() => null)
  if (!rec || rec.code !== 0 || !fs.existsSync(data)) return null
  const report = async (sort: string): Promise<Array<{ name: string; percent: number }>> => {
    const r = await run('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', sort], { cwd: work, timeoutMs: 120_000 })
    const out: Array<{ name: string; percent: number }> = []
    for (const line of r.stdout.split('\n')) {
      const m = /^\s+([\d.]+)%\s+(.*\S)\s*$/.exec(line)
      if (m) out.push({ name: m[2].replace(/^\[[.k]\]\s+/, ''), percent: Number(m[1]) })
    }
    return out
  }
  const threads = await report('comm')
  const symbols = (await report('sym')).slice(0, 15).map((x) => ({ symbol: x.name, percent: x.percent }))
  return { threads: threads.slice(0, 8), symbols }
}

async function measure(
  round: number,
  order: number,
  sc: Scenario,
  target: TargetId,
  backing: string,
  seconds: number,
  ramp: number,
  profile = false
): Promise<RunResult> {
  const work = scratchDir(`tidemark-bench-${target}-`)
  try {
    const loadavg1 = os.loadavg()[0]
    const server = await startServer(target, work, backing)
    let fioOut: Awaited<ReturnType<typeof run>>
    const procs0 = allProcesses()
    const self0 = selfCpu()
    const cpu0 = processCpu(server.p.pid).total
    const m0 = machineCpu()
    const t0 = process.hrtime.bigint()
    let cpu1 = NaN
    let m1 = m0
    let self1 = self0
    let procs1 = procs0
    let wall = NaN
    // perf samples the measured part of the run (after fio's ramp), alongside fio
    const profiling = profile && target !== 'nbdkit' ? profileAfter(server.p.pid, ramp, seconds, work) : null
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
        { cwd: work, timeoutMs: (seconds + ramp + 120) * 1000 }
      )
    } finally {
      // taken before stopping, so the drain at stop is not counted
      cpu1 = processCpu(server.p.pid).total
      m1 = machineCpu()
      self1 = selfCpu()
      procs1 = allProcesses()
      wall = Number(process.hrtime.bigint() - t0) / 1e9
      await server.p.stop(30_000)
    }
    const prof = profiling ? await profiling : null
    if (fioOut.code !== 0) throw new Error(`fio against ${target} exited ${fioOut.code}:\n${fioOut.stdout}\n${fioOut.stderr}\n--- server:\n${server.p.tail()}`)
    const json = fioJson(fioOut.stdout)
    const job = json.jobs[0]
    const w = job.write
    let capture: CaptureStats | null = null
    if (target !== 'nbdkit') {
      capture = finalStats(server.p)
      if (!capture) throw new Error(`no "final stats" line from the agent:\n${server.p.tail()}`)
      if (target === 'tidemark-caplog') {
        const f = path.join(work, 'capture', `${EXPORT}.tmcap`)
        capture.captureLogBytes = fs.existsSync(f) ? fs.statSync(f).size : 0
      }
    }
    const fioCores = (self1.children - self0.children) / wall
    const benchCores = (self1.own - self0.own) / wall
    const serverCores = (cpu1 - cpu0) / wall
    const machineCores = (m1.busy - m0.busy) / wall
    const others = topOthers(procs0, procs1, new Set([process.pid, server.p.pid]), wall)
    return {
      round,
      scenario: sc.id,
      target,
      order,
      bwBytes: w.bw_bytes,
      iops: w.iops,
      p99Us: clatUs(w, '99.000000'),
      p50Us: clatUs(w, '50.000000'),
      meanUs: (w.clat_ns?.mean ?? NaN) / 1000,
      fioErrors: job.error,
      serverCores,
      fioCores,
      machineCores,
      otherCores: Math.max(0, machineCores - serverCores - fioCores - benchCores),
      others,
      loadavg1,
      capture,
      ...(prof && { profile: prof }),
    }
  } finally {
    removeDir(work)
    // Write back what this run dirtied (and the deleted capture log) before the
    // next run starts, so no run pays for its predecessor's writeback.
    spawnSync('sync')
  }
}

async function profileAfter(pid: number, ramp: number, seconds: number, work: string): Promise<Profile | null> {
  await new Promise((r) => setTimeout(r, ramp * 1000))
  return profileProcess(pid, Math.max(1, seconds - 1), work)
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
        meetsTarget: isPeer ? null : thrRatio! >= sc.target && p99Ratio! <= TARGET_P99,
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

const f2 = (x: number | null): string => f2n(x, '—')

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
      `Targets: throughput ratio ≥ ${SCENARIOS.map((sc) => `${sc.target} (${sc.id})`).join(', ')}; p99 ratio ≤ ${TARGET_P99}.`
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
  const profiled = results.filter((r) => r.profile)
  if (profiled.length > 0) {
    lines.push('')
    lines.push('Profiles (perf record of the server, last round; % of its samples):')
    for (const r of profiled) {
      lines.push('')
      lines.push(`${r.scenario} on ${r.target}: by thread ${r.profile!.threads.map((x) => `${x.name} ${x.percent.toFixed(1)}%`).join(', ')}`)
      lines.push('')
      lines.push('| % | symbol |')
      lines.push('|---:|---|')
      for (const x of r.profile!.symbols) lines.push(`| ${x.percent.toFixed(1)} | \`${x.symbol.replace(/\|/g, '\\|')}\` |`)
    }
  }
  return lines.join('\n')
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing`)
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('run `npm run build:ts` first')
  const info = machineInfo(BASE_DIR, { nbdkit: commandOutput('nbdkit', ['--version']) })
  const free = freeBytes(BASE_DIR)
  // The backing file, plus a capture log of up to a run's worth of writes.
  const need = SIZE + 4 * 1024 * MiB
  if (free < need) throw new Error(`${BASE_DIR} has ${(free / 1024 / MiB).toFixed(1)} GiB free; the benchmark needs about ${(need / 1024 / MiB).toFixed(1)} GiB (set TIDEMARK_BENCH_DIR or TIDEMARK_BENCH_SIZE)`)

  const dir = scratchDir('tidemark-bench-')
  const cleanup = (): void => removeDir(dir)
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
          const r = await measure(round, i, sc, order[i].id, backing, SECONDS, RAMP, PROFILE && round === ROUNDS)
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
  const json = {
    benchmark: 'tap-overhead',
    machine: info,
    settings: { seconds: SECONDS, rampSeconds: RAMP, rounds: ROUNDS, backingBytes: SIZE, nbdkitThreads: NBDKIT_THREADS ?? 'default (16)', scenarios: SCENARIOS, targets: TARGETS },
    targets: { throughputRatioAtLeast: Object.fromEntries(SCENARIOS.map((sc) => [sc.id, sc.target])), p99RatioAtMost: TARGET_P99 },
    summary,
    runs: results,
  }
  writeResults(OUT, json)
}

main().catch((err) => {
  process.stderr.write(`tap-overhead: ${(err as Error).stack ?? err}\n`)
  process.exit(1)
})
