// Replication end to end, through real processes: `tidemark agent` (NBD on a
// unix socket) replicating to `tidemark appliance` (gRPC on 127.0.0.1), both
// started as the CLI starts them, in a temp dir.
//
//   npm run bench:replication
//
// Four parts, each against a peer measured in the same run:
//
// microscan  application bytes : changed-sector bytes : wire bytes, read from
//            the appliance (the Stats RPC behind `tidemark stats --json`) as
//            the difference of two snapshots around the measured phase, with
//            MicroScan and with --no-microscan (the peer) on the same workload:
//            (a) 32 KiB blocks of random data, each rewritten once by ONE
//                32 KiB NBD write (a small NBD client in this file) whose
//                contents equal the block except one random 512-byte sector;
//            (b) ext4 + sqlite: nbdfuse + mkfs.ext4 + mount -o loop, a table
//                created; measured: sqlite3 inserting rows in transactions,
//                sync, umount;
//            (c) fio randwrite 16 KiB over a region in two halves, each job
//                with its own --randseed (deterministic offsets and buffer
//                contents: --randrepeat=1 --refill_buffers
//                --scramble_buffers=0); measured: the same two jobs again,
//                the first half with its old seed (every rewrite unchanged),
//                the second with a new one (every rewrite new).
//            Volumes start zero-filled and sparse, and the snapshot is taken
//            after the initial copy is complete and the setup phase durable.
// rpo        fio randwrite 64 KiB at --rate (50 MB/s) for N seconds; the
//            agent's own estimate: every ~100 ms it samples (volume seq, time);
//            an ack covering the seq resolves the sample (lag = ack arrival -
//            sample time); p50/p99 from its 'final stats' line. Peer: the
//            latency of write + fdatasync of 1 MiB on the same disk (the
//            floor of anything acknowledged only once durable).
// ingest     S streams (agents x volumes each) of fio 1 MiB sequential writes
//            of incompressible data (--refill_buffers) through the taps into
//            one appliance; MB/s and records/s from the first write until the
//            appliance reports every captured seq durable (fsynced and
//            indexed), polled every 50 ms. Each tap's record buffer holds the
//            whole stream (the streaming path, not the resync path). Peer: the
//            same bytes written by S writers to plain files, 1 MiB writes,
//            each followed by fdatasync. CPU per process (main thread vs other
//            threads) says where the time goes.
// restore    a volume filled by fio (16 KiB random writes covering it once,
//            then 4 KiB random overwrites) replicated record by record; then
//            `tidemark restore --seq latest` timed end to end (process start
//            to exit, output fsynced), checked byte-exact against the volume.
//            Peer: `cp` of the volume file + `sync FILE` (fsync), alternated
//            with the restore; a plain read (cat > /dev/null) for reference.
//
// Environment: TIDEMARK_BENCH_DIR (os.tmpdir()), TIDEMARK_BENCH_OUT,
// TIDEMARK_BENCH_PARTS (microscan,rpo,ingest,restore),
// TIDEMARK_BENCH_MS_BLOCKS (2048 blocks of 32 KiB for (a)),
// TIDEMARK_BENCH_SQLITE_TXNS (20 transactions of 200 rows for (b)),
// TIDEMARK_BENCH_FIO_MB (128, the region of (c)),
// TIDEMARK_BENCH_RPO_SECONDS (20), TIDEMARK_BENCH_RPO_MBPS (50),
// TIDEMARK_BENCH_INGEST_MB (128 per stream), TIDEMARK_BENCH_INGEST_AGENTS (4),
// TIDEMARK_BENCH_INGEST_VOLUMES (2 per agent), TIDEMARK_BENCH_INGEST_ROUNDS (2),
// TIDEMARK_BENCH_RESTORE_GB (2), TIDEMARK_BENCH_RESTORE_ROUNDS (2),
// TIDEMARK_BENCH_APPLIANCE_NODE_FLAGS (e.g. '--cpu-prof --cpu-prof-dir=DIR'),
// TIDEMARK_BENCH_AGENT_NODE_FLAGS (the same for the agents).
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Agent, Appliance, applianceHasFullCopy } from './lib/cluster'
import { cpuSnap, cpuWindow, type CpuWindow } from './lib/cpu'
import { fillRandom, sparseFile } from './lib/data'
import { BENCH_DIR as BASE_DIR, BIN, envNumber, MiB, removeDir, resultsPath, ROOT, scratchDir, SECTOR } from './lib/env'
import { fio } from './lib/fio'
import { have, killAll, must, run, sleep, type Log } from './lib/process'
import { f0, f1, f2, machineInfo, median, percentile, writeResults } from './lib/report'
import { NbdClient } from '../client/nbd-client'

// ---------------------------------------------------------------- settings

const OUT = resultsPath('replication')
const ALL_PARTS = ['microscan', 'rpo', 'ingest', 'restore'] as const
type Part = (typeof ALL_PARTS)[number]
const PARTS: Part[] = (() => {
  const env = process.env.TIDEMARK_BENCH_PARTS
  if (!env) return [...ALL_PARTS]
  const ids = env.split(',').map((s) => s.trim()).filter(Boolean)
  for (const id of ids) if (!(ALL_PARTS as readonly string[]).includes(id)) throw new Error(`unknown part '${id}' (known: ${ALL_PARTS.join(', ')})`)
  return ALL_PARTS.filter((p) => ids.includes(p))
})()
const MS_BLOCKS = Math.floor(envNumber('TIDEMARK_BENCH_MS_BLOCKS', 2048))
const SQLITE_TXNS = Math.floor(envNumber('TIDEMARK_BENCH_SQLITE_TXNS', 20))
const FIO_MB = Math.floor(envNumber('TIDEMARK_BENCH_FIO_MB', 128))
const RPO_SECONDS = envNumber('TIDEMARK_BENCH_RPO_SECONDS', 20)
const RPO_MBPS = envNumber('TIDEMARK_BENCH_RPO_MBPS', 50)
const INGEST_MB = Math.floor(envNumber('TIDEMARK_BENCH_INGEST_MB', 128))
const INGEST_AGENTS = Math.floor(envNumber('TIDEMARK_BENCH_INGEST_AGENTS', 4))
const INGEST_VOLUMES = Math.floor(envNumber('TIDEMARK_BENCH_INGEST_VOLUMES', 2))
const INGEST_ROUNDS = Math.floor(envNumber('TIDEMARK_BENCH_INGEST_ROUNDS', 2))
const RESTORE_GB = envNumber('TIDEMARK_BENCH_RESTORE_GB', 2)
const RESTORE_ROUNDS = Math.floor(envNumber('TIDEMARK_BENCH_RESTORE_ROUNDS', 2))
if (FIO_MB % 2) throw new Error('TIDEMARK_BENCH_FIO_MB must be even (two halves)')

// Targets from issue 3.
const TARGET_WIRE_FRACTION = 1 / 40
const TARGET_RPO_P99_MS = 1000
const TARGET_INGEST_MBPS = 200
const TARGET_RESTORE_MBPS = 300

// ---------------------------------------------------------------- NBD writes (client/nbd-client.ts)

/** Writes (offset, data) pairs with up to `depth` requests in flight. */
async function nbdWriteAll(c: NbdClient, items: Iterable<[number, Buffer]>, depth = 8): Promise<void> {
  const inflight = new Set<Promise<void>>()
  for (const [off, data] of items) {
    const p: Promise<void> = c.write(off, data).then(() => {
      inflight.delete(p)
    })
    inflight.add(p)
    if (inflight.size >= depth) await Promise.race(inflight)
  }
  await Promise.all(inflight)
}

// ---------------------------------------------------------------- part 1: MicroScan

interface MsContext {
  dir: string
  agent: Agent
  volume: string
  volPath: string
  cleanups: Array<() => Promise<void>>
}

interface Workload {
  id: string
  title: string
  size: number
  /** what the measured phase writes that differs from what the volume held (null: not known by construction) */
  expectedChangedBytes: number | null
  available(): string | null
  setup(c: MsContext): Promise<void>
  measured(c: MsContext): Promise<void>
}

const BLOCK = 32 * 1024
/** (a)'s blocks as written by the setup phase */
let blocksA: Buffer | null = null

const workloadA: Workload = {
  id: 'a-32k-one-sector',
  title: `${MS_BLOCKS} × 32 KiB blocks of random data, each rewritten once with one random sector changed (one 32 KiB NBD write per block, 8 in flight)`,
  size: Math.max(64 * MiB, Math.ceil((MS_BLOCKS * BLOCK) / MiB) * MiB),
  expectedChangedBytes: MS_BLOCKS * SECTOR,
  available: () => null,
  async setup(c) {
    const data = Buffer.alloc(MS_BLOCKS * BLOCK)
    fillRandom(data, 0x5eed)
    blocksA = data
    const nbd = await NbdClient.connect({ unix: c.agent.sock, export: c.volume })
    try {
      await nbdWriteAll(nbd, (function* () {
        for (let i = 0; i < MS_BLOCKS; i++) yield [i * BLOCK, data.subarray(i * BLOCK, (i + 1) * BLOCK)] as [number, Buffer]
      })())
    } finally {
      await nbd.close()
    }
  },
  async measured(c) {
    const data = blocksA!
    const fresh = Buffer.alloc(MS_BLOCKS * SECTOR)
    fillRandom(fresh, 0xc0ffee)
    let x = 12345
    const nbd = await NbdClient.connect({ unix: c.agent.sock, export: c.volume })
    try {
      await nbdWriteAll(nbd, (function* () {
        for (let i = 0; i < MS_BLOCKS; i++) {
          const block = Buffer.from(data.subarray(i * BLOCK, (i + 1) * BLOCK))
          x = (Math.imul(x, 1103515245) + 12345) >>> 0
          const s = (x >>> 8) % (BLOCK / SECTOR)
          fresh.copy(block, s * SECTOR, i * SECTOR, (i + 1) * SECTOR)
          if (block.equals(data.subarray(i * BLOCK, (i + 1) * BLOCK))) throw new Error('the changed sector did not change')
          yield [i * BLOCK, block] as [number, Buffer]
        }
      })())
    } finally {
      await nbd.close()
    }
  },
}

const SQLITE_ROWS = 200

const workloadB: Workload = {
  id: 'b-ext4-sqlite',
  title: `ext4 (mkfs.ext4, mount -o loop over nbdfuse) + sqlite3: ${SQLITE_TXNS} transactions of ${SQLITE_ROWS} inserted rows (~250 B of random hex each), sync, umount`,
  size: 128 * MiB,
  expectedChangedBytes: null,
  available: () => {
    const missing = ['nbdfuse', 'fusermount3', 'mkfs.ext4', 'mount', 'umount', 'sqlite3'].filter((c) => !have(c))
    if (missing.length) return `missing ${missing.join(', ')}`
    if (process.getuid?.() !== 0) return 'mount -o loop needs root'
    return null
  },
  async setup(c) {
    const mnt = path.join(c.dir, 'fuse')
    const fsdir = path.join(c.dir, 'fs')
    fs.mkdirSync(mnt)
    fs.mkdirSync(fsdir)
    const fuse = spawn('nbdfuse', [path.join(mnt, 'disk'), c.agent.uri(c.volume)], { stdio: 'ignore' })
    const fuseExited = new Promise((r) => fuse.once('exit', r))
    let fuseUp = true
    let mounted = false
    c.cleanups.push(async () => {
      if (mounted) await run('umount', [fsdir])
      if (fuseUp) await run('fusermount3', ['-u', mnt])
      fuse.kill()
    })
    for (let i = 0; !fs.existsSync(path.join(mnt, 'disk')); i++) {
      if (i > 400) throw new Error('nbdfuse did not expose the volume')
      await sleep(25)
    }
    await must('mkfs.ext4', ['-F', '-q', path.join(mnt, 'disk')])
    await must('mount', ['-o', 'loop', path.join(mnt, 'disk'), fsdir])
    mounted = true
    await must('sqlite3', [path.join(fsdir, 'app.db'), 'create table t(id integer primary key, v text);'])
    await must('sync', [])
    const state = c as MsContext & { ext4?: { unmount: () => Promise<void> } }
    state.ext4 = {
      unmount: async () => {
        await must('umount', [fsdir])
        mounted = false
        await must('fusermount3', ['-u', mnt])
        fuseUp = false
        await fuseExited
      },
    }
  },
  async measured(c) {
    const db = path.join(c.dir, 'fs', 'app.db')
    for (let txn = 0; txn < SQLITE_TXNS; txn++) {
      const sql = ['begin;']
      // 230 random hex characters per row: text LZ4 cannot shrink much (as a row of real data would compress little better)
      for (let i = 0; i < SQLITE_ROWS; i++) sql.push(`insert into t(v) values('txn ${txn} row ${i} ' || hex(randomblob(115)));`)
      sql.push('commit;')
      await must('sqlite3', [db], { input: sql.join('\n') })
    }
    const count = (await must('sqlite3', [db, 'select count(*) from t;'])).trim()
    if (count !== String(SQLITE_TXNS * SQLITE_ROWS)) throw new Error(`sqlite holds ${count} rows`)
    await must('sync', [])
    await (c as MsContext & { ext4?: { unmount: () => Promise<void> } }).ext4!.unmount()
  },
}

function fioHalves(c: MsContext, seedA: number, seedB: number): string[] {
  const half = FIO_MB / 2
  const common = ['--ioengine=nbd', `--uri=${c.agent.uri(c.volume)}`, '--rw=randwrite', '--bs=16k', '--iodepth=1', '--randrepeat=1', '--refill_buffers', '--scramble_buffers=0']
  return [
    '--name=halfA', ...common, '--offset=0', `--size=${half}M`, `--randseed=${seedA}`,
    '--name=halfB', ...common, `--offset=${half}M`, `--size=${half}M`, `--randseed=${seedB}`,
  ]
}

const workloadC: Workload = {
  id: 'c-fio-half-unchanged',
  title:
    `fio randwrite 16 KiB over ${FIO_MB} MiB in two halves (seeds 11, 22); measured: the same jobs again with seeds 11 (rewrites unchanged) and 33 (rewrites new), ` +
    'deterministic buffers (--randrepeat=1 --refill_buffers --scramble_buffers=0), iodepth 1',
  size: FIO_MB * MiB,
  expectedChangedBytes: (FIO_MB / 2) * MiB,
  available: () => (have('fio') ? null : 'missing fio'),
  async setup(c) {
    await fio(fioHalves(c, 11, 22), c.dir)
  },
  async measured(c) {
    await fio(fioHalves(c, 11, 33), c.dir)
  },
}

const WORKLOADS = [workloadA, workloadB, workloadC]

interface MsRun {
  workload: string
  microscan: boolean
  appBytes: number
  changedBytes: number
  wireBytes: number
  records: number
  batches: number
  journalBytes: number
  expectedChangedBytes: number | null
  /** non-zero: the tap fell behind during the measured phase and resynchronized (counts then include RESYNC sectors) */
  droppedRecords: number
  resyncRecords: number
  measuredSeconds: number
  cpu: CpuWindow
}

async function microscanRun(w: Workload, microscan: boolean): Promise<MsRun> {
  const dir = scratchDir(`tidemark-bench-ms-${w.id}-`)
  const c: MsContext = { dir, agent: null as unknown as Agent, volume: 'vol', volPath: path.join(dir, 'vol.img'), cleanups: [] }
  let app: Appliance | null = null
  try {
    sparseFile(c.volPath, w.size)
    app = await Appliance.start(path.join(dir, 'data'))
    // The record buffer holds a whole phase: the measured phase is the streaming path, never a resync.
    const buffer = ['--buffer', `${Math.ceil(w.size / MiB) + 64}M`]
    c.agent = await Agent.start(dir, 'ms', { vol: c.volPath }, app.address, microscan ? buffer : [...buffer, '--no-microscan'])
    await c.agent.caughtUp()
    await applianceHasFullCopy(app, ['vol'])
    await w.setup(c)
    const [before] = await c.agent.caughtUp()
    const s0 = await app.volume('vol')
    const roles = { agent: [c.agent.pid], appliance: [app.pid] }
    const cpu0 = cpuSnap([c.agent.pid, app.pid])
    await w.measured(c)
    const [after] = await c.agent.caughtUp()
    const cpu1 = cpuSnap([c.agent.pid, app.pid])
    const s1 = await app.volume('vol')
    const d = (k: string): number => Number(s1[k]) - Number(s0[k])
    for (const f of c.cleanups.splice(0)) await f()
    await c.agent.stop()
    await app.stop()
    return {
      workload: w.id,
      microscan,
      appBytes: d('appBytes'),
      changedBytes: d('changedBytes'),
      wireBytes: d('wireBytes'),
      records: d('records'),
      batches: d('batches'),
      journalBytes: d('journalBytes'),
      expectedChangedBytes: w.expectedChangedBytes,
      droppedRecords: after.droppedRecords - before.droppedRecords,
      resyncRecords: after.resyncRecords - before.resyncRecords,
      measuredSeconds: (cpu1.at - cpu0.at) / 1000,
      cpu: cpuWindow(cpu0, cpu1, roles),
    }
  } finally {
    for (const f of c.cleanups) await f().catch(() => undefined)
    if (c.agent?.alive) await c.agent.stop().catch(() => undefined)
    if (app?.alive) await app.stop().catch(() => undefined)
    removeDir(dir)
  }
}

// ---------------------------------------------------------------- part 2: RPO lag

interface RpoResult {
  seconds: number
  targetMBps: number
  fioMBps: number
  fioWrites: number
  fioP99Us: number
  rpoP50Ms: number | null
  rpoP99Ms: number | null
  rpoSamples: number
  /** the largest instantaneous lag the agent reported in a 'stats' line during the run */
  maxRpoLagMs: number
  droppedRecords: number
  resyncRecords: number
  waitBudgetMs: number
  waitDrainMs: number
  appliance: { appBytes: number; wireBytes: number; records: number; batches: number }
  cpu: CpuWindow
  peer: { what: string; writes: number; p50Ms: number; p99Ms: number; maxMs: number }
}

const RPO_VOLUME_BYTES = 1024 * MiB

async function fdatasyncLatency(dir: string, seconds: number, mbps: number): Promise<RpoResult['peer']> {
  // 1 MiB writes at the churn rate, each followed by fdatasync, appended to one file.
  const file = path.join(dir, 'peer-fdatasync')
  const buf = crypto.randomBytes(MiB)
  const fh = await fs.promises.open(file, 'w')
  const every = 1000 / (mbps / (MiB / 1e6))
  const lat: number[] = []
  const t0 = performance.now()
  try {
    for (let i = 0; performance.now() - t0 < seconds * 1000; i++) {
      const due = t0 + i * every
      const wait = due - performance.now()
      if (wait > 0) await sleep(wait)
      const a = performance.now()
      await fh.write(buf, 0, MiB, i * MiB)
      await fh.datasync()
      lat.push(performance.now() - a)
    }
  } finally {
    await fh.close()
    fs.rmSync(file, { force: true })
  }
  return { what: `write + fdatasync of 1 MiB at ${mbps} MB/s, same disk`, writes: lat.length, p50Ms: percentile(lat, 0.5), p99Ms: percentile(lat, 0.99), maxMs: Math.max(...lat) }
}

async function rpoRun(): Promise<RpoResult> {
  const dir = scratchDir('tidemark-bench-rpo-')
  let app: Appliance | null = null
  let agent: Agent | null = null
  try {
    const vol = path.join(dir, 'vol.img')
    sparseFile(vol, RPO_VOLUME_BYTES)
    app = await Appliance.start(path.join(dir, 'data'))
    // First start: the initial copy (of a sparse volume: nothing to send). Then a
    // clean restart, so the agent's lag distribution holds only the fio run.
    agent = await Agent.start(dir, 'rpo', { vol }, app.address)
    await agent.caughtUp()
    await applianceHasFullCopy(app, ['vol'])
    await agent.stop()
    agent = await Agent.start(dir, 'rpo', { vol }, app.address, ['--stats-interval', '1'])
    await agent.waitLog((l) => l.msg === 'connected to the appliance', 'a connection to the appliance')
    await agent.caughtUp()
    const s0 = await app.volume('vol')
    const roles = { agent: [agent.pid], appliance: [app.pid] }
    const cpu0 = cpuSnap([agent.pid, app.pid])
    const tStart = Date.now()
    const j = await fio(
      [
        '--name=churn',
        '--ioengine=nbd',
        `--uri=${agent.uri('vol')}`,
        '--rw=randwrite',
        '--bs=64k',
        '--iodepth=4',
        `--rate=${RPO_MBPS}m`,
        '--refill_buffers',
        '--time_based',
        `--runtime=${RPO_SECONDS}`,
      ],
      dir
    )
    await agent.caughtUp()
    const cpu1 = cpuSnap([agent.pid, app.pid])
    const s1 = await app.volume('vol')
    const during = agent.logs().filter((l) => l.msg === 'stats' && l.time >= tStart)
    await agent.stop()
    const fin = agent.finalStats().find((l) => l.volume === 'vol')
    if (!fin) throw new Error(`no final stats from the agent:\n${agent.out.slice(-4000)}`)
    await app.stop()
    const w = j.jobs[0].write
    const peer = await fdatasyncLatency(dir, Math.min(10, RPO_SECONDS), RPO_MBPS)
    return {
      seconds: RPO_SECONDS,
      targetMBps: RPO_MBPS,
      fioMBps: w.bw_bytes / 1e6,
      fioWrites: w.total_ios,
      fioP99Us: (w.clat_ns?.percentile?.['99.000000'] ?? NaN) / 1000,
      rpoP50Ms: fin.rpoP50Ms ?? null,
      rpoP99Ms: fin.rpoP99Ms ?? null,
      rpoSamples: fin.rpoSamples ?? 0,
      maxRpoLagMs: Math.max(0, ...during.map((l) => Number(l.rpoLagMs) || 0)),
      droppedRecords: fin.droppedRecords,
      resyncRecords: fin.resyncRecords,
      waitBudgetMs: fin.waitBudgetMs,
      waitDrainMs: fin.waitDrainMs,
      appliance: {
        appBytes: s1.appBytes - s0.appBytes,
        wireBytes: s1.wireBytes - s0.wireBytes,
        records: s1.records - s0.records,
        batches: s1.batches - s0.batches,
      },
      cpu: cpuWindow(cpu0, cpu1, roles),
      peer,
    }
  } finally {
    if (agent?.alive) await agent.stop().catch(() => undefined)
    if (app?.alive) await app.stop().catch(() => undefined)
    removeDir(dir)
  }
}

// ---------------------------------------------------------------- part 3: ingest

interface IngestRun {
  round: number
  streams: number
  bytes: number
  appBytes: number
  wireBytes: number
  records: number
  batches: number
  journalBytes: number
  seconds: number
  fioSeconds: number
  mbPerSec: number
  recordsPerSec: number
  droppedRecords: number
  resyncRecords: number
  waitBudgetMs: number
  waitDrainMs: number
  cpu: CpuWindow
}

interface IngestPeer {
  round: number
  bytes: number
  seconds: number
  mbPerSec: number
  cpu: CpuWindow
}

async function ingestRun(round: number): Promise<IngestRun> {
  const dir = scratchDir('tidemark-bench-ingest-')
  let app: Appliance | null = null
  const agents: Agent[] = []
  let poller: { stop: boolean; history: Array<{ t: number; seqs: Map<string, number> }>; done: Promise<void> } | null = null
  try {
    app = await Appliance.start(path.join(dir, 'data'))
    const size = (INGEST_MB + 64) * MiB
    for (let a = 0; a < INGEST_AGENTS; a++) {
      const vols: Record<string, string> = {}
      for (let v = 0; v < INGEST_VOLUMES; v++) {
        const p = path.join(dir, `a${a}v${v}.img`)
        sparseFile(p, size)
        vols[`a${a}v${v}`] = p
      }
      // The record buffer holds the whole stream: every write takes the streaming path.
      agents.push(await Agent.start(dir, `a${a}`, vols, app.address, ['--buffer', `${INGEST_MB + 32}M`]))
    }
    const names = agents.flatMap((a) => a.volumes)
    // The initial copy's RESYNC records are counted by the tap too: subtract them.
    const before: Log[] = []
    for (const a of agents) before.push(...(await a.caughtUp()))
    await applianceHasFullCopy(app, names)
    const s0 = await app.stats()
    const pids = [app.pid, ...agents.map((a) => a.pid)]
    const roles = { agents: agents.map((a) => a.pid), appliance: [app.pid] }
    // Poll the appliance's durable seqs every 50 ms from the start.
    const p = { stop: false, history: [] as Array<{ t: number; seqs: Map<string, number> }>, done: Promise.resolve() }
    poller = p
    const appRef = app
    p.done = (async () => {
      while (!p.stop) {
        const s = await appRef.stats()
        p.history.push({ t: performance.now(), seqs: new Map(s.volumes.map((v) => [v.name as string, v.durableSeq as number])) })
        await sleep(50)
      }
    })()
    const cpu0 = cpuSnap(pids)
    const args: string[] = []
    for (const a of agents) {
      for (const v of a.volumes) {
        args.push(`--name=${v}`, '--ioengine=nbd', `--uri=${a.uri(v)}`, '--rw=write', '--bs=1M', '--iodepth=4', `--size=${INGEST_MB}M`, '--refill_buffers')
      }
    }
    await fio(args, dir)
    const fioEnd = performance.now()
    const fioEndEpoch = Date.now()
    // The last seq each volume captured (final once fio has exited).
    const targets = new Map<string, number>()
    for (const a of agents) for (const v of a.volumes) targets.set(v, (await a.statsLine(v, fioEndEpoch, () => true, 'a stats line')).lastSeq)
    let end: number | null = null
    const deadline = Date.now() + 600_000
    while (end === null) {
      const hit = p.history.find((h) => [...targets].every(([v, seq]) => (h.seqs.get(v) ?? 0) >= seq))
      if (hit) end = hit.t
      else if (Date.now() > deadline) throw new Error('the appliance did not catch up within 10 minutes')
      else await sleep(20)
    }
    const cpu1 = cpuSnap(pids)
    p.stop = true
    await p.done
    const s1 = await app.stats()
    const sum = (s: { volumes: Log[] }, k: string): number => s.volumes.filter((v) => names.includes(v.name)).reduce((x, v) => x + Number(v[k]), 0)
    const d = (k: string): number => sum(s1, k) - sum(s0, k)
    const finals: Log[] = []
    for (const a of agents) {
      await a.stop()
      finals.push(...a.finalStats())
    }
    await app.stop()
    const seconds = (end - cpu0.at) / 1000
    const bytes = names.length * INGEST_MB * MiB
    return {
      round,
      streams: names.length,
      bytes,
      appBytes: d('appBytes'),
      wireBytes: d('wireBytes'),
      records: d('records'),
      batches: d('batches'),
      journalBytes: d('journalBytes'),
      seconds,
      fioSeconds: (fioEnd - cpu0.at) / 1000,
      mbPerSec: bytes / 1e6 / seconds,
      recordsPerSec: d('records') / seconds,
      droppedRecords: finals.reduce((x, l) => x + l.droppedRecords, 0) - before.reduce((x, l) => x + l.droppedRecords, 0),
      resyncRecords: finals.reduce((x, l) => x + l.resyncRecords, 0) - before.reduce((x, l) => x + l.resyncRecords, 0),
      waitBudgetMs: finals.reduce((x, l) => x + l.waitBudgetMs, 0) - before.reduce((x, l) => x + l.waitBudgetMs, 0),
      waitDrainMs: finals.reduce((x, l) => x + l.waitDrainMs, 0) - before.reduce((x, l) => x + l.waitDrainMs, 0),
      cpu: cpuWindow(cpu0, cpu1, roles),
    }
  } finally {
    if (poller) {
      poller.stop = true
      await poller.done.catch(() => undefined)
    }
    for (const a of agents) if (a.alive) await a.stop().catch(() => undefined)
    if (app?.alive) await app.stop().catch(() => undefined)
    removeDir(dir)
  }
}

async function ingestPeer(round: number): Promise<IngestPeer> {
  const dir = scratchDir('tidemark-bench-ingest-peer-')
  const streams = INGEST_AGENTS * INGEST_VOLUMES
  const pool = crypto.randomBytes(64 * MiB)
  try {
    const cpu0 = cpuSnap([])
    await Promise.all(
      Array.from({ length: streams }, async (_, i) => {
        const fh = await fs.promises.open(path.join(dir, `peer-${i}`), 'w')
        for (let b = 0; b < INGEST_MB; b++) {
          await fh.write(pool, ((b * 7 + i) % 63) * MiB, MiB, b * MiB)
          await fh.datasync()
        }
        await fh.close()
      })
    )
    const cpu1 = cpuSnap([])
    const seconds = (cpu1.at - cpu0.at) / 1000
    const bytes = streams * INGEST_MB * MiB
    return { round, bytes, seconds, mbPerSec: bytes / 1e6 / seconds, cpu: cpuWindow(cpu0, cpu1, {}) }
  } finally {
    removeDir(dir)
    spawnSync('sync')
  }
}

// ---------------------------------------------------------------- part 4: restore

interface RestoreSetup {
  volumeBytes: number
  records: number
  journalBytes: number
  appBytes: number
  wireBytes: number
  fillSeconds: number
  droppedRecords: number
  resyncRecords: number
}

interface RestoreRun {
  round: number
  what: 'tidemark restore' | 'cp + fsync' | 'plain read'
  seconds: number
  mbPerSec: number
  exact: boolean | null
  cpu: CpuWindow
}

async function restorePart(): Promise<{ setup: RestoreSetup; runs: RestoreRun[] }> {
  const dir = scratchDir('tidemark-bench-restore-')
  let app: Appliance | null = null
  let agent: Agent | null = null
  try {
    const size = Math.round(RESTORE_GB * 1024) * MiB
    const vol = path.join(dir, 'vol.img')
    sparseFile(vol, size)
    app = await Appliance.start(path.join(dir, 'data'))
    // The buffer holds the whole fill, so every write becomes its own journal record.
    agent = await Agent.start(dir, 'r', { vol }, app.address, ['--buffer', `${Math.ceil(size / MiB) + 256}M`])
    const [before] = await agent.caughtUp()
    await applianceHasFullCopy(app, ['vol'])
    const t0 = performance.now()
    // Every 16 KiB block once, in random order; then 4 KiB random overwrites.
    await fio(['--name=fill', '--ioengine=nbd', `--uri=${agent.uri('vol')}`, '--rw=randwrite', '--bs=16k', '--iodepth=8', '--refill_buffers', `--size=${size}`], dir)
    const overwrites = Math.max(1000, Math.round(20000 * RESTORE_GB / 2))
    await fio(['--name=over', '--ioengine=nbd', `--uri=${agent.uri('vol')}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--refill_buffers', '--norandommap', `--number_ios=${overwrites}`, `--size=${size}`], dir)
    await agent.caughtUp(Date.now(), 600_000)
    const fillSeconds = (performance.now() - t0) / 1000
    await agent.stop()
    const fin = agent.finalStats().find((l) => l.volume === 'vol')!
    const v = await app.volume('vol')
    const setup: RestoreSetup = {
      volumeBytes: size,
      records: v.records,
      journalBytes: v.journalBytes,
      appBytes: v.appBytes,
      wireBytes: v.wireBytes,
      fillSeconds,
      droppedRecords: fin.droppedRecords - before.droppedRecords,
      resyncRecords: fin.resyncRecords - before.resyncRecords,
    }
    spawnSync('sync')
    const runs: RestoreRun[] = []
    const out = path.join(dir, 'out.img')
    const kinds: Array<RestoreRun['what']> = ['tidemark restore', 'cp + fsync']
    // A plain read once first (it also makes sure the volume file is in the page cache, as the journal is).
    {
      const c0 = cpuSnap([app.pid])
      const t = performance.now()
      await must('sh', ['-c', `cat '${vol}' > /dev/null`])
      const secs = (performance.now() - t) / 1000
      runs.push({ round: 0, what: 'plain read', seconds: secs, mbPerSec: size / 1e6 / secs, exact: null, cpu: cpuWindow(c0, cpuSnap([app.pid]), { appliance: [app.pid] }) })
    }
    for (let round = 1; round <= RESTORE_ROUNDS; round++) {
      const order = round % 2 ? kinds : [...kinds].reverse()
      for (const what of order) {
        fs.rmSync(out, { force: true })
        spawnSync('sync')
        const c0 = cpuSnap([app.pid])
        const t = performance.now()
        if (what === 'tidemark restore') {
          const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', 'latest', '--out', out, '--json'])
          if (r.code !== 0) throw new Error(`restore exited ${r.code}: ${r.stderr}`)
        } else {
          await must('cp', ['--sparse=never', vol, out])
          await must('sync', [out])
        }
        const secs = (performance.now() - t) / 1000
        const c1 = cpuSnap([app.pid])
        const exact = (await run('cmp', ['-s', vol, out])).code === 0
        if (!exact) throw new Error(`${what}: the output differs from the volume`)
        runs.push({ round, what, seconds: secs, mbPerSec: size / 1e6 / secs, exact, cpu: cpuWindow(c0, c1, { appliance: [app.pid] }) })
        process.stderr.write(`restore round ${round} ${what}: ${(size / 1e6 / secs).toFixed(0)} MB/s (${secs.toFixed(1)} s)\n`)
      }
    }
    fs.rmSync(out, { force: true })
    await app.stop()
    return { setup, runs }
  } finally {
    if (agent?.alive) await agent.stop().catch(() => undefined)
    if (app?.alive) await app.stop().catch(() => undefined)
    removeDir(dir)
    spawnSync('sync')
  }
}

// ---------------------------------------------------------------- report

const mb = (x: number): string => (x / 1e6).toFixed(2)
const yes = (b: boolean): string => (b ? 'yes' : 'no')

function cpuCell(c: CpuWindow): string {
  return `${f2(c.otherCores)}${c.others.length ? ` (${c.others.map((o) => `${o.comm} ${o.cores.toFixed(2)}`).join(', ')})` : ''}`
}

interface Results {
  microscan: { runs: MsRun[]; skipped: Record<string, string> } | null
  rpo: RpoResult | null
  ingest: { runs: IngestRun[]; peers: IngestPeer[] } | null
  restore: { setup: RestoreSetup; runs: RestoreRun[] } | null
}

function markdown(r: Results, info: Record<string, any>): string {
  const L: string[] = []
  const rev = typeof info.tidemark === 'object' ? `${info.tidemark.commit.slice(0, 7)}${info.tidemark.modified ? ' (modified)' : ''}` : 'unknown'
  L.push('## Replication end to end: agent → appliance over loopback')
  L.push('')
  L.push(`${info.date} · ${info.cpus} × ${info.cpuModel} · ${info.kernel} · Node ${info.node} · ${info.fio} · ${info.benchFs} (${info.benchDir}) · tidemark ${rev}`)
  L.push('')
  L.push('"other CPU" (cores) is the machine\'s busy time that was neither tidemark, the tools this benchmark ran, nor the benchmark itself: above ~0.2 the run was disturbed.')
  if (r.microscan) {
    L.push('')
    L.push('### MicroScan: application : changed-sector : wire bytes (appliance counters, measured phase only)')
    L.push('')
    L.push(`Peer: the same workload with \`--no-microscan\` (every captured sector sent). Target for (a): wire ≤ 1/40 of application bytes.`)
    L.push('')
    L.push('| workload | MicroScan | app MB | changed MB | wire MB | app : changed : wire | wire / app | wire vs --no-microscan | truly changed MB | records | resync records | meets target | other CPU |')
    L.push('|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|:---:|---|')
    for (const x of r.microscan.runs) {
      const peer = r.microscan.runs.find((y) => y.workload === x.workload && !y.microscan)
      const ratio = x.changedBytes > 0 && x.wireBytes > 0 ? `1 : ${(x.changedBytes / x.appBytes).toFixed(3)} : ${(x.wireBytes / x.appBytes).toFixed(3)}` : 'n/a'
      const frac = x.wireBytes / x.appBytes
      L.push(
        `| ${x.workload} | ${x.microscan ? 'on' : 'off'} | ${mb(x.appBytes)} | ${mb(x.changedBytes)} | ${mb(x.wireBytes)} | ${ratio} | 1/${f0(1 / frac)} | ` +
          `${peer && x.microscan ? f2(x.wireBytes / peer.wireBytes) : '—'} | ${x.expectedChangedBytes === null ? 'unknown' : mb(x.expectedChangedBytes)} | ${f0(x.records)} | ${x.resyncRecords} | ` +
          `${x.workload.startsWith('a-') && x.microscan ? yes(frac <= TARGET_WIRE_FRACTION) : '—'} | ${cpuCell(x.cpu)} |`
      )
    }
    for (const [k, why] of Object.entries(r.microscan.skipped)) L.push(`| ${k} | skipped: ${why} | | | | | | | | | | | |`)
  }
  if (r.rpo) {
    const x = r.rpo
    L.push('')
    L.push(`### RPO lag: write acknowledged → durable at the appliance, fio randwrite 64 KiB at ${x.targetMBps} MB/s for ${x.seconds} s`)
    L.push('')
    L.push('Agent\'s estimate (samples of (volume seq, time) every ~100 ms, resolved by the ack that covers them). Peer: write + fdatasync of 1 MiB on the same disk at the same rate, the floor of any durable acknowledgement. Target: p99 ≤ 1000 ms.')
    L.push('')
    L.push('| churn achieved MB/s | lag p50 ms | lag p99 ms | samples | max instantaneous lag ms | fdatasync p50 / p99 ms (peer) | p99 / peer p99 | dropped / resync records | meets target | agent / appliance CPU | agent waited on flow control | other CPU |')
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---|')
    L.push(
      `| ${f1(x.fioMBps)} | ${f0(x.rpoP50Ms)} | ${f0(x.rpoP99Ms)} | ${x.rpoSamples} | ${f0(x.maxRpoLagMs)} | ${f1(x.peer.p50Ms)} / ${f1(x.peer.p99Ms)} | ${x.rpoP99Ms === null ? 'n/a' : f1(x.rpoP99Ms / x.peer.p99Ms)} | ` +
        `${x.droppedRecords} / ${x.resyncRecords} | ${x.rpoP99Ms === null ? 'n/a' : yes(x.rpoP99Ms <= TARGET_RPO_P99_MS)} | ${f2(x.cpu.roles.agent.cores)} / ${f2(x.cpu.roles.appliance.cores)} | ${f0((100 * x.waitDrainMs) / 1000 / x.cpu.seconds)} % | ${cpuCell(x.cpu)} |`
    )
  }
  if (r.ingest) {
    const { runs, peers } = r.ingest
    const s = runs[0]?.streams ?? 0
    L.push('')
    L.push(`### Ingest: ${s} streams (${INGEST_AGENTS} agents × ${INGEST_VOLUMES} volumes) of incompressible 1 MiB writes, ${INGEST_MB} MiB each, into one appliance (fsync + index)`)
    L.push('')
    L.push(`From fio's first write until the appliance reports every captured seq durable. Peer: ${s} writers of the same bytes to plain files, 1 MiB write + fdatasync each. Medians over ${runs.length} alternated round(s) [min–max]. Target ≥ ${TARGET_INGEST_MBPS} MB/s.`)
    L.push('')
    const mbps = runs.map((x) => x.mbPerSec)
    const pm = peers.map((x) => x.mbPerSec)
    const ratios = runs.map((x) => x.mbPerSec / (peers.find((p) => p.round === x.round)?.mbPerSec ?? NaN))
    L.push('| measure | tidemark | peer | ratio |')
    L.push('|---|---:|---:|---:|')
    L.push(`| MB/s | ${f0(median(mbps))} [${f0(Math.min(...mbps))}–${f0(Math.max(...mbps))}] | ${f0(median(pm))} [${f0(Math.min(...pm))}–${f0(Math.max(...pm))}] | ${f2(median(ratios))} |`)
    L.push(`| records/s (journal records) | ${f0(median(runs.map((x) => x.recordsPerSec)))} | | |`)
    L.push(`| batches/s | ${f0(median(runs.map((x) => x.batches / x.seconds)))} | | |`)
    L.push(`| seconds (fio's writes done after) | ${f1(median(runs.map((x) => x.seconds)))} (${f1(median(runs.map((x) => x.fioSeconds)))}) | ${f1(median(peers.map((x) => x.seconds)))} | |`)
    L.push(`| wire / app bytes | ${f2(median(runs.map((x) => x.wireBytes / x.appBytes)))} | | |`)
    L.push(`| share of each stream's time its agent waited on gRPC flow control | ${f0(100 * median(runs.map((x) => x.waitDrainMs / 1000 / (x.streams * x.seconds))))} % | | |`)
    L.push(`| dropped / resync records (all rounds) | ${runs.reduce((a, x) => a + x.droppedRecords, 0)} / ${runs.reduce((a, x) => a + x.resyncRecords, 0)} | | |`)
    const cpg = median(runs.map((x) => (x.cpu.roles.agents.cpuSeconds + x.cpu.roles.appliance.cpuSeconds) / (x.bytes / 1e9)))
    L.push(`| tidemark CPU-s per GB (agents + appliance) → CPU ceiling on ${info.cpus} cores | ${f1(cpg)} → ${f0((1000 * info.cpus) / cpg)} MB/s | | |`)
    L.push(`| meets target | ${yes(median(mbps) >= TARGET_INGEST_MBPS)} | | |`)
    L.push('')
    L.push('Where the time goes (cores, medians over rounds; "main" is the node main thread = JavaScript, the rest is libuv\'s pool (file writes, fdatasync), V8 helper threads, and in the agents the native NBD/tap threads). CPU-s/GB is CPU seconds per GB ingested.')
    L.push('')
    L.push('| process | cores | of which main thread | CPU-s / GB |')
    L.push('|---|---:|---:|---:|')
    const gb = (x: IngestRun): number => x.bytes / 1e9
    for (const role of ['agents', 'appliance']) {
      L.push(
        `| ${role === 'agents' ? `${INGEST_AGENTS} agents` : 'appliance'} | ${f2(median(runs.map((x) => x.cpu.roles[role].cores)))} | ${f2(median(runs.map((x) => x.cpu.roles[role].mainCores)))} | ${f2(median(runs.map((x) => x.cpu.roles[role].cpuSeconds / gb(x))))} |`
      )
    }
    L.push(`| fio (the writers) | ${f2(median(runs.map((x) => x.cpu.toolsCores)))} | | ${f2(median(runs.map((x) => (x.cpu.toolsCores * x.cpu.seconds) / gb(x))))} |`)
    L.push(`| benchmark (stats polling) | ${f2(median(runs.map((x) => x.cpu.benchCores)))} | | |`)
    L.push(`| other | ${f2(median(runs.map((x) => x.cpu.otherCores)))} | | |`)
    L.push(`| machine busy (of ${info.cpus}) | ${f2(median(runs.map((x) => x.cpu.machineCores)))} | | |`)
    L.push(`| peer: machine busy / this process | ${f2(median(peers.map((x) => x.cpu.machineCores)))} / ${f2(median(peers.map((x) => x.cpu.benchCores)))} | | |`)
    L.push('')
    L.push('| round | what | MB/s | seconds | agents / appliance / fio cores | agents wait for acks (budget) / flow control, s | other CPU |')
    L.push('|---:|---|---:|---:|---|---|---|')
    for (const round of [...new Set(runs.map((x) => x.round))]) {
      const x = runs.find((y) => y.round === round)!
      const p = peers.find((y) => y.round === round)
      L.push(`| ${round} | tidemark | ${f0(x.mbPerSec)} | ${f1(x.seconds)} | ${f2(x.cpu.roles.agents.cores)} / ${f2(x.cpu.roles.appliance.cores)} / ${f2(x.cpu.toolsCores)} | ${f1(x.waitBudgetMs / 1000)} / ${f1(x.waitDrainMs / 1000)} | ${cpuCell(x.cpu)} |`)
      if (p) L.push(`| ${round} | peer | ${f0(p.mbPerSec)} | ${f1(p.seconds)} | | | ${cpuCell(p.cpu)} |`)
    }
  }
  if (r.restore) {
    const { setup, runs } = r.restore
    const rs = runs.filter((x) => x.what === 'tidemark restore')
    const ps = runs.filter((x) => x.what === 'cp + fsync')
    const rd = runs.find((x) => x.what === 'plain read')
    const ratios = rs.map((x) => x.mbPerSec / (ps.find((p) => p.round === x.round)?.mbPerSec ?? NaN))
    L.push('')
    L.push(
      `### Restore: ${(setup.volumeBytes / 2 ** 30).toFixed(1)} GiB volume, ${f0(setup.records)} journal records (${(setup.journalBytes / 2 ** 30).toFixed(2)} GiB of journal), \`tidemark restore --seq latest\` end to end`
    )
    L.push('')
    L.push(
      `Process start to exit, output fsynced, checked byte-exact with cmp. Peer: \`cp\` of the volume file + \`sync FILE\`. Medians over ${rs.length} alternated round(s) [min–max]; page cache warm for both (journal and volume were just written). Target ≥ ${TARGET_RESTORE_MBPS} MB/s.`
    )
    L.push('')
    const m = rs.map((x) => x.mbPerSec)
    const pm = ps.map((x) => x.mbPerSec)
    L.push('| measure | tidemark restore | peer: cp + fsync | ratio | plain read (cat > /dev/null) | meets target | appliance / restore process CPU (cores) | other CPU (worst) |')
    L.push('|---|---:|---:|---:|---:|:---:|---:|---|')
    const worst = [...rs, ...ps].sort((a, b) => b.cpu.otherCores - a.cpu.otherCores)[0]
    L.push(
      `| MB/s | ${f0(median(m))} [${f0(Math.min(...m))}–${f0(Math.max(...m))}] | ${f0(median(pm))} [${f0(Math.min(...pm))}–${f0(Math.max(...pm))}] | ${f2(median(ratios))} | ${rd ? f0(rd.mbPerSec) : 'n/a'} | ` +
        `${yes(median(m) >= TARGET_RESTORE_MBPS)} | ${f2(median(rs.map((x) => x.cpu.roles.appliance.cores)))} / ${f2(median(rs.map((x) => x.cpu.toolsCores)))} | ${worst ? cpuCell(worst.cpu) : 'n/a'} |`
    )
    L.push(`| seconds | ${f1(median(rs.map((x) => x.seconds)))} | ${f1(median(ps.map((x) => x.seconds)))} | | ${rd ? f1(rd.seconds) : ''} | | | |`)
    const cpg = median(rs.map((x) => ((x.cpu.roles.appliance.cores + x.cpu.toolsCores) * x.cpu.seconds) / (setup.volumeBytes / 1e9)))
    L.push(`| CPU-s per GB (appliance + restore process) → CPU ceiling on ${info.cpus} cores | ${f1(cpg)} → ${f0((1000 * info.cpus) / cpg)} MB/s | | | | | | |`)
    L.push('')
    L.push(
      `Fill: fio 16 KiB random writes covering the volume once, then 4 KiB random overwrites, replicated in ${f1(setup.fillSeconds)} s (dropped / resync records: ${setup.droppedRecords} / ${setup.resyncRecords}).`
    )
  }
  return L.join('\n')
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('run `npx tsc -p tsconfig.json` first')
  for (const t of ['fio']) if (!have(t)) throw new Error(`${t} is needed`)
  const info = machineInfo(BASE_DIR)
  const s = fs.statfsSync(BASE_DIR)
  const need = PARTS.includes('restore') ? (RESTORE_GB * 3 + 2) * 2 ** 30 : 4 * 2 ** 30
  if (s.bavail * s.bsize < need) throw new Error(`${BASE_DIR} has ${((s.bavail * s.bsize) / 2 ** 30).toFixed(1)} GiB free; about ${(need / 2 ** 30).toFixed(0)} GiB are needed`)
  const onSignal = (): void => {
    process.exit(130) // the processes still running are killed on exit (lib/process.ts)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const results: Results = { microscan: null, rpo: null, ingest: null, restore: null }
  const t0 = performance.now()
  const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(0)} s`
  try {
    if (PARTS.includes('microscan')) {
      const runs: MsRun[] = []
      const skipped: Record<string, string> = {}
      for (const w of WORKLOADS) {
        const why = w.available()
        if (why) {
          skipped[w.id] = why
          process.stderr.write(`microscan ${w.id}: skipped (${why})\n`)
          continue
        }
        for (const on of [true, false]) {
          const x = await microscanRun(w, on)
          runs.push(x)
          process.stderr.write(
            `[${elapsed()}] microscan ${w.id} ${on ? 'on' : 'off'}: app ${mb(x.appBytes)} MB, changed ${mb(x.changedBytes)} MB, wire ${mb(x.wireBytes)} MB, ${x.records} records, other CPU ${f2(x.cpu.otherCores)}\n`
          )
        }
      }
      results.microscan = { runs, skipped }
    }
    if (PARTS.includes('rpo')) {
      const x = await rpoRun()
      results.rpo = x
      process.stderr.write(
        `[${elapsed()}] rpo: ${f1(x.fioMBps)} MB/s, lag p50 ${x.rpoP50Ms} ms p99 ${x.rpoP99Ms} ms (${x.rpoSamples} samples), fdatasync p99 ${f1(x.peer.p99Ms)} ms, other CPU ${f2(x.cpu.otherCores)}\n`
      )
    }
    if (PARTS.includes('ingest')) {
      const runs: IngestRun[] = []
      const peers: IngestPeer[] = []
      for (let round = 1; round <= INGEST_ROUNDS; round++) {
        const order = round % 2 ? ['tidemark', 'peer'] : ['peer', 'tidemark']
        for (const what of order) {
          if (what === 'tidemark') {
            const x = await ingestRun(round)
            runs.push(x)
            process.stderr.write(
              `[${elapsed()}] ingest round ${round}: ${f0(x.mbPerSec)} MB/s, ${f0(x.recordsPerSec)} records/s, agents ${f2(x.cpu.roles.agents.cores)} appliance ${f2(x.cpu.roles.appliance.cores)} fio ${f2(x.cpu.toolsCores)} other ${f2(x.cpu.otherCores)} cores\n`
            )
          } else {
            const p = await ingestPeer(round)
            peers.push(p)
            process.stderr.write(`[${elapsed()}] ingest peer round ${round}: ${f0(p.mbPerSec)} MB/s, other ${f2(p.cpu.otherCores)} cores\n`)
          }
          spawnSync('sync')
        }
      }
      results.ingest = { runs, peers }
    }
    if (PARTS.includes('restore')) {
      const x = await restorePart()
      results.restore = x
      process.stderr.write(`[${elapsed()}] restore: ${f0(x.setup.records)} records, fill ${f1(x.setup.fillSeconds)} s\n`)
    }
  } finally {
    await killAll()
  }
  info.loadavgAtEnd = os.loadavg()
  info.totalSeconds = (performance.now() - t0) / 1000
  const md = markdown(results, info)
  process.stdout.write(`${md}\n`)
  const json = {
    benchmark: 'replication',
    machine: info,
    settings: {
      parts: PARTS,
      msBlocks: MS_BLOCKS,
      sqliteTransactions: SQLITE_TXNS,
      sqliteRowsPerTransaction: SQLITE_ROWS,
      fioRegionMiB: FIO_MB,
      rpoSeconds: RPO_SECONDS,
      rpoMBps: RPO_MBPS,
      ingestMiBPerStream: INGEST_MB,
      ingestAgents: INGEST_AGENTS,
      ingestVolumesPerAgent: INGEST_VOLUMES,
      ingestRounds: INGEST_ROUNDS,
      restoreGiB: RESTORE_GB,
      restoreRounds: RESTORE_ROUNDS,
      workloads: WORKLOADS.map((w) => ({ id: w.id, title: w.title, volumeBytes: w.size })),
    },
    targets: { wireFractionAtMost: TARGET_WIRE_FRACTION, rpoP99MsAtMost: TARGET_RPO_P99_MS, ingestMBpsAtLeast: TARGET_INGEST_MBPS, restoreMBpsAtLeast: TARGET_RESTORE_MBPS },
    results,
    markdown: md,
  }
  writeResults(OUT, json)
  process.stderr.write(`(${info.totalSeconds.toFixed(0)} s)\n`)
}

main().catch((err) => {
  process.stderr.write(`replication: ${(err as Error).stack ?? err}\n`)
  process.exit(1)
})
