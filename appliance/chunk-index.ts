// The LevelDB index of one volume's journal: for any sector range and any
// seq, which journal records hold the newest version of each sector at or
// before that seq. It is a cache of the segments, never the truth: it is
// written only after the segments it describes are durable, it can lag
// behind them (recovery catches it up), and it can be deleted and rebuilt
// from them at any time (journal.ts). Its key spaces and their byte layout
// are in index-keys.ts; this file writes them (IndexBatch, one LevelDB batch
// per commit round) and reads them. The LevelDB handle is private: readers
// get iterators over named key spaces (chunkIterator, entryIterator,
// snapshotEntries), never the database.
//
// LevelDB writes go without sync: losing the newest index entries in a crash
// only means recovery re-reads a little more of the journal.
import fs from 'node:fs'
import { Level } from 'level'
import type { Logger } from 'pino'
import { CHANGE_DATA_OFFSET } from './journal-format'
import { crashPoint } from './crash-points'
import {
  CHUNK_SECTORS,
  EMPTY,
  INDEX_VERSION,
  K_BATCH,
  K_CHUNK,
  K_MARK,
  K_RANGE,
  K_SEGMENT,
  K_TIME,
  K_WINDOW,
  META_KEY,
  RANGE_CHUNKS,
  batchKey,
  batchValue,
  chunkKey,
  decodeBatchLocation,
  decodeRangeEntry,
  decodeTimeKey,
  entryKeySeq,
  entryValue,
  hasEntries,
  keySeq,
  labelKey,
  labelKeySeq,
  markKey,
  rangeKey,
  rangeKeySeq,
  segmentKey,
  segmentKeyNumber,
  seqKeySeq,
  timeKey,
  windowKey,
  windowValue,
  windowValueEnd,
  type BatchLocation,
  type CatalogEntry,
  type IndexMeta,
  type InexactWindow,
  type RangeEntry,
  type SegmentSummary,
} from './index-keys'

// Importers name the index's types and key decoders through this module.
export {
  CHUNK_BYTES,
  CHUNK_KEY_SIZE,
  CHUNK_SECTORS,
  ENTRY_VALUE_SIZE,
  RANGE_CHUNKS,
  chunkKey,
  emptyMeta,
  keyChunk,
  keyOffset,
  keySegment,
  keySeq,
  valueCount,
  valueDataOffset,
  valueKind,
  valueSector,
  type BatchLocation,
  type CatalogEntry,
  type IndexMeta,
  type InexactWindow,
  type RangeEntry,
  type SegmentSummary,
} from './index-keys'

/** A frozen view of the index's chunk and range entries (ChunkIndex.snapshotEntries). */
export interface EntrySnapshot {
  /** Calls fn for every 'c' entry, then every 'r' entry, in key order, with the seq the key names. */
  forEach(fn: (key: Buffer, value: Buffer, seq: number) => void): Promise<void>
  close(): Promise<void>
}

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
    if (!hasEntries(kind, count)) return
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
    this.ops.push({ type: 'put', key: batchKey(b.lastSeq), value: batchValue(b) })
  }

  putTimeMark(e: CatalogEntry): void {
    const { seq, ...rest } = e
    this.ops.push({ type: 'put', key: markKey(seq), value: Buffer.from(JSON.stringify(rest)) })
    if (e.label) this.ops.push({ type: 'put', key: labelKey(e.label, seq), value: EMPTY })
  }

  putWindow(w: InexactWindow): void {
    this.ops.push({ type: 'put', key: windowKey(w.start), value: windowValue(w.end) })
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

export class ChunkIndex {
  private db: Level<Buffer, Buffer>
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
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_RANGE]), lt: Buffer.from([K_RANGE + 1]) })) this.ranges.push(decodeRangeEntry(k, v))
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
      out.set(segmentKeyNumber(k), JSON.parse(v.toString()) as SegmentSummary)
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
    for await (const [k, v] of it) out.push({ seq: seqKeySeq(k), ...(JSON.parse(v.toString()) as Omit<CatalogEntry, 'seq'>) })
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
    for await (const k of this.db.keys({ gte: lo, lte: hi })) out.push(labelKeySeq(k))
    return out
  }

  async windows(): Promise<InexactWindow[]> {
    const out: InexactWindow[] = []
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_WINDOW]), lt: Buffer.from([K_WINDOW + 1]) })) {
      out.push({ start: seqKeySeq(k), end: windowValueEnd(v) })
    }
    return out
  }

  /** The newest (time, seq) recorded at or before ms, or null. */
  async seqAtOrBefore(ms: number): Promise<{ ms: number; seq: number } | null> {
    const it = this.db.keys({ gte: Buffer.from([K_TIME]), lt: timeKey(ms + 1, 0), reverse: true, limit: 1 })
    for await (const k of it) return decodeTimeKey(k)
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
    await scan(K_CHUNK, keySeq)
    await scan(K_RANGE, rangeKeySeq)
    await scan(K_BATCH, seqKeySeq)
    await scan(K_TIME, (k) => decodeTimeKey(k).seq)
    for (const e of expired) {
      ops.push({ type: 'del', key: markKey(e.seq) })
      if (e.label) ops.push({ type: 'del', key: labelKey(e.label, e.seq) })
    }
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([K_WINDOW]), lt: Buffer.from([K_WINDOW + 1]) })) {
      const end = windowValueEnd(v)
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

  /** Every chunk ('c') or range ('r') key with its value. */
  entryIterator(kind: 'c' | 'r') {
    const p = kind === 'c' ? K_CHUNK : K_RANGE
    return this.db.iterator({ gte: Buffer.from([p]), lt: Buffer.from([p + 1]) })
  }

  /**
   * The chunk and range entries as of this call (a LevelDB snapshot): later
   * writes and purges do not show. verify() takes it before it scans the
   * segments, so both describe one moment.
   */
  snapshotEntries(): EntrySnapshot {
    const db = this.db
    const snapshot = db.snapshot()
    return {
      async forEach(fn: (key: Buffer, value: Buffer, seq: number) => void): Promise<void> {
        for (const p of [K_CHUNK, K_RANGE]) {
          const it = db.iterator({ gte: Buffer.from([p]), lt: Buffer.from([p + 1]), snapshot })
          try {
            for (;;) {
              const entries = await it.nextv(1000)
              if (entries.length === 0) break
              for (const [k, v] of entries) fn(k, v, entryKeySeq(k))
            }
          } finally {
            await it.close()
          }
        }
      },
      close: () => snapshot.close(),
    }
  }

  close(): Promise<void> {
    return this.db.close()
  }
}
