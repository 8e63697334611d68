// The soak harness: cycles of real faults during real workloads, with a
// byte-exact convergence check after every cycle.
//
//   npm run build:ts && node dist/benchmarks/soak.js [--cycles N] [--seed S]
//        [--faults agent-kill,appliance-kill,both-kill,link-cut,disk-full] [--volume-mib M]
//
// One appliance, one agent, one volume, every part a real process started as
// the CLI starts it (`node bin/tidemark.js`), and a TCP proxy of the harness's
// own between them so the link can be cut (every connection reset, new ones
// refused) without touching either side. Each cycle:
//   1. starts a workload through the agent's NBD socket: fio (random writes of
//      mixed sizes, trims and write-zeroes) or, in every fourth cycle, the
//      kernel's ext4 over nbdfuse with sqlite3 committing rows and files
//      being created, fsynced, renamed and deleted;
//   2. injects one fault drawn from the enabled kinds while it runs: kill -9
//      of the agent (fio cycles only: ext4 cannot survive its disk vanishing),
//      of the appliance (restarted on the same port), of both, a link cut of
//      0.2-2 s, or the appliance's data file system filled to the last byte
//      (it lives on a loop-mounted ext4 of its own), held until the appliance
//      has reported it and freed again;
//   3. stops the workload, restarts what was killed, then takes a TimeMark
//      through the agent's control socket, retrying while the agent refuses
//      (the volume is resyncing, the appliance is away) until the appliance
//      holds it, restores that mark and compares its SHA-256 with the volume's
//      backing file, which nothing writes any more: a difference is a
//      divergence.
// At the end `journal verify` must be clean. Prints cycles, faults injected,
// divergences and convergence times as a table; writes
// benchmarks/results/soak.json. test/soak.test.ts runs a few cycles in CI.
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { sha256File, sparseFile } from './lib/data'
import { BIN, MiB, resultsPath } from './lib/env'
import { connectable, must, Proc, run, sleep, tidemark as tidemarkProc } from './lib/process'
import { percentile, writeResults } from './lib/report'

export const FAULT_KINDS = ['agent-kill', 'appliance-kill', 'both-kill', 'link-cut', 'disk-full'] as const
export type FaultKind = (typeof FAULT_KINDS)[number]

export interface SoakOptions {
  cycles: number
  seed: number
  faults: FaultKind[]
  volumeMiB: number
  /** Where the run's files go (a fresh temp dir if absent); removed at the end. */
  dir?: string
  /** Every fourth cycle runs ext4 + sqlite3 instead of fio (needs nbdfuse and mount). */
  ext4: boolean
  /** A fixed order of faults (cycle i gets sequence[(i - 1) % length]) instead of random picks. */
  sequence?: Array<FaultKind | 'none'>
  /** Called with one line per cycle. */
  progress?: (line: string) => void
}

export interface CycleResult {
  cycle: number
  workload: 'fio' | 'ext4'
  fault: FaultKind | 'none'
  /** What the workload wrote: fio's byte count, or the rows sqlite3 committed. */
  written: number
  convergeMs: number
  /** disk-full: the appliance reported the volume out of space (the fault really hit the journal). */
  bit?: boolean
  markAttempts: number
  divergent: boolean
  detail?: string
}

export interface SoakReport {
  cycles: number
  faults: Record<string, number>
  divergences: number
  results: CycleResult[]
  verify: { ok: boolean; problems: string[] }
  convergeMs: { p50: number; p99: number; max: number }
}

function tidemark(args: string[], timeoutMs?: number) {
  return run(process.execPath, [BIN, ...args], { timeoutMs })
}

/** Resolves when `check` is true, polling every `everyMs`; rejects after `ms`. */
async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms: number, everyMs = 25): Promise<void> {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(everyMs)
  }
}

/** xorshift32: the run is repeatable from its seed. */
class Rng {
  private x: number
  constructor(seed: number) {
    this.x = seed >>> 0 || 1
  }
  next(): number {
    this.x ^= this.x << 13
    this.x ^= this.x >>> 17
    this.x ^= this.x << 5
    return (this.x >>> 0) / 0x100000000
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1))
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]
  }
}

// ---- the link: a TCP proxy the harness can cut -----------------------------------------------

class CuttableLink {
  private readonly server = net.createServer((c) => this.accept(c))
  private readonly pairs = new Set<net.Socket>()
  private cutUntil = 0
  port = 0

  constructor(private readonly target: () => number) {}

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
  }

  /** Resets every connection and refuses new ones for `ms`. */
  cut(ms: number): void {
    this.cutUntil = Date.now() + ms
    for (const s of this.pairs) s.destroy()
  }

  private accept(c: net.Socket): void {
    if (Date.now() < this.cutUntil) {
      c.destroy()
      return
    }
    const up = net.connect(this.target(), '127.0.0.1')
    this.pairs.add(c).add(up)
    const close = () => {
      c.destroy()
      up.destroy()
      this.pairs.delete(c)
      this.pairs.delete(up)
    }
    c.on('error', close).on('close', close)
    up.on('error', close).on('close', close)
    c.pipe(up)
    up.pipe(c)
  }

  close(): Promise<void> {
    for (const s of this.pairs) s.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

// ---- the rig: appliance, agent, link ---------------------------------------------------------

class Rig {
  appliance!: Proc
  agent!: Proc
  appliancePort = 0
  readonly link: CuttableLink
  readonly data: string
  readonly state: string
  readonly sock: string
  readonly control: string
  readonly image: string

  constructor(readonly dir: string, data: string) {
    this.data = data
    this.state = path.join(dir, 'state')
    this.sock = path.join(dir, 'nbd.sock')
    this.control = path.join(dir, 'control.sock')
    this.image = path.join(dir, 'vol.img')
    this.link = new CuttableLink(() => this.appliancePort)
  }

  get address(): string {
    return `127.0.0.1:${this.appliancePort}`
  }

  async startAppliance(): Promise<void> {
    // Retention keeps the journal bounded over a thousand cycles: history older than the two newest
    // marks (each cycle takes one) is folded into the base image, small segments so it can be.
    const argv = ['appliance', '--data', this.data, '--listen', `127.0.0.1:${this.appliancePort}`, '--stats-interval', '0',
      '--segment-size', '8M', '--retain', 'vol=2marks', '--compact-every', '2']
    const p = tidemarkProc('appliance', argv)
    this.appliance = p
    await waitFor('the appliance listening', () => {
      if (!p.alive) throw new Error(`the appliance exited ${p.proc.exitCode}: ${p.err.trim()}`)
      const m = /listening on [^\s]+:(\d+)/.exec(p.err)
      if (m) this.appliancePort = Number(m[1])
      return m !== null
    }, 60_000)
  }

  async startAgent(): Promise<void> {
    const argv = ['agent', '--state', this.state, '--nbd', `unix:${this.sock}`, '--control', `unix:${this.control}`,
      '--volume', `vol=${this.image}`, '--appliance', `127.0.0.1:${this.link.port}`, '--stats-interval', '0']
    const p = tidemarkProc('agent', argv)
    this.agent = p
    await waitFor('the agent serving NBD', async () => {
      if (!p.alive) throw new Error(`the agent exited ${p.proc.exitCode}: ${p.err.trim()}`)
      return (await connectable(this.sock)) && (await connectable(this.control))
    }, 60_000)
  }

  async stop(): Promise<void> {
    await this.agent?.stop()
    await this.appliance?.stop()
    await this.link.close()
  }
}

// ---- workloads --------------------------------------------------------------------------------

interface Workload {
  /** Resolves with the bytes (fio) or rows (ext4) written when the workload has ended. */
  done: Promise<number>
  /** Ends it early (the fault killed its disk); resolves when every process it started is gone. */
  abort(): Promise<void>
}

function fioWorkload(rig: Rig, rng: Rng, seconds: number, sizeMiB: number): Workload {
  const uri = `nbd+unix:///vol?socket=${rig.sock}`
  // Mixed block sizes, trims and write-zeroes (fio's trim verb over NBD is TRIM; zero_buffers writes zeroes).
  const bs = rng.pick(['4k', '16k', '64k', '4k:64k'])
  const rw = rng.pick(['randwrite', 'randwrite', 'randtrimwrite', 'write'])
  const args = ['--name=soak', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bsrange=${bs.includes(':') ? bs.replace(':', '-') : `${bs}-${bs}`}`,
    // At most 60 MB/s: enough to push the tap behind, bounded so each cycle's journal growth is too.
    '--iodepth=8', `--size=${sizeMiB}M`, `--runtime=${seconds}`, '--time_based', '--thread', '--rate=60m', `--randseed=${rng.int(1, 1 << 30)}`,
    `--buffer_compress_percentage=${rng.int(0, 60)}`, '--refill_buffers', '--output-format=json']
  const p = new Proc('fio', 'fio', args)
  const done = p.exited.then(() => {
    const j = p.out.indexOf('{')
    if (j < 0) return 0
    try {
      const job = JSON.parse(p.out.slice(j)).jobs[0]
      return (job.write?.io_bytes ?? 0) + (job.trim?.io_bytes ?? 0)
    } catch {
      return 0
    }
  })
  return { done, abort: async () => void (await p.kill()) }
}

/** ext4 over nbdfuse + mount -o loop, with sqlite3 and file churn, for `seconds`. */
async function ext4Workload(rig: Rig, rng: Rng, seconds: number): Promise<Workload> {
  const mnt = path.join(rig.dir, 'fuse')
  const fsdir = path.join(rig.dir, 'fs')
  fs.mkdirSync(mnt, { recursive: true })
  fs.mkdirSync(fsdir, { recursive: true })
  const fuse = new Proc('nbdfuse', 'nbdfuse', [path.join(mnt, 'disk'), `nbd+unix:///vol?socket=${rig.sock}`])
  await waitFor('nbdfuse exposing the volume', () => fs.existsSync(path.join(mnt, 'disk')), 30_000)
  // A fresh file system each time: the fio cycles in between scribble over the volume.
  await must('mkfs.ext4', ['-F', '-q', path.join(mnt, 'disk')])
  await must('mount', ['-o', 'loop', path.join(mnt, 'disk'), fsdir])
  const db = path.join(fsdir, 'soak.db')
  await must('sqlite3', [db, 'PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, v BLOB);'])
  let stop = false
  let rows = 0
  const end = Date.now() + seconds * 1000
  const work = (async () => {
    for (let i = 0; !stop && Date.now() < end; i++) {
      await must('sqlite3', [db, `INSERT INTO t(v) SELECT randomblob(${rng.int(100, 8000)}) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3);`])
      rows += 3
      const f = path.join(fsdir, `f${i % 16}`)
      fs.writeFileSync(`${f}.tmp`, crypto.randomBytes(rng.int(1, 256) * 1024))
      const fd = fs.openSync(`${f}.tmp`, 'r')
      fs.fsyncSync(fd)
      fs.closeSync(fd)
      fs.renameSync(`${f}.tmp`, f)
      if (i % 5 === 4) fs.rmSync(path.join(fsdir, `f${(i + 7) % 16}`), { force: true })
    }
  })()
  let unmounted = false
  const unmount = async () => {
    if (unmounted) return
    unmounted = true
    await must('umount', [fsdir])
    await must('fusermount3', ['-u', mnt])
    await fuse.exited
  }
  const done = work.then(async () => {
    await unmount()
    return rows
  })
  return {
    done,
    abort: async () => {
      stop = true
      await work.catch(() => {})
      await unmount()
    },
  }
}

// ---- faults ------------------------------------------------------------------------------------

/** The appliance's data directory on a small loop-mounted ext4 of its own, so it can be filled. */
class SmallDisk {
  readonly mountpoint: string
  private readonly file: string
  private readonly filler: string
  constructor(dir: string, readonly mib: number) {
    this.file = path.join(dir, 'appliance-disk.img')
    this.mountpoint = path.join(dir, 'appliance-disk')
    this.filler = path.join(this.mountpoint, 'filler')
  }
  async mount(): Promise<void> {
    fs.mkdirSync(this.mountpoint, { recursive: true })
    sparseFile(this.file, this.mib * MiB)
    await must('mkfs.ext4', ['-F', '-q', '-m', '0', this.file])
    await must('mount', ['-o', 'loop', this.file, this.mountpoint])
  }
  /** Fills the file system to the last byte. */
  fill(): void {
    const fd = fs.openSync(this.filler, 'a')
    const chunk = Buffer.alloc(MiB)
    try {
      for (;;) fs.writeSync(fd, chunk)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e
      for (let n = 64 * 1024; n >= 512; n >>= 1) {
        try {
          for (;;) fs.writeSync(fd, chunk, 0, n)
        } catch {
          // the next smaller piece
        }
      }
    } finally {
      fs.closeSync(fd)
    }
  }
  free(): void {
    fs.rmSync(this.filler, { force: true })
  }
  async unmount(): Promise<void> {
    await run('umount', [this.mountpoint])
  }
}

// ---- convergence -------------------------------------------------------------------------------

/**
 * Takes a TimeMark once the agent accepts one and the appliance holds it
 * (retrying while the volume resyncs or the link is down), restores it and
 * compares it with the backing file.
 */
async function converge(rig: Rig, label: string, out: string, ms: number): Promise<{ divergent: boolean; attempts: number; detail?: string }> {
  const end = Date.now() + ms
  let attempts = 0
  let last = ''
  for (;;) {
    attempts++
    const r = await tidemark(['timemark', 'create', '--control', `unix:${rig.control}`, '--volume', 'vol', '--label', label, '--wait-timeout', '20', '--json'], 60_000)
    if (r.code === 0) break
    last = r.stderr.trim() || r.stdout.trim()
    if (Date.now() > end) return { divergent: true, attempts, detail: `no TimeMark within ${ms} ms: ${last}` }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * attempts)))
  }
  fs.rmSync(out, { force: true })
  const r = await tidemark(['restore', '--appliance', rig.address, '--volume', 'vol', '--timemark', label, '--out', out, '--json'])
  if (r.code !== 0) return { divergent: true, attempts, detail: `restore failed: ${r.stderr.trim()}` }
  const a = sha256File(out)
  const b = sha256File(rig.image)
  fs.rmSync(out, { force: true })
  return a === b ? { divergent: false, attempts } : { divergent: true, attempts, detail: `restored ${a.slice(0, 12)} != volume ${b.slice(0, 12)}` }
}

export async function soak(o: SoakOptions): Promise<SoakReport> {
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tidemark-soak-'))
  const rng = new Rng(o.seed)
  const disk = o.faults.includes('disk-full') ? new SmallDisk(dir, Math.max(512, o.volumeMiB * 8)) : null
  if (disk) await disk.mount()
  const rig = new Rig(dir, disk ? path.join(disk.mountpoint, 'data') : path.join(dir, 'data'))
  const results: CycleResult[] = []
  const faults: Record<string, number> = {}
  let verify = { ok: false, problems: ['not run'] }
  try {
    sparseFile(rig.image, o.volumeMiB * MiB)
    await rig.link.listen()
    await rig.startAppliance()
    await rig.startAgent()
    const noSpaceLines = () => rig.appliance.logs().filter((l) => /no space left on device/.test(String(l.msg))).length
    for (let cycle = 1; cycle <= o.cycles; cycle++) {
      const t0 = Date.now()
      const fault: FaultKind | 'none' = o.sequence ? o.sequence[(cycle - 1) % o.sequence.length] : o.faults.length ? rng.pick(o.faults) : 'none'
      // ext4 cannot lose its disk: a cycle that kills the agent runs fio.
      const useExt4 = o.ext4 && cycle % 4 === 0 && fault !== 'agent-kill' && fault !== 'both-kill'
      faults[fault] = (faults[fault] ?? 0) + 1
      const seconds = rng.int(1, 3)
      const w = useExt4
        ? await ext4Workload(rig, rng, seconds + 1)
        : fioWorkload(rig, rng, seconds, Math.min(o.volumeMiB, rng.pick([8, 16, o.volumeMiB])))
      await new Promise((r) => setTimeout(r, rng.int(100, 900))) // into the workload; the fault's moment is random
      if (fault === 'agent-kill' || fault === 'both-kill') {
        await rig.agent.kill()
        await w.abort()
      }
      if (fault === 'appliance-kill' || fault === 'both-kill') await rig.appliance.kill()
      if (fault === 'link-cut') rig.link.cut(rng.int(200, 2000))
      const spaceLines = noSpaceLines()
      if (fault === 'disk-full') disk!.fill()
      const written = await w.done.catch(() => 0)
      let bit: boolean | undefined
      if (fault === 'disk-full') {
        // Held until the appliance has met it. The workload may have been journaled whole before
        // the disk filled, or may still be on its way from a loaded agent: one more second of
        // writes after the fill always has to reach the full journal, and a busy machine gets
        // a minute to get it there.
        await fioWorkload(rig, rng, 1, 8).done.catch(() => 0)
        bit = await waitFor('the appliance out of space', () => noSpaceLines() > spaceLines, 60_000).then(() => true, () => false)
        disk!.free()
      }
      if (!rig.appliance.alive) await rig.startAppliance()
      if (!rig.agent.alive) await rig.startAgent()
      const c = await converge(rig, `soak-${cycle}`, path.join(dir, 'restored.img'), 180_000)
      const r: CycleResult = { cycle, workload: useExt4 ? 'ext4' : 'fio', fault, written, convergeMs: Date.now() - t0, bit, markAttempts: c.attempts, divergent: c.divergent, detail: c.detail }
      results.push(r)
      o.progress?.(`cycle ${cycle}/${o.cycles}: ${r.workload}, ${fault}${bit === false ? ' (the appliance never ran out of space)' : ''}, ${written} written, ${r.convergeMs} ms${c.divergent ? `, DIVERGED: ${c.detail}` : ''}`)
    }
    // --json prints { VOLUME: { ok, records, bytes, problems } } and exits 1 when a volume is not ok.
    const v = await tidemark(['journal', 'verify', '--appliance', rig.address, '--volume', 'vol', '--json'])
    try {
      const vol = (JSON.parse(v.stdout) as Record<string, { ok: boolean; problems: string[] }>).vol
      verify = { ok: vol.ok === true, problems: vol.problems }
    } catch {
      verify = { ok: false, problems: [v.stderr.trim() || `journal verify exited ${v.code}`] }
    }
  } finally {
    await rig.stop()
    if (disk) await disk.unmount()
    if (!o.dir) fs.rmSync(dir, { recursive: true, force: true })
  }
  const ms = results.map((r) => r.convergeMs)
  return {
    cycles: results.length,
    faults,
    divergences: results.filter((r) => r.divergent).length,
    results,
    verify,
    convergeMs: { p50: ms.length ? percentile(ms, 0.5) : 0, p99: ms.length ? percentile(ms, 0.99) : 0, max: Math.max(0, ...ms) },
  }
}

function parseCli(argv: string[]): SoakOptions {
  const o: SoakOptions = { cycles: 20, seed: Date.now() % 0x7fffffff, faults: [...FAULT_KINDS], volumeMiB: 64, ext4: true }
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1]
    switch (argv[i]) {
      case '--cycles': o.cycles = Number(v); i++; break
      case '--seed': o.seed = Number(v); i++; break
      case '--volume-mib': o.volumeMiB = Number(v); i++; break
      case '--faults': o.faults = v.split(',').filter(Boolean) as FaultKind[]; i++; break
      case '--no-ext4': o.ext4 = false; break
      default: throw new Error(`soak: unknown argument ${argv[i]}`)
    }
  }
  for (const f of o.faults) if (!FAULT_KINDS.includes(f)) throw new Error(`soak: unknown fault '${f}' (${FAULT_KINDS.join(', ')})`)
  if (!Number.isInteger(o.cycles) || o.cycles < 1) throw new Error('soak: --cycles must be a positive integer')
  return o
}

async function main(): Promise<void> {
  const o = parseCli(process.argv.slice(2))
  const started = Date.now()
  const rep = await soak({ ...o, progress: (l) => console.error(l) })
  const mins = ((Date.now() - started) / 60000).toFixed(1)
  console.log(`\n## Soak: ${rep.cycles} cycles, seed ${o.seed}, ${mins} min\n`)
  console.log('| fault | cycles |\n|---|---:|')
  for (const [k, n] of Object.entries(rep.faults)) console.log(`| ${k} | ${n} |`)
  console.log(`\n| divergences | journal verify | converge p50 ms | p99 ms | max ms |\n|---:|---|---:|---:|---:|`)
  console.log(`| ${rep.divergences} | ${rep.verify.ok ? 'clean' : rep.verify.problems.join('; ')} | ${rep.convergeMs.p50} | ${rep.convergeMs.p99} | ${rep.convergeMs.max} |`)
  writeResults(resultsPath('soak'), { date: new Date().toISOString(), options: o, minutes: Number(mins), ...rep, results: rep.results.filter((r) => r.divergent) })
  process.exitCode = rep.divergences === 0 && rep.verify.ok ? 0 : 1
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e)
    process.exitCode = 1
  })
}
