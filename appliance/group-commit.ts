// Group commit for the whole appliance: one loop collects the batches every
// volume has queued, writes each volume's batches (one writev per run of
// batches in one segment), fdatasyncs every touched segment in parallel,
// lets each volume index what became durable, and only then resolves the
// appends. Batches queued while a round is on the disk wait for the next
// round, so under load one fsync covers many batches of many volumes (the
// classic database log's group commit), and an idle appliance still
// commits a lone batch at once.
//
// A failure in one volume (a write or fsync error) rejects that volume's
// batches only; the other volumes of the round carry on.
import type { SegmentFile } from './segment'

export interface PendingWrite {
  sink: CommitSink
  resolve(seq: number): void
  reject(err: Error): void
}

export interface CommitSink {
  /** Writes these batches (in call order) and returns the segment files to sync. */
  writeAll(items: PendingWrite[]): Promise<Set<SegmentFile>>
  /** After the sync: index, then resolve each item. Must resolve or reject every item. */
  committed(items: PendingWrite[]): Promise<void>
  /** The write or the sync failed: reject every item. */
  failed(items: PendingWrite[], err: Error): void
}

export class GroupCommit {
  private queue: PendingWrite[] = []
  private running: Promise<void> | null = null
  /** Set and cleared synchronously with the loop's own check of the queue: a submit never finds a loop that is about to end. */
  private active = false
  rounds = 0
  syncs = 0

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
    // The queue check and `active = false` run in one synchronous step (no await between them).
    try {
      while (this.queue.length > 0) await this.round()
    } finally {
      this.active = false
    }
  }

  private async round(): Promise<void> {
    const items = this.queue
    this.queue = []
    this.rounds++
    const bySink = new Map<CommitSink, PendingWrite[]>()
    for (const w of items) {
      let l = bySink.get(w.sink)
      if (!l) bySink.set(w.sink, (l = []))
      l.push(w)
    }
    const sinks = [...bySink.keys()]
    await Promise.all(
      sinks.map(async (s) => {
        const mine = bySink.get(s)!
        try {
          const files = await s.writeAll(mine)
          this.syncs += files.size
          await Promise.all([...files].map((f) => f.fh.datasync()))
        } catch (err) {
          bySink.delete(s)
          s.failed(mine, err as Error)
        }
      })
    )
    await Promise.all(
      [...bySink].map(async ([s, mine]) => {
        try {
          await s.committed(mine)
        } catch (err) {
          s.failed(mine, err as Error)
        }
      })
    )
  }
}
