// One volume's journal: its segment files, where the next batch goes, the
// writes themselves, and the scan that recovery and verify() share.
//
// Positions. append() is synchronous up to this point: every accepted batch
// is given its segment and offset at once, in call order (assign()), so
// pipelined batches can be framed and queued without waiting for each other
// and the writes are positioned (pwrite/pwritev), never "at the cursor".
// A batch never spans segments: one that would cross segmentBytes starts a
// new segment. Before the first write into a new segment the previous one is
// fdatasynced, so a torn tail can only ever be in the newest segment; a
// damaged end of any older segment is corruption.
//
// The scan (LevelDB's log_reader, with the policy decided here):
//   - a batch is intact when its COMMIT is read back intact and agrees with
//     the CHANGE records before it (count, seqs inside first..last, first
//     above the previous intact batch), every one of them intact too;
//   - damage (a frame cut off by the end of the file, a bad header or
//     checksum, CHANGE records with no COMMIT, a COMMIT that disagrees) in
//     the newest segment with no intact batch after it is a torn tail: a
//     crash while the last group commit was on its way to the disk (its pages
//     can land in any order). Recovery truncates the file to the end of the
//     last intact batch, which is never data that was acknowledged: acks
//     wait for the fsync of the whole round;
//   - damage followed by an intact batch, or anywhere in an older segment,
//     is corruption: nothing is truncated; it is reported with the last seq
//     before it, so reads of points above that seq refuse and points before
//     it still restore; the scan carries on at the next intact frame.
//   The ambiguity every log has remains: a bit flipped by the disk in the
//   very last batch of the newest segment looks like a torn write, and is
//   cut (and logged at warn) like one.
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import {
  RecordKind,
  recordCount,
  recordData,
  recordFlags,
  recordKind,
  recordSector,
  recordSeq,
  recordTimeLow,
} from '../proto/record'
import { crashPoint } from './crash-points'
import {
  FRAME_CHANGE,
  FRAME_COMMIT,
  SEGMENT_HEADER_SIZE,
  decodeCommit,
  type CommitBody,
} from './journal-format'
import { SegmentFile, SegmentReader, listSegments, segmentFileName, syncDir } from './segment'
import type { PendingWrite } from './group-commit'

/** How segments are appended to: O_DIRECT where the file system allows it (segment.ts), or through the page cache. */
export type JournalIo = 'direct' | 'buffered'

export interface JournalOptions {
  segmentBytes: number
  io: JournalIo
}

export interface Position {
  segment: number
  offset: number
}

export interface CorruptRange {
  segment: string
  offset: number
  /** Bytes skipped to the next intact frame (or to the end of the segment). */
  bytes: number
  /** Last seq of the last intact batch before the damage: points above it cannot be read. */
  afterSeq: number
  message: string
}

/**
 * A batch read back by the scan. Record i's fields are recs[i*SCAN_STRIDE +
 * ScanField.x] (no object per record: a recovery scans millions).
 */
export interface ScannedBatch {
  commit: CommitBody
  segment: number
  start: number
  end: number
  recs: Float64Array
  count: number
  /** Record index -> the data of a MARK record (a TimeMark's metadata). */
  marks: Map<number, Buffer>
}
/** The fields of one record in ScannedBatch.recs. */
export const ScanField = {
  seq: 0,
  sector: 1,
  count: 2,
  kind: 3,
  flags: 4,
  /** offset of the record's CHANGE frame in its segment */
  frameOffset: 5,
  /** capture time, ms modulo 2^32 (fullTimeMs) */
  timeLow: 6,
} as const
export const SCAN_STRIDE = 7

export interface ScanResult {
  /** End of the last intact COMMIT. */
  end: Position
  lastSeq: number
  corrupt: CorruptRange[]
  /** Newest segment only: where an incomplete tail starts, and why (null: clean end). */
  torn: { segment: number; at: number; bytes: number; why: string } | null
}

/** One queued batch, framed and placed. */
export interface JournalWrite extends PendingWrite {
  buf: Buffer
  segment: number
  offset: number
}

export class Journal {
  readonly segments = new Map<number, SegmentFile>()
  /** Where the next batch goes. */
  tail: Position = { segment: 1, offset: SEGMENT_HEADER_SIZE }
  /** End of the last batch known durable. */
  durableEnd: Position = { segment: 1, offset: SEGMENT_HEADER_SIZE }
  private bufferedLogged = false

  constructor(
    readonly dir: string,
    readonly volume: string,
    readonly generation: string,
    readonly segmentBytes: number,
    private readonly log: Logger,
    /** 'direct': O_DIRECT appends where the file system allows (segment.ts); 'buffered': through the page cache. */
    readonly io: JournalIo = 'direct'
  ) {}

  /** Opens every segment file (creating the first one for a new volume). */
  async open(): Promise<void> {
    await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 })
    const numbers = await listSegments(this.dir)
    for (const n of numbers) this.segments.set(n, await SegmentFile.open(this.dir, n))
    // A newest segment shorter than a header was being created when the
    // process died: it never held a batch.
    const last = numbers.at(-1)
    if (last !== undefined && this.segments.get(last)!.size < SEGMENT_HEADER_SIZE) {
      const seg = this.segments.get(last)!
      this.log.warn({ segment: seg.name, bytes: seg.size }, 'removing a segment cut off while its header was written')
      await seg.close()
      await fs.promises.rm(seg.path)
      await syncDir(this.dir)
      this.segments.delete(last)
    }
    if (this.segments.size === 0) {
      const seg = await SegmentFile.create(this.dir, 1, this.headerFields())
      this.segments.set(1, seg)
    }
    const newest = this.newest()
    this.tail = { segment: newest.number, offset: newest.size }
    this.durableEnd = { ...this.tail }
  }

  private headerFields() {
    return { created: Date.now(), volume: this.volume, generation: this.generation }
  }

  newest(): SegmentFile {
    let best: SegmentFile | undefined
    for (const s of this.segments.values()) if (!best || s.number > best.number) best = s
    return best!
  }

  ordered(): SegmentFile[] {
    return [...this.segments.values()].sort((a, b) => a.number - b.number)
  }

  get bytes(): number {
    let n = 0
    for (const s of this.segments.values()) n += s.size
    return n
  }

  /** Places a batch of `len` framed bytes; synchronous, in call order. */
  assign(len: number): Position {
    if (this.tail.offset + len > this.segmentBytes && this.tail.offset > SEGMENT_HEADER_SIZE) {
      this.tail = { segment: this.tail.segment + 1, offset: SEGMENT_HEADER_SIZE }
    }
    const p = { ...this.tail }
    this.tail.offset += len
    return p
  }

  /** Writes queued batches in order: one pwritev per run of batches in one segment. */
  async writeAll(items: JournalWrite[]): Promise<Set<SegmentFile>> {
    const touched = new Set<SegmentFile>()
    let i = 0
    while (i < items.length) {
      const first = items[i]
      let j = i + 1
      let end = first.offset + first.buf.length
      while (j < items.length && items[j].segment === first.segment && items[j].offset === end) {
        end += items[j].buf.length
        j++
      }
      let seg = this.segments.get(first.segment)
      if (!seg) {
        const prev = this.segments.get(first.segment - 1)
        if (prev) {
          await prev.endAppends() // no padding is left in a segment that is complete
          await prev.fh.datasync() // older segments are whole before a newer one holds a batch
        }
        try {
          seg = await SegmentFile.create(this.dir, first.segment, this.headerFields())
        } catch (e) {
          throw writeError(e as NodeJS.ErrnoException, path.join(this.dir, segmentFileName(first.segment)), SEGMENT_HEADER_SIZE + end - first.offset, 'creating it')
        }
        this.segments.set(seg.number, seg)
      }
      const bufs = items.slice(i, j).map((w) => w.buf)
      const total = end - first.offset
      let written: number
      try {
        if (this.io === 'direct' && (await seg.appendDirect(bufs, first.offset))) {
          written = total
        } else {
          if (this.io === 'direct' && !this.bufferedLogged) {
            this.bufferedLogged = true
            this.log.info({ segment: seg.path }, 'the journal is written through the page cache: its file system refuses O_DIRECT')
          }
          written = (await seg.fh.writev(bufs, first.offset)).bytesWritten
          // A short write is the file system running out of room part-way: the
          // rest, written again, fails with the reason (ENOSPC, EIO, ...).
          if (written < total) written += (await seg.fh.write(Buffer.concat(bufs).subarray(written), 0, total - written, first.offset + written)).bytesWritten
        }
      } catch (e) {
        throw writeError(e as NodeJS.ErrnoException, seg.path, total, `at offset ${first.offset}`)
      }
      if (written !== total) {
        throw new TidemarkError('JOURNAL_IO', `short write to ${seg.path} at ${first.offset}: ${written} of ${total} bytes`)
      }
      if (end > seg.size) seg.size = end
      touched.add(seg)
      i = j
    }
    return touched
  }

  /**
   * Reads the journal from `from` to the end (or to `until`), calling
   * onBatch for each intact batch (its COMMIT and every CHANGE record before
   * it read back intact and agreeing). `tailMayTear`: recovery, where damage
   * in the newest segment that no intact batch follows is a torn tail, vs
   * verify (up to the durable end), where any damage is corruption.
   */
  async scan(
    from: Position,
    fromSeq: number,
    opts: { until?: Position; tailMayTear: boolean },
    onBatch: (b: ScannedBatch) => Promise<void> | void
  ): Promise<ScanResult> {
    const res: ScanResult = { end: { ...from }, lastSeq: fromSeq, corrupt: [], torn: null }
    const segs = this.ordered().filter((s) => s.number >= from.segment && (!opts.until || s.number <= opts.until.segment))
    const newestNumber = segs.at(-1)?.number
    let recs = new Float64Array(1024 * SCAN_STRIDE)
    for (const seg of segs) {
      const limit = opts.until && seg.number === opts.until.segment ? Math.min(opts.until.offset, seg.size) : seg.size
      const tornOk = seg.number === newestNumber && opts.tailMayTear
      const h = await seg.readHeader()
      if (typeof h === 'string' || h.volume !== this.volume || h.generation !== this.generation || h.segment !== seg.number) {
        const why = typeof h === 'string' ? h : `header names volume ${h.volume} generation ${h.generation} segment ${h.segment}`
        res.corrupt.push({ segment: seg.name, offset: 0, bytes: seg.size, afterSeq: res.lastSeq, message: `segment header: ${why}` })
        continue
      }
      const start = seg.number === from.segment ? from.offset : SEGMENT_HEADER_SIZE
      const r = new SegmentReader(seg, limit, start)
      let count = 0
      let marks = new Map<number, Buffer>()
      let batchStart = start
      let damageInBatch = false
      // Damage since the last intact batch: corruption once an intact batch
      // follows it, part of a torn tail if none does in the newest segment.
      let damage: CorruptRange[] = []
      const damaged = (offset: number, bytes: number, message: string) =>
        damage.push({ segment: seg.name, offset, bytes, afterSeq: res.lastSeq, message })
      for (;;) {
        const at = r.pos
        const o = await r.next()
        if (o === 'end') break
        if (o === 'frame') {
          const b = r.body
          if (r.type === FRAME_CHANGE) {
            if ((count + 1) * SCAN_STRIDE > recs.length) {
              const bigger = new Float64Array(recs.length * 2)
              bigger.set(recs)
              recs = bigger
            }
            const k = count * SCAN_STRIDE
            const p = r.bodyAt
            const kind = recordKind(b, p)
            recs[k + ScanField.seq] = recordSeq(b, p)
            recs[k + ScanField.sector] = recordSector(b, p)
            recs[k + ScanField.count] = recordCount(b, p)
            recs[k + ScanField.kind] = kind
            recs[k + ScanField.flags] = recordFlags(b, p)
            recs[k + ScanField.frameOffset] = at
            recs[k + ScanField.timeLow] = recordTimeLow(b, p)
            if (kind === RecordKind.Mark) marks.set(count, Buffer.from(recordData(b, p)))
            count++
            continue
          }
          const c = decodeCommit(b.subarray(r.bodyAt, r.bodyAt + r.length))
          const why = commitDisagrees(c, recs, count, res.lastSeq)
          if (why) {
            const last = damage.at(-1)
            if (last && damageInBatch) {
              // The damage already reported inside this batch is why it disagrees: one entry.
              last.message += `; the batch of seqs ${c.firstSeq}..${c.lastSeq} it fell in is lost`
            } else {
              damaged(batchStart, r.pos - batchStart, `COMMIT of seqs ${c.firstSeq}..${c.lastSeq} at offset ${at} ${why}`)
            }
          } else {
            for (const d of damage) res.corrupt.push(d)
            damage = []
            await onBatch({ commit: c, segment: seg.number, start: batchStart, end: r.pos, recs, count, marks })
            res.lastSeq = c.lastSeq
            res.end = { segment: seg.number, offset: r.pos }
          }
          count = 0
          marks = new Map()
          batchStart = r.pos
          damageInBatch = false
          continue
        }
        // 'torn' (runs past the end) or 'bad': is anything intact after it?
        const next = await r.resync(at)
        const bytes = (next ?? limit) - at
        damaged(
          at,
          bytes,
          `${r.problem}; ${next === null ? 'nothing intact after it in this segment' : `${bytes} bytes skipped to the next intact frame`}`
        )
        count = 0 // the batch the damage fell in cannot be trusted
        marks = new Map()
        damageInBatch = true
        if (next === null) break
        r.pos = next
        batchStart = next
      }
      if (count > 0) damaged(recs[ScanField.frameOffset], limit - recs[ScanField.frameOffset], `${count} CHANGE records with no COMMIT after them`)
      if (damage.length > 0 && tornOk) {
        const cut = res.end.segment === seg.number ? res.end.offset : start
        res.torn = { segment: seg.number, at: cut, bytes: limit - cut, why: damage.map((d) => `offset ${d.offset}: ${d.message}`).join('; ') }
      } else {
        for (const d of damage) res.corrupt.push(d)
      }
    }
    return res
  }

  /** Closes and deletes the segments numbered up to `through` (never the newest). Returns their numbers. */
  async dropSegments(through: number): Promise<number[]> {
    const newest = this.newest().number
    const gone: number[] = []
    for (const seg of this.ordered()) {
      if (seg.number > through || seg.number >= newest) break
      await seg.close()
      await fs.promises.rm(seg.path, { force: true })
      this.segments.delete(seg.number)
      gone.push(seg.number)
      crashPoint('compact:mid-drop')
    }
    if (gone.length) await syncDir(this.dir)
    return gone
  }

  /** Cuts the newest segment back to `offset` (the end of its last COMMIT). */
  async truncate(segment: number, offset: number): Promise<void> {
    const seg = this.segments.get(segment)!
    await seg.truncate(offset)
    if (segment === this.tail.segment) this.tail = { segment, offset }
    this.durableEnd = { segment, offset }
  }

  /**
   * Cuts the journal back to `to` after a failed write: the segment holding
   * it is truncated there, newer segments (and a segment file whose creation
   * failed) are deleted, and the next batch goes to `to`. Only for bytes
   * that were never acknowledged: the caller waits until every batch after
   * `to` has been refused.
   */
  async cutBack(to: Position): Promise<void> {
    for (const seg of [...this.segments.values()]) {
      if (seg.number <= to.segment) continue
      await seg.close().catch(() => {})
      await fs.promises.rm(seg.path, { force: true })
      this.segments.delete(seg.number)
    }
    for (const name of await fs.promises.readdir(this.dir)) {
      const m = /^(\d{8})\.tmj$/.exec(name)
      if (m && Number(m[1]) > to.segment) await fs.promises.rm(path.join(this.dir, name), { force: true })
    }
    const seg = this.segments.get(to.segment)!
    // Always: a failed direct write may have left bytes past the segment's end.
    await seg.truncate(to.offset)
    await syncDir(this.dir)
    this.tail = { ...to }
    this.durableEnd = { ...to }
  }

  async close(): Promise<void> {
    for (const s of this.segments.values()) await s.close().catch(() => {})
    this.segments.clear()
  }
}

function commitDisagrees(c: CommitBody, recs: Float64Array, count: number, prevSeq: number): string | null {
  if (c.recordCount !== count) return `declares ${c.recordCount} records, ${count} precede it`
  if (c.lastSeq < c.firstSeq) return 'has last seq below first seq'
  if (c.firstSeq <= prevSeq) return `does not follow the previous batch's last seq ${prevSeq}`
  for (let i = 0; i < count; i++) {
    const s = recs[i * SCAN_STRIDE + ScanField.seq]
    if (s < c.firstSeq || s > c.lastSeq) return `holds a record of seq ${s} outside it`
  }
  return null
}

/**
 * A journal write that failed, named for an operator: ENOSPC says the device
 * is full and how much the write needed; other errors keep their errno.
 */
function writeError(e: NodeJS.ErrnoException, file: string, needed: number, where: string): Error {
  if (e instanceof TidemarkError) return e
  if (e.code === 'ENOSPC') {
    return new TidemarkError('NO_SPACE', `no space left on device: ${file} needs ${needed} more bytes (${where})`)
  }
  return new TidemarkError('JOURNAL_IO', `I/O error writing ${file} (${where}): ${e.code ?? ''} ${e.message}`.replace('  ', ' '))
}
