// Compaction of one volume: folds the history up to the newest whole-segment
// boundary at or below a seq into a new base image, then deletes those
// segments and their index entries (retention.ts decides the seq).
//
// Crash-safe at every step (base-image.ts): the new base counts only once
// base.json names it; until then the old base and the segments are
// untouched, and afterwards leftovers are removed at open (recovery). The
// crash points, in order: compact:before-commit (base-image.ts: the new
// image is written, base.json not yet), compact:committed (base.json names
// it), compact:mid-purge (chunk-index.ts, between purge batches),
// compact:purged (index entries gone, segments still there),
// compact:mid-drop (journal.ts, between segment deletions). Ingest goes
// on meanwhile (it only appends to the newest segment), and reads that
// started on the old base finish on it before it closes: compaction awaits
// their leases (image-reads.ts).
import fs from 'node:fs'
import path from 'node:path'
import { TidemarkError } from '../proto/errors'
import { BaseImage } from './base-image'
import { CHUNK_BYTES } from './chunk-index'
import { crashPoint } from './crash-points'
import { imageExtents } from './image'
import type { ReaderLeases } from './image-reads'
import type { TimemarkCatalog } from './timemark-catalog'
import type { VolumeLedger } from './volume-ledger'

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

export class Compactor {
  private running = false

  constructor(
    private readonly l: VolumeLedger,
    private readonly catalog: TimemarkCatalog,
    private readonly leases: ReaderLeases
  ) {}

  /** Segments other than the newest, oldest first: number, bytes, last seq (retention picks a boundary). */
  foldableSegments(): Array<{ number: number; bytes: number; lastSeq: number }> {
    const j = this.l.journal
    const newest = j.newest().number
    const out: Array<{ number: number; bytes: number; lastSeq: number }> = []
    for (const seg of j.ordered()) {
      if (seg.number >= newest) break
      const sum = this.l.summaries.get(seg.number)
      out.push({ number: seg.number, bytes: seg.size, lastSeq: sum?.lastSeq ?? 0 })
    }
    return out
  }

  /** Returns null when no whole segment lies at or below upTo. */
  async compact(upTo: number): Promise<CompactResult | null> {
    const l = this.l
    if (this.running) throw new TidemarkError('COMPACTION_RUNNING', `volume ${l.meta.name}: a compaction is already running`)
    this.running = true
    try {
      const t0 = Date.now()
      const floor = l.base?.seq ?? 0
      const limit = Math.min(upTo, l.durableSeq, ...this.catalog.pinnedSeqs)
      let through = -1
      let seq = 0
      for (const s of this.foldableSegments()) {
        if (s.lastSeq > limit || s.lastSeq === 0) break
        through = s.number
        seq = s.lastSeq
      }
      if (through < 0 || seq <= floor) return null
      const bytesBefore = l.journal.bytes
      const marks = await l.index.timemarks({ fromSeq: 0 })
      const kept = marks.filter((e) => e.seq === seq || (e.seq <= seq && this.catalog.isPinned(e.seq))).map((e) => this.catalog.withPin(e))
      const expired = marks.filter((e) => e.seq <= seq && !kept.includes(e))
      const windows = this.catalog.windows.filter((w) => w.end === 0 || w.end > seq).map((w) => ({ ...w }))
      const timeMs = await this.catalog.timeOfSeq(seq)
      const state = { seq, timeMs, throughSegment: through, marks: kept, windows }
      const nb = await this.leases.with(l.base, () => BaseImage.write(l.dir, l.meta.size, CHUNK_BYTES, state, imageExtents(l, seq)))
      crashPoint('compact:committed')
      // Committed: from here on every read starts from the new base.
      const old = l.base
      l.base = nb
      this.catalog.expire(seq, expired.length)
      const dropping = this.foldableSegments().filter((s) => s.number <= through).map((s) => s.number)
      const purged = await l.index.purge(seq, expired, dropping)
      crashPoint('compact:purged')
      // Reads that started on the old base may still read the old segments.
      await this.leases.drained(old)
      if (old) {
        await old.close()
        await fs.promises.rm(path.join(l.dir, old.state.file), { force: true })
        await fs.promises.rm(path.join(l.dir, old.state.map), { force: true })
      }
      const gone = await l.journal.dropSegments(through)
      for (const n of gone) l.summaries.delete(n)
      const r: CompactResult = {
        volume: l.meta.name,
        baseSeq: seq,
        baseTime: timeMs ? new Date(timeMs).toISOString() : null,
        segmentsDropped: gone.length,
        journalBytesBefore: bytesBefore,
        journalBytesAfter: l.journal.bytes,
        expiredTimeMarks: expired.length,
        indexKeysDeleted: purged,
        ms: Date.now() - t0,
      }
      l.log.info(r, `compacted: history up to seq ${seq} folded into the base image, ${gone.length} segments (${bytesBefore - l.journal.bytes} bytes) reclaimed`)
      return r
    } finally {
      this.running = false
    }
  }
}
