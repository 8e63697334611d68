// Group commit for the whole appliance: one loop collects the batches every
// volume has queued, writes each volume's batches (one writev per run of
// batches in one segment), fdatasyncs every touched segment in parallel,
// lets each volume index what became durable, and only then resolves the
// appends. Batches queued while a round is on the disk wait for the next
// round, so under load one fsync covers many batches (the classic database
// log's group commit), and an idle appliance still commits a lone batch at
// once.
//
// Three stages, overlapped across rounds: round N+2 is written while round
// N+1 is fsynced and round N indexed (run one after the other, the disk
// idles while LevelDB works and LevelDB's own log appends wait behind the
// fsyncs). Each stage takes rounds strictly in order, so each volume indexes
// and resolves its batches in call order; at most three rounds are in flight.
//
// A failure in one volume (a write or fsync error) rejects that volume's
// batches only; the other volumes carry on. The failed volume rejects
// everything after it too (a later round may already be written when an
// earlier round's fsync fails; it must not be acknowledged: after a failed
// fsync the kernel may have dropped the dirty pages, so a later fsync that
// succeeds proves nothing).
import type { SegmentFile } from './segment'

export interface PendingWrite {
  sink: CommitSink
  resolve(seq: number): void
  reject(err: Error): void
}

export interface CommitSink {
  /** Writes these batches (in call order) and returns the segment files to sync. */
  writeAll(items: PendingWrite[]): Promise<Set<SegmentFile>>
  /** After the sync: index, then resolve each item (or reject all if the sink failed earlier). */
  committed(items: PendingWrite[]): Promise<void>
  /**
   * The write, the sync or the indexing failed: reject every item, and
   * refuse everything after until the sink has recovered (a failed sync:
   * for good, see the note at the top).
   */
  failed(items: PendingWrite[], err: Error, stage: CommitStage): void
}

export type CommitStage = 'write' | 'sync' | 'index'

interface Written {
  bySink: Map<CommitSink, PendingWrite[]>
  files: Map<CommitSink, Set<SegmentFile>>
}

export class GroupCommit {
  private queue: PendingWrite[] = []
  /** Set and cleared synchronously with the loop's own check of the queue: a submit never finds a loop that is about to end. */
  private active = false
  private running: Promise<void> | null = null
  rounds = 0
  syncs = 0
  /** Milliseconds spent in each stage, summed over rounds (stages of two rounds overlap). */
  readonly ms = { write: 0, sync: 0, index: 0 }

  submit(w: PendingWrite): void {
    this.queue.push(w)
    if (!this.active) {
      this.active = true
      this.running = this.loop()
    }
  }

  /** Resolves when nothing is queued or on the disk. */
  async idle(): Promise<void> {
    while (this.active) await this.running
  }

  private async loop(): Promise<void> {
    let synced: Promise<void> | null = null // the last round's fsync stage
    let indexed: Promise<void> | null = null // the last round's index stage
    try {
      for (;;) {
        if (this.queue.length === 0) {
          // The queue check and `active = false` below run in one synchronous step.
          if (!indexed) break
          await indexed
          indexed = synced = null
          continue
        }
        const items = this.queue
        this.queue = []
        this.rounds++
        const w = await this.write(items)
        const prevSync: Promise<void> | null = synced
        const prevIndex: Promise<void> | null = indexed
        synced = (async () => {
          if (prevSync) await prevSync
          await this.sync(w)
        })()
        const mySync = synced
        indexed = (async () => {
          await mySync
          if (prevIndex) await prevIndex
          await this.index(w)
        })()
        // At most three rounds in flight: the next write waits for the fsync before this one.
        if (prevSync) await prevSync
      }
    } finally {
      this.active = false
    }
  }

  private async write(items: PendingWrite[]): Promise<Written> {
    const t0 = performance.now()
    const bySink = new Map<CommitSink, PendingWrite[]>()
    for (const w of items) {
      let l = bySink.get(w.sink)
      if (!l) bySink.set(w.sink, (l = []))
      l.push(w)
    }
    const files = new Map<CommitSink, Set<SegmentFile>>()
    await Promise.all(
      [...bySink].map(async ([s, mine]) => {
        try {
          files.set(s, await s.writeAll(mine))
        } catch (err) {
          bySink.delete(s)
          s.failed(mine, err as Error, 'write')
        }
      })
    )
    this.ms.write += performance.now() - t0
    return { bySink, files }
  }

  private async sync({ bySink, files }: Written): Promise<void> {
    const t0 = performance.now()
    await Promise.all(
      [...bySink].map(async ([s, mine]) => {
        const fs = files.get(s)!
        this.syncs += fs.size
        try {
          await Promise.all([...fs].map((f) => f.fh.datasync()))
        } catch (err) {
          bySink.delete(s)
          s.failed(mine, err as Error, 'sync')
        }
      })
    )
    this.ms.sync += performance.now() - t0
  }

  private async index({ bySink }: Written): Promise<void> {
    const t0 = performance.now()
    await Promise.all(
      [...bySink].map(async ([s, mine]) => {
        try {
          await s.committed(mine)
        } catch (err) {
          s.failed(mine, err as Error, 'index')
        }
      })
    )
    this.ms.index += performance.now() - t0
  }
}
