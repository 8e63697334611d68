// One replicated volume at the appliance: its journal, its index, and the
// operations the replication and admin services need. This file only
// composes the rooms that hold them:
//   volume-ledger.ts      what they share: identity, journal and index
//                         handles, base image, durable seq, counters,
//                         corruption; the on-disk layout of a volume
//   volume-recovery.ts    open: segments, index rebuild or catch-up, torn
//                         tails, corruption
//   batch-writer.ts       append -> group commit -> durable and indexed
//   image-reads.ts        reads at a point, fingerprints, reader leases
//   point-maps.ts         sector -> location maps of points (NBD exports, Admin.Read)
//   timemark-catalog.ts   TimeMarks, pins, inexact windows, exact points
//   compaction.ts         folding expired history into the base image
//   volume-inspection.ts  stats, journal ls and show
//   volume-verify.ts      journal verify, through ChunkIndex
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import type { PayloadEncoding } from '../proto/change-batch'
import { writeFileAtomic } from '../native/atomic-file'
import type { BaseImage } from './base-image'
import { BatchWriter } from './batch-writer'
import type { CatalogEntry, ChunkIndex } from './chunk-index'
import { Compactor, type CompactResult } from './compaction'
import type { GroupCommit } from './group-commit'
import type { ImageSource } from './image'
import { ImageReads } from './image-reads'
import { PointMaps, regionRanges } from './point-maps'
import { ReplicaImage, type ReplicaRounds, type ReplicaStatus } from './replica-image'
import type { PointMapHandle } from '../native/appliance-nbd'
import type { Journal, JournalOptions } from './journal'
import type { SegmentFile } from './segment'
import { TimemarkCatalog } from './timemark-catalog'
import { VolumeLedger, type BatchInfo, type VolumeMeta } from './volume-ledger'
import { journalListing, showRecords, volumeStats, type ShownRecord } from './volume-inspection'
import { recoverVolume } from './volume-recovery'
import { verifyVolume, type VerifyResult } from './volume-verify'

export type { BatchInfo, VolumeMeta } from './volume-ledger'
export type { CompactResult } from './compaction'

export class VolumeStore implements ImageSource {
  private readonly l: VolumeLedger
  private readonly catalog: TimemarkCatalog
  private readonly reads: ImageReads
  private readonly compactor: Compactor
  private readonly maps: PointMaps
  private replica: ReplicaImage | null = null
  private writer!: BatchWriter
  private _fullSyncDone = false
  private closed = false

  private constructor(dir: string, meta: VolumeMeta, log: Logger, journal: JournalOptions) {
    this.l = new VolumeLedger(dir, meta, log, journal)
    this.catalog = new TimemarkCatalog(this.l)
    this.reads = new ImageReads(this.l, this.catalog)
    this.compactor = new Compactor(this.l, this.catalog, this.reads.leases)
    this.maps = new PointMaps(this.l, this.reads.leases, path.join(dir, 'maps'))
  }

  get meta(): VolumeMeta {
    return this.l.meta
  }
  get dir(): string {
    return this.l.dir
  }
  get journalRef(): Journal {
    return this.l.journal
  }
  get index(): ChunkIndex {
    return this.l.index
  }
  /** Expired history folded into one image (base-image.ts), or null. */
  get base(): BaseImage | null {
    return this.l.base
  }
  get volume(): string {
    return this.l.meta.name
  }
  /** The name the appliance serves the volume under: its own, or NAME.retired-N for a retired history. */
  get name(): string {
    return this.l.meta.servedAs ?? this.l.meta.name
  }
  /** A retired history (read-only: no agent writes it again). */
  get retired(): boolean {
    return this.l.meta.servedAs !== undefined
  }
  get sizeBytes(): number {
    return this.l.meta.size
  }
  segment(n: number): SegmentFile | undefined {
    return this.l.segment(n)
  }
  get durableSeq(): number {
    return this.l.durableSeq
  }
  get fullSyncDone(): boolean {
    return this._fullSyncDone
  }
  get journalBytes(): number {
    return this.l.journal.bytes
  }

  /** Creates the files of a new volume in `dir` (which exists and is empty). */
  static async create(dir: string, meta: VolumeMeta): Promise<void> {
    await fs.promises.mkdir(path.join(dir, 'segments'), { recursive: true, mode: 0o700 })
    await writeFileAtomic(path.join(dir, 'state.json'), JSON.stringify({ fullSyncDone: false }))
    await writeFileAtomic(path.join(dir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n')
  }

  static async open(
    dir: string,
    commits: GroupCommit,
    log: Logger,
    journal: JournalOptions,
    onNoSpace: (volume: string) => void = () => {},
    /** the store's replica rounds; null: the volume keeps no replica image */
    replica: ReplicaRounds | null = null
  ): Promise<VolumeStore> {
    const meta = JSON.parse(await fs.promises.readFile(path.join(dir, 'meta.json'), 'utf8')) as VolumeMeta
    const v = new VolumeStore(dir, meta, log.child({ volume: meta.name }), journal)
    try {
      v._fullSyncDone = await recoverVolume(v.l, v.catalog)
    } catch (e) {
      await v.l.journal.close()
      await v.l.index?.close().catch(() => {})
      throw e
    }
    // Maps are rebuilt on demand: whatever an earlier process left is stale.
    await fs.promises.rm(path.join(dir, 'maps'), { recursive: true, force: true })
    const noSpace = (): void => {
      onNoSpace(meta.name)
      void v.replica?.setAside('the journal ran out of space')
    }
    v.writer = new BatchWriter(v.l, v.catalog, commits, () => v.reload(), noSpace, (b) => {
      v.maps.committed(b)
      v.replica?.changed()
    })
    if (replica) {
      v.replica = await ReplicaImage.open(v.l, () => v.maps.newest(), () => (v.writer.state.state === 'normal' ? null : v.writer.state.state), replica)
      v.maps.useReplica(v.replica.handle)
    }
    return v
  }

  // ---- write path (batch-writer.ts) ----

  append(payload: Buffer, batch: BatchInfo, encoding?: PayloadEncoding, released?: () => void): Promise<number> {
    return this.writer.append(payload, batch, encoding, released)
  }

  async markFullSyncDone(): Promise<void> {
    await this.writer.settled()
    if (this._fullSyncDone) return
    await writeFileAtomic(path.join(this.l.dir, 'state.json'), JSON.stringify({ fullSyncDone: true }))
    this._fullSyncDone = true
    this.l.log.info({ durableSeq: this.l.durableSeq }, 'full sync done')
  }

  // ---- reads (image-reads.ts) ----

  extents(seq: number): AsyncGenerator<{ offset: number; data: Buffer }> {
    return this.reads.extents(seq)
  }
  read(seq: number, offset: number, length: number): Promise<Buffer> {
    return this.reads.read(seq, offset, length)
  }
  /** The point map of a readable seq (point-maps.ts): the NBD exports' and Admin.Read's way in. */
  async pointMap(seq: number): Promise<PointMapHandle> {
    this.reads.checkReadable(seq)
    return this.maps.get(seq)
  }
  /** Bytes of the image at seq through its point map (preads on a worker thread). */
  async readMapped(seq: number, offset: number, length: number): Promise<Buffer> {
    this.reads.checkRange(offset, length)
    return (await this.pointMap(seq)).read(offset, length)
  }
  mapStats(): ReturnType<PointMaps['stats']> {
    return this.maps.stats()
  }
  /** The replica image (replica-image.ts), or null when the appliance keeps none. */
  replicaStatus(): ReplicaStatus | null {
    return this.replica?.status() ?? null
  }
  /** Brings the replica image up to the newest point now (tests, benchmarks). */
  async replicaSettled(): Promise<void> {
    await this.writer.settled()
    await this.replica?.settled()
  }
  /** Per-sector fingerprints of regions as the durable image holds them, after every append called before. */
  async fingerprints(regions: number[]): Promise<Buffer> {
    await this.writer.settledFor(regions)
    // The live map is at durableSeq or newer: batches placed after this
    // request are the agent's later writes, which it accounts for itself.
    this.reads.checkReadable(this.l.durableSeq)
    const ranges = regionRanges(this.l.meta.name, this.l.meta.size, regions)
    const { map } = await this.maps.newest()
    return map.fingerprints(ranges)
  }
  /** Per-sector fingerprints of regions as they were at seq (failback's compare). */
  async fingerprintsAt(seq: number, regions: number[]): Promise<Buffer> {
    this.reads.checkReadable(seq)
    const ranges = regionRanges(this.l.meta.name, this.l.meta.size, regions)
    return (await this.maps.get(seq)).fingerprints(ranges)
  }
  checkRetained(seq: number): void {
    this.reads.checkRetained(seq)
  }

  // ---- points in time (timemark-catalog.ts) ----

  checkExact(seq: number): void {
    this.catalog.checkExact(seq)
  }
  get exactSeq(): number {
    return this.catalog.exactSeq
  }
  get oldestExactSeq(): number {
    return this.catalog.oldestExactSeq
  }
  timemarks(): Promise<CatalogEntry[]> {
    return this.catalog.timemarks()
  }
  timemarkById(seq: number): Promise<CatalogEntry | null> {
    return this.catalog.timemarkById(seq)
  }
  timemarksByLabel(label: string): Promise<CatalogEntry[]> {
    return this.catalog.timemarksByLabel(label)
  }
  pin(seq: number, pinned: boolean): Promise<CatalogEntry> {
    return this.catalog.pin(seq, pinned)
  }
  get pinnedSeqs(): number[] {
    return this.catalog.pinnedSeqs
  }
  seqAt(ms: number): Promise<{ ms: number; seq: number } | null> {
    return this.catalog.seqAt(ms)
  }
  timeOfSeq(seq: number): Promise<number> {
    return this.catalog.timeOfSeq(seq)
  }

  // ---- compaction (compaction.ts) ----

  foldableSegments(): Array<{ number: number; bytes: number; lastSeq: number }> {
    return this.compactor.foldableSegments()
  }
  async compact(upTo: number): Promise<CompactResult | null> {
    const r = await this.compactor.compact(upTo)
    if (r) {
      this.maps.invalidate() // maps name the old base and segments (open exports keep them)
      this.replica?.invalidate()
    }
    return r
  }

  // ---- inspection (volume-inspection.ts, volume-verify.ts) ----

  stats(): Record<string, unknown> {
    return { ...volumeStats(this.l, this.writer, this.catalog, this._fullSyncDone), replica: this.replicaStatus() }
  }
  async journal(): Promise<Array<{ segment: string; bytes: number; records: number; firstSeq: number; lastSeq: number }>> {
    return journalListing(this.l)
  }
  show(fromSeq: number, limit: number): Promise<ShownRecord[]> {
    return showRecords(this.l, fromSeq, limit)
  }
  /** quiet: the caller logs the outcome (the scrub, which logs a problem once). */
  async verify(opts: { quiet?: boolean } = {}): Promise<VerifyResult> {
    await this.writer.settled()
    return verifyVolume(this.l, opts)
  }

  /** Recovers the volume from its files in place (the batch writer, after a failed index write). */
  private async reload(): Promise<void> {
    this.maps.invalidate()
    this.replica?.invalidate()
    await this.reads.leases.allDrained(5000)
    await this.l.base?.close()
    await this.l.index.close()
    await this.l.journal.close()
    await recoverVolume(this.l, this.catalog)
  }

  /** Stops accepting appends, waits for queued ones, closes files and the index. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.writer.close()
    await this.replica?.close()
    this.maps.invalidate()
    // Image reads use the segments' and the base's file descriptors directly
    // (image.ts runReads): let them finish before the files close.
    const leases = this.reads.leases
    if (!(await leases.allDrained(5000))) this.l.log.warn({ readers: leases.size }, 'closing with image reads still running; they will fail')
    await this.l.base?.close()
    await this.l.index.close()
    await this.l.journal.close()
  }
}
