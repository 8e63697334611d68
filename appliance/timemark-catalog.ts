// The points in time of one volume: the TimeMark catalog (in the index, 'k'
// and 'l' keys), the pins retention must respect (pins.json), and the
// windows of inexact points between a GAP and its EXACT marker (points.ts).
// The batch writer and recovery feed committed records in through
// builder(); reads ask checkExact, exactSeq and oldestExactSeq; compaction
// asks for the pins and drops what it expired.
//
// Pins live in pins.json, replaced atomically, not in the index, so
// rebuilding the index keeps them.
import fs from 'node:fs'
import path from 'node:path'
import { TidemarkError } from '../proto/errors'
import { writeFileAtomic } from '../native/atomic-file'
import type { CatalogEntry, IndexBatch, InexactWindow } from './chunk-index'
import { PointsBuilder, inexactAt } from './points'
import type { VolumeLedger } from './volume-ledger'

export class TimemarkCatalog {
  /** Inexact windows, oldest first (points.ts); loaded at open, extended as batches commit. */
  windows: InexactWindow[] = []
  /** TimeMarks a builder catalogued in the round being committed (PointsBuilder pushes here). */
  readonly added: CatalogEntry[] = []
  /** TimeMarks in the catalog (counted in stats). */
  count = 0
  private pins = new Set<number>()

  constructor(private readonly l: VolumeLedger) {}

  async loadPins(): Promise<void> {
    const pins = await fs.promises.readFile(path.join(this.l.dir, 'pins.json'), 'utf8').catch(() => '[]')
    this.pins = new Set(JSON.parse(pins) as number[])
  }

  /** What one committed batch adds to the catalog, the windows and the time index, written into ib. */
  builder(ib: IndexBatch, wallMs: number): PointsBuilder {
    return new PointsBuilder(ib, this.windows, this, this.l.counters.seq, wallMs)
  }

  /** The index write of a round landed: its marks count. */
  settle(): void {
    this.count += this.added.length
    this.added.length = 0
  }

  /** Compaction folded history up to seq into the base: windows closed by then and the expired marks go. */
  expire(seq: number, expiredMarks: number): void {
    for (let i = this.windows.length - 1; i >= 0; i--) if (this.windows[i].end !== 0 && this.windows[i].end <= seq) this.windows.splice(i, 1)
    this.count -= expiredMarks
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
        ? `volume ${this.l.meta.name}: seq ${seq} is after seq ${w.start}, where the agent lost changes and began resending regions; points are exact again once that resync completes`
        : `volume ${this.l.meta.name}: seq ${seq} lies in ${w.start + 1}..${w.end - 1}, where the agent resent regions instead of changes (after it fell behind, restarted or copied the volume); the nearest exact points are ${w.start} and ${w.end}`
    )
  }

  /** Exact points end where the newest inexact window starts, if it is still open. */
  get exactSeq(): number {
    const w = this.windows.at(-1)
    return w && w.end === 0 ? Math.min(w.start, this.l.durableSeq) : this.l.durableSeq
  }

  /** The oldest exact point (0 when none is known). */
  get oldestExactSeq(): number {
    const base = this.l.base
    const floor = base?.seq ?? 0
    // The history starts inexact until the initial copy's EXACT marker.
    let oldest = Math.max(floor, this.l.counters?.firstSeq ?? 0)
    if (base) oldest = base.seq
    for (const w of this.windows) if (oldest > w.start && (w.end === 0 || oldest < w.end)) oldest = w.end
    return oldest
  }

  async timemarks(): Promise<CatalogEntry[]> {
    const floor = this.l.base?.seq ?? 0
    // Marks below the base may linger in the index after a crash mid-purge: they are expired.
    return (await this.l.index.timemarks({ fromSeq: floor })).map((e) => this.withPin(e))
  }

  withPin(e: CatalogEntry): CatalogEntry {
    e.pinned = this.pins.has(e.seq)
    return e
  }

  isPinned(seq: number): boolean {
    return this.pins.has(seq)
  }

  async timemarkById(seq: number): Promise<CatalogEntry | null> {
    if (!Number.isSafeInteger(seq) || seq <= 0 || seq > this.l.durableSeq) return null
    const e = await this.l.index.timemark(seq)
    return e ? this.withPin(e) : null
  }

  async timemarksByLabel(label: string): Promise<CatalogEntry[]> {
    const out: CatalogEntry[] = []
    for (const seq of await this.l.index.labelled(label)) {
      const e = seq <= this.l.durableSeq ? await this.l.index.timemark(seq) : null
      if (e) out.push(this.withPin(e))
    }
    return out
  }

  /** Pins (or unpins) a TimeMark: retention never expires a pinned mark, nor any point after it. */
  async pin(seq: number, pinned: boolean): Promise<CatalogEntry> {
    const e = await this.timemarkById(seq)
    const base = this.l.base
    if (!e || (base && seq < base.seq)) {
      throw new TidemarkError('UNKNOWN_TIMEMARK', `volume ${this.l.meta.name} has no TimeMark with id ${seq} (see tidemark timemark list)`)
    }
    const next = new Set(this.pins)
    if (pinned) next.add(seq)
    else next.delete(seq)
    await writeFileAtomic(path.join(this.l.dir, 'pins.json'), JSON.stringify([...next].sort((a, b) => a - b)))
    this.pins = next
    e.pinned = pinned
    this.l.log.info({ timemark: seq, pinned }, pinned ? `TimeMark ${seq} pinned` : `TimeMark ${seq} unpinned`)
    return e
  }

  get pinnedSeqs(): number[] {
    return [...this.pins].sort((a, b) => a - b)
  }

  /** The newest seq recorded at or before ms (capture time), or null if none is that old. */
  async seqAt(ms: number): Promise<{ ms: number; seq: number } | null> {
    return this.l.index.seqAtOrBefore(ms)
  }

  /** Capture (or commit) time of a seq's batch, 0 if unknown. */
  async timeOfSeq(seq: number): Promise<number> {
    const b = await this.l.index.batchAtOrAfter(seq)
    return b ? b.wallMs : 0
  }
}
