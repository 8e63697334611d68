// Points in time at the appliance: what a committed batch adds to the
// TimeMark catalog, the inexact windows and the time index (chunk-index.ts
// keys 'k', 'l', 'g', 't'). The live write path (VolumeStore.committed) and
// recovery (the journal scan) both feed each record of a batch, in journal
// order, to one PointsBuilder, so the index says the same whichever built it.
//
// Which points can be restored exactly: every seq s of a volume's stream
// whose image is the replay of every change at or below s. That fails only
// where the agent lost changes and resent regions instead (the tap fell
// behind, the agent restarted with stale regions, a copy ran): the tap puts a
// GAP marker in the stream where it starts and an EXACT marker where every
// stale region has been resent. The window opens after the newest seq the
// appliance holds before the GAP and closes at the EXACT.
import { TidemarkError } from '../proto/errors'
import { parseMarkMeta } from '../proto/timemark-meta'
import { RecordKind, fullTimeMs, isMarker } from '../proto/record'
import type { CatalogEntry, IndexBatch, InexactWindow } from './chunk-index'

export class PointsBuilder {
  /** Capture ms -> newest seq recorded in it, for this batch. */
  private readonly times = new Map<number, number>()
  private last: number

  constructor(
    private readonly ib: IndexBatch,
    private readonly windows: InexactWindow[],
    private readonly catalog: { added: CatalogEntry[] },
    /** The newest seq the stream held before this batch (the previous batch's last seq). */
    prevSeq: number,
    /** The batch's commit wall time, which dates the records' low 32 time bits. */
    private readonly wallMs: number
  ) {
    this.last = prevSeq
  }

  record(seq: number, kind: number, timeLow: number, markData: () => Buffer): void {
    const ms = fullTimeMs(timeLow, this.wallMs)
    if (ms > 0 && (this.times.get(ms) ?? -1) < seq) this.times.set(ms, seq)
    if (kind === RecordKind.Mark) {
      const m = parseMarkMeta(markData(), { journaled: true })
      // record-check refused bad metadata before it reached the journal.
      if (typeof m === 'string') throw new TidemarkError('RECORD_MALFORMED', `MARK at seq ${seq}: metadata ${m}`)
      const e: CatalogEntry = { seq, label: m.label, consistency: m.consistency, wallMs: m.wallMs, group: m.group, note: m.note, pinned: false }
      this.ib.putTimeMark(e)
      this.catalog.added.push(e)
    } else if (kind === RecordKind.Gap) {
      const open = this.windows.at(-1)
      if (!open || open.end !== 0) {
        const w = { start: this.last, end: 0 }
        this.windows.push(w)
        this.ib.putWindow(w)
      }
    } else if (kind === RecordKind.Exact) {
      const open = this.windows.at(-1)
      if (open && open.end === 0) {
        open.end = seq
        this.ib.putWindow(open)
      }
    }
    // Changes and flushes move the stream's newest seq; markers (MARK, GAP, EXACT) do not.
    if (!isMarker(kind)) this.last = seq
  }

  /** After the batch's records: its last seq is a point the stream has reached. */
  finish(lastSeq: number): void {
    for (const [ms, seq] of this.times) this.ib.putTime(ms, seq)
    this.last = Math.max(this.last, lastSeq)
  }
}

/** The window that makes seq inexact, if any. */
export function inexactAt(windows: InexactWindow[], seq: number): InexactWindow | null {
  for (const w of windows) if (seq > w.start && (w.end === 0 || seq < w.end)) return w
  return null
}
