// One replicated volume at the appliance: its journal, its index, and the
// operations the replication and admin services need.
//
// Directory (DIR/volumes/NAME/):
//   meta.json     VolumeMeta, written once when the volume is created (store.ts)
//   state.json    { fullSyncDone }, replaced atomically (temp file + rename)
//   segments/     NNNNNNNN.tmj journal segments (journal-format.ts): the truth
//   index/        LevelDB (chunk-index.ts): a rebuildable cache of the segments
//
// append() validates a batch (record-check.ts), frames it into one buffer
// (CHANGE records + a COMMIT), places it in the journal at once and queues it
// on the store's group commit; it resolves after the batch is fsynced and
// indexed. Three seqs:
//   acceptedSeq  last seq of the last batch append() accepted (pipelined
//                batches are checked against it, in call order)
//   durableSeq   last seq of the newest batch that is fsynced and indexed
//   index meta   the journal position the index covers (== durableSeq except
//                during recovery)
// Open = recovery: the index is checked against the segments (missing,
// unreadable or ahead of them: rebuilt from scratch), then caught up by
// scanning the journal from the index's position, which also finds torn
// tails (cut off, logged) and corruption (kept, reported, and points at or
// after it refuse to be read).
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { h64, sectorFingerprints } from '../proto/hash'
import { KIND_NAMES } from '../native/record-batch'
import {
  CHUNK_BYTES,
  ChunkIndex,
  IndexBatch,
  emptyMeta,
  type CatalogEntry,
  type IndexMeta,
  type InexactWindow,
  type SegmentSummary,
} from './chunk-index'
import { PointsBuilder, inexactAt } from './points'
import { BaseImage } from './base-image'
import { crashPoint } from './crash-points'
import { Journal, SCAN_STRIDE, type CorruptRange, type JournalWrite, type Position, type ScannedBatch } from './journal'
import {
  FRAME_CHANGE,
  FRAME_HEADER_SIZE,
  RECORD_HEADER_SIZE,
  SEGMENT_HEADER_SIZE,
  batchFramedSize,
  encodeCommit,
  readU64,
  sealFrame,
} from './journal-format'
import { R_COUNT, R_KIND, R_OFFSET, R_SECTOR, R_SEQ, STRIDE, checkBatch } from './record-check'
import type { CommitSink, GroupCommit, PendingWrite } from './group-commit'
import { SegmentFile, SegmentReader, listSegments, segmentFileName, syncDir } from './segment'
import { imageExtents, readImage, type ImageSource } from './image'

export interface VolumeMeta {
  name: string
  generation: string
  size: number
  group: string
  agentId: string
  created: string
}

export interface CompactResult {
  volume: string
  baseSeq: number
  baseTime: string | null
  segmentsDropped: number
  journalBytesBefore: number
  journalBytesAfter: number
  expiredTimeMarks: number
  indexKeysDeleted: number
  ms: number
}

export interface BatchInfo {
  firstSeq: number
  lastSeq: number
  recordCount: number
  appBytes: number
  changedBytes: number
  wireBytes: number
}

interface VolumeWrite extends JournalWrite {
  batch: BatchInfo
  recs: Float64Array // record-check layout, R_OFFSET = frame offset inside buf
  wallMs: number
}

/** Writes a small file atomically: temp file, fsync, rename, fsync the directory. */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`
  const fh = await fs.promises.open(tmp, 'w')
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fs.promises.rename(tmp, file)
  await syncDir(path.dirname(file))
}

export class VolumeStore implements CommitSink, ImageSource {
  readonly meta: VolumeMeta
  readonly dir: string
  readonly journalRef: Journal
  index!: ChunkIndex
  private readonly log: Logger
  private readonly commits: GroupCommit
  private acceptedSeq = 0
  private _durableSeq = 0
  private _fullSyncDone = false
  /** Settles after every append called so far has settled. */
  private tailPromise: Promise<unknown> = Promise.resolve()
  /**
   * Chunks that batches accepted but not yet durable and indexed will change
   * (a count per chunk), and how many such batches hold a record too wide to
   * count chunk by chunk. fingerprints() waits for those batches only when it
   * asks about one of their chunks: an initial copy asks about regions
   * nothing has touched yet, and must not pay an fsync round per request.
   */
  private readonly pendingChunks = new Map<number, number>()
  private pendingWide = 0
  private failure: Error | null = null
  private closed = false
  private counters!: IndexMeta
  private readonly rejected: Record<string, number> = {}
  private corrupt: CorruptRange[] = []
  private summaries = new Map<number, SegmentSummary>()
  /** Inexact windows, oldest first (points.ts); loaded at open, extended as batches commit. */
  private windows: InexactWindow[] = []
  /** TimeMarks catalogued since open (counted in stats). */
  private readonly catalog = { added: [] as CatalogEntry[] }
  private timemarkCount = 0
  /** Expired history folded into one image (base-image.ts), or null. */
  base: BaseImage | null = null
  /** Reads in progress per base they started with: a replaced base is closed when its count drops to 0. */
  private readonly readers = new Map<BaseImage | null, number>()
  private compacting = false
  /** Pinned TimeMarks (pins.json). */
  private pins = new Set<number>()

  private constructor(dir: string, meta: VolumeMeta, commits: GroupCommit, log: Logger, segmentBytes: number) {
    this.dir = dir
    this.meta = meta
    this.commits = commits
    this.log = log
    this.journalRef = new Journal(path.join(dir, 'segments'), meta.name, meta.generation, segmentBytes, log)
  }

  get volume(): string {
    return this.meta.name
  }
  get sizeBytes(): number {
    return this.meta.size
  }
  segment(n: number): SegmentFile | undefined {
    return this.journalRef.segments.get(n)
  }
  get durableSeq(): number {
    return this._durableSeq
  }
  get fullSyncDone(): boolean {
    return this._fullSyncDone
  }

  /** Creates the files of a new volume in `dir` (which exists and is empty). */
  static async create(dir: string, meta: VolumeMeta): Promise<void> {
    await fs.promises.mkdir(path.join(dir, 'segments'), { recursive: true })
    await writeFileAtomic(path.join(dir, 'state.json'), JSON.stringify({ fullSyncDone: false }))
    await writeFileAtomic(path.join(dir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n')
  }

  static async open(dir: string, commits: GroupCommit, log: Logger, segmentBytes: number): Promise<VolumeStore> {
    const meta = JSON.parse(await fs.promises.readFile(path.join(dir, 'meta.json'), 'utf8')) as VolumeMeta
    const v = new VolumeStore(dir, meta, commits, log.child({ volume: meta.name }), segmentBytes)
    try {
      await v.recover()
    } catch (e) {
      await v.journalRef.close()
      await v.index?.close().catch(() => {})
      throw e
    }
    return v
  }

  private async recover(): Promise<void> {
    const state = await fs.promises.readFile(path.join(this.dir, 'state.json'), 'utf8').catch(() => '{}')
    this._fullSyncDone = (JSON.parse(state) as { fullSyncDone?: boolean }).fullSyncDone === true
    const j = this.journalRef
    const pins = await fs.promises.readFile(path.join(this.dir, 'pins.json'), 'utf8').catch(() => '[]')
    this.pins = new Set(JSON.parse(pins) as number[])
    this.base = await BaseImage.open(this.dir)
    if (this.base) {
      // Segments a committed compaction folded into the base, left behind by a crash.
      const dropped = await dropSegmentFiles(path.join(this.dir, 'segments'), this.base.state.throughSegment)
      if (dropped) this.log.info({ segments: dropped, baseSeq: this.base.seq }, 'removed segments already folded into the base image')
    }
    await j.open()
    const first = j.ordered()[0].number
    const indexDir = path.join(this.dir, 'index')
    try {
      this.index = await ChunkIndex.open(indexDir, this.log)
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'index cannot be opened: rebuilding it from the segments')
      await fs.promises.rm(indexDir, { recursive: true, force: true })
      this.index = await ChunkIndex.open(indexDir, this.log)
    }
    let m = this.index.meta
    const at = m ? j.segments.get(m.segment) : undefined
    if (m && (!at || m.offset > at.size || m.offset < SEGMENT_HEADER_SIZE || m.segment < first)) {
      this.log.warn({ indexAt: `${m.segment}:${m.offset}` }, 'index is ahead of the segments or names a missing one: rebuilding it')
      m = null
    }
    const rebuild = !m
    if (!m) {
      if (this.index.meta) await this.index.wipe()
      m = emptyMeta(first, SEGMENT_HEADER_SIZE)
      // The journal starts above the base: what the base holds is the state at its seq.
      if (this.base) m.seq = this.base.seq
      this.log.info({ segments: j.segments.size }, 'building the index from the segments')
    }
    this.counters = { ...m }
    this.summaries = this.index.meta ? await this.index.segmentSummaries() : new Map()
    this.windows = this.index.meta ? await this.index.windows() : this.base ? this.base.state.windows.map((w) => ({ ...w })) : []
    this.timemarkCount = this.index.meta ? (await this.index.timemarks()).length : 0
    const from: Position = { segment: m.segment, offset: m.offset }
    const started = Date.now()
    let pending = new IndexBatch()
    if (rebuild && this.base) {
      // The marks and windows whose MARK/GAP records were folded into the base.
      for (const e of this.base.state.marks) pending.putTimeMark(e)
      for (const w of this.windows) pending.putWindow(w)
      this.timemarkCount = this.base.state.marks.length
    }
    let touched = new Set<number>()
    let caughtUp = 0
    const flush = async () => {
      for (const n of touched) pending.setSegment(n, this.summaries.get(n)!)
      await this.index.write(pending, { ...this.counters })
      pending = new IndexBatch()
      touched = new Set()
    }
    const res = await j.scan(from, m.seq, { tailMayTear: true }, async (b: ScannedBatch) => {
      const points = new PointsBuilder(pending, this.windows, this.catalog, this.counters.seq, b.commit.wallMs)
      for (let i = 0; i < b.count; i++) {
        const k = i * SCAN_STRIDE
        pending.addChange(b.recs[k], b.recs[k + 1], b.recs[k + 2], b.recs[k + 3], b.segment, b.recs[k + 5])
        points.record(b.recs[k], b.recs[k + 3], b.recs[k + 6], () => b.marks.get(i)!)
      }
      points.finish(b.commit.lastSeq)
      this.noteBatch(pending, b.segment, b.start, b.end, b.count, b.commit)
      touched.add(b.segment)
      caughtUp++
      if (pending.ops.length >= 50_000) await flush()
    })
    if (pending.ops.length > 0) await flush()
    this.timemarkCount += this.catalog.added.length
    this.catalog.added.length = 0
    if (res.torn) {
      const seg = j.segments.get(res.torn.segment)!
      this.log.warn(
        { segment: seg.name, offset: res.torn.at, bytes: res.torn.bytes, why: res.torn.why },
        `torn tail: cutting ${res.torn.bytes} bytes off ${seg.name} at offset ${res.torn.at} (a batch that was never acknowledged)`
      )
      await j.truncate(res.torn.segment, res.torn.at)
    }
    this.corrupt = res.corrupt
    for (const c of res.corrupt) this.log.error({ ...c }, `journal corruption in ${c.segment} at offset ${c.offset}: ${c.message}`)
    // Recovery may have found batches the index already had (lost meta write): counters follow the scan.
    this._durableSeq = Math.max(res.lastSeq, this.counters.seq)
    this.acceptedSeq = this._durableSeq
    const newest = j.newest()
    j.tail = { segment: newest.number, offset: newest.size }
    j.durableEnd = { ...j.tail }
    if (caughtUp > 0 || res.torn) {
      this.log.info(
        { batches: caughtUp, durableSeq: this._durableSeq, ms: Date.now() - started },
        `recovered: index caught up by ${caughtUp} batches, durable seq ${this._durableSeq}`
      )
    }
  }

  /** Counters and the segment summary for one committed batch, and its 'b' key. */
  private noteBatch(
    ib: IndexBatch,
    segment: number,
    start: number,
    end: number,
    records: number,
    c: { firstSeq: number; lastSeq: number; appBytes: number; changedBytes: number; wireBytes: number; wallMs: number }
  ): void {
    const m = this.counters
    m.segment = segment
    m.offset = end
    m.seq = c.lastSeq
    if (m.firstSeq === 0) m.firstSeq = c.firstSeq
    m.records += records
    m.batches++
    m.appBytes += c.appBytes
    m.changedBytes += c.changedBytes
    m.wireBytes += c.wireBytes
    let s = this.summaries.get(segment)
    if (!s) this.summaries.set(segment, (s = { records: 0, batches: 0, firstSeq: c.firstSeq, lastSeq: 0 }))
    s.records += records
    s.batches++
    s.lastSeq = c.lastSeq
    ib.addBatch({ lastSeq: c.lastSeq, firstSeq: c.firstSeq, segment, offset: start, end, records, wallMs: c.wallMs })
  }

  // ---- write path ------------------------------------------------------------------

  async append(raw: Buffer, batch: BatchInfo): Promise<number> {
    if (this.closed) throw new TidemarkError('VOLUME_CLOSED', `volume ${this.meta.name} is closed`)
    if (this.failure) {
      throw new TidemarkError('JOURNAL_IO', `volume ${this.meta.name} stopped accepting batches after an I/O error: ${this.failure.message}`)
    }
    let recs: Float64Array
    try {
      recs = checkBatch(raw, batch, { volume: this.meta.name, lastAcceptedSeq: this.acceptedSeq, sizeSectors: this.meta.size / 512 })
    } catch (e) {
      const code = (e as TidemarkError).code ?? 'UNKNOWN'
      this.rejected[code] = (this.rejected[code] ?? 0) + 1
      this.log.warn({ code, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq }, (e as Error).message)
      throw e
    }
    // Frame: compute the size, allocate once, copy each record behind its frame header.
    const buf = Buffer.allocUnsafe(batchFramedSize(raw.length, batch.recordCount))
    let at = 0
    for (let i = 0; i < batch.recordCount; i++) {
      const o = i * STRIDE
      const src = recs[o + R_OFFSET]
      const len = RECORD_HEADER_SIZE + raw.readUInt32LE(src + 24)
      raw.copy(buf, at + FRAME_HEADER_SIZE, src, src + len)
      sealFrame(buf, at, FRAME_CHANGE, len)
      recs[o + R_OFFSET] = at
      at += FRAME_HEADER_SIZE + len
    }
    const wallMs = Date.now()
    encodeCommit(buf, at, { ...batch, wallMs })
    const pos = this.journalRef.assign(buf.length)
    this.acceptedSeq = batch.lastSeq
    this.notePending(recs, batch.recordCount, 1)
    const p = new Promise<number>((resolve, reject) => {
      const w: VolumeWrite = { sink: this, resolve, reject, buf, segment: pos.segment, offset: pos.offset, batch, recs, wallMs }
      this.commits.submit(w)
    })
    this.tailPromise = p.catch(() => {})
    return p
  }

  async writeAll(items: PendingWrite[]) {
    // After a failed write or fsync nothing more may land behind it: a hole
    // followed by intact batches would read back as corruption.
    if (this.failure) throw this.failure
    return this.journalRef.writeAll(items as VolumeWrite[])
  }

  async committed(items: PendingWrite[]): Promise<void> {
    if (this.failure) throw this.failure // an earlier round failed: this one proves nothing
    const ws = items as VolumeWrite[]
    const ib = new IndexBatch()
    const touched = new Set<number>()
    for (const w of ws) {
      const points = new PointsBuilder(ib, this.windows, this.catalog, this.counters.seq, w.wallMs)
      for (let i = 0; i < w.batch.recordCount; i++) {
        const o = i * STRIDE
        const at = w.recs[o + R_OFFSET] + FRAME_HEADER_SIZE // the record's header in the framed buffer
        ib.addChange(w.recs[o + R_SEQ], w.recs[o + R_SECTOR], w.recs[o + R_COUNT], w.recs[o + R_KIND], w.segment, w.offset + w.recs[o + R_OFFSET])
        points.record(w.recs[o + R_SEQ], w.recs[o + R_KIND], w.buf.readUInt32LE(at + 28), () =>
          w.buf.subarray(at + RECORD_HEADER_SIZE, at + RECORD_HEADER_SIZE + w.buf.readUInt32LE(at + 24))
        )
      }
      points.finish(w.batch.lastSeq)
      this.noteBatch(ib, w.segment, w.offset, w.offset + w.buf.length, w.batch.recordCount, { ...w.batch, wallMs: w.wallMs })
      touched.add(w.segment)
    }
    for (const n of touched) ib.setSegment(n, this.summaries.get(n)!)
    await this.index.write(ib, { ...this.counters })
    this.timemarkCount += this.catalog.added.length
    this.catalog.added.length = 0
    const last = ws[ws.length - 1]
    this.journalRef.durableEnd = { segment: last.segment, offset: last.offset + last.buf.length }
    this._durableSeq = last.batch.lastSeq
    for (const w of ws) {
      this.notePending(w.recs, w.batch.recordCount, -1)
      w.resolve(w.batch.lastSeq)
    }
  }

  /** Counts (+1) or releases (-1) the chunks a batch's records change. */
  private notePending(recs: Float64Array, count: number, delta: 1 | -1): void {
    const per = CHUNK_BYTES / 512
    for (let i = 0; i < count; i++) {
      const o = i * STRIDE
      const n = recs[o + R_COUNT]
      if (n === 0) continue
      const c0 = Math.floor(recs[o + R_SECTOR] / per)
      const c1 = Math.floor((recs[o + R_SECTOR] + n - 1) / per)
      if (c1 - c0 >= 256) {
        this.pendingWide += delta
        continue
      }
      for (let c = c0; c <= c1; c++) {
        const v = (this.pendingChunks.get(c) ?? 0) + delta
        if (v === 0) this.pendingChunks.delete(c)
        else this.pendingChunks.set(c, v)
      }
    }
  }

  failed(items: PendingWrite[], err: Error): void {
    if (!this.failure) {
      this.failure = err
      this.log.error({ err: err.message }, `volume ${this.meta.name}: journal write failed; no more batches until it is reopened`)
    }
    const e = new TidemarkError('JOURNAL_IO', `volume ${this.meta.name}: journal write failed: ${err.message}`)
    for (const w of items) {
      this.notePending((w as VolumeWrite).recs, (w as VolumeWrite).batch.recordCount, -1)
      w.reject(e)
    }
  }

  /** Waits until every append called before this is settled. */
  private async settled(): Promise<void> {
    await this.tailPromise
  }

  async markFullSyncDone(): Promise<void> {
    await this.settled()
    if (this._fullSyncDone) return
    await writeFileAtomic(path.join(this.dir, 'state.json'), JSON.stringify({ fullSyncDone: true }))
    this._fullSyncDone = true
    this.log.info({ durableSeq: this._durableSeq }, 'full sync done')
  }

  // ---- read path ---------------------------------------------------------------------

  private checkReadable(seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > this._durableSeq) {
      throw new TidemarkError('SEQ_NOT_DURABLE', `volume ${this.meta.name}: seq ${seq} is not a durable point (durable seq ${this._durableSeq})`)
    }
    for (const c of this.corrupt) {
      if (seq > c.afterSeq) {
        throw new TidemarkError(
          'JOURNAL_CORRUPT',
          `volume ${this.meta.name}: seq ${seq} cannot be read: journal corruption in ${c.segment} at offset ${c.offset} after seq ${c.afterSeq} (${c.message})`
        )
      }
    }
  }

  /**
   * Refuses a point that is durable but not an exact image: inside a window
   * where the agent resent regions instead of changes (points.ts).
   */
  checkExact(seq: number): void {
    const w = inexactAt(this.windows, seq)
    if (!w) return
    throw new TidemarkError(
      'POINT_INEXACT',
      w.end === 0
        ? `volume ${this.meta.name}: seq ${seq} is after seq ${w.start}, where the agent lost changes and began resending regions; points are exact again once that resync completes`
        : `volume ${this.meta.name}: seq ${seq} lies in ${w.start + 1}..${w.end - 1}, where the agent resent regions instead of changes (after it fell behind, restarted or copied the volume); the nearest exact points are ${w.start} and ${w.end}`
    )
  }

  /** Exact points end where the newest inexact window starts, if it is still open. */
  get exactSeq(): number {
    const w = this.windows.at(-1)
    return w && w.end === 0 ? Math.min(w.start, this._durableSeq) : this._durableSeq
  }

  /** The oldest exact point (0 when none is known). */
  get oldestExactSeq(): number {
    const floor = this.base?.seq ?? 0
    // The history starts inexact until the initial copy's EXACT marker.
    let oldest = Math.max(floor, this.counters?.firstSeq ?? 0)
    if (this.base) oldest = this.base.seq
    for (const w of this.windows) if (oldest > w.start && (w.end === 0 || oldest < w.end)) oldest = w.end
    return oldest
  }

  async timemarks(): Promise<CatalogEntry[]> {
    const floor = this.base?.seq ?? 0
    // Marks below the base may linger in the index after a crash mid-purge: they are expired.
    return (await this.index.timemarks({ fromSeq: floor })).map((e) => this.withPin(e))
  }

  private withPin(e: CatalogEntry): CatalogEntry {
    e.pinned = this.pins.has(e.seq)
    return e
  }

  async timemarkById(seq: number): Promise<CatalogEntry | null> {
    if (!Number.isSafeInteger(seq) || seq <= 0 || seq > this._durableSeq) return null
    const e = await this.index.timemark(seq)
    return e ? this.withPin(e) : null
  }

  async timemarksByLabel(label: string): Promise<CatalogEntry[]> {
    const out: CatalogEntry[] = []
    for (const seq of await this.index.labelled(label)) {
      const e = seq <= this._durableSeq ? await this.index.timemark(seq) : null
      if (e) out.push(this.withPin(e))
    }
    return out
  }

  /**
   * Pins (or unpins) a TimeMark: retention never expires a pinned mark, nor
   * any point after it. Pins live in pins.json (replaced atomically), not in
   * the index, so rebuilding the index keeps them.
   */
  async pin(seq: number, pinned: boolean): Promise<CatalogEntry> {
    const e = await this.timemarkById(seq)
    if (!e || (this.base && seq < this.base.seq)) {
      throw new TidemarkError('UNKNOWN_TIMEMARK', `volume ${this.meta.name} has no TimeMark with id ${seq} (see tidemark timemark list)`)
    }
    const next = new Set(this.pins)
    if (pinned) next.add(seq)
    else next.delete(seq)
    await writeFileAtomic(path.join(this.dir, 'pins.json'), JSON.stringify([...next].sort((a, b) => a - b)))
    this.pins = next
    e.pinned = pinned
    this.log.info({ timemark: seq, pinned }, pinned ? `TimeMark ${seq} pinned` : `TimeMark ${seq} unpinned`)
    return e
  }

  get pinnedSeqs(): number[] {
    return [...this.pins].sort((a, b) => a - b)
  }

  /** Capture (or commit) time of a seq's batch, 0 if unknown. */
  async timeOfSeq(seq: number): Promise<number> {
    const b = await this.index.batchAtOrAfter(seq)
    return b ? b.wallMs : 0
  }

  /** Segments other than the newest, oldest first: number, bytes, last seq (retention picks a boundary). */
  foldableSegments(): Array<{ number: number; bytes: number; lastSeq: number }> {
    const newest = this.journalRef.newest().number
    const out: Array<{ number: number; bytes: number; lastSeq: number }> = []
    for (const seg of this.journalRef.ordered()) {
      if (seg.number >= newest) break
      const sum = this.summaries.get(seg.number)
      out.push({ number: seg.number, bytes: seg.size, lastSeq: sum?.lastSeq ?? 0 })
    }
    return out
  }

  get journalBytes(): number {
    return this.journalRef.bytes
  }

  /**
   * Compaction: folds the history up to the newest whole-segment boundary at
   * or below upTo into a new base image, then deletes those segments and
   * their index entries. Crash-safe at every step (base-image.ts): the new
   * base counts only once base.json names it; until then the old base and
   * the segments are untouched, and afterwards leftovers are removed at
   * open. Ingest goes on meanwhile (it only appends to the newest segment),
   * and reads that started on the old base finish on it before it closes.
   * Returns null when no whole segment lies at or below upTo.
   */
  async compact(upTo: number): Promise<CompactResult | null> {
    if (this.compacting) throw new TidemarkError('COMPACTION_RUNNING', `volume ${this.meta.name}: a compaction is already running`)
    this.compacting = true
    try {
      const t0 = Date.now()
      const floor = this.base?.seq ?? 0
      const limit = Math.min(upTo, this._durableSeq, ...this.pins)
      let through = -1
      let seq = 0
      for (const s of this.foldableSegments()) {
        if (s.lastSeq > limit || s.lastSeq === 0) break
        through = s.number
        seq = s.lastSeq
      }
      if (through < 0 || seq <= floor) return null
      const bytesBefore = this.journalRef.bytes
      const marks = await this.index.timemarks({ fromSeq: 0 })
      const kept = marks.filter((e) => e.seq === seq || (e.seq <= seq && this.pins.has(e.seq))).map((e) => this.withPin(e))
      const expired = marks.filter((e) => e.seq <= seq && !kept.includes(e))
      const windows = this.windows.filter((w) => w.end === 0 || w.end > seq).map((w) => ({ ...w }))
      const timeMs = await this.timeOfSeq(seq)
      const reader = this.enterRead()
      let nb: BaseImage
      try {
        nb = await BaseImage.write(this.dir, this.meta.size, CHUNK_BYTES, { seq, timeMs, throughSegment: through, marks: kept, windows }, imageExtents(this, seq))
      } finally {
        this.leaveRead(reader)
      }
      crashPoint('compact:committed')
      // Committed: from here on every read starts from the new base.
      const old = this.base
      this.base = nb
      for (let i = this.windows.length - 1; i >= 0; i--) if (this.windows[i].end !== 0 && this.windows[i].end <= seq) this.windows.splice(i, 1)
      this.timemarkCount -= expired.length
      const dropping = this.foldableSegments().filter((s) => s.number <= through).map((s) => s.number)
      const purged = await this.index.purge(seq, expired, dropping)
      crashPoint('compact:purged')
      // Reads that started on the old base may still read the old segments.
      while (this.readers.has(old)) await new Promise((r) => setTimeout(r, 20))
      if (old) {
        await old.close()
        await fs.promises.rm(path.join(this.dir, old.state.file), { force: true })
        await fs.promises.rm(path.join(this.dir, old.state.map), { force: true })
      }
      const gone = await this.journalRef.dropSegments(through)
      for (const n of gone) this.summaries.delete(n)
      const r: CompactResult = {
        volume: this.meta.name,
        baseSeq: seq,
        baseTime: timeMs ? new Date(timeMs).toISOString() : null,
        segmentsDropped: gone.length,
        journalBytesBefore: bytesBefore,
        journalBytesAfter: this.journalRef.bytes,
        expiredTimeMarks: expired.length,
        indexKeysDeleted: purged,
        ms: Date.now() - t0,
      }
      this.log.info(r, `compacted: history up to seq ${seq} folded into the base image, ${gone.length} segments (${bytesBefore - this.journalRef.bytes} bytes) reclaimed`)
      return r
    } finally {
      this.compacting = false
    }
  }

  /** The newest seq recorded at or before ms (capture time), or null if none is that old. */
  async seqAt(ms: number): Promise<{ ms: number; seq: number } | null> {
    return this.index.seqAtOrBefore(ms)
  }

  async *extents(seq: number): AsyncGenerator<{ offset: number; data: Buffer }> {
    this.checkReadable(seq)
    const b = this.enterRead()
    try {
      yield* imageExtents(this, seq)
    } finally {
      this.leaveRead(b)
    }
  }

  private enterRead(): BaseImage | null {
    const b = this.base
    this.readers.set(b, (this.readers.get(b) ?? 0) + 1)
    return b
  }

  private leaveRead(b: BaseImage | null): void {
    const n = (this.readers.get(b) ?? 1) - 1
    if (n > 0) this.readers.set(b, n)
    else this.readers.delete(b)
  }

  private async readAt(seq: number, offset: number, length: number): Promise<Buffer> {
    const b = this.enterRead()
    try {
      return await readImage(this, seq, offset, length)
    } finally {
      this.leaveRead(b)
    }
  }

  /** Refuses a point that retention folded into the base image. */
  checkRetained(seq: number): void {
    if (this.base && seq < this.base.seq) {
      throw new TidemarkError(
        'POINT_EXPIRED',
        `volume ${this.meta.name}: seq ${seq} has expired: retention folded the history before seq ${this.base.seq}${this.base.state.timeMs ? ` (${new Date(this.base.state.timeMs).toISOString()})` : ''} into the base image; the oldest restorable point is seq ${this.oldestExactSeq}`
      )
    }
  }

  async read(seq: number, offset: number, length: number): Promise<Buffer> {
    this.checkReadable(seq)
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.meta.size) {
      throw new TidemarkError('READ_OUT_OF_RANGE', `volume ${this.meta.name}: read of ${length} bytes at ${offset} is outside the ${this.meta.size}-byte volume`)
    }
    return this.readAt(seq, offset, length)
  }

  async fingerprints(regions: number[]): Promise<Buffer> {
    // Every append called before this must be reflected. A batch still on its
    // way to the disk matters only if it changes one of these regions (chunks
    // and regions are both 64 KiB); otherwise the durable image is the answer.
    if (this.pendingWide > 0 || regions.some((r) => this.pendingChunks.has(r))) await this.settled()
    return this.fingerprintsAt(this._durableSeq, regions)
  }

  /** Per-sector fingerprints of regions as they were at seq (little-endian xxh64 each). */
  async fingerprintsAt(seq: number, regions: number[]): Promise<Buffer> {
    this.checkReadable(seq)
    const sizes = regions.map((r) => {
      const off = r * CHUNK_BYTES
      if (!Number.isSafeInteger(r) || r < 0 || off >= this.meta.size) {
        throw new TidemarkError('REGION_OUT_OF_RANGE', `volume ${this.meta.name}: region ${r} is outside the ${this.meta.size}-byte volume`)
      }
      return Math.min(CHUNK_BYTES, this.meta.size - off)
    })
    const total = sizes.reduce((a, b) => a + b, 0) / 512
    const fp = new BigUint64Array(total)
    // A few regions in flight at once: each is an index walk plus preads.
    let next = 0
    const starts: number[] = []
    for (let i = 0, s = 0; i < regions.length; s += sizes[i] / 512, i++) starts.push(s)
    const worker = async () => {
      while (next < regions.length) {
        const i = next++
        const data = await this.readAt(seq, regions[i] * CHUNK_BYTES, sizes[i])
        sectorFingerprints(data, fp, starts[i])
      }
    }
    await Promise.all(Array.from({ length: Math.min(8, regions.length) }, worker))
    const out = Buffer.from(fp.buffer, fp.byteOffset, fp.byteLength)
    return littleEndian(out)
  }

  // ---- inspection -------------------------------------------------------------------------

  stats(): Record<string, unknown> {
    const m = this.counters
    return {
      volume: this.meta.name,
      generation: this.meta.generation,
      size: this.meta.size,
      group: this.meta.group,
      agentId: this.meta.agentId,
      journalBytes: this.journalRef.bytes,
      segments: this.journalRef.segments.size,
      records: m.records,
      batches: m.batches,
      durableSeq: this._durableSeq,
      acceptedSeq: this.acceptedSeq,
      firstSeq: m.firstSeq,
      indexedSeq: this.index.meta?.seq ?? 0,
      appBytes: m.appBytes,
      changedBytes: m.changedBytes,
      wireBytes: m.wireBytes,
      rangeEntries: this.index.ranges.length,
      rejected: { total: Object.values(this.rejected).reduce((a, b) => a + b, 0), byCode: { ...this.rejected } },
      corrupt: this.corrupt.map((c) => ({ ...c })),
      fullSyncDone: this._fullSyncDone,
      timemarks: this.timemarkCount,
      // Points in time: the newest exact point, the oldest one, and the windows where points are inexact.
      exactSeq: this.exactSeq,
      oldestExactSeq: this.oldestExactSeq,
      inexactWindows: this.windows.map((w) => ({ ...w })),
      base: this.base ? { seq: this.base.seq, timeMs: this.base.state.timeMs, throughSegment: this.base.state.throughSegment } : null,
      // The history kept: from the base (or the volume's creation) to now.
      retainedSince: this.base?.state.timeMs ? new Date(this.base.state.timeMs).toISOString() : this.meta.created,
      retainedWindowSeconds: Math.max(0, Math.round((Date.now() - (this.base?.state.timeMs || Date.parse(this.meta.created))) / 1000)),
      failed: this.failure ? this.failure.message : null,
    }
  }

  async journal(): Promise<Array<{ segment: string; bytes: number; records: number; firstSeq: number; lastSeq: number }>> {
    return this.journalRef.ordered().map((s) => {
      const sum = this.summaries.get(s.number)
      return { segment: s.name, bytes: s.size, records: sum?.records ?? 0, batches: sum?.batches ?? 0, firstSeq: sum?.firstSeq ?? 0, lastSeq: sum?.lastSeq ?? 0 }
    })
  }

  async show(
    fromSeq: number,
    limit: number
  ): Promise<Array<{ seq: number; kind: string; sector: number; count: number; flags: number; segment: string; offset: number }>> {
    const out: Array<{ seq: number; kind: string; sector: number; count: number; flags: number; segment: string; offset: number }> = []
    if (limit <= 0) return out
    let b = await this.index.batchAtOrAfter(Math.max(0, fromSeq))
    const end = { ...this.journalRef.durableEnd }
    while (b && out.length < limit) {
      const seg = this.journalRef.segments.get(b.segment)
      if (!seg) break
      const r = new SegmentReader(seg, b.end, b.offset, { headersOnly: true })
      for (;;) {
        const o = await r.next()
        if (o !== 'frame') break
        if (r.type !== FRAME_CHANGE) continue
        const body = r.body
        const p = r.bodyAt
        const seq = readU64(body, p)
        if (seq < fromSeq) continue
        out.push({
          seq,
          kind: KIND_NAMES[body[p + 20]] ?? String(body[p + 20]),
          sector: readU64(body, p + 8),
          count: body.readUInt32LE(p + 16),
          flags: body[p + 21],
          segment: seg.name,
          offset: r.frameOffset,
        })
        if (out.length >= limit) break
      }
      if (b.segment === end.segment && b.end >= end.offset) break
      b = await this.index.batchAtOrAfter(b.lastSeq + 1)
    }
    return out
  }

  /**
   * Re-reads every segment up to the durable end, checking every frame's
   * checksum and every batch's grammar, and compares the index with what the
   * segments say it must hold (counts and an order-independent digest of
   * every 'c' and 'r' entry; on a mismatch, the first missing keys by name).
   * Corruption found here is also remembered for reads and stats.
   */
  async verify(): Promise<{ ok: boolean; records: number; bytes: number; problems: string[] }> {
    await this.settled()
    const j = this.journalRef
    const until = { ...j.durableEnd }
    const seqLimit = this._durableSeq
    const floor = this.base?.seq ?? 0
    const snapshot = this.index.db.snapshot()
    const problems: string[] = []
    let records = 0
    let bytes = 0
    const expected = new Digest()
    const first = j.ordered()[0]
    try {
      const res = await j.scan({ segment: first.number, offset: SEGMENT_HEADER_SIZE }, 0, { until, tailMayTear: false }, (b) => {
        records += b.count
        for (let i = 0; i < b.count; i++) {
          const k = i * SCAN_STRIDE
          IndexBatch.entries(b.recs[k], b.recs[k + 1], b.recs[k + 2], b.recs[k + 3], b.segment, b.recs[k + 5], (key, value) =>
            expected.add(key, value)
          )
        }
      })
      for (const s of j.ordered()) if (s.number <= until.segment) bytes += s.number === until.segment ? until.offset : s.size
      for (const c of res.corrupt) problems.push(`corruption in ${c.segment} at offset ${c.offset} (${c.bytes} bytes, after seq ${c.afterSeq}): ${c.message}`)
      if (res.end.segment !== until.segment || res.end.offset !== until.offset) {
        problems.push(`the last intact COMMIT ends at ${res.end.segment}:${res.end.offset}, the durable end is ${until.segment}:${until.offset}`)
      }
      if (res.lastSeq !== seqLimit) problems.push(`the segments end at seq ${res.lastSeq}, the durable seq is ${seqLimit}`)
      this.mergeCorrupt(res.corrupt)
      // The index, from the same moment (entries of later batches have higher seqs and are left out).
      const found = new Digest()
      for (const kind of ['c', 'r'] as const) {
        const it = this.index.db.iterator({
          gte: Buffer.from(kind),
          lt: Buffer.from(String.fromCharCode(kind.charCodeAt(0) + 1)),
          snapshot,
        })
        try {
          for (;;) {
            const entries = await it.nextv(1000)
            if (entries.length === 0) break
            for (const [k, v] of entries) {
              const seq = kind === 'c' ? readU64BE9(k) : readU64BE1(k)
              // Entries at or below the base are folded history a purge has not reached yet.
              if (seq <= seqLimit && seq > floor) found.add(k, v)
            }
          }
        } finally {
          await it.close()
        }
      }
      if (found.count !== expected.count || found.sum !== expected.sum || found.xor !== expected.xor) {
        problems.push(`index disagrees with the segments: ${found.count} entries, the segments call for ${expected.count}`)
      }
    } finally {
      await snapshot.close()
    }
    if (problems.length) this.log.error({ problems: problems.length }, `verify found problems: ${problems[0]}`)
    return { ok: problems.length === 0, records, bytes, problems }
  }

  private mergeCorrupt(found: CorruptRange[]): void {
    for (const c of found) {
      if (!this.corrupt.some((x) => x.segment === c.segment && x.offset === c.offset)) {
        this.corrupt.push(c)
        this.log.error({ ...c }, `journal corruption in ${c.segment} at offset ${c.offset}: ${c.message}`)
      }
    }
  }

  /** Stops accepting appends, waits for queued ones, closes files and the index. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.settled()
    // Image reads use the segments' and the base's file descriptors directly
    // (image.ts runReads): let them finish before the files close.
    for (const end = Date.now() + 5000; this.readers.size > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20))
    if (this.readers.size > 0) this.log.warn({ readers: this.readers.size }, 'closing with image reads still running; they will fail')
    await this.base?.close()
    await this.index.close()
    await this.journalRef.close()
  }
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

function readU64BE9(k: Buffer): number {
  return k.readUInt32BE(9) * 0x100000000 + k.readUInt32BE(13)
}
function readU64BE1(k: Buffer): number {
  return k.readUInt32BE(1) * 0x100000000 + k.readUInt32BE(5)
}

/** Order-independent digest of a set of index entries: count, sum and xor of xxh64(key || value). */
class Digest {
  count = 0
  sum = 0n
  xor = 0n
  private readonly scratch = Buffer.allocUnsafe(64)
  add(k: Buffer, v: Buffer): void {
    k.copy(this.scratch, 0)
    v.copy(this.scratch, k.length)
    const h = h64(this.scratch.subarray(0, k.length + v.length))
    this.count++
    this.sum = (this.sum + h) & 0xffffffffffffffffn
    this.xor ^= h
  }
}

/** BigUint64Array bytes are host order; the wire wants little-endian (a no-op on x86 and arm64). */
function littleEndian(b: Buffer): Buffer {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) return b
  const out = Buffer.allocUnsafe(b.length)
  for (let i = 0; i < b.length; i += 8) out.writeBigUInt64LE(b.readBigUInt64BE(i), i)
  return out
}
