// Payload buffers for big batches, reused from one batch to a later one.
//
// A scanned batch's payload lives in the send window until an ack covers it.
// Given a new Buffer per batch (memory the native scan pooled), V8 sees a
// new ArrayBuffer for every batch and counts its bytes: at 240 MB/s of 1 MiB
// writes the agent ran a major GC every 20 MB (12 a second, about a tenth of
// its CPU) on a 10 MB heap. These buffers are allocated once and handed back
// when the payload is done with: acknowledged (or given up) AND no write of
// it is still queued on the stream or the data channel. A buffer whose write
// never reports back is simply not reused (the garbage collector takes it).
//
// Sizes are whole GRANULEs, so a buffer fits every later batch of its size
// class; at most keepBytes wait here (the window's budget bounds how many
// are out at once).

/** Buffers come in multiples of this. */
const GRANULE = 1024 * 1024

export class PayloadBuffers {
  private free: Buffer[] = []
  private freeBytes = 0
  /** buffers allocated (not found free): a steady state allocates none */
  allocated = 0

  constructor(private readonly keepBytes: number) {}

  /** A buffer of at least `bytes` (the scan's output bound). */
  take(bytes: number): Buffer {
    const size = Math.max(1, Math.ceil(bytes / GRANULE)) * GRANULE
    // The smallest free one that fits and wastes at most half of itself.
    let best = -1
    for (let i = 0; i < this.free.length; i++) {
      const len = this.free[i].length
      if (len >= size && len <= size * 2 && (best < 0 || len < this.free[best].length)) best = i
    }
    if (best >= 0) {
      const b = this.free[best]
      this.free[best] = this.free[this.free.length - 1]
      this.free.pop()
      this.freeBytes -= b.length
      return b
    }
    this.allocated++
    return Buffer.allocUnsafeSlow(size)
  }

  /** Done with: no ack or write will touch it again. */
  give(b: Buffer): void {
    if (this.freeBytes + b.length > this.keepBytes) return
    this.free.push(b)
    this.freeBytes += b.length
  }
}
