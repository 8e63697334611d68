// Opening a volume is recovery, whether or not it was shut down cleanly:
//   1. state.json and pins.json; the base image, and the segments a
//      committed compaction folded into it but a crash left behind;
//   2. the segments (journal.ts opens and checks their headers);
//   3. the index: missing, unreadable, of another version, or ahead of the
//      segments (naming a missing one, or a position past an end): rebuilt
//      from scratch; otherwise caught up from the position it covers;
//   4. the catch-up scan indexes every batch after that position, and finds
//      a torn tail (damage with no intact batch after it in the newest
//      segment: a batch that was never acknowledged; cut off and logged) and
//      corruption (damage followed by intact batches: kept, logged, and
//      points at or after it refuse to be read).
// Afterwards the ledger holds the durable seq, the counters and summaries,
// and the journal's append position; the catalog holds the windows and the
// TimeMark count.
import fs from 'node:fs'
import path from 'node:path'
import { syncDir } from '../native/atomic-file'
import { BaseImage } from './base-image'
import { ChunkIndex, IndexBatch, emptyMeta } from './chunk-index'
import { SCAN_STRIDE, type ScannedBatch } from './journal'
import { SEGMENT_HEADER_SIZE } from './journal-format'
import { listSegments, segmentFileName } from './segment'
import type { TimemarkCatalog } from './timemark-catalog'
import type { VolumeLedger } from './volume-ledger'

// The journal scan's per-record tuple (journal.ts SCAN_STRIDE): the fields read here and in verify.
export const SCAN_SEQ = 0
export const SCAN_SECTOR = 1
export const SCAN_COUNT = 2
export const SCAN_KIND = 3
/** The record's frame offset in its segment. */
export const SCAN_FRAME = 5
/** The header's capture time, ms modulo 2^32. */
export const SCAN_TIME = 6

/** Recovers the ledger and the catalog from the volume's files; returns state.json's fullSyncDone. */
export async function recoverVolume(l: VolumeLedger, catalog: TimemarkCatalog): Promise<boolean> {
  const state = await fs.promises.readFile(path.join(l.dir, 'state.json'), 'utf8').catch(() => '{}')
  const fullSyncDone = (JSON.parse(state) as { fullSyncDone?: boolean }).fullSyncDone === true
  const j = l.journal
  await catalog.loadPins()
  l.base = await BaseImage.open(l.dir)
  if (l.base) {
    // Segments a committed compaction folded into the base, left behind by a crash.
    const dropped = await dropSegmentFiles(path.join(l.dir, 'segments'), l.base.state.throughSegment)
    if (dropped) l.log.info({ segments: dropped, baseSeq: l.base.seq }, 'removed segments already folded into the base image')
  }
  await j.open()
  const first = j.ordered()[0].number
  const indexDir = path.join(l.dir, 'index')
  try {
    l.index = await ChunkIndex.open(indexDir, l.log)
  } catch (e) {
    l.log.warn({ err: (e as Error).message }, 'index cannot be opened: rebuilding it from the segments')
    await fs.promises.rm(indexDir, { recursive: true, force: true })
    l.index = await ChunkIndex.open(indexDir, l.log)
  }
  let m = l.index.meta
  const at = m ? j.segments.get(m.segment) : undefined
  if (m && (!at || m.offset > at.size || m.offset < SEGMENT_HEADER_SIZE || m.segment < first)) {
    l.log.warn({ indexAt: `${m.segment}:${m.offset}` }, 'index is ahead of the segments or names a missing one: rebuilding it')
    m = null
  }
  const rebuild = !m
  if (!m) {
    if (l.index.meta) await l.index.wipe()
    m = emptyMeta(first, SEGMENT_HEADER_SIZE)
    // The journal starts above the base: what the base holds is the state at its seq.
    if (l.base) m.seq = l.base.seq
    l.log.info({ segments: j.segments.size }, 'building the index from the segments')
  }
  l.counters = { ...m }
  l.summaries = l.index.meta ? await l.index.segmentSummaries() : new Map()
  catalog.windows = l.index.meta ? await l.index.windows() : l.base ? l.base.state.windows.map((w) => ({ ...w })) : []
  catalog.count = l.index.meta ? (await l.index.timemarks()).length : 0
  const started = Date.now()
  let pending = new IndexBatch()
  if (rebuild && l.base) {
    // The marks and windows whose MARK/GAP records were folded into the base.
    for (const e of l.base.state.marks) pending.putTimeMark(e)
    for (const w of catalog.windows) pending.putWindow(w)
    catalog.count = l.base.state.marks.length
  }
  let touched = new Set<number>()
  let caughtUp = 0
  const flush = async () => {
    for (const n of touched) pending.setSegment(n, l.summaries.get(n)!)
    await l.index.write(pending, { ...l.counters })
    pending = new IndexBatch()
    touched = new Set()
  }
  const res = await j.scan({ segment: m.segment, offset: m.offset }, m.seq, { tailMayTear: true }, async (b: ScannedBatch) => {
    const points = catalog.builder(pending, b.commit.wallMs)
    for (let i = 0; i < b.count; i++) {
      const k = i * SCAN_STRIDE
      pending.addChange(b.recs[k + SCAN_SEQ], b.recs[k + SCAN_SECTOR], b.recs[k + SCAN_COUNT], b.recs[k + SCAN_KIND], b.segment, b.recs[k + SCAN_FRAME])
      points.record(b.recs[k + SCAN_SEQ], b.recs[k + SCAN_KIND], b.recs[k + SCAN_TIME], () => b.marks.get(i)!)
    }
    points.finish(b.commit.lastSeq)
    l.noteBatch(pending, b.segment, b.start, b.end, b.count, b.commit)
    touched.add(b.segment)
    caughtUp++
    if (pending.ops.length >= 50_000) await flush()
  })
  if (pending.ops.length > 0) await flush()
  catalog.settle()
  if (res.torn) {
    const seg = j.segments.get(res.torn.segment)!
    if (await seg.zeroPaddingAt(res.torn.at)) {
      // Direct writes pad the last block with zeroes (segment.ts): after a crash they are still there.
      l.log.info({ segment: seg.name, offset: res.torn.at, bytes: res.torn.bytes }, `cutting ${res.torn.bytes} bytes of zero padding off ${seg.name} at offset ${res.torn.at}`)
    } else {
      l.log.warn(
        { segment: seg.name, offset: res.torn.at, bytes: res.torn.bytes, why: res.torn.why },
        `torn tail: cutting ${res.torn.bytes} bytes off ${seg.name} at offset ${res.torn.at} (a batch that was never acknowledged)`
      )
    }
    await j.truncate(res.torn.segment, res.torn.at)
  }
  l.corrupt = res.corrupt
  for (const c of res.corrupt) l.log.error({ ...c }, `journal corruption in ${c.segment} at offset ${c.offset}: ${c.message}`)
  // What an earlier verify found in segments this scan did not read.
  for (const c of await l.knownCorrupt()) {
    if (l.corrupt.some((x) => x.segment === c.segment && x.offset === c.offset)) continue
    l.corrupt.push(c)
    l.log.error({ ...c }, `journal corruption in ${c.segment} at offset ${c.offset} (found by an earlier verify): ${c.message}`)
  }
  // Recovery may have found batches the index already had (lost meta write): counters follow the scan.
  l.durableSeq = Math.max(res.lastSeq, l.counters.seq)
  const newest = j.newest()
  j.tail = { segment: newest.number, offset: newest.size }
  j.durableEnd = { ...j.tail }
  if (caughtUp > 0 || res.torn) {
    l.log.info(
      { batches: caughtUp, durableSeq: l.durableSeq, ms: Date.now() - started },
      `recovered: index caught up by ${caughtUp} batches, durable seq ${l.durableSeq}`
    )
  }
  return fullSyncDone
}

/** Deletes segment files numbered up to `through` (folded into the base); returns how many. */
async function dropSegmentFiles(dir: string, through: number): Promise<number> {
  let n = 0
  for (const num of await listSegments(dir)) {
    if (num > through) continue
    await fs.promises.rm(path.join(dir, segmentFileName(num)), { force: true })
    n++
  }
  if (n) await syncDir(dir)
  return n
}
