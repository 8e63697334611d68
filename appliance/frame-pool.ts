// Buffers for framed batches, reused. Every batch is framed into one buffer
// (record-check.ts) that lives until its group commit has written, synced
// and indexed it. A fresh buffer per batch is a fresh malloc'd mapping of
// about a MiB: perf showed the page faults of the first write into it (and
// the munmap when the GC freed it) costing as much CPU as framing the batch
// itself. Reused buffers are already mapped.
//
// Size classes are powers of two from 64 KiB; a batch takes a view of the
// exact framed size on a buffer of its class. Free buffers are kept up to
// MAX_FREE_BYTES in all (bounded memory: DESIGN contract 8); beyond that a
// released buffer is left to the GC.

const MIN_CLASS = 64 * 1024
/** Free buffers kept, in bytes, over all classes: a few group-commit rounds of 8 volumes' batches. */
const MAX_FREE_BYTES = 64 * 1024 * 1024

export class FramePool {
  private readonly free = new Map<number, Buffer[]>()
  private freeBytes = 0

  /** A buffer of exactly `size` bytes (a view of a pooled one); give it back with release(). */
  acquire(size: number): Buffer {
    let cls = MIN_CLASS
    while (cls < size) cls *= 2
    const whole = this.free.get(cls)?.pop()
    if (whole) {
      this.freeBytes -= cls
      return whole.subarray(0, size)
    }
    // allocUnsafeSlow: its own memory, never a slice of Node's shared pool.
    return Buffer.allocUnsafeSlow(cls).subarray(0, size)
  }

  /** Takes back a buffer acquire() gave (nothing may read or write it after). */
  release(view: Buffer): void {
    const cls = view.buffer.byteLength
    if (view.byteOffset !== 0 || cls < MIN_CLASS || (cls & (cls - 1)) !== 0) return // not one of ours
    if (this.freeBytes + cls > MAX_FREE_BYTES) return
    let l = this.free.get(cls)
    if (!l) this.free.set(cls, (l = []))
    l.push(Buffer.from(view.buffer, 0, cls))
    this.freeBytes += cls
  }
}
