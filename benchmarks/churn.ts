// The write path's capacity (issue 10): how much churn one volume keeps
// without its tap going behind, how long a 1 GiB burst takes to become
// durable at the appliance, the RPO under steady churn, and the CPU the
// agent and the appliance spend per GB, all against the disk's own fsync'd
// sequential write in the same run.
//
//   npm run bench:churn
//   TIDEMARK_BENCH_SHORT=1 npm run bench:churn     (a check that it works: 2 rungs, 256 MiB burst)
//
// Everything runs as the CLI runs it (benchmarks/lib/cluster.ts): one
// appliance, one agent serving a 1 GiB sparse volume, fio's nbd engine as the
// application, writing 1 MiB sequential incompressible blocks (--refill_buffers:
// MicroScan finds every sector changed, LZ4 finds nothing to squeeze).
//
//   peer     fio to a plain file on the same disk, 1 MiB sequential writes,
//            fdatasync every 8 MiB (--fdatasync=8) and at the end: MB/s
//   ladder   fio at --rate R for TIDEMARK_BENCH_CHURN_SECONDS (15) per rung,
//            R in TIDEMARK_BENCH_CHURN_RATES (MB/s, default 40,80,100,160,240,
//            320,480,640), the agent restarted per rung so its RPO percentiles hold
//            only that rung: the rate fio reached, behind-mode events (the
//            tap's ring overflowed and it fell back to its dirty map),
//            records dropped, RPO p50/p99 (the agent's lag from capture to
//            the appliance's ack), CPU of each process per GB written
//   burst    TIDEMARK_BENCH_BURST_MB (1024) written as fast as fio can
//            (iodepth 4), timed from fio's start until the agent is caught
//            up (its stats line, every 100 ms: every captured seq durable at
//            the appliance and, after a behind period, the resync done);
//            CPU per GB of the agent and the appliance over that window
//   apart    the RPO rung again with the protected volume on another device
//            than the journal (TIDEMARK_BENCH_APART_DIR, default /dev/shm),
//            as a protected server and its appliance are in production
//
// Batches travel on the appliance's data channel unless
// TIDEMARK_BENCH_DATA_CHANNEL=off (then on the gRPC streams).
//
// "Sustained" is the fastest rung with no behind event and at least 95 %
// of its rate reached. Writes results/churn.json and prints a markdown table.
import os from 'node:os'
import fs from 'node:fs'
import path from 'node:path'
import { Agent, Appliance, applianceHasFullCopy } from './lib/cluster'
import { cpuSnap, cpuWindow, type CpuWindow } from './lib/cpu'
import { sparseFile } from './lib/data'
import { envNumber, MiB, removeDir, resultsPath, scratchDir } from './lib/env'
import { fio } from './lib/fio'
import { runMain } from './lib/main'
import { requireTools, type Log } from './lib/process'
import { f0, f1, f2, machineInfo, median, table, writeResults } from './lib/report'

const SHORT = Boolean(process.env.TIDEMARK_BENCH_SHORT)
const VOLUME_BYTES = 1024 * MiB
const RATES = (process.env.TIDEMARK_BENCH_CHURN_RATES || (SHORT ? '40,100' : '40,80,100,160,240,320,480,640'))
  .split(',')
  .map(Number)
  .filter((x) => x > 0)
const RUNG_SECONDS = envNumber('TIDEMARK_BENCH_CHURN_SECONDS', SHORT ? 5 : 15)
const BURST_MB = Math.floor(envNumber('TIDEMARK_BENCH_BURST_MB', SHORT ? 256 : 1024))
const PEER_ROUNDS = SHORT ? 1 : 3
/** TIDEMARK_BENCH_DATA_CHANNEL=off: batches on the gRPC streams, as before the data channel (for comparison). */
const DATA_CHANNEL = process.env.TIDEMARK_BENCH_DATA_CHANNEL !== 'off'
/** Where the protected volume of the "apart" RPO rung lives: another device than the journal's. */
const APART_DIR = process.env.TIDEMARK_BENCH_APART_DIR || '/dev/shm'
/** agent --congestion-wait for every run (seconds; unset: the agent's default). 0 measures falling behind at once, as before it existed. */
const CONGESTION_WAIT = process.env.TIDEMARK_BENCH_CONGESTION_WAIT
/** appliance --replica-image on|off (unset: the appliance's default, on). Off shows what its rounds cost the RPO rungs. */
const REPLICA_IMAGE = process.env.TIDEMARK_BENCH_REPLICA_IMAGE
const CONGESTION_ARGS = CONGESTION_WAIT !== undefined ? ['--congestion-wait', CONGESTION_WAIT] : []

// Targets from issue 10.
const TARGET_SUSTAINED = 0.8
const TARGET_BURST = 0.7
const TARGET_CPU_PER_GB = 4
const TARGET_RPO_P99_MS = 100
const RPO_RATE = 100

interface Peer {
  mbPerSec: number
  seconds: number
}

/** fio writing `mb` MiB to a plain file in 1 MiB blocks, fdatasync every 8 MiB and at the end. */
async function peerRun(dir: string, mb: number): Promise<Peer> {
  const file = path.join(dir, 'peer.img')
  const j = await fio(['--name=peer', `--filename=${file}`, '--rw=write', '--bs=1M', `--size=${mb}M`, '--fdatasync=8', '--end_fsync=1', '--refill_buffers', '--ioengine=psync'], dir)
  removeDir(file)
  const seconds = j.jobs[0].job_runtime / 1000
  return { mbPerSec: (mb * MiB) / 1e6 / seconds, seconds }
}

/** The agent's final stats line for the volume. */
function finalLine(agent: Agent, name = 'vol'): Log {
  const fin = agent.finalStats().find((l) => l.volume === name)
  if (!fin) throw new Error(`no final stats from the agent:\n${agent.out.slice(-4000)}`)
  return fin
}

/** CPU seconds per GB written, agent and appliance. */
function perGb(cpu: CpuWindow, bytes: number): { agent: number; appliance: number; total: number } {
  const gb = bytes / 1e9
  const agent = cpu.roles.agent.cpuSeconds / gb
  const appliance = cpu.roles.appliance.cpuSeconds / gb
  return { agent, appliance, total: agent + appliance }
}

interface Rung {
  offeredMBps: number
  reachedMBps: number
  bytes: number
  behindEvents: number
  droppedRecords: number
  resyncRecords: number
  /** writes that found the record buffer full and waited for room (agent --congestion-wait), and their wait in all */
  congestionWaits: number
  congestionWaitMs: number
  rpoP50Ms: number | null
  rpoP99Ms: number | null
  maxRpoLagMs: number
  cpuPerGb: { agent: number; appliance: number; total: number }
  cpu: CpuWindow
}

interface Burst {
  bytes: number
  fioSeconds: number
  durableSeconds: number
  mbPerSec: number
  behindEvents: number
  droppedRecords: number
  congestionWaits: number
  congestionWaitMs: number
  /** the agent's fingerprint round trips for the resync, and how long its pump waited on them */
  fingerprintRequests: number
  waitFingerprintsMs: number
  cpuPerGb: { agent: number; appliance: number; total: number }
  cpu: CpuWindow
}

/** A fresh agent on the volume (its RPO percentiles and counters start empty), caught up. */
async function freshAgent(dir: string, vol: string, app: Appliance, name = 'vol'): Promise<Agent> {
  const agent = await Agent.start(dir, name === 'vol' ? 'churn' : `churn-${name}`, { [name]: vol }, app.address, ['--stats-interval', '0.25', ...CONGESTION_ARGS])
  await agent.waitLog((l) => l.msg === 'connected to the appliance', 'a connection to the appliance')
  await agent.caughtUp()
  return agent
}

async function rungRun(dir: string, vol: string, app: Appliance, mbps: number, name = 'vol'): Promise<Rung> {
  const agent = await freshAgent(dir, vol, app, name)
  try {
    const cpu0 = cpuSnap([agent.pid, app.pid])
    const tStart = Date.now()
    const j = await fio(['--name=churn', '--ioengine=nbd', `--uri=${agent.uri(name)}`, '--rw=write', '--bs=1M', '--iodepth=4', `--rate=${mbps}m`, '--refill_buffers', '--time_based', `--runtime=${RUNG_SECONDS}`], dir)
    await agent.caughtUp()
    const cpu1 = cpuSnap([agent.pid, app.pid])
    const during = agent.logs().filter((l) => l.msg === 'stats' && l.volume === name && l.time >= tStart)
    await agent.stop()
    const fin = finalLine(agent, name)
    const w = j.jobs[0].write
    const cpu = cpuWindow(cpu0, cpu1, { agent: [agent.pid], appliance: [app.pid] })
    return {
      offeredMBps: mbps,
      reachedMBps: w.bw_bytes / 1e6,
      bytes: w.io_bytes,
      behindEvents: fin.behindEvents ?? 0,
      droppedRecords: fin.droppedRecords,
      resyncRecords: fin.resyncRecords,
      congestionWaits: Number(fin.congestionWaits) || 0,
      congestionWaitMs: Number(fin.congestionWaitMs) || 0,
      rpoP50Ms: fin.rpoP50Ms ?? null,
      rpoP99Ms: fin.rpoP99Ms ?? null,
      maxRpoLagMs: Math.max(0, ...during.map((l) => Number(l.rpoLagMs) || 0)),
      cpuPerGb: perGb(cpu, w.io_bytes),
      cpu,
    }
  } finally {
    if (agent.alive) await agent.stop().catch(() => undefined)
  }
}

async function burstRun(dir: string, vol: string, app: Appliance): Promise<Burst> {
  // Stats lines every 100 ms: the moment the agent is caught up is known to a tenth of a second.
  const agent = await Agent.start(dir, 'churn', { vol }, app.address, ['--stats-interval', '0.1', ...CONGESTION_ARGS])
  try {
    await agent.waitLog((l) => l.msg === 'connected to the appliance', 'a connection to the appliance')
    await agent.caughtUp()
    const cpu0 = cpuSnap([agent.pid, app.pid])
    const t0 = Date.now()
    const tp0 = performance.now()
    await fio(['--name=burst', '--ioengine=nbd', `--uri=${agent.uri('vol')}`, '--rw=write', '--bs=1M', '--iodepth=4', `--size=${BURST_MB}M`, '--refill_buffers'], dir)
    const fioSeconds = (performance.now() - tp0) / 1000
    // Durable means caught up (a stats line from after fio's last write):
    // every captured seq acknowledged, and after a behind period the resync
    // of what the ring dropped done too.
    const [caught] = await agent.caughtUp(Date.now())
    const cpu1 = cpuSnap([agent.pid, app.pid])
    await agent.stop()
    const fin = finalLine(agent)
    const bytes = BURST_MB * MiB
    const durableSeconds = (Number(caught.time) - t0) / 1000
    const cpu = cpuWindow(cpu0, cpu1, { agent: [agent.pid], appliance: [app.pid] })
    return {
      bytes,
      fioSeconds,
      durableSeconds,
      mbPerSec: bytes / 1e6 / durableSeconds,
      behindEvents: fin.behindEvents ?? 0,
      droppedRecords: fin.droppedRecords,
      congestionWaits: Number(fin.congestionWaits) || 0,
      congestionWaitMs: Number(fin.congestionWaitMs) || 0,
      fingerprintRequests: Number(fin.fingerprintRequests) || 0,
      waitFingerprintsMs: Number(fin.waitFingerprintsMs) || 0,
      cpuPerGb: perGb(cpu, bytes),
      cpu,
    }
  } finally {
    if (agent.alive) await agent.stop().catch(() => undefined)
  }
}

/**
 * The RPO rung again with the protected volume on another device than the
 * journal (APART_DIR, tmpfs by default), as a protected server and its
 * appliance are in production. A diagnostic for the RPO spikes: acks stop for
 * 300-600 ms about once in 15 s while a 1 MiB journal write takes 90 ms (the
 * disk's queue is full of someone else's writeback). In a standalone run on
 * a fresh appliance, the volume apart gave p99 14-19 ms and on one disk
 * 420-600 ms (alternating runs); here, after the earlier rungs, the apart rung
 * stalls too, so the appliance's own buffered writes (its replica image
 * rounds are suspected) can also fill the queue.
 */
async function apartRun(dir: string, app: Appliance, vol: string): Promise<Rung | null> {
  if (!fs.existsSync(APART_DIR)) return null
  // What the earlier rungs and the burst left dirty in the page cache is written out first.
  const fd = fs.openSync(vol, 'r')
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  const avDir = fs.mkdtempSync(path.join(APART_DIR, 'tidemark-churn-'))
  try {
    const av = path.join(avDir, 'apart.img')
    sparseFile(av, VOLUME_BYTES)
    const first = await Agent.start(dir, 'churn-apart', { apart: av }, app.address)
    await first.caughtUp()
    await applianceHasFullCopy(app, ['apart'])
    await first.stop()
    const r = await rungRun(dir, av, app, RPO_RATE, 'apart')
    console.error(`rung ${RPO_RATE} MB/s, volume on ${APART_DIR}: RPO p50/p99 ${f0(r.rpoP50Ms)}/${f0(r.rpoP99Ms)} ms, max lag ${f0(r.maxRpoLagMs)} ms`)
    return r
  } finally {
    fs.rmSync(avDir, { recursive: true, force: true })
  }
}

async function main(): Promise<void> {
  requireTools(['fio'], 'apt-get install fio (scripts/test-deps.sh installs it)')
  const dir = scratchDir('tidemark-bench-churn-')
  let app: Appliance | null = null
  try {
    // The peer first and last, around the tidemark runs: the disk's rate as they saw it.
    const peers: Peer[] = [await peerRun(dir, BURST_MB)]
    const vol = path.join(dir, 'vol.img')
    sparseFile(vol, VOLUME_BYTES)
    app = await Appliance.start(path.join(dir, 'data'), [...(DATA_CHANNEL ? [] : ['--data-port', 'off']), ...(REPLICA_IMAGE ? ['--replica-image', REPLICA_IMAGE] : [])])
    // The initial copy of a sparse volume sends nothing; then every run starts from a caught-up agent.
    const first = await Agent.start(dir, 'churn', { vol }, app.address)
    await first.caughtUp()
    await applianceHasFullCopy(app, ['vol'])
    await first.stop()

    const rungs: Rung[] = []
    for (const r of RATES) {
      const rung = await rungRun(dir, vol, app, r)
      rungs.push(rung)
      console.error(`rung ${r} MB/s: reached ${f0(rung.reachedMBps)}, ${rung.congestionWaits} writes waited ${f0(rung.congestionWaitMs)} ms, behind ${rung.behindEvents}, RPO p50/p99 ${f0(rung.rpoP50Ms)}/${f0(rung.rpoP99Ms)} ms, ${f1(rung.cpuPerGb.total)} CPU-s/GB`)
    }
    const burst = await burstRun(dir, vol, app)
    const apart = await apartRun(dir, app, vol)
    console.error(`burst of ${BURST_MB} MiB: fio ${f1(burst.fioSeconds)} s, durable after ${f1(burst.durableSeconds)} s, ${burst.congestionWaits} writes waited ${f0(burst.congestionWaitMs)} ms, behind ${burst.behindEvents}, ${burst.fingerprintRequests} fingerprint requests, waited ${f0(burst.waitFingerprintsMs)} ms on them`)
    await app.stop()
    for (let i = 1; i < PEER_ROUNDS; i++) peers.push(await peerRun(dir, BURST_MB))
    const peerMBps = median(peers.map((p) => p.mbPerSec))
    const peerSeconds = median(peers.map((p) => p.seconds))

    const kept = rungs.filter((r) => r.behindEvents === 0 && r.reachedMBps >= 0.95 * r.offeredMBps)
    const sustained = kept.length ? Math.max(...kept.map((r) => r.offeredMBps)) : 0
    const rpoRung = rungs.find((r) => r.offeredMBps === RPO_RATE) ?? null
    const lines = [
      `Churn through the tap, one volume, 1 MiB sequential incompressible writes (fio nbd engine, iodepth 4); peer: fio to a plain file, fdatasync every 8 MiB, median of ${PEER_ROUNDS}: ${f0(peerMBps)} MB/s.`,
      '',
      ...table(
        ['offered MB/s', 'reached MB/s', 'behind events', 'records dropped', 'writes that waited for room (ms in all)', 'RPO p50 ms', 'RPO p99 ms', 'max lag ms', 'agent CPU-s/GB', 'appliance CPU-s/GB'],
        rungs.map((r) => [f0(r.offeredMBps), f0(r.reachedMBps), r.behindEvents, f0(r.droppedRecords), `${f0(r.congestionWaits)} (${f0(r.congestionWaitMs)})`, f0(r.rpoP50Ms), f0(r.rpoP99Ms), f0(r.maxRpoLagMs), f1(r.cpuPerGb.agent), f1(r.cpuPerGb.appliance)]),
        ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']
      ),
      '',
      ...table(
        ['what', 'tidemark', 'peer', 'ratio', 'target'],
        [
          ['sustained churn without going behind (MB/s)', f0(sustained), f0(peerMBps), f2(sustained / peerMBps), `≥ ${TARGET_SUSTAINED}×`],
          [`${BURST_MB} MiB burst to durable at the appliance (s)`, f1(burst.durableSeconds), f1(peerSeconds), f2(peerSeconds / burst.durableSeconds), `≥ ${TARGET_BURST}×`],
          ['CPU per GB of the burst, agent + appliance (CPU-s/GB)', `${f1(burst.cpuPerGb.total)} (${f1(burst.cpuPerGb.agent)} + ${f1(burst.cpuPerGb.appliance)})`, '—', '—', `≤ ${TARGET_CPU_PER_GB}`],
          [`RPO p99 at ${RPO_RATE} MB/s (ms)`, rpoRung ? f0(rpoRung.rpoP99Ms) : 'not run', '—', '—', `≤ ${TARGET_RPO_P99_MS}`],
          [`RPO p99 at ${RPO_RATE} MB/s, protected volume on ${APART_DIR}, not the journal's disk (ms)`, apart ? f0(apart.rpoP99Ms) : 'not run', '—', '—', `≤ ${TARGET_RPO_P99_MS}`],
        ],
        ['l', 'r', 'r', 'r', 'l']
      ),
      '',
      `The burst: fio finished writing after ${f1(burst.fioSeconds)} s; ${f0(burst.congestionWaits)} writes waited for room in the record buffer (${f0(burst.congestionWaitMs)} ms in all); ${burst.behindEvents} behind events, ${f0(burst.droppedRecords)} records dropped (resent from the dirty map); the resync asked ${f0(burst.fingerprintRequests)} fingerprint requests and the pump waited ${f0(burst.waitFingerprintsMs)} ms on them.`,
    ]
    console.log(lines.join('\n'))
    writeResults(resultsPath(SHORT ? 'churn-short' : 'churn'), {
      benchmark: 'churn',
      machine: machineInfo(dir),
      cpus: os.cpus().length,
      rungSeconds: RUNG_SECONDS,
      dataChannel: DATA_CHANNEL,
      congestionWait: CONGESTION_WAIT ?? 'default',
      replicaImage: REPLICA_IMAGE ?? 'default',
      peers,
      peerMBps,
      rungs,
      sustainedMBps: sustained,
      sustainedRatio: sustained / peerMBps,
      burst,
      burstRatio: peerSeconds / burst.durableSeconds,
      rpoP99MsAt100: rpoRung?.rpoP99Ms ?? null,
      rpoP99MsAt100VolumeApart: apart?.rpoP99Ms ?? null,
      apart,
      markdown: lines.join('\n'),
    })
  } finally {
    if (app?.alive) await app.stop().catch(() => undefined)
    removeDir(dir)
  }
}

runMain(main)
