// What the rooms of one volume share (volume-store.ts composes them): the
// volume's identity and directory, its journal and index handles, the base
// image, the durable seq, the counters and per-segment summaries the index
// persists, and the corruption recovery and verify found. Recovery fills it,
// the batch writer advances it, compaction swaps the base and drops
// segments, reads and inspection only look. It is also what image.ts reads
// through (ImageSource): a read needs the index, the base and the segments.
//
// Directory (DIR/volumes/NAME/):
//   meta.json     VolumeMeta, written once when the volume is created (store.ts)
//   state.json    { fullSyncDone }, replaced atomically (temp file + rename)
//   pins.json     pinned TimeMarks (timemark-catalog.ts)
//   corrupt.json  corruption journal verify found in already indexed segments
//   base.json, base-SEQ.img, base-SEQ.map   the base image (base-image.ts)
//   segments/     NNNNNNNN.tmj journal segments (journal-format.ts): the truth
//   index/        LevelDB (chunk-index.ts): a rebuildable cache of the segments
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../native/atomic-file'
import type { Logger } from 'pino'
import type { BaseImage } from './base-image'
import type { ChunkIndex, IndexBatch, IndexMeta, SegmentSummary } from './chunk-index'
import type { ImageSource } from './image'
import { Journal, type CorruptRange, type JournalOptions } from './journal'
import type { SegmentFile } from './segment'

const CORRUPT_FILE = 'corrupt.json'

export interface VolumeMeta {
  name: string
  generation: string
  size: number
  group: string
  agentId: string
  created: string
  /**
   * Set on a history an admin retired when its agent announced a new
   * generation or size (store.ts acceptGeneration): the name it is served
   * under now (NAME.retired-N), read-only. `name` stays the journal's own.
   */
  servedAs?: string
  /** When it was retired (ISO 8601). */
  retiredAt?: string
  /** The identity whose hello created it, when the caller had one (identity-limits.ts counts them). */
  createdBy?: string
  /** Set on a volume Admin.SeedVolume created (volume-seed.ts): where its first point came from. */
  seed?: { source: string; seq: number; seededAt: string; dataBytes: number }
}

/** What a batch's COMMIT says about it (ChangeBatch fields the journal keeps). */
export interface BatchInfo {
  firstSeq: number
  lastSeq: number
  recordCount: number
  appBytes: number
  changedBytes: number
  wireBytes: number
}

export class VolumeLedger implements ImageSource {
  readonly journal: Journal
  index!: ChunkIndex
  /** Expired history folded into one image (base-image.ts), or null. */
  base: BaseImage | null = null
  /** Last seq of the newest batch that is fsynced and indexed. */
  durableSeq = 0
  /** The index meta as of the newest committed batch: journal position and counters. */
  counters!: IndexMeta
  summaries = new Map<number, SegmentSummary>()
  /** Damage followed by intact batches: points after it refuse to be read. */
  corrupt: CorruptRange[] = []

  constructor(
    readonly dir: string,
    readonly meta: VolumeMeta,
    readonly log: Logger,
    journal: JournalOptions
  ) {
    this.journal = new Journal(path.join(dir, 'segments'), meta.name, meta.generation, journal.segmentBytes, log, journal.io)
  }

  get volume(): string {
    return this.meta.name
  }
  get sizeBytes(): number {
    return this.meta.size
  }
  segment(n: number): SegmentFile | undefined {
    return this.journal.segments.get(n)
  }

  /** Counters and the segment summary for one committed batch, and its 'b' key. */
  noteBatch(
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

  /**
   * Remembers corruption verify found that recovery did not (logged once),
   * in corrupt.json too: recovery scans only from the index's position, so
   * damage in an older segment would be forgotten at the next start and
   * points after it would read the damaged bytes again.
   */
  async mergeCorrupt(found: CorruptRange[]): Promise<void> {
    let added = false
    for (const c of found) {
      if (!this.corrupt.some((x) => x.segment === c.segment && x.offset === c.offset)) {
        this.corrupt.push(c)
        added = true
        this.log.error({ ...c }, `journal corruption in ${c.segment} at offset ${c.offset}: ${c.message}`)
      }
    }
    if (added) await writeFileAtomic(path.join(this.dir, CORRUPT_FILE), JSON.stringify(this.corrupt, null, 2) + '\n')
  }

  /** The corruption a verify found before this start, in segments that still exist. */
  async knownCorrupt(): Promise<CorruptRange[]> {
    const text = await fs.promises.readFile(path.join(this.dir, CORRUPT_FILE), 'utf8').catch(() => '[]')
    let list: CorruptRange[]
    try {
      list = JSON.parse(text) as CorruptRange[]
    } catch {
      this.log.warn(`${CORRUPT_FILE} is unreadable: known corruption is found again by journal verify`)
      return []
    }
    const names = new Set(this.journal.ordered().map((s) => s.name))
    return Array.isArray(list) ? list.filter((c) => names.has(c.segment)) : []
  }
}
