// The resync after a behind period over a link with latency (issue 10: the
// resync "pipelines fingerprint round trips, never one at a time"). Each
// resync batch asks the appliance for its regions' fingerprints; asked one at
// a time, every 4 MiB of resync costs a round trip.
//
//   npm run build:ts && node dist/benchmarks/resync-wan.js
//   TIDEMARK_BENCH_RTT_MS (default 40), TIDEMARK_BENCH_RESYNC_MB (default 128)
//
// One appliance, one agent serving a sparse volume twice the resync's size
// with a 16 MiB ring, the agent reaching the appliance through a TCP proxy
// that delays each direction by RTT/2 (benchmarks/lib/delay-proxy.ts). fio
// writes RESYNC_MB MiB of 1 MiB blocks of one byte pattern and the agent
// replicates them; the appliance stops; fio writes
// the very same bytes again, so the ring overflows and the tap keeps only its
// dirty map; the appliance starts again behind the same proxy. The resync
// then finds every sector equal and sends almost nothing: what it costs is
// the fingerprint round trips (with data to send, gRPC's flow-control window
// over the delayed link would be the limit instead). Timed: from the agent's
// reconnect to caught up. Peer: the same through the proxy with no delay, in
// the same run.
import path from 'node:path'
import { Agent, Appliance, applianceHasFullCopy } from './lib/cluster'
import { DelayProxy } from './lib/delay-proxy'
import { sparseFile } from './lib/data'
import { envNumber, MiB, removeDir, resultsPath, scratchDir } from './lib/env'
import { fio } from './lib/fio'
import { runMain } from './lib/main'
import { requireTools } from './lib/process'
import { f0, f1, f2, machineInfo, table, writeResults } from './lib/report'

const RTT_MS = envNumber('TIDEMARK_BENCH_RTT_MS', 40)
const RESYNC_MB = Math.floor(envNumber('TIDEMARK_BENCH_RESYNC_MB', 128))

interface Resync {
  rttMs: number
  seconds: number
  fingerprintRequests: number
  fingerprintsInFlightMax: number
  waitFingerprintsMs: number
  behindEvents: number
  /** bytes the resync put on the wire */
  wireBytes: number
}

async function resyncRun(rttMs: number): Promise<Resync> {
  const dir = scratchDir('tidemark-bench-resync-wan-')
  let app: Appliance | null = null
  let agent: Agent | null = null
  let proxy: DelayProxy | null = null
  try {
    const vol = path.join(dir, 'vol.img')
    sparseFile(vol, 2 * RESYNC_MB * MiB)
    const data = path.join(dir, 'data')
    app = await Appliance.start(data)
    proxy = await DelayProxy.start(app.address, rttMs / 2)
    agent = await Agent.start(dir, 'wan', { vol }, proxy.address(), ['--buffer', '16M', '--stats-interval', '0.1'])
    await agent.caughtUp()
    await applianceHasFullCopy(app, ['vol'])
    const write = ['--name=fill', '--ioengine=nbd', `--uri=${agent.uri('vol')}`, '--rw=write', '--bs=1M', '--iodepth=4', `--size=${RESYNC_MB}M`, '--buffer_pattern=0x5a']
    await fio(write, dir)
    const [before] = await agent.caughtUp()
    await app.stop()
    await fio(write, dir)
    const restarted = Date.now()
    app = await Appliance.start(data)
    proxy.retarget(app.address)
    const conn = await agent.waitLog((l) => l.msg === 'connected to the appliance' && l.time >= restarted, 'the reconnect', 120_000)
    const [caught] = await agent.caughtUp(conn.time)
    await agent.stop()
    const fin = agent.finalStats().find((l) => l.volume === 'vol')!
    return {
      rttMs,
      seconds: (caught.time - conn.time) / 1000,
      // The first write may have gone behind too: the resync's share only.
      fingerprintRequests: Number(fin.fingerprintRequests) - Number(before.fingerprintRequests),
      fingerprintsInFlightMax: Number(fin.fingerprintsInFlightMax) || 0,
      waitFingerprintsMs: Number(fin.waitFingerprintsMs) - Number(before.waitFingerprintsMs),
      behindEvents: Number(fin.behindEvents) || 0,
      wireBytes: Number(fin.wireBytes) - Number(before.wireBytes),
    }
  } finally {
    if (agent?.alive) await agent.stop().catch(() => undefined)
    if (app?.alive) await app.stop().catch(() => undefined)
    await proxy?.close()
    removeDir(dir)
  }
}

async function main(): Promise<void> {
  requireTools(['fio'], 'apt-get install fio (scripts/test-deps.sh installs it)')
  const runs: Resync[] = []
  for (const rtt of [0, RTT_MS]) {
    const r = await resyncRun(rtt)
    runs.push(r)
    console.error(`RTT ${rtt} ms: resync of ${RESYNC_MB} MiB in ${f1(r.seconds)} s, ${r.fingerprintRequests} fingerprint requests (at most ${r.fingerprintsInFlightMax} in flight), waited ${f0(r.waitFingerprintsMs)} ms on them`)
  }
  const [peer, wan] = runs
  const lines = [
    `The resync of ${RESYNC_MB} MiB after a behind period (the replica already holds the same bytes, 16 MiB ring), from the agent's reconnect to caught up; peer: the same with no added latency, in the same run.`,
    '',
    ...table(
      ['link', 'resync s', 'fingerprint requests', 'most in flight', 'pump waited on them (ms)', 'wire MB', 'peer / this'],
      runs.map((r) => [r.rttMs ? `RTT ${r.rttMs} ms` : 'no added latency', f1(r.seconds), r.fingerprintRequests, r.fingerprintsInFlightMax || '—', f0(r.waitFingerprintsMs), f1(r.wireBytes / 1e6), f2(peer.seconds / r.seconds)]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r']
    ),
  ]
  console.log(lines.join('\n'))
  const dir = scratchDir('tidemark-bench-resync-wan-')
  try {
    writeResults(resultsPath('resync-wan'), { benchmark: 'resync-wan', machine: machineInfo(dir), resyncMB: RESYNC_MB, runs, ratio: peer.seconds / wan.seconds, markdown: lines.join('\n') })
  } finally {
    removeDir(dir)
  }
}

runMain(main)
