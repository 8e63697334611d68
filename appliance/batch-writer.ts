// The write path of one volume: a batch in, an acknowledgement (its durable
// seq) out.
//
// append() validates a batch (record-check.ts), frames it into one buffer
// (CHANGE records + a COMMIT), places it in the journal at once and queues
// it on the store's group commit (group-commit.ts), which calls this
// writer's writeAll (write the frames), then, after the shared fsync,
// committed (index them, then resolve) or failed. Three seqs:
//   acceptedSeq  last seq of the last batch append() accepted (pipelined
//                batches are checked against it, in call order)
//   durableSeq   last seq of the newest batch that is fsynced and indexed
//                (the ledger's)
//   index meta   the journal position the index covers (== durableSeq
//                except during recovery)
// After a failed write or fsync the writer refuses everything until the
// volume is reopened: a hole followed by intact batches would read back as
// corruption.
//
// It also knows which chunks the batches on their way to the disk change,
// so fingerprint requests wait for those batches only when they ask about
// one of them (settledFor).
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { SECTOR_SIZE, recordByteLength, recordData, recordTimeLow } from '../proto/record'
import { CHUNK_BYTES, IndexBatch, RANGE_CHUNKS } from './chunk-index'
import type { CommitSink, GroupCommit, PendingWrite } from './group-commit'
import type { JournalWrite } from './journal'
import { FRAME_CHANGE, FRAME_HEADER_SIZE, batchFramedSize, encodeCommit, sealFrame } from './journal-format'
import { R_COUNT, R_KIND, R_OFFSET, R_SECTOR, R_SEQ, STRIDE, checkBatch } from './record-check'
import type { SegmentFile } from './segment'
import type { TimemarkCatalog } from './timemark-catalog'
import type { BatchInfo, VolumeLedger } from './volume-ledger'

interface VolumeWrite extends JournalWrite {
  batch: BatchInfo
  recs: Float64Array // record-check layout, R_OFFSET = frame offset inside buf
  wallMs: number
}

export class BatchWriter implements CommitSink {
  acceptedSeq: number
  /** The error that stopped the writer, or null. */
  failure: Error | null = null
  /** Batches refused by validation, by error code. */
  readonly rejected: Record<string, number> = {}
  private closed = false
  /** Settles after every append called so far has settled. */
  private tailPromise: Promise<unknown> = Promise.resolve()
  /**
   * Chunks that batches accepted but not yet durable and indexed will change
   * (a count per chunk), and how many such batches hold a record too wide to
   * count chunk by chunk. A fingerprint request waits for those batches only
   * when it asks about one of their chunks: an initial copy asks about
   * regions nothing has touched yet, and must not pay an fsync round per
   * request.
   */
  private readonly pendingChunks = new Map<number, number>()
  private pendingWide = 0
  private readonly log: Logger

  constructor(
    private readonly l: VolumeLedger,
    private readonly catalog: TimemarkCatalog,
    private readonly commits: GroupCommit
  ) {
    this.log = l.log
    this.acceptedSeq = l.durableSeq
  }

  async append(raw: Buffer, batch: BatchInfo): Promise<number> {
    const name = this.l.meta.name
    if (this.closed) throw new TidemarkError('VOLUME_CLOSED', `volume ${name} is closed`)
    if (this.failure) {
      throw new TidemarkError('JOURNAL_IO', `volume ${name} stopped accepting batches after an I/O error: ${this.failure.message}`)
    }
    let recs: Float64Array
    try {
      recs = checkBatch(raw, batch, { volume: name, lastAcceptedSeq: this.acceptedSeq, sizeSectors: this.l.meta.size / SECTOR_SIZE })
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
      const len = recordByteLength(raw, src)
      raw.copy(buf, at + FRAME_HEADER_SIZE, src, src + len)
      sealFrame(buf, at, FRAME_CHANGE, len)
      recs[o + R_OFFSET] = at
      at += FRAME_HEADER_SIZE + len
    }
    const wallMs = Date.now()
    encodeCommit(buf, at, { ...batch, wallMs })
    const pos = this.l.journal.assign(buf.length)
    this.acceptedSeq = batch.lastSeq
    this.notePending(recs, batch.recordCount, 1)
    const p = new Promise<number>((resolve, reject) => {
      const w: VolumeWrite = { sink: this, resolve, reject, buf, segment: pos.segment, offset: pos.offset, batch, recs, wallMs }
      this.commits.submit(w)
    })
    this.tailPromise = p.catch(() => {})
    return p
  }

  async writeAll(items: PendingWrite[]): Promise<Set<SegmentFile>> {
    // After a failed write or fsync nothing more may land behind it: a hole
    // followed by intact batches would read back as corruption.
    if (this.failure) throw this.failure
    return this.l.journal.writeAll(items as VolumeWrite[])
  }

  async committed(items: PendingWrite[]): Promise<void> {
    if (this.failure) throw this.failure // an earlier round failed: this one proves nothing
    const l = this.l
    const ws = items as VolumeWrite[]
    const ib = new IndexBatch()
    const touched = new Set<number>()
    for (const w of ws) {
      const points = this.catalog.builder(ib, w.wallMs)
      for (let i = 0; i < w.batch.recordCount; i++) {
        const o = i * STRIDE
        const at = w.recs[o + R_OFFSET] + FRAME_HEADER_SIZE // the record's header in the framed buffer
        ib.addChange(w.recs[o + R_SEQ], w.recs[o + R_SECTOR], w.recs[o + R_COUNT], w.recs[o + R_KIND], w.segment, w.offset + w.recs[o + R_OFFSET])
        points.record(w.recs[o + R_SEQ], w.recs[o + R_KIND], recordTimeLow(w.buf, at), () => recordData(w.buf, at))
      }
      points.finish(w.batch.lastSeq)
      l.noteBatch(ib, w.segment, w.offset, w.offset + w.buf.length, w.batch.recordCount, { ...w.batch, wallMs: w.wallMs })
      touched.add(w.segment)
    }
    for (const n of touched) ib.setSegment(n, l.summaries.get(n)!)
    await l.index.write(ib, { ...l.counters })
    this.catalog.settle()
    const last = ws[ws.length - 1]
    l.journal.durableEnd = { segment: last.segment, offset: last.offset + last.buf.length }
    l.durableSeq = last.batch.lastSeq
    for (const w of ws) {
      this.notePending(w.recs, w.batch.recordCount, -1)
      w.resolve(w.batch.lastSeq)
    }
  }

  failed(items: PendingWrite[], err: Error): void {
    const name = this.l.meta.name
    if (!this.failure) {
      this.failure = err
      this.log.error({ err: err.message }, `volume ${name}: journal write failed; no more batches until it is reopened`)
    }
    const e = new TidemarkError('JOURNAL_IO', `volume ${name}: journal write failed: ${err.message}`)
    for (const w of items) {
      this.notePending((w as VolumeWrite).recs, (w as VolumeWrite).batch.recordCount, -1)
      w.reject(e)
    }
  }

  /** Counts (+1) or releases (-1) the chunks a batch's records change. */
  private notePending(recs: Float64Array, count: number, delta: 1 | -1): void {
    const per = CHUNK_BYTES / SECTOR_SIZE
    for (let i = 0; i < count; i++) {
      const o = i * STRIDE
      const n = recs[o + R_COUNT]
      if (n === 0) continue
      const c0 = Math.floor(recs[o + R_SECTOR] / per)
      const c1 = Math.floor((recs[o + R_SECTOR] + n - 1) / per)
      if (c1 - c0 >= RANGE_CHUNKS) {
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

  /** Waits until every append called before this is settled. */
  async settled(): Promise<void> {
    await this.tailPromise
  }

  /**
   * Waits for the appends called before this that change any of these
   * regions (chunks and regions are both 64 KiB); none: returns at once.
   */
  async settledFor(regions: number[]): Promise<void> {
    if (this.pendingWide > 0 || regions.some((r) => this.pendingChunks.has(r))) await this.settled()
  }

  /** Refuses appends from now on; resolves when the queued ones are settled. */
  async close(): Promise<void> {
    this.closed = true
    await this.settled()
  }
}
