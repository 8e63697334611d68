// Points in time at the store level: restore at an arbitrary point of a
// 4 GiB volume with over a million journal records (target ≥ 500 MB/s), and
// compaction: how fast history is folded into the base image and what that
// does to ingest running at the same time.
//
//   npm run bench:points    (TIDEMARK_BENCH_DIR, TIDEMARK_BENCH_POINTS_GB=4, TIDEMARK_BENCH_RECORDS=1100000)
//
// The volume is written as 4 KiB WRITE records at random offsets, 256 per
// batch, through VolumeStore.append (fsync, index, group commit: what the
// replication service calls; no gRPC here). A restore at a point is
// VolumeStore.extents(seq) written to a file with pwrite, as `tidemark
// restore` does; the peer is copying a plain file of the same size in 1 MiB
// reads and writes. Compaction folds the first half of the history into the
// base (VolumeStore.compact), alone and then while a second stream of
// batches is ingested; ingest alone over the same time is the peer.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { ApplianceStore } from '../appliance/store'
import type { VolumeStore } from '../appliance/volume-store'
import { batchOf, rec, restorePeer } from './appliance-store'
import { MiB, removeDir, resultsPath, scratchDir } from './lib/env'
import { writeResults } from './lib/report'

const GB = Number(process.env.TIDEMARK_BENCH_POINTS_GB || 4)
const RECORDS = Number(process.env.TIDEMARK_BENCH_RECORDS || 1_100_000)
const quiet = pino({ level: 'silent' })

async function fill(v: VolumeStore, size: number, firstSeq: number, records: number): Promise<{ seq: number; seconds: number }> {
  let seq = firstSeq
  const blocks = size / 4096
  const inflight: Array<Promise<number>> = []
  const t0 = performance.now()
  for (let done = 0; done < records; done += 256) {
    const recs: Buffer[] = []
    for (let k = 0; k < 256 && done + k < records; k++) recs.push(rec(seq++, Math.floor(Math.random() * blocks) * 8, 8, seq * 4096))
    const { raw, meta } = batchOf(recs, seq - recs.length, seq - 1)
    inflight.push(v.append(raw, meta))
    if (inflight.length >= 4) await inflight.shift()
  }
  await Promise.all(inflight)
  return { seq, seconds: (performance.now() - t0) / 1000 }
}

async function restoreAt(dir: string, v: VolumeStore, seq: number, size: number) {
  const out = path.join(dir, 'restored.img')
  const fh = await fs.promises.open(out, 'w')
  await fh.truncate(size)
  const t0 = performance.now()
  let bytes = 0
  const pending: Array<Promise<unknown>> = []
  for await (const e of v.extents(seq)) {
    pending.push(fh.write(e.data, 0, e.data.length, e.offset))
    if (pending.length >= 8) await pending.shift()
    bytes += e.data.length
  }
  await Promise.all(pending)
  await fh.sync()
  const seconds = (performance.now() - t0) / 1000
  await fh.close()
  fs.rmSync(out)
  return { seq, bytes, seconds, mbPerSec: size / MiB / seconds }
}

async function main(): Promise<void> {
  const dir = scratchDir('tidemark-bench-points-')
  try {
    const size = GB * 1024 * MiB
    const store = await ApplianceStore.open(dir, quiet, { segmentBytes: 256 * MiB })
    const { volume: v } = await store.attach({ volume: 'p', generation: 'g', size, group: '', agentId: 'bench' })
    await v.markFullSyncDone()
    const filled = await fill(v, size, 1, RECORDS)
    const records = v.stats().records as number
    process.stderr.write(`filled: ${records} records in ${filled.seconds.toFixed(0)} s\n`)
    const points = [Math.floor(filled.seq * 0.37), Math.floor(filled.seq * 0.71), filled.seq - 1]
    const restores = []
    for (const p of points) restores.push(await restoreAt(dir, v, p, size))
    const peer = await restorePeer(dir, size)

    // Compaction of the first half, alone.
    const half = Math.floor(filled.seq / 2)
    const c1 = await v.compact(half)
    // Then the next quarter while a second stream is ingested, against ingest alone.
    const v2 = (await store.attach({ volume: 'q', generation: 'g', size: 1024 * MiB, group: '', agentId: 'bench' })).volume
    const alone = await fill(v2, 1024 * MiB, 1, 131072)
    const during = fill(v2, 1024 * MiB, alone.seq, 131072)
    const c2 = await v.compact(Math.floor(filled.seq * 0.75))
    const withCompaction = await during
    const after = await restoreAt(dir, v, filled.seq - 1, size)
    await store.close()

    const ingestMb = (131072 * 4096) / MiB
    const rows = [
      `### Restore at a point: ${GB} GiB volume, ${records} journal records (4 KiB writes at random offsets), store level, output fsynced`,
      '',
      '| point | MB/s | peer: plain file copy MB/s | ratio | meets ≥ 500 MB/s |',
      '|---|---:|---:|---:|:---:|',
      ...restores.map((r, i) => `| seq ${r.seq} (${['37 %', '71 %', 'newest'][i]} of the history) | ${r.mbPerSec.toFixed(0)} | ${peer.mbPerSec.toFixed(0)} | ${(r.mbPerSec / peer.mbPerSec).toFixed(2)} | ${r.mbPerSec >= 500 ? 'yes' : 'no'} |`),
      `| newest, after two compactions (base + journal) | ${after.mbPerSec.toFixed(0)} | ${peer.mbPerSec.toFixed(0)} | ${(after.mbPerSec / peer.mbPerSec).toFixed(2)} | ${after.mbPerSec >= 500 ? 'yes' : 'no'} |`,
      '',
      '### Compaction',
      '',
      '| run | history folded (seqs) | base image written, MB/s of volume | segments dropped | journal MB before → after | index keys deleted | seconds |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...[c1, c2].map((c, i) =>
        c
          ? `| ${i === 0 ? 'alone' : 'with ingest on another volume'} | ${c.baseSeq} | ${(size / MiB / (c.ms / 1000)).toFixed(0)} | ${c.segmentsDropped} | ${(c.journalBytesBefore / MiB).toFixed(0)} → ${(c.journalBytesAfter / MiB).toFixed(0)} | ${c.indexKeysDeleted} | ${(c.ms / 1000).toFixed(1)} |`
          : `| ${i === 0 ? 'alone' : 'with ingest'} | nothing to fold | | | | | |`
      ),
      '',
      `| ingest of 512 MiB (4 KiB records) on another volume | MB/s | ratio |`,
      '|---|---:|---:|',
      `| alone (peer) | ${(ingestMb / alone.seconds).toFixed(0)} | 1.00 |`,
      `| while a compaction runs | ${(ingestMb / withCompaction.seconds).toFixed(0)} | ${(alone.seconds / withCompaction.seconds).toFixed(2)} |`,
    ]
    const md = rows.join('\n')
    process.stdout.write(`${md}\n`)
    writeResults(resultsPath('points'), {
      date: new Date().toISOString(), cpus: os.cpus().length, gb: GB, records, fillSeconds: filled.seconds, restores, after, peer, compactions: [c1, c2], ingest: { alone, withCompaction }, markdown: md,
    })
  } finally {
    removeDir(dir)
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`)
  process.exitCode = 1
})
