// The send window of one volume: batches written to the stream and not yet
// acknowledged, bounded by the volume's share of --memory.
//
// Every batch stays here from the moment it is encoded until an ack covers
// its last seq, so a broken stream costs a resend, never a record: after a
// reconnect the whole unacknowledged window is sent again, in order, before
// anything new (the appliance may have lost batches it had not yet made
// durable, and later fingerprints were computed after them). When the window
// is over budget the replicator stops pulling from the tap; the tap's ring
// fills, the tap falls behind on its own and keeps only its dirty map, and the
// application never waits on the WAN.
import type { ChangeBatch } from '../proto/generated/tidemark/v1/ChangeBatch'

/** Bookkeeping counted against the memory budget for each entry. */
const ENTRY_OVERHEAD = 256

export interface WindowEntry {
  firstSeq: number
  lastSeq: number
  msg: ChangeBatch
  bytes: number
  sends: number
  /** regions of the initial copy this batch carries as RESYNC records */
  copyRegions: number[] | null
  /** the reused buffer the payload is a view of (payload-buffers.ts), or null */
  home: Buffer | null
  /** writes of it the stream or data channel has not reported done */
  writing: number
  /** acknowledged or given up: its home may be reused once `writing` is 0 */
  done: boolean
}

export class SendWindow {
  private entries: WindowEntry[] = []
  private total = 0

  /** budgetBytes: the volume's share of --memory */
  constructor(private readonly budgetBytes: number) {}

  get length(): number {
    return this.entries.length
  }

  get bytes(): number {
    return this.total
  }

  /** Over budget: pull nothing more until acks release some. */
  get full(): boolean {
    return this.total >= this.budgetBytes
  }

  /**
   * A new entry for an encoded batch (not yet in the window); `regions`: its
   * RESYNC regions, counted for their bookkeeping; `home`: the reused buffer
   * its payload is a view of, counted whole.
   */
  static entry(firstSeq: number, lastSeq: number, msg: ChangeBatch, regions: number, copyRegions: number[] | null, home: Buffer | null = null): WindowEntry {
    const held = home ? home.length : (msg.payload as Buffer).length
    return { firstSeq, lastSeq, msg, bytes: held + ENTRY_OVERHEAD + regions * 8, sends: 0, copyRegions, home, writing: 0, done: false }
  }

  add(e: WindowEntry): void {
    this.entries.push(e)
    this.total += e.bytes
  }

  /** Releases the entries an ack up to seq covers, oldest first, and returns them. */
  release(seq: number): WindowEntry[] {
    let i = 0
    while (i < this.entries.length && this.entries[i].lastSeq <= seq) this.total -= this.entries[i++].bytes
    return i ? this.entries.splice(0, i) : []
  }

  /** The entries as they are now (a resend walks this while acks release entries). */
  snapshot(): WindowEntry[] {
    return [...this.entries]
  }

  /** How many entries hold seqs after durableSeq. */
  countAfter(durableSeq: number): number {
    return this.entries.filter((e) => e.lastSeq > durableSeq).length
  }

  /** The replica lost data: nothing here is worth sending (the copy covers it); returns what was held. */
  clear(): WindowEntry[] {
    const all = this.entries
    this.entries = []
    this.total = 0
    return all
  }
}
