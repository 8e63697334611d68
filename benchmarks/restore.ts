// Restore end to end: `tidemark restore` of a point with over a million
// journal records, against `cp` + `sync` of an image of the same size, in one
// run.
//
//   npm run build:ts && node dist/benchmarks/restore.js
//   TIDEMARK_BENCH_SHORT=1 ...      256 MiB and 65,536 records, one round (a check that it works)
//
// The journal is built fast, straight through the appliance's store (what
// the replication service calls; benchmarks/points.ts does the same): the
// volume written whole in 256 KiB records, then TIDEMARK_BENCH_RECORDS
// (1,100,000) 4 KiB writes at random offsets, 256 per batch. Then an
// appliance process serves it (`appliance --nbd unix:...` when this build
// has it) and each round, alternated, times as wall clock:
//   cp + sync     cp of a random image of the volume's size, then sync of the
//                 copy (the peer)
//   restore       tidemark restore --seq N --out FILE: the process, the point
//                 resolved, the image written and fsynced (NBD when the
//                 appliance serves it, else gRPC)
//   restore grpc  the same with --transport grpc (once: the old path)
// and, before the rounds, the first restore after the appliance started,
// which pays for building the point's map (appliance/point-maps.ts).
// The appliance keeps a replica image of each volume (appliance/replica-image.ts):
// after the journal is built the bench waits for the image to catch up (the
// round's time is reported), and the rounds read the point through it. At
// the end, an appliance started with --replica-image off restores the same
// point from the journal alone (the figure before replica images).
// Caches are dropped before each run when this runs as root (echo 3 >
// /proc/sys/vm/drop_caches), except in the short mode (a shared machine's
// other work would pay for it; TIDEMARK_BENCH_DROP_CACHES=1 forces it, =0
// never); else the table says "warm". The restored images
// are compared by sha256 (NBD against gRPC). TIDEMARK_BENCH_SIZE (4G),
// TIDEMARK_BENCH_ROUNDS (3), TIDEMARK_BENCH_DIR. Prints a markdown table and
// writes benchmarks/results/restore.json.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { ApplianceStore } from '../appliance/store'
import type { VolumeStore } from '../appliance/volume-store'
import { batchOf, rec } from './appliance-store'
import { randomImage, sha256File } from './lib/data'
import { BIN, envNumber, MiB, parseSize, resultsPath } from './lib/env'
import { inScratch, runMain } from './lib/main'
import { must, mustRun, requireTools, run, startAppliance } from './lib/process'
import { median, writeResults } from './lib/report'

const SHORT = Boolean(process.env.TIDEMARK_BENCH_SHORT)
const SIZE = parseSize(process.env.TIDEMARK_BENCH_SIZE || (SHORT ? '256M' : '4G'))
const RECORDS = envNumber('TIDEMARK_BENCH_RECORDS', SHORT ? 65_536 : 1_100_000)
const ROUNDS = envNumber('TIDEMARK_BENCH_ROUNDS', SHORT ? 1 : 3)
const quiet = pino({ level: 'silent' })

/** The whole volume in 256 KiB records, then `records` random 4 KiB writes; returns the newest seq. */
async function buildJournal(v: VolumeStore, size: number, records: number): Promise<number> {
  let seq = 1
  const inflight: Array<Promise<number>> = []
  const push = async (recs: Buffer[]): Promise<void> => {
    const { raw, meta } = batchOf(recs, seq - recs.length, seq - 1)
    inflight.push(v.append(raw, meta))
    if (inflight.length >= 4) await inflight.shift()
  }
  const fillSectors = 512
  for (let sector = 0; sector < size / 512; ) {
    const recs: Buffer[] = []
    for (let k = 0; k < 16 && sector < size / 512; k++, sector += fillSectors) recs.push(rec(seq++, sector, Math.min(fillSectors, size / 512 - sector), sector * 512))
    await push(recs)
  }
  const blocks = size / 4096
  for (let done = 0; done < records; done += 256) {
    const recs: Buffer[] = []
    for (let k = 0; k < 256 && done + k < records; k++) recs.push(rec(seq++, Math.floor(Math.random() * blocks) * 8, 8, seq * 4096))
    await push(recs)
  }
  await Promise.all(inflight)
  return seq - 1
}

const DROP = process.env.TIDEMARK_BENCH_DROP_CACHES ? process.env.TIDEMARK_BENCH_DROP_CACHES === '1' : !SHORT

async function dropCaches(): Promise<boolean> {
  await run('sync', [])
  if (!DROP) return false
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now()
  await fn()
  return (performance.now() - t0) / 1000
}

async function main(): Promise<void> {
  requireTools(['cp', 'sync'], 'coreutils')
  await inScratch('tidemark-bench-restore-', async (work, procs) => {
    const data = path.join(work, 'data')
    const t0 = performance.now()
    const store = await ApplianceStore.open(data, quiet, { segmentBytes: 256 * MiB })
    const { volume: v } = await store.attach({ volume: 'vol', generation: 'g', size: SIZE, group: '', agentId: 'bench' })
    await v.markFullSyncDone()
    const seq = await buildJournal(v, SIZE, RECORDS)
    const records = v.stats().records as number
    const buildSeconds = (performance.now() - t0) / 1000
    console.error(`journal: ${SIZE / MiB} MiB volume, ${records} records up to seq ${seq}, built in ${buildSeconds.toFixed(0)} s`)
    // The rounds that ran while the journal was built are part of the build;
    // the last one, up to the newest seq, is timed on its own.
    const r0 = performance.now()
    await v.replicaSettled()
    const replicaSeconds = (performance.now() - r0) / 1000
    const replica = v.replicaStatus()
    console.error(`replica image caught up with seq ${replica?.seq} in ${replicaSeconds.toFixed(1)} s (${((replica?.bytesCopied ?? 0) / MiB).toFixed(0)} MiB copied in ${replica?.rounds} rounds)`)
    await store.close()

    const help = await run(process.execPath, [BIN, 'appliance', '--help'])
    const nbd = /--nbd /.test(help.stdout)
    const sock = path.join(work, 'appliance-nbd.sock')
    let { app, address } = await startAppliance(procs, data, nbd ? ['--nbd', `unix:${sock}`] : [], 120_000)
    if (nbd) await app.listening(sock)
    // A restarted appliance reads through the image once its first round (nothing to copy) is done.
    await app.waitFor(async () => {
      const st = JSON.parse(await must(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json']))
      return st.volumes?.[0]?.replica?.ready === true
    }, 'the replica image ready', 600_000, 200)

    const peerSrc = path.join(work, 'peer.img')
    randomImage(peerSrc, SIZE, 1)
    const peerOut = path.join(work, 'peer-copy.img')
    const out = path.join(work, 'restored.img')
    const grpcOut = path.join(work, 'restored-grpc.img')
    let cold = true
    const restore = async (file: string, extra: string[]): Promise<Record<string, unknown>> =>
      JSON.parse(await must(process.execPath, [BIN, 'restore', '--appliance', address, '--volume', 'vol', '--seq', String(seq), '--out', file, '--json', ...extra], { timeoutMs: 3_600_000 }))

    // The appliance builds the point's map when it is first asked for it
    // (appliance/point-maps.ts): timed on its own, then the rounds.
    let last: Record<string, unknown> = {}
    fs.rmSync(out, { force: true })
    cold = (await dropCaches()) && cold
    const firstSecs = await timed(async () => (last = await restore(out, [])))
    console.error(`first restore after the appliance started: ${firstSecs.toFixed(2)} s (${last.transport})`)
    const runs: { cp: number[]; restore: number[] } = { cp: [], restore: [] }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? (['restore', 'cp'] as const) : (['cp', 'restore'] as const)
      for (const id of order) {
        fs.rmSync(id === 'cp' ? peerOut : out, { force: true })
        cold = (await dropCaches()) && cold
        const secs = id === 'cp'
          ? await timed(() => mustRun('sh', ['-c', `cp "${peerSrc}" "${peerOut}" && sync "${peerOut}"`]))
          : await timed(async () => (last = await restore(out, [])))
        runs[id].push(secs)
        console.error(`round ${round + 1} ${id}: ${secs.toFixed(2)} s${id === 'restore' ? ` (${last.transport}, ${Number(last.seconds).toFixed(2)} s of it reading and writing)` : ''}`)
      }
    }
    const served = JSON.parse(await must(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])).volumes[0].replica
    console.error(`the appliance read ${(served.bytesRead / MiB).toFixed(0)} MiB from the replica image`)
    cold = (await dropCaches()) && cold
    let grpc: Record<string, unknown> = {}
    const grpcSecs = await timed(async () => (grpc = await restore(grpcOut, ['--transport', 'grpc'])))
    console.error(`restore over gRPC: ${grpcSecs.toFixed(2)} s`)
    const same = sha256File(out) === sha256File(grpcOut)
    if (!same) throw new Error('the restored images differ (NBD and gRPC)')

    // The journal alone: the same point from an appliance that keeps no replica image.
    await app.stop()
    ;({ app, address } = await startAppliance(procs, data, [...(nbd ? ['--nbd', `unix:${sock}`] : []), '--replica-image', 'off'], 120_000))
    if (nbd) await app.listening(sock)
    const journalOut = path.join(work, 'restored-journal.img')
    await restore(journalOut, []) // builds the point map, as the first restore above did
    fs.rmSync(journalOut, { force: true })
    cold = (await dropCaches()) && cold
    let journalOnly: Record<string, unknown> = {}
    const journalSecs = await timed(async () => (journalOnly = await restore(journalOut, [])))
    console.error(`restore from the journal alone: ${journalSecs.toFixed(2)} s`)
    if (sha256File(journalOut) !== sha256File(out)) throw new Error('the restored images differ (replica image and journal)')

    const cp = median(runs.cp)
    const rs = median(runs.restore)
    const row = (what: string, secs: number) => `| ${what} | ${secs.toFixed(2)} | ${(SIZE / 1e6 / secs).toFixed(0)} | ${(cp / secs).toFixed(2)} |`
    const lines = [
      `Restore of a ${SIZE / MiB} MiB point with ${records} journal records (fill + ${RECORDS} random 4 KiB writes), end to end, ${cold ? 'caches dropped before each run' : 'warm caches'}, median of ${ROUNDS}`,
      '',
      '| run | seconds | MB/s | vs cp + sync |',
      '|---|---:|---:|---:|',
      row('cp + sync of an image of the same size (peer)', cp),
      row(`tidemark restore (${last.transport}${last.serverCopy ? ', copied by the appliance file to file' : ''})`, rs),
      row('the first restore after the appliance started (it builds the point map)', firstSecs),
      row('tidemark restore --transport grpc (once)', grpcSecs),
      row('tidemark restore from the journal alone (--replica-image off, once)', journalSecs),
      '',
      `The replica image caught up with the newest point in ${replicaSeconds.toFixed(1)} s after the journal was built (a round, off the write path).`,
    ]
    console.log(lines.join('\n'))
    writeResults(resultsPath(SHORT ? 'restore-short' : 'restore'), {
      benchmark: 'restore', date: new Date().toISOString(), cpus: os.cpus().length, volumeBytes: SIZE, records, seq, buildSeconds, cold, rounds: ROUNDS,
      cpSeconds: runs.cp, restoreSeconds: runs.restore, firstRestoreSeconds: firstSecs, grpcSeconds: grpcSecs,
      journalOnlySeconds: journalSecs, journalOnlyRatio: cp / journalSecs, replicaSeconds, replica, replicaServed: served, journalOnly, transport: last.transport, ratio: cp / rs, grpcRatio: cp / grpcSecs,
      restore: last, grpc, identical: same, markdown: lines.join('\n'),
    })
  })
}

runMain(main)
