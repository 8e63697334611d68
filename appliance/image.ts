// Reading a volume's image at any seq from the index and the segments:
// whole-volume restore extents, random reads (TimeViews), and the data
// behind fingerprints.
//
// For one 64 KiB chunk the index holds every version (record) that touched
// it, ordered by seq. A plan for the chunk says, per sector, where its
// newest contents at the point live: a segment and a file offset, or zero
// (never written, trimmed or zeroed). Two ways to build it:
//   - forward (extents): one iterator over every 'c' key in volume order,
//     versions oldest first, each painting its sectors over the older ones.
//     A whole-volume restore is one pass over the index with no seek per
//     chunk, and memory is one plan per chunk, however many versions it has.
//     Entries newer than the point are skipped (a seek to the next chunk when
//     they run past the iterator's batch).
//   - backward (read): per chunk, a reverse iterator from the point down,
//     newest first, painting only sectors no newer version covered (a
//     coverage mask), stopping when every wanted sector is covered, so a
//     random read of a hot chunk does not walk its whole history.
// Range entries ('r' keys, huge trims and zeroes) are merged into either walk
// in (seq, segment, offset) order, the journal's order.
//
// The plan becomes preads: runs of sectors contiguous in one segment become
// one read straight into the output buffer (the journal stores data raw for
// this). Restores keep a few 1 MiB windows of reads in flight and skip
// windows and chunks that are all zero.
import { TidemarkError } from '../proto/errors'
import {
  CHUNK_BYTES,
  CHUNK_SECTORS,
  chunkKey,
  keyChunk,
  keySegment,
  keyOffset,
  keySeq,
  valueCount,
  valueDataOffset,
  valueKind,
  valueSector,
  type ChunkIndex,
  type RangeEntry,
} from './chunk-index'
import { CHANGE_DATA_OFFSET } from './journal-format'
import { SECTOR_SIZE, carriesSectorData } from '../proto/record'
import type { SegmentFile } from './segment'
import type { BaseImage } from './base-image'
import { native } from '../native'

export const EXTENT_BYTES = 1 << 20
const WINDOW_CHUNKS = EXTENT_BYTES / CHUNK_BYTES
/** Windows of preads in flight ahead of the consumer during a restore. */
const READ_AHEAD = 4
const ZERO_CHUNK = Buffer.alloc(CHUNK_BYTES)

export interface ImageSource {
  readonly volume: string
  readonly sizeBytes: number
  readonly index: ChunkIndex
  /** Expired history folded into one image (base-image.ts); versions at or below its seq are ignored. */
  readonly base: BaseImage | null
  segment(n: number): SegmentFile | undefined
}

/** A plan's segment number for "the base image, at the sector's own offset". */
export const BASE = -2

/** Where each sector of one chunk lives: segment (-1: zero, BASE: the base image) and file offset. */
export class ChunkPlan {
  readonly seg = new Int32Array(CHUNK_SECTORS)
  readonly off = new Float64Array(CHUNK_SECTORS)
  readonly covered = new Uint8Array(CHUNK_SECTORS)
  first = 0 // first sector of the chunk
  n = 0 // sectors in the chunk (the last chunk of a volume may be short)
  left = 0 // backward walk: sectors still uncovered

  reset(chunk: number, sizeSectors: number, base: BaseImage | null = null): void {
    this.first = chunk * CHUNK_SECTORS
    this.n = Math.min(CHUNK_SECTORS, sizeSectors - this.first)
    this.covered.fill(0)
    this.left = this.n
    if (base && base.hasChunk(chunk)) {
      this.seg.fill(BASE)
      for (let i = 0; i < this.n; i++) this.off[i] = (this.first + i) * SECTOR_SIZE
    } else {
      this.seg.fill(-1)
    }
  }

  /** Forward: a newer version overwrites. */
  paint(sector: number, count: number, kind: number, segment: number, dataOffset: number): void {
    const a = Math.max(sector, this.first)
    const b = Math.min(sector + count, this.first + this.n)
    if (a >= b) return
    if (!carriesSectorData(kind)) {
      this.seg.fill(-1, a - this.first, b - this.first)
      return
    }
    for (let s = a; s < b; s++) {
      this.seg[s - this.first] = segment
      this.off[s - this.first] = dataOffset + (s - sector) * SECTOR_SIZE
    }
  }

  /** Backward: an older version fills only what no newer one covered. */
  fill(sector: number, count: number, kind: number, segment: number, dataOffset: number): void {
    const a = Math.max(sector, this.first)
    const b = Math.min(sector + count, this.first + this.n)
    const data = carriesSectorData(kind)
    for (let s = a; s < b; s++) {
      const i = s - this.first
      if (this.covered[i]) continue
      this.covered[i] = 1
      this.left--
      if (data) {
        this.seg[i] = segment
        this.off[i] = dataOffset + (s - sector) * SECTOR_SIZE
      } else {
        this.seg[i] = -1 // trimmed or zeroed: not the base's bytes either
      }
    }
  }

  /** Marks sectors outside [lo, hi) as not wanted (backward walk of a partial read). */
  want(lo: number, hi: number): void {
    for (let i = 0; i < this.n; i++) {
      const s = this.first + i
      if (s < lo || s >= hi) {
        this.covered[i] = 1
        this.left--
      }
    }
  }

  allZero(): boolean {
    for (let i = 0; i < this.n; i++) if (this.seg[i] !== -1) return false
    return true
  }
}

function rangeBefore(r: RangeEntry, seq: number, segment: number, offset: number): boolean {
  if (r.seq !== seq) return r.seq < seq
  if (r.segment !== segment) return r.segment < segment
  return r.offset < offset
}

function rangeTouches(r: RangeEntry, first: number, n: number): boolean {
  return r.sector < first + n && r.sector + r.count > first
}

/** A pending pread into a window buffer. */
interface Read {
  seg: { readonly fd: number }
  bufOff: number
  len: number
  pos: number
}

/** Turns a chunk plan into preads into buf at bufBase (the chunk's byte offset in buf). */
function planReads(src: ImageSource, base: BaseImage | null, p: ChunkPlan, buf: Buffer, bufBase: number, reads: Read[], from = 0, to = p.n): void {
  let i = from
  while (i < to) {
    const s = p.seg[i]
    if (s === -1) {
      i++
      continue
    }
    let j = i + 1
    while (j < to && p.seg[j] === s && p.off[j] === p.off[j - 1] + SECTOR_SIZE) j++
    const seg = s === BASE ? base : src.segment(s)
    if (!seg) throw new TidemarkError('JOURNAL_MISSING', `volume ${src.volume}: segment ${s} named by the index is missing`)
    // Join with the previous read when the file and the buffer both continue.
    const last = reads.at(-1)
    const bufOff = bufBase + i * SECTOR_SIZE
    if (last && last.seg === seg && last.bufOff + last.len === bufOff && last.pos + last.len === p.off[i]) {
      last.len += (j - i) * SECTOR_SIZE
    } else {
      reads.push({ seg, bufOff, len: (j - i) * SECTOR_SIZE, pos: p.off[i] })
    }
    i = j
  }
}

/**
 * All of a window's preads in one native call (native/src/io_addon.cc): a
 * restore of random 4 KiB writes is a pread per record, and a libuv request
 * plus a promise each cost more than the pread. Files stay open while reads
 * run: segments and bases are closed only once their readers are done
 * (VolumeStore readers).
 */
async function runReads(buf: Buffer, reads: Read[]): Promise<void> {
  if (reads.length === 0) return
  const reqs = new Float64Array(reads.length * 4)
  for (let i = 0; i < reads.length; i++) {
    const r = reads[i]
    reqs[i * 4] = r.seg.fd
    reqs[i * 4 + 1] = r.pos
    reqs[i * 4 + 2] = r.len
    reqs[i * 4 + 3] = r.bufOff
  }
  await native.readBatch(buf, reqs)
}

/**
 * The plan of every chunk of the image at `seq`, in volume order, from one
 * forward pass over the index (the plan object is reused: use it before the
 * next step). The caller has checked that seq is readable and holds a lease
 * on `base`.
 */
export async function* forwardPlans(src: ImageSource, seq: number, base: BaseImage | null): AsyncGenerator<ChunkPlan> {
  const sizeSectors = src.sizeBytes / SECTOR_SIZE
  const nChunks = Math.ceil(sizeSectors / CHUNK_SECTORS)
  const floor = base ? base.seq : 0
  const ranges = src.index.ranges.filter((r) => r.seq <= seq && r.seq > floor)
  const it = src.index.chunkIterator({ gte: chunkKey(0, 0), lt: chunkKey(nChunks, 0) })
  let batch: Array<[Buffer, Buffer]> = []
  let bi = 0
  let done = false
  const plan = new ChunkPlan()
  try {
    for (let c = 0; c < nChunks; c++) {
      plan.reset(c, sizeSectors, base)
      const rs = ranges.length ? ranges.filter((r) => rangeTouches(r, plan.first, plan.n)) : ranges
      let ri = 0
      for (;;) {
        if (bi === batch.length) {
          if (done) break
          batch = await it.nextv(1000)
          bi = 0
          if (batch.length === 0) {
            done = true
            break
          }
        }
        const [k, v] = batch[bi]
        if (keyChunk(k) !== c) break
        const kseq = keySeq(k)
        if (kseq > seq) {
          // The rest of this chunk is newer than the point: skip it.
          while (bi < batch.length && keyChunk(batch[bi][0]) === c) bi++
          if (bi === batch.length && !done) {
            it.seek(chunkKey(c + 1, 0))
            batch = []
            bi = 0
          }
          break
        }
        if (kseq <= floor) {
          bi++ // folded into the base
          continue
        }
        const kseg = keySegment(k)
        const koff = keyOffset(k)
        while (ri < rs.length && rangeBefore(rs[ri], kseq, kseg, koff)) {
          const r = rs[ri++]
          plan.paint(r.sector, r.count, r.kind, r.segment, r.offset + CHANGE_DATA_OFFSET)
        }
        plan.paint(valueSector(v), valueCount(v), valueKind(v), kseg, valueDataOffset(v))
        bi++
      }
      while (ri < rs.length) {
        const r = rs[ri++]
        plan.paint(r.sector, r.count, r.kind, r.segment, r.offset + CHANGE_DATA_OFFSET)
      }
      yield plan
    }
  } finally {
    await it.close()
  }
}

/**
 * The image at `seq`: extents that are not all zero, in offset order, each at
 * most 1 MiB. The caller has checked that seq is readable.
 */
export async function* imageExtents(src: ImageSource, seq: number): AsyncGenerator<{ offset: number; data: Buffer }> {
  // One base for the whole read, even if a compaction replaces it meanwhile
  // (the old one stays open until readers that started before are done).
  const base = src.base
  const inflight: Array<Promise<Array<{ offset: number; data: Buffer }>>> = []
  let w = -1
  let buf: Buffer | null = null
  let reads: Read[] = []
  let dataChunks: number[] = []
  // A window's reads go in flight once the walk has passed it.
  const flush = (): void => {
    if (!buf) return
    const wBuf = buf
    const wOffset = w * CHUNK_BYTES
    const chunks = dataChunks
    const p = runReads(wBuf, reads).then(() => windowExtents(wBuf, wOffset, chunks))
    p.catch(() => {}) // observed when its turn comes; never an unhandled rejection meanwhile
    inflight.push(p)
    buf = null
  }
  try {
    for await (const plan of forwardPlans(src, seq, base)) {
      const c = plan.first / CHUNK_SECTORS
      if (c >= w + WINDOW_CHUNKS || w < 0) {
        flush()
        while (inflight.length >= READ_AHEAD) for (const e of await inflight.shift()!) yield e
        w = c - (c % WINDOW_CHUNKS)
        reads = []
        dataChunks = []
      }
      if (plan.allZero()) continue
      buf ??= Buffer.alloc(Math.min(EXTENT_BYTES, src.sizeBytes - w * CHUNK_BYTES))
      planReads(src, base, plan, buf, (c - w) * CHUNK_BYTES, reads)
      dataChunks.push(c - w)
    }
    flush()
    while (inflight.length) for (const e of await inflight.shift()!) yield e
  } finally {
    await Promise.allSettled(inflight)
  }
}

/** The runs of chunks in a window that hold data and are not all zero. */
function windowExtents(buf: Buffer, base: number, dataChunks: number[]): Array<{ offset: number; data: Buffer }> {
  const out: Array<{ offset: number; data: Buffer }> = []
  let runStart = -1
  let runEnd = -1
  for (const c of dataChunks) {
    const a = c * CHUNK_BYTES
    const b = Math.min(buf.length, a + CHUNK_BYTES)
    if (buf.subarray(a, b).equals(ZERO_CHUNK.subarray(0, b - a))) continue
    if (runEnd === a) {
      runEnd = b
      continue
    }
    if (runStart >= 0) out.push({ offset: base + runStart, data: buf.subarray(runStart, runEnd) })
    runStart = a
    runEnd = b
  }
  if (runStart >= 0) out.push({ offset: base + runStart, data: buf.subarray(runStart, runEnd) })
  return out
}

/** `length` bytes at byte `offset` of the image at `seq` (any alignment). */
export async function readImage(src: ImageSource, seq: number, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length)
  if (length === 0) return out
  const sizeSectors = src.sizeBytes / SECTOR_SIZE
  const s0 = Math.floor(offset / SECTOR_SIZE)
  const s1 = Math.ceil((offset + length) / SECTOR_SIZE)
  const aligned = s0 * SECTOR_SIZE === offset && s1 * SECTOR_SIZE === offset + length
  const buf = aligned ? out : Buffer.alloc((s1 - s0) * SECTOR_SIZE)
  const base = src.base
  const floor = base ? base.seq : 0
  const ranges = src.index.ranges.filter((r) => r.seq <= seq && r.seq > floor && r.sector < s1 && r.sector + r.count > s0)
  const plan = new ChunkPlan()
  const reads: Read[] = []
  for (let c = Math.floor(s0 / CHUNK_SECTORS); c * CHUNK_SECTORS < s1; c++) {
    plan.reset(c, sizeSectors, base)
    const lo = Math.max(s0, plan.first)
    const hi = Math.min(s1, plan.first + plan.n)
    plan.want(lo, hi)
    const rs = ranges.filter((r) => rangeTouches(r, lo, hi - lo))
    let ri = rs.length - 1
    const it = src.index.chunkIterator({ gte: chunkKey(c, floor + 1), lt: chunkKey(c, seq + 1), reverse: true })
    try {
      while (plan.left > 0) {
        const entries = await it.nextv(64)
        if (entries.length === 0) break
        for (const [k, v] of entries) {
          const kseq = keySeq(k)
          const kseg = keySegment(k)
          const koff = keyOffset(k)
          while (ri >= 0 && !rangeBefore(rs[ri], kseq, kseg, koff)) {
            const r = rs[ri--]
            plan.fill(r.sector, r.count, r.kind, r.segment, r.offset + CHANGE_DATA_OFFSET)
          }
          plan.fill(valueSector(v), valueCount(v), valueKind(v), kseg, valueDataOffset(v))
          if (plan.left === 0) break
        }
      }
    } finally {
      await it.close()
    }
    while (ri >= 0 && plan.left > 0) {
      const r = rs[ri--]
      plan.fill(r.sector, r.count, r.kind, r.segment, r.offset + CHANGE_DATA_OFFSET)
    }
    planReads(src, base, plan, buf, (plan.first - s0) * SECTOR_SIZE + 0, reads, lo - plan.first, hi - plan.first)
  }
  await runReads(buf, reads)
  if (!aligned) buf.copy(out, 0, offset - s0 * SECTOR_SIZE, offset - s0 * SECTOR_SIZE + length)
  return out
}
