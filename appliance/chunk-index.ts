// The LevelDB index of one volume's journal: for any sector range and any
// seq, which journal records hold the newest version of each sector at or
// before that seq. It is a cache of the segments, never the truth: it is
// written only after the segments it describes are durable, it can lag
// behind them (recovery catches it up), and it can be deleted and rebuilt
// from them at any time (journal.ts).
//
// Keys (all integers big-endian so LevelDB's byte order is numeric order):
//   'c' chunk u64 | seq u64 | segment u32 | frame offset u32     (25 bytes)
//       one per 64 KiB chunk (128 sectors) a CHANGE record touches. The
//       segment and offset make keys unique when MicroScan's pieces of one
//       write share a seq, and order them as the journal does. A forward
//       scan visits chunks in volume order and, inside a chunk, versions
//       oldest first: a whole-volume restore is one iterator pass.
//   'r' seq u64 | segment u32 | frame offset u32                 (17 bytes)
//       records spanning more than RANGE_CHUNKS chunks (mkfs's whole-disk
//       discard, a large WRITE_ZEROES): one key instead of one per chunk.
//       Readers merge them by seq. They are few (each covers >16 MiB), so
//       the volume keeps them in memory, loaded once at open.
//   'b' last seq u64 -> where a batch starts and ends, its first seq, record
//       count and wall time: `journal show` from a seq, points in time.
//   's' segment u32  -> JSON summary of a segment (records, first/last seq).
// Points in time (appliance/points.ts derives them from the journal too):
//   'k' seq u64      -> TimeMark JSON (label, consistency, wall time, group,
//       note, pinned): the catalog, one key per mark, in seq order.
//   'l' label, 0x00, seq u64 -> empty: TimeMarks by label.
//   'g' start seq u64 -> u64 LE end seq: a window of inexact points (start,
//       end) from a GAP marker to its EXACT one (end 0: still open).
//   't' ms u64 | seq u64 -> empty: the newest seq recorded at each capture
//       millisecond (--at), at most a few keys per batch.
//   'm'              -> JSON: the journal position the index covers (end of
//       the last indexed COMMIT: segment, offset, seq) and the volume's
//       counters. Written in the same LevelDB batch as the entries it
//       covers, so the index is always a prefix of the journal.
// Values of 'c' and 'r': u64 LE first sector, u32 LE sector count, u8 kind,
// u32 LE offset of the record's data in its segment (17 bytes). Sector and
// count are the whole record's; readers clip to the chunk.
//
// LevelDB writes go without sync: losing the newest index entries in a crash
// only means recovery re-reads a little more of the journal.
import fs from 'node:fs'
import { Level } from 'level'
import type { Logger } from 'pino'
import { CHANGE_DATA_OFFSET, readU64, readU64BE, writeU64, writeU64BE } from './journal-format'
import { crashPoint } from './crash-points'

export const CHUNK_SECTORS = 128
export const CHUNK_BYTES = CHUNK_SECTORS * 512
/** A record touching more chunks than this goes to the 'r' key space. */
export const RANGE_CHUNKS = 256

const K_CHUNK = 0x63 // 'c'
const K_RANGE = 0x72 // 'r'
const K_BATCH = 0x62 // 'b'
const K_SEGMENT = 0x73 // 's'
const K_MARK = 0x6b // 'k'
const K_LABEL = 0x6c // 'l'
const K_WINDOW = 0x67 // 'g'
const K_TIME = 0x74 // 't'
const META_KEY = Buffer.from('m')
const INDEX_VERSION = 2

export const CHUNK_KEY_SIZE = 25
export const ENTRY_VALUE_SIZE = 17

export interface IndexMeta {
  version: number
  /** End of the last indexed COMMIT. */
  segment: number
  offset: number
  /** Its last seq (0: nothing indexed). */
  seq: number
  firstSeq: number
  records: number
  batches: number
  appBytes: number
  changedBytes: number
  wireBytes: number
}

export function emptyMeta(firstSegment: number, headerSize: number): IndexMeta {
  return {
    version: INDEX_VERSION,
    segment: firstSegment,
    offset: headerSize,
    seq: 0,
    firstSeq: 0,
    records: 0,
    batches: 0,
    appBytes: 0,
    changedBytes: 0,
    wireBytes: 0,
  }
}

/** A range entry ('r' key), kept in memory. */
export interface RangeEntry {
  seq: number
  segment: number
  offset: number
  sector: number
  count: number
  kind: number
}

export interface BatchLocation {
  lastSeq: number
  firstSeq: number
  segment: number
  offset: number
  end: number
  records: number
  wallMs: number
}

export interface SegmentSummary {
  records: number
  batches: number
  firstSeq: number
  lastSeq: number
}

export function chunkKey(chunk: number, seq: number, segment = 0, offset = 0): Buffer {
  const k = Buffer.allocUnsafe(CHUNK_KEY_SIZE)
  k[0] = K_CHUNK
  writeU64BE(k, 1, chunk)
  writeU64BE(k, 9, seq)
  k.writeUInt32BE(segment, 17)
  k.writeUInt32BE(offset, 21)
  return k
}

export function keyChunk(k: Buffer): number {
  return readU64BE(k, 1)
}
export function keySeq(k: Buffer): number {
  return readU64BE(k, 9)
}
export function keySegment(k: Buffer): number {
  return k.readUInt32BE(17)
}
export function keyOffset(k: Buffer): number {
  return k.readUInt32BE(21)
}
export function valueSector(v: Buffer): number {
  return readU64(v, 0)
}
export function valueCount(v: Buffer): number {
  return v.readUInt32LE(8)
}
export function valueKind(v: Buffer): number {
  return v[12]
}
export function valueDataOffset(v: Buffer): number {
  return v.readUInt32LE(13)
}

function rangeKey(seq: number, segment: number, offset: number): Buffer {
  const k = Buffer.allocUnsafe(17)
  k[0] = K_RANGE
  writeU64BE(k, 1, seq)
  k.writeUInt32BE(segment, 9)
  k.writeUInt32BE(offset, 13)
  return k
}

function entryValue(sector: number, count: number, kind: number, dataOffset: number): Buffer {
  const v = Buffer.allocUnsafe(ENTRY_VALUE_SIZE)
  writeU64(v, 0, sector)
  v.writeUInt32LE(count, 8)
  v[12] = kind
  v.writeUInt32LE(dataOffset, 13)
  return v
}

function batchKey(lastSeq: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = K_BATCH
  writeU64BE(k, 1, lastSeq)
  return k
}

function segmentKey(n: number): Buffer {
  const k = Buffer.allocUnsafe(5)
  k[0] = K_SEGMENT
  k.writeUInt32BE(n, 1)
  return k
}

function markKey(seq: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = K_MARK
  writeU64BE(k, 1, seq)
  return k
}

function labelKey(label: string, seq: number): Buffer {
  const l = Buffer.from(label, 'utf8')
  const k = Buffer.allocUnsafe(1 + l.length + 1 + 8)
  k[0] = K_LABEL
  l.copy(k, 1)
  k[1 + l.length] = 0
  writeU64BE(k, 2 + l.length, seq)
  return k
}

function windowKey(start: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = K_WINDOW
  writeU64BE(k, 1, start)
  return k
}

function timeKey(ms: number, seq: number): Buffer {
  const k = Buffer.allocUnsafe(17)
  k[0] = K_TIME
  writeU64BE(k, 1, ms)
  writeU64BE(k, 9, seq)
  return k
}

/** A catalogued TimeMark (the 'k' value plus its seq). */
export interface CatalogEntry {
  seq: number
  label: string
  consistency: 'app' | 'crash'
  wallMs: number
  group: string
  note: string
  pinned: boolean
}

/** Inexact points: every seq s with start < s < end (end 0: no end yet). */
export interface InexactWindow {
  start: number
  end: number
}

const EMPTY = Buffer.alloc(0)

type Op = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer }

/**
 * The LevelDB operations for some committed batches, built up before one
 * write. Entries for a record are derived here and nowhere else, so recovery,
 * the live write path and verify() agree on them.
 */
export class IndexBatch {
  readonly ops: Op[] = []
  readonly ranges: RangeEntry[] = []

  /** The index entries of one CHANGE record at `frameOffset` in `segment`. Calls fn(key, value) for each. */
  static entries(
    seq: number,
    sector: number,
    count: number,
    kind: number,
    segment: number,
    frameOffset: number,
    fn: (key: Buffer, value: Buffer, range: boolean) => void
  ): void {
    if (count === 0 || kind === 4) return // FLUSH, or an empty record: no sectors change
    const value = entryValue(sector, count, kind, frameOffset + CHANGE_DATA_OFFSET)
    const c0 = Math.floor(sector / CHUNK_SECTORS)
    const c1 = Math.floor((sector + count - 1) / CHUNK_SECTORS)
    if (c1 - c0 + 1 > RANGE_CHUNKS) {
      fn(rangeKey(seq, segment, frameOffset), value, true)
      return
    }
    for (let c = c0; c <= c1; c++) fn(chunkKey(c, seq, segment, frameOffset), value, false)
  }

  addChange(seq: number, sector: number, count: number, kind: number, segment: number, frameOffset: number): void {
    IndexBatch.entries(seq, sector, count, kind, segment, frameOffset, (key, value, range) => {
      this.ops.push({ type: 'put', key, value })
      if (range) this.ranges.push({ seq, segment, offset: frameOffset, sector, count, kind })
    })
  }

  addBatch(b: BatchLocation): void {
    const v = Buffer.allocUnsafe(36)
    v.writeUInt32LE(b.segment, 0)
    v.writeUInt32LE(b.offset, 4)
    v.writeUInt32LE(b.end, 8)
    writeU64(v, 12, b.firstSeq)
    v.writeUInt32LE(b.records, 20)
    writeU64(v, 24, b.wallMs)
    v.writeUInt32LE(0, 32)
    this.ops.push({ type: 'put', key: batchKey(b.lastSeq), value: v })
  }

  putTimeMark(e: CatalogEntry): void {
    const { seq, ...rest } = e
    this.ops.push({ type: 'put', key: markKey(seq), value: Buffer.from(JSON.stringify(rest)) })
    if (e.label) this.ops.push({ type: 'put', key: labelKey(e.label, seq), value: EMPTY })
  }

  putWindow(w: InexactWindow): void {
    const v = Buffer.allocUnsafe(8)
    writeU64(v, 0, w.end)
    this.ops.push({ type: 'put', key: windowKey(w.start), value: v })
  }

  putTime(ms: number, seq: number): void {
    this.ops.push({ type: 'put', key: timeKey(ms, seq), value: EMPTY })
  }

  setSegment(n: number, s: SegmentSummary): void {
    this.ops.push({ type: 'put', key: segmentKey(n), value: Buffer.from(JSON.stringify(s)) })
  }

  setMeta(m: IndexMeta): void {
    this.ops.push({ type: 'put', key: META_KEY, value: Buffer.from(JSON.stringify(m)) })
  }
}

function decodeBatchLocation(k: Buffer, v: Buffer): BatchLocation {
  return {
    lastSeq: readU64BE(k, 1),
    segment: v.readUInt32LE(0),
    offset: v.readUInt32LE(4),
    end: v.readUInt32LE(8),
    firstSeq: readU64(v, 12),
    records: v.readUInt32LE(20),
    wallMs: readU64(v, 24),
  }
}

export class ChunkIndex {
  db: Level<Buffer, Buffer>
  meta: IndexMeta | null = null
  /** Every 'r' entry, in key order (seq, segment, offset). */
  ranges: RangeEntry[] = []

  private constructor(
    readonly dir: string,
    private readonly log: Logger
  ) {
    this.db = ChunkIndex.make(dir)
  }

  private static make(dir: string): Level<Buffer, Buffer> {
    return new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  }

  static async open(dir: string, log: Logger): Promise<ChunkIndex> {
    const ix = new ChunkIndex(dir, log)
    await ix.openDb()
    return ix
  }

  private async openDb(): Promise<void> {
    // A bigger write buffer than LevelDB's 4 MiB: ingest writes many small keys.
    await this.db.open({ createIfMissing: true, writeBufferSize: 16 * 1024 * 1024, cacheSize: 16 * 1024 * 1024 })
    const m = await this.db.get(META_KEY)
    this.meta = m ? (JSON.parse(m.toString()) as IndexMeta) : null
    if (this.meta && this.meta.version !== INDEX_VERSION) {
      this.log.warn({ index: this.dir, version: this.meta.version }, 'index has another format version: rebuilding it')
      this.meta = null
    }
    this.ranges = []
    if (!this.meta) return
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_RANGE]), lt: Buffer.from([K_RANGE + 1]) })) {
      this.ranges.push({
        seq: readU64BE(k, 1),
        segment: k.readUInt32BE(9),
        offset: k.readUInt32BE(13),
        sector: valueSector(v),
        count: valueCount(v),
        kind: valueKind(v),
      })
    }
  }

  /** Deletes every entry (the directory) and starts an empty index. */
  async wipe(): Promise<void> {
    await this.db.close()
    await fs.promises.rm(this.dir, { recursive: true, force: true })
    this.db = ChunkIndex.make(this.dir)
    await this.openDb()
  }

  async write(b: IndexBatch, meta: IndexMeta): Promise<void> {
    b.setMeta(meta)
    await this.db.batch(b.ops)
    for (const r of b.ranges) this.ranges.push(r)
    this.meta = meta
  }

  async segmentSummaries(): Promise<Map<number, SegmentSummary>> {
    const out = new Map<number, SegmentSummary>()
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_SEGMENT]), lt: Buffer.from([K_SEGMENT + 1]) })) {
      out.set(k.readUInt32BE(1), JSON.parse(v.toString()) as SegmentSummary)
    }
    return out
  }

  /** The first batch whose last seq is >= seq. */
  async batchAtOrAfter(seq: number): Promise<BatchLocation | null> {
    const it = this.db.iterator({ gte: batchKey(seq), lt: Buffer.from([K_BATCH + 1]), limit: 1 })
    try {
      const e = await it.next()
      return e ? decodeBatchLocation(e[0], e[1]) : null
    } finally {
      await it.close()
    }
  }

  // ---- points in time ----

  async timemarks(opts: { fromSeq?: number; limit?: number } = {}): Promise<CatalogEntry[]> {
    const out: CatalogEntry[] = []
    const it = this.db.iterator({ gte: markKey(opts.fromSeq ?? 0), lt: Buffer.from([K_MARK + 1]), limit: opts.limit ?? -1 })
    for await (const [k, v] of it) out.push({ seq: readU64BE(k, 1), ...(JSON.parse(v.toString()) as Omit<CatalogEntry, 'seq'>) })
    return out
  }

  async timemark(seq: number): Promise<CatalogEntry | null> {
    const v = await this.db.get(markKey(seq))
    return v ? { seq, ...(JSON.parse(v.toString()) as Omit<CatalogEntry, 'seq'>) } : null
  }

  /** Seqs of the TimeMarks with this label, oldest first. */
  async labelled(label: string): Promise<number[]> {
    const lo = labelKey(label, 0)
    const hi = Buffer.from(lo)
    hi.fill(0xff, hi.length - 8)
    const out: number[] = []
    for await (const k of this.db.keys({ gte: lo, lte: hi })) out.push(readU64BE(k, k.length - 8))
    return out
  }

  async windows(): Promise<InexactWindow[]> {
    const out: InexactWindow[] = []
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_WINDOW]), lt: Buffer.from([K_WINDOW + 1]) })) {
      out.push({ start: readU64BE(k, 1), end: readU64(v, 0) })
    }
    return out
  }

  /** The newest (time, seq) recorded at or before ms, or null. */
  async seqAtOrBefore(ms: number): Promise<{ ms: number; seq: number } | null> {
    const it = this.db.keys({ gte: Buffer.from([K_TIME]), lt: timeKey(ms + 1, 0), reverse: true, limit: 1 })
    for await (const k of it) return { ms: readU64BE(k, 1), seq: readU64BE(k, 9) }
    return null
  }

  /**
   * Deletes what a compaction folded into the base image at seq: chunk,
   * range, batch and time keys at or below it, the catalog entries of the
   * expired marks, closed windows that end at or below it, and the summaries
   * of the dropped segments. Readers already ignore all of it; this only
   * reclaims the space, in batches, while ingest goes on.
   */
  async purge(seq: number, expired: CatalogEntry[], segments: number[]): Promise<number> {
    let deleted = 0
    let ops: Op[] = []
    const flush = async (): Promise<void> => {
      if (ops.length === 0) return
      await this.db.batch(ops)
      deleted += ops.length
      ops = []
      crashPoint('compact:mid-purge')
    }
    const scan = async (prefix: number, seqOf: (k: Buffer) => number): Promise<void> => {
      for await (const k of this.db.keys({ gte: Buffer.from([prefix]), lt: Buffer.from([prefix + 1]) })) {
        if (seqOf(k) <= seq) ops.push({ type: 'del', key: k })
        if (ops.length >= 10_000) await flush()
      }
    }
    await scan(K_CHUNK, (k) => readU64BE(k, 9))
    await scan(K_RANGE, (k) => readU64BE(k, 1))
    await scan(K_BATCH, (k) => readU64BE(k, 1))
    await scan(K_TIME, (k) => readU64BE(k, 9))
    for (const e of expired) {
      ops.push({ type: 'del', key: markKey(e.seq) })
      if (e.label) ops.push({ type: 'del', key: labelKey(e.label, e.seq) })
    }
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_WINDOW]), lt: Buffer.from([K_WINDOW + 1]) })) {
      const end = readU64(v, 0)
      if (end !== 0 && end <= seq) ops.push({ type: 'del', key: k })
    }
    for (const n of segments) ops.push({ type: 'del', key: segmentKey(n) })
    await flush()
    this.ranges = this.ranges.filter((r) => r.seq > seq)
    return deleted
  }

  /** Iterator over chunk entries of chunks [c0, c1), forward, optionally bounded to one chunk's seqs. */
  chunkIterator(opts: { gte: Buffer; lt: Buffer; reverse?: boolean }) {
    return this.db.iterator({ gte: opts.gte, lt: opts.lt, reverse: opts.reverse ?? false })
  }

  /** Every chunk and range key with its value (verify). */
  entryIterator(kind: 'c' | 'r') {
    const p = kind === 'c' ? K_CHUNK : K_RANGE
    return this.db.iterator({ gte: Buffer.from([p]), lt: Buffer.from([p + 1]) })
  }

  close(): Promise<void> {
    return this.db.close()
  }
}
