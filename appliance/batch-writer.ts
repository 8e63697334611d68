// The write path of one volume: a batch in, an acknowledgement (its durable
// seq) out.
//
// append() validates a batch and frames it into one buffer (CHANGE records +
// a COMMIT) in one native call on libuv's pool (record-check.ts), so the
// main thread goes on receiving while batches are checked on other cores;
// then, in call order, places it in the journal and queues it on the store's
// group commit (group-commit.ts), which calls this writer's writeAll (write
// the frames), then, after the shared fsync, committed (index them, then
// resolve) or failed. A batch is checked against the one called before it
// (its declared last seq: `declaredSeq`), so checks overlap; when one is
// refused, every batch called after it is refused too, unplaced (`epoch`),
// so nothing lands behind a gap. Three seqs:
//   acceptedSeq  last seq of the last batch placed in the journal
//   durableSeq   last seq of the newest batch that is fsynced and indexed
//                (the ledger's)
//   index meta   the journal position the index covers (== durableSeq
//                except during recovery)
// Faults (DESIGN contract 7: named, logged once, recovered from by itself):
//   a failed write (ENOSPC, EIO)   the batches of that round and every later
//                                  one are refused; once they have all
//                                  settled, the journal is cut back to the
//                                  end of the last committed batch (nothing
//                                  partial stays, nothing acknowledged goes)
//                                  and the writer waits: out of space, until
//                                  the file system has room for the batch and
//                                  a reserve (statfs, checked when a batch
//                                  arrives); an I/O error, IO_RETRY_MS
//   a failed index write           the same, but the volume is recovered from
//                                  its files (volume-recovery.ts) instead of
//                                  cut back: the batch is in the journal and
//                                  the ledger already counted it
//   a failed fsync                 read-only until an operator restarts the
//                                  appliance: after a failed fsync the kernel
//                                  may have dropped the dirty pages, so no
//                                  later fsync proves anything
// While a fault lasts, appends are refused with its code (NO_SPACE,
// JOURNAL_IO, JOURNAL_READ_ONLY), counted, not logged again; stats shows the
// state and its reason.
//
// It also knows which chunks the batches on their way to the disk change,
// so fingerprint requests wait for those batches only when they ask about
// one of them (settledFor).
import fs from 'node:fs'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import type { PayloadEncoding } from '../proto/change-batch'
import { RECORD_HEADER_SIZE, SECTOR_SIZE, recordData, recordTimeLow } from '../proto/record'
import { CHUNK_BYTES, IndexBatch, RANGE_CHUNKS } from './chunk-index'
import type { CommitSink, CommitStage, GroupCommit, PendingWrite } from './group-commit'
import type { JournalWrite } from './journal'
import { FramePool } from './frame-pool'
import { FRAME_HEADER_SIZE, batchFramedSize } from './journal-format'
import type { CommittedBatch } from './point-maps'
import { R_COUNT, R_KIND, R_OFFSET, R_SECTOR, R_SEQ, STRIDE, checkAndFrame, checkAndFrameAsync, type FramedBatch } from './record-check'
import type { SegmentFile } from './segment'
import type { TimemarkCatalog } from './timemark-catalog'
import type { BatchInfo, VolumeLedger } from './volume-ledger'

interface VolumeWrite extends JournalWrite {
  batch: BatchInfo
  recs: Float64Array // record-check layout, R_OFFSET = frame offset inside buf
  wallMs: number
}

export type WriterState = 'normal' | 'no_space' | 'io_error' | 'read_only'

interface Fault {
  state: Exclude<WriterState, 'normal'>
  code: 'NO_SPACE' | 'JOURNAL_IO' | 'JOURNAL_READ_ONLY'
  reason: string
  since: number
  /** The journal is cut back (or the volume recovered): a batch may be tried again. */
  ready: boolean
}

/** Buffers for framed batches, shared by every volume's writer (one JavaScript thread). */
const frames = new FramePool()

/** Free space kept beyond a batch before ingest resumes: the index's log and compactions need room too. */
const SPACE_RESERVE = 16 * 1024 * 1024
/** Batches from this size up are checked on libuv's pool; smaller ones on the main thread at once. */
const POOL_CHECK_BYTES = 256 * 1024

/** checkAndFrame as a settled promise, so small batches take the same ordered path as the pool's. */
function checkNow(...args: Parameters<typeof checkAndFrame>): Promise<FramedBatch> {
  try {
    return Promise.resolve(checkAndFrame(...args))
  } catch (err) {
    return Promise.reject(err)
  }
}

/** After an I/O error, how long until a batch is tried again. */
const IO_RETRY_MS = 5000

function isNoSpace(err: Error): boolean {
  return (err as TidemarkError).code === 'NO_SPACE' || /ENOSPC|no space left/i.test(err.message)
}

export class BatchWriter implements CommitSink {
  acceptedSeq: number
  /** The last seq the batch called last declares: what the next call is checked against. */
  private declaredSeq: number
  /** Bumped when a check refuses a batch: batches called before that with the old epoch are refused unplaced. */
  private epoch = 0
  /** Settles once every append called so far is placed in the journal or refused. */
  private placedTail: Promise<void> = Promise.resolve()
  /** What stopped the writer, or null. */
  private fault: Fault | null = null
  /** Faults met, by state. */
  readonly faults: Record<string, number> = {}
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
    private readonly commits: GroupCommit,
    /** Recovers the volume from its files (after a failed index write). */
    private readonly reload: () => Promise<void>,
    /** Told once per episode when the volume runs out of space. */
    private readonly onNoSpace: () => void = () => {},
    /** Each batch once it is durable and indexed, in commit order (the live point map). */
    private readonly onCommitted: (b: CommittedBatch) => void = () => {}
  ) {
    this.log = l.log
    this.acceptedSeq = l.durableSeq
    this.declaredSeq = l.durableSeq
  }

  /**
   * Appends a batch: `payload` as it arrived with its `encoding` (LZ4 or
   * raw, and its checksum), or raw records the caller made (no encoding).
   * `released`, once nothing reads `payload` any more (its check settled, or
   * it was refused before one began).
   */
  async append(payload: Buffer, batch: BatchInfo, encoding?: PayloadEncoding, released?: () => void): Promise<number> {
    const name = this.l.meta.name
    if (this.closed || (this.fault && !this.mayResume(encoding ? encoding.rawLength : payload.length))) {
      released?.()
      throw this.closed ? new TidemarkError('VOLUME_CLOSED', `volume ${name} is closed`) : this.refusal()
    }
    const wallMs = Date.now()
    const rawLength = encoding ? encoding.rawLength : payload.length
    // A reused buffer for the frames, when the declared count can be right (record-check refuses it otherwise).
    const n = batch.recordCount
    const into = Number.isInteger(n) && n >= 0 && n * RECORD_HEADER_SIZE <= rawLength ? frames.acquire(batchFramedSize(rawLength, n)) : undefined
    // One native call: decoded, checked and framed (CHANGE records + a COMMIT) into one buffer. On
    // the pool, except for a small batch, which the hop to another thread would delay more than
    // checking it here costs (a synchronous write, a TimeMark).
    const ctx = { volume: name, lastAcceptedSeq: this.declaredSeq, sizeSectors: this.l.meta.size / SECTOR_SIZE, wallMs }
    const check = rawLength >= POOL_CHECK_BYTES ? checkAndFrameAsync(payload, batch, ctx, encoding, into) : checkNow(payload, batch, ctx, encoding, into)
    check.then(released, released).catch(() => undefined) // the outcome is handled below, in call order
    if (Number.isSafeInteger(batch.lastSeq) && batch.lastSeq > this.declaredSeq) this.declaredSeq = batch.lastSeq
    const epoch = this.epoch
    const before = this.placedTail
    let placed!: () => void
    this.placedTail = new Promise((resolve) => (placed = resolve))
    const p = new Promise<number>((resolve, reject) => {
      this.place({ check, before, epoch, into, batch, wallMs, resolve, reject }).catch(reject).finally(placed)
    })
    this.tailPromise = p.catch(() => {})
    return p
  }

  /**
   * After every earlier call is placed or refused: the checked batch placed
   * in the journal and queued on the group commit (in the same step, so the
   * commit sees batches in journal order), or refused.
   */
  private async place(a: {
    check: Promise<FramedBatch>
    before: Promise<void>
    epoch: number
    into: Buffer | undefined
    batch: BatchInfo
    wallMs: number
    resolve: (seq: number) => void
    reject: (e: Error) => void
  }): Promise<void> {
    const { check, epoch, into, batch } = a
    await a.before
    let checked: FramedBatch
    try {
      checked = await check
    } catch (e) {
      if (into) frames.release(into)
      if (epoch === this.epoch) {
        // The first refusal of its run: counted and logged; the later calls checked against it are void.
        this.epoch++
        this.declaredSeq = this.acceptedSeq
        const code = (e as TidemarkError).code ?? 'UNKNOWN'
        this.rejected[code] = (this.rejected[code] ?? 0) + 1
        this.log.warn({ code, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq }, (e as Error).message)
        throw e
      }
      throw this.voided(batch)
    }
    if (epoch !== this.epoch || this.closed || this.fault) {
      frames.release(checked.framed)
      if (epoch !== this.epoch) throw this.voided(batch)
      if (this.closed) throw new TidemarkError('VOLUME_CLOSED', `volume ${this.l.meta.name} is closed`)
      throw this.refusal()
    }
    const { framed: buf, recs } = checked
    const pos = this.l.journal.assign(buf.length)
    this.acceptedSeq = batch.lastSeq
    this.notePending(recs, batch.recordCount, 1)
    const w: VolumeWrite = { sink: this, resolve: a.resolve, reject: a.reject, buf, segment: pos.segment, offset: pos.offset, batch, recs, wallMs: a.wallMs }
    this.commits.submit(w)
  }

  /** A batch called after one that was refused: checked against seqs that never landed. */
  private voided(batch: BatchInfo): TidemarkError {
    return new TidemarkError('SEQ_OUT_OF_ORDER', `volume ${this.l.meta.name}, batch seqs ${batch.firstSeq}..${batch.lastSeq}: follows a batch that was refused`)
  }

  async writeAll(items: PendingWrite[]): Promise<Set<SegmentFile>> {
    // After a failed write nothing more may land behind it until the journal
    // is cut back: a hole followed by intact batches would read back as corruption.
    if (this.fault) throw this.refusal(false)
    return this.l.journal.writeAll(items as VolumeWrite[])
  }

  async committed(items: PendingWrite[]): Promise<void> {
    if (this.fault) throw this.refusal(false) // an earlier round failed: this one proves nothing
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
      this.onCommitted({ recs: w.recs, recordCount: w.batch.recordCount, segment: w.segment, offset: w.offset, lastSeq: w.batch.lastSeq })
      w.resolve(w.batch.lastSeq)
      frames.release(w.buf) // written, synced and indexed: nothing reads it again
    }
  }

  failed(items: PendingWrite[], err: Error, stage: CommitStage): void {
    if (!this.fault) this.enterFault(err, stage)
    const e = this.refusal(false)
    for (const w of items) {
      this.notePending((w as VolumeWrite).recs, (w as VolumeWrite).batch.recordCount, -1)
      w.reject(e)
      frames.release((w as VolumeWrite).buf)
    }
  }

  /** The writer's state for stats: normal, or the fault and its reason. */
  get state(): { state: WriterState; reason: string | null; since: number | null } {
    const f = this.fault
    return f ? { state: f.state, reason: f.reason, since: f.since } : { state: 'normal', reason: null, since: null }
  }

  private enterFault(err: Error, stage: CommitStage): void {
    const name = this.l.meta.name
    const f: Fault =
      stage === 'sync'
        ? { state: 'read_only', code: 'JOURNAL_READ_ONLY', reason: `fsync of the journal failed: ${err.message}; the volume is read-only until an operator restarts the appliance (a failed fsync cannot be retried safely)`, since: Date.now(), ready: false }
        : isNoSpace(err)
          ? { state: 'no_space', code: 'NO_SPACE', reason: (err as TidemarkError).code === 'NO_SPACE' ? err.message : `no space left on device: the index of ${this.l.dir}: ${err.message}`, since: Date.now(), ready: false }
          : { state: 'io_error', code: 'JOURNAL_IO', reason: err.message, since: Date.now(), ready: false }
    this.fault = f
    this.faults[f.state] = (this.faults[f.state] ?? 0) + 1
    const then = f.state === 'read_only' ? '' : f.state === 'no_space' ? '; batches are refused until space returns' : `; batches are refused, then tried again after ${IO_RETRY_MS / 1000} s`
    this.log.error({ state: f.state, stage }, `volume ${name}: ${f.reason}${then}`)
    if (f.state !== 'read_only') void this.recover(f, stage)
    if (f.state === 'no_space') this.onNoSpace()
  }

  /** Once every batch in flight has settled: cut the journal back (or recover the volume) so a batch may be tried again. */
  private async recover(f: Fault, stage: CommitStage): Promise<void> {
    try {
      await this.settled()
      if (stage === 'index') await this.reload()
      else await this.l.journal.cutBack(this.l.journal.durableEnd)
      this.acceptedSeq = this.declaredSeq = this.l.durableSeq
      f.ready = true
    } catch (e) {
      this.fault = {
        state: 'read_only',
        code: 'JOURNAL_READ_ONLY',
        reason: `recovering from "${f.reason}" failed: ${(e as Error).message}; the volume is read-only until an operator restarts the appliance`,
        since: Date.now(),
        ready: false,
      }
      this.faults.read_only = (this.faults.read_only ?? 0) + 1
      this.log.error({ state: 'read_only' }, `volume ${this.l.meta.name}: ${this.fault.reason}`)
    }
  }

  /** Whether a batch of about `bytes` may be tried now; clears the fault (and says so once) if it may. */
  private mayResume(bytes: number): boolean {
    const f = this.fault!
    if (!f.ready || f.state === 'read_only') return false
    if (f.state === 'no_space') {
      // Synchronous on purpose: append() places batches in call order before its first await.
      const st = fs.statfsSync(this.l.journal.dir)
      const free = st.bavail * st.bsize
      if (free < 2 * bytes + SPACE_RESERVE) return false
      this.log.info({ free }, `volume ${this.l.meta.name}: space is available again (${free} bytes free): accepting batches`)
    } else {
      if (Date.now() - f.since < IO_RETRY_MS) return false
      this.log.info(`volume ${this.l.meta.name}: trying batches again after the I/O error`)
    }
    this.fault = null
    return true
  }

  /** The error an append gets while a fault lasts (counted by code unless `count` is false). */
  private refusal(count = true): TidemarkError {
    const f = this.fault!
    if (count) this.rejected[f.code] = (this.rejected[f.code] ?? 0) + 1
    return new TidemarkError(f.code, `volume ${this.l.meta.name}: ${f.reason}`)
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
    // Batches still being checked are not counted yet: wait until they are placed.
    await this.placedTail
    if (this.pendingWide > 0 || regions.some((r) => this.pendingChunks.has(r))) await this.settled()
  }

  /** Refuses appends from now on; resolves when the queued ones are settled. */
  async close(): Promise<void> {
    this.closed = true
    await this.settled()
  }
}
