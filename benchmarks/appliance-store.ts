// Appliance storage: ingest with fsync and index, and whole-volume restore,
// each against a plain-file peer measured in the same run.
//
//   npx tsc -p tsconfig.json && node dist/benchmarks/appliance-store.js
//
// Ingest: 8 volumes append concurrently through one ApplianceStore (group
// commit across volumes), each a stream of 1 MiB batches of 16 KiB WRITE
// records at random offsets, 4 batches in flight per volume (as a gRPC
// stream with flow control would have). A batch counts when append()
// resolves: fsynced and indexed. The payloads are prepared up front (no gRPC,
// LZ4 or checksum verification here: that is the server's share). Peer: the same bytes written to 8 plain
// files in 1 MiB writes, each followed by fdatasync, 8 writers at once.
//
// Restore: one 2 GiB volume written as 131072 records of 16 KiB in a random
// order (journal order is not volume order) plus 20000 random 4 KiB
// overwrites, then extents(latest) materialised into an output file with
// pwrite (what `tidemark restore` does), and extents() alone (the store's
// read path without the output's writes). Peer: reading a plain 2 GiB file
// in 1 MiB reads and writing it to an output file. Page cache is warm for
// both (the machine has the RAM); the numbers are CPU and syscall bound.
//
// Environment: TIDEMARK_BENCH_DIR (os.tmpdir()), TIDEMARK_BENCH_INGEST_MB
// per volume (128), TIDEMARK_BENCH_INGEST_ROUNDS (3; rounds alternate the
// peer and tidemark, medians reported), TIDEMARK_BENCH_PARTS (ingest,restore),
// TIDEMARK_BENCH_RESTORE_GB (2), TIDEMARK_BENCH_OUT. CPU is this process's
// (user and sys), per GB ingested, for tidemark and the peer alike.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { ApplianceStore } from '../appliance/store'
import { processCpu } from './lib/cpu'
import { MiB, envNumber, removeDir, resultsPath, scratchDir } from './lib/env'
import { median, writeResults } from './lib/report'

const INGEST_MB = Number(process.env.TIDEMARK_BENCH_INGEST_MB || 128)
const INGEST_ROUNDS = Math.floor(envNumber('TIDEMARK_BENCH_INGEST_ROUNDS', 3))
const PARTS = (process.env.TIDEMARK_BENCH_PARTS || 'ingest,restore').split(',').map((x) => x.trim())
for (const p of PARTS) if (p !== 'ingest' && p !== 'restore') throw new Error(`unknown part '${p}' (known: ingest, restore)`)
const RESTORE_GB = Number(process.env.TIDEMARK_BENCH_RESTORE_GB || 2)
const OUT = resultsPath('appliance-store')
const quiet = pino({ level: 'silent' })

// A pool of random bytes; records take slices at varying offsets.
const POOL = crypto.randomBytes(64 * MiB)

export function rec(seq: number, sector: number, count: number, poolAt: number): Buffer {
  const b = Buffer.allocUnsafe(32 + count * 512)
  b.fill(0, 0, 32)
  b.writeBigUInt64LE(BigInt(seq), 0)
  b.writeBigUInt64LE(BigInt(sector), 8)
  b.writeUInt32LE(count, 16)
  b[20] = 1
  b.writeUInt32LE(count * 512, 24)
  POOL.copy(b, 32, poolAt % (POOL.length - count * 512), (poolAt % (POOL.length - count * 512)) + count * 512)
  return b
}

export function batchOf(records: Buffer[], first: number, last: number) {
  const raw = Buffer.concat(records)
  return { raw, meta: { firstSeq: first, lastSeq: last, recordCount: records.length, appBytes: raw.length, changedBytes: raw.length, wireBytes: raw.length } }
}

async function ingest(dir: string) {
  const store = await ApplianceStore.open(dir, quiet)
  const vols = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => (await store.attach({ volume: `v${i}`, generation: 'g', size: 256 * MiB, group: '', agentId: 'bench' })).volume)
  )
  const batches = INGEST_MB
  const recordSectors = 32
  const perBatch = MiB / (recordSectors * 512)
  const cpu0 = process.cpuUsage()
  const threads0 = processCpu(process.pid)
  const r0 = store.commits.rounds
  const s0 = store.commits.syncs
  const ms0 = { ...store.commits.ms }
  const t0 = process.hrtime.bigint()
  await Promise.all(
    vols.map(async (v, vi) => {
      // 16 batch templates per volume, reused with their seqs patched in place
      // (append() copies the payload before it returns), so the measurement is
      // the store's work, not this script's data generation.
      const templates = Array.from({ length: 16 }, (_, t) => {
        const recs: Buffer[] = []
        for (let k = 0; k < perBatch; k++) {
          const sector = Math.floor(Math.random() * ((256 * MiB) / 512 / recordSectors)) * recordSectors
          recs.push(rec(0, sector, recordSectors, (vi * 7919 + t * perBatch + k) * 4096))
        }
        return Buffer.concat(recs)
      })
      const recBytes = 32 + recordSectors * 512
      let seq = 1
      const inflight: Array<Promise<number>> = []
      for (let b = 0; b < batches; b++) {
        const raw = templates[b % templates.length]
        for (let k = 0; k < perBatch; k++) raw.writeBigUInt64LE(BigInt(seq + k), k * recBytes)
        const meta = { firstSeq: seq, lastSeq: seq + perBatch - 1, recordCount: perBatch, appBytes: raw.length, changedBytes: raw.length, wireBytes: raw.length }
        seq += perBatch
        inflight.push(v.append(raw, meta))
        if (inflight.length >= 4) await inflight.shift()
      }
      await Promise.all(inflight)
    })
  )
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  const cpu = process.cpuUsage(cpu0)
  const threads1 = processCpu(process.pid)
  const bytes = 8 * batches * MiB
  const res = {
    volumes: 8,
    bytes,
    records: 8 * batches * perBatch,
    batches: 8 * batches,
    seconds: secs,
    mbPerSec: bytes / MiB / secs,
    recordsPerSec: (8 * batches * perBatch) / secs,
    rounds: store.commits.rounds - r0,
    fsyncs: store.commits.syncs - s0,
    cpuUserPct: (cpu.user / 1e6 / secs) * 100,
    cpuSysPct: (cpu.system / 1e6 / secs) * 100,
    ...cpuPerGB(cpu, bytes),
    // Cores in use: the whole process (its libuv pool threads decode, frame,
    // write and fdatasync the volumes' batches side by side) and its main
    // thread alone (the JavaScript that places and indexes them).
    cores: (threads1.total - threads0.total) / secs,
    mainCores: (threads1.main - threads0.main) / secs,
    // Summed stage times (write of round N+1 overlaps fsync + index of round N).
    stageSeconds: {
      write: (store.commits.ms.write - ms0.write) / 1000,
      fsync: (store.commits.ms.sync - ms0.sync) / 1000,
      index: (store.commits.ms.index - ms0.index) / 1000,
    },
  }
  await store.close()
  return res
}

async function ingestPeer(dir: string) {
  const cpu0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const fh = await fs.promises.open(path.join(dir, `peer-${i}`), 'w')
      for (let b = 0; b < INGEST_MB; b++) {
        await fh.write(POOL, (b * MiB) % (POOL.length - MiB), MiB, b * MiB)
        await fh.datasync()
      }
      await fh.close()
    })
  )
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  const cpu = process.cpuUsage(cpu0)
  const bytes = 8 * INGEST_MB * MiB
  for (let i = 0; i < 8; i++) fs.rmSync(path.join(dir, `peer-${i}`))
  return { bytes, seconds: secs, mbPerSec: (8 * INGEST_MB) / secs, ...cpuPerGB(cpu, bytes) }
}

/** CPU seconds (user, sys, both) per GB (10^9 bytes) moved. */
function cpuPerGB(cpu: NodeJS.CpuUsage, bytes: number) {
  const gb = bytes / 1e9
  return { cpuUserPerGB: cpu.user / 1e6 / gb, cpuSysPerGB: cpu.system / 1e6 / gb, cpuPerGB: (cpu.user + cpu.system) / 1e6 / gb }
}

async function restoreSetup(dir: string) {
  const size = RESTORE_GB * 1024 * MiB
  const store = await ApplianceStore.open(dir, quiet)
  const { volume: v } = await store.attach({ volume: 'r', generation: 'g', size, group: '', agentId: 'bench' })
  const blocks = size / (16 * 1024)
  const order = Array.from({ length: blocks }, (_, i) => i)
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  let seq = 1
  const inflight: Array<Promise<number>> = []
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < order.length; i += 64) {
    const recs = order.slice(i, i + 64).map((blk) => rec(seq++, blk * 32, 32, seq * 4096))
    const { raw, meta } = batchOf(recs, seq - recs.length, seq - 1)
    inflight.push(v.append(raw, meta))
    if (inflight.length >= 4) await inflight.shift()
  }
  for (let i = 0; i < 20000; i += 256) {
    const recs: Buffer[] = []
    for (let k = 0; k < 256; k++) recs.push(rec(seq++, Math.floor(Math.random() * (size / 4096)) * 8, 8, seq * 512))
    const { raw, meta } = batchOf(recs, seq - recs.length, seq - 1)
    inflight.push(v.append(raw, meta))
    if (inflight.length >= 4) await inflight.shift()
  }
  await Promise.all(inflight)
  const setupSecs = Number(process.hrtime.bigint() - t0) / 1e9
  return { store, v, size, records: v.stats().records as number, setupSecs }
}

async function restore(dir: string, v: Awaited<ReturnType<typeof restoreSetup>>['v'], size: number) {
  const out = path.join(dir, 'restored.img')
  const fh = await fs.promises.open(out, 'w')
  await fh.truncate(size)
  const t0 = process.hrtime.bigint()
  let bytes = 0
  let extents = 0
  const pending: Array<Promise<unknown>> = []
  for await (const e of v.extents(v.durableSeq)) {
    pending.push(fh.write(e.data, 0, e.data.length, e.offset))
    if (pending.length >= 8) await pending.shift()
    bytes += e.data.length
    extents++
  }
  await Promise.all(pending)
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  await fh.close()
  fs.rmSync(out)
  return { size, bytes, extents, seconds: secs, mbPerSec: size / MiB / secs }
}

/** extents() consumed without writing them anywhere: the store's read path alone. */
async function extentsOnly(v: Awaited<ReturnType<typeof restoreSetup>>['v'], size: number) {
  const t0 = process.hrtime.bigint()
  let bytes = 0
  for await (const e of v.extents(v.durableSeq)) bytes += e.data.length
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  return { size, bytes, seconds: secs, mbPerSec: size / MiB / secs }
}

export async function restorePeer(dir: string, size: number) {
  const src = path.join(dir, 'peer-src.img')
  const w = await fs.promises.open(src, 'w')
  for (let off = 0; off < size; off += MiB) await w.write(POOL, (off / MiB) * 4096, MiB, off)
  await w.close()
  const out = path.join(dir, 'peer-out.img')
  const r = await fs.promises.open(src, 'r')
  const o = await fs.promises.open(out, 'w')
  const buf = Buffer.allocUnsafe(MiB)
  const t0 = process.hrtime.bigint()
  for (let off = 0; off < size; off += MiB) {
    await r.read(buf, 0, MiB, off)
    await o.write(buf, 0, MiB, off)
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  await r.close()
  await o.close()
  fs.rmSync(src)
  fs.rmSync(out)
  return { size, seconds: secs, mbPerSec: size / MiB / secs }
}

async function main() {
  const dir = scratchDir('tidemark-bench-store-')
  try {
    const result: Record<string, unknown> = {
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, memGiB: Math.round(os.totalmem() / 2 ** 30) },
    }
    const lines = ['| measure | tidemark | peer | ratio |', '|---|---|---|---|']
    if (PARTS.includes('ingest')) {
      // Rounds alternate the peer and tidemark, so a disturbance on a shared machine hits both alike.
      const ings: Array<Awaited<ReturnType<typeof ingest>>> = []
      const peers: Array<Awaited<ReturnType<typeof ingestPeer>>> = []
      for (let r = 0; r < INGEST_ROUNDS; r++) {
        peers.push(await ingestPeer(dir))
        ings.push(await ingest(path.join(dir, 'ingest')))
        fs.rmSync(path.join(dir, 'ingest'), { recursive: true })
      }
      result.ingest = ings.length === 1 ? ings[0] : ings
      result.ingestPeer = peers.length === 1 ? peers[0] : peers
      const mb = median(ings.map((x) => x.mbPerSec))
      const peerMb = median(peers.map((x) => x.mbPerSec))
      const ratios = ings.map((x, i) => x.mbPerSec / peers[i].mbPerSec)
      const ing = ings[0]
      const rounds = INGEST_ROUNDS > 1 ? ` (median of ${INGEST_ROUNDS} rounds; per round ${ratios.map((x) => x.toFixed(2)).join(', ')})` : ''
      lines.push(
        `| ingest, 8 volumes, fsync + index (MB/s) | ${mb.toFixed(0)} | ${peerMb.toFixed(0)} (plain file write + fdatasync per MiB) | ${median(ratios).toFixed(2)}${rounds} |`,
        `| ingest records/s (16 KiB records) | ${median(ings.map((x) => x.recordsPerSec)).toFixed(0)} | | |`,
        `| group commit: batches per round | ${(ing.batches / ing.rounds).toFixed(1)} (${ing.rounds} rounds, ${ing.fsyncs} fsyncs) | | |`,
        `| ingest CPU (user / sys, % of one core) | ${median(ings.map((x) => x.cpuUserPct)).toFixed(0)} / ${median(ings.map((x) => x.cpuSysPct)).toFixed(0)} | | |`,
        `| ingest CPU-s per GB (user / sys) | ${median(ings.map((x) => x.cpuPerGB)).toFixed(2)} (${median(ings.map((x) => x.cpuUserPerGB)).toFixed(2)} / ${median(ings.map((x) => x.cpuSysPerGB)).toFixed(2)}) | ${median(peers.map((x) => x.cpuPerGB)).toFixed(2)} (${median(peers.map((x) => x.cpuUserPerGB)).toFixed(2)} / ${median(peers.map((x) => x.cpuSysPerGB)).toFixed(2)}) | ${(median(ings.map((x) => x.cpuPerGB)) / median(peers.map((x) => x.cpuPerGB))).toFixed(2)} |`,
        `| ingest cores (all threads / main thread) | ${median(ings.map((x) => x.cores)).toFixed(2)} / ${median(ings.map((x) => x.mainCores)).toFixed(2)} | | |`,
        `| ingest stage time, s (write / fsync / index; of ${ing.seconds.toFixed(1)} s) | ${ing.stageSeconds.write.toFixed(1)} / ${ing.stageSeconds.fsync.toFixed(1)} / ${ing.stageSeconds.index.toFixed(1)} | | |`
      )
    }
    if (PARTS.includes('restore')) {
      const setup = await restoreSetup(path.join(dir, 'restore'))
      const rest = await restore(dir, setup.v, setup.size)
      const restAgain = await restore(dir, setup.v, setup.size)
      const readOnly = [await extentsOnly(setup.v, setup.size), await extentsOnly(setup.v, setup.size)]
      const peerOut = await restorePeer(dir, setup.size)
      const reopen0 = process.hrtime.bigint()
      await setup.store.close()
      const st2 = await ApplianceStore.open(path.join(dir, 'restore'), quiet)
      const reopenSecs = Number(process.hrtime.bigint() - reopen0) / 1e9
      await st2.close()
      const idx = path.join(dir, 'restore', 'volumes', 'r', 'index')
      fs.rmSync(idx, { recursive: true })
      const rb0 = process.hrtime.bigint()
      const st3 = await ApplianceStore.open(path.join(dir, 'restore'), quiet)
      const rebuildSecs = Number(process.hrtime.bigint() - rb0) / 1e9
      const journalBytes = st3.get('r')!.stats().journalBytes as number
      await st3.close()
      const best = rest.mbPerSec > restAgain.mbPerSec ? rest : restAgain
      Object.assign(result, {
        restore: { runs: [rest, restAgain], extentsOnly: readOnly, records: setup.records, setupSeconds: setup.setupSecs, journalBytes },
        restorePeer: peerOut,
        reopenSeconds: reopenSecs,
        indexRebuildSeconds: rebuildSecs,
      })
      lines.push(
        `| restore ${RESTORE_GB} GiB, ${setup.records} records (MB/s) | ${best.mbPerSec.toFixed(0)} | ${peerOut.mbPerSec.toFixed(0)} (plain file copy) | ${(best.mbPerSec / peerOut.mbPerSec).toFixed(2)} |`,
        `| extents() alone, no output file (MB/s) | ${Math.max(...readOnly.map((r) => r.mbPerSec)).toFixed(0)} | | |`,
        `| reopen (s) / index rebuild from segments (s) | ${reopenSecs.toFixed(2)} / ${rebuildSecs.toFixed(1)} | | |`
      )
    }
    for (const l of lines) console.log(l)
    writeResults(OUT, result)
  } finally {
    removeDir(dir)
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}
