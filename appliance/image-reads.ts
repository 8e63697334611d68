// Reads of a volume's image at a durable point (restore, TimeViews,
// failback), and the reader
// leases that let compaction and close() wait for them.
//
// image.ts reads straight from the segments' and the base image's file
// descriptors. A compaction that replaces the base must not close the old
// one, nor delete the segments folded into it, while a read that started on
// it runs; close() must not close the files under a read either. Each read
// therefore holds a lease on the base it started with, and whoever needs
// the readers of a base gone awaits drained(base): a promise resolved when
// the last of them leaves, instead of polling.
import { TidemarkError } from '../proto/errors'
import type { BaseImage } from './base-image'
import { imageExtents, readImage } from './image'
import type { TimemarkCatalog } from './timemark-catalog'
import type { VolumeLedger } from './volume-ledger'

/** The base a read started on (null: none). */
type Base = BaseImage | null

/** Counts the reads running per base they started with; resolves waiters when a count drops to 0. */
export class ReaderLeases {
  private readonly counts = new Map<Base, number>()
  private readonly waiters = new Map<Base, Array<() => void>>()
  private readonly idle: Array<() => void> = []

  /** Takes a lease on `base`; give it back with leave(base). */
  enter(base: Base): Base {
    this.counts.set(base, (this.counts.get(base) ?? 0) + 1)
    return base
  }

  leave(base: Base): void {
    const n = (this.counts.get(base) ?? 1) - 1
    if (n > 0) {
      this.counts.set(base, n)
      return
    }
    this.counts.delete(base)
    for (const wake of this.waiters.get(base) ?? []) wake()
    this.waiters.delete(base)
    if (this.counts.size === 0) for (const wake of this.idle.splice(0)) wake()
  }

  /** Reads in progress, over every base. */
  get size(): number {
    return this.counts.size
  }

  /** Resolves when no read that started on `base` is still running. */
  drained(base: Base): Promise<void> {
    if (!this.counts.has(base)) return Promise.resolve()
    return new Promise((resolve) => {
      const l = this.waiters.get(base)
      if (l) l.push(resolve)
      else this.waiters.set(base, [resolve])
    })
  }

  /** Resolves true when no read runs at all, or false after ms. */
  allDrained(ms: number): Promise<boolean> {
    if (this.counts.size === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        resolve(true)
      }
      const timer = setTimeout(() => {
        const i = this.idle.indexOf(done)
        if (i >= 0) this.idle.splice(i, 1)
        resolve(false)
      }, ms)
      this.idle.push(done)
    })
  }

  /** Runs fn under a lease on the current base. */
  async with<T>(base: Base, fn: () => Promise<T>): Promise<T> {
    const b = this.enter(base)
    try {
      return await fn()
    } finally {
      this.leave(b)
    }
  }
}

export class ImageReads {
  readonly leases = new ReaderLeases()

  constructor(
    private readonly l: VolumeLedger,
    private readonly catalog: TimemarkCatalog
  ) {}

  /** Refuses a seq that is not durable, or lies at or after known corruption. */
  checkReadable(seq: number): void {
    const l = this.l
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > l.durableSeq) {
      throw new TidemarkError('SEQ_NOT_DURABLE', `volume ${l.meta.name}: seq ${seq} is not a durable point (durable seq ${l.durableSeq})`)
    }
    for (const c of l.corrupt) {
      if (seq > c.afterSeq) {
        throw new TidemarkError(
          'JOURNAL_CORRUPT',
          `volume ${l.meta.name}: seq ${seq} cannot be read: journal corruption in ${c.segment} at offset ${c.offset} after seq ${c.afterSeq} (${c.message})`
        )
      }
    }
  }

  /** Refuses a point that retention folded into the base image. */
  checkRetained(seq: number): void {
    const base = this.l.base
    if (base && seq < base.seq) {
      throw new TidemarkError(
        'POINT_EXPIRED',
        `volume ${this.l.meta.name}: seq ${seq} has expired: retention folded the history before seq ${base.seq}${base.state.timeMs ? ` (${new Date(base.state.timeMs).toISOString()})` : ''} into the base image; the oldest restorable point is seq ${this.catalog.oldestExactSeq}`
      )
    }
  }

  async *extents(seq: number): AsyncGenerator<{ offset: number; data: Buffer }> {
    this.checkReadable(seq)
    const b = this.leases.enter(this.l.base)
    try {
      yield* imageExtents(this.l, seq)
    } finally {
      this.leases.leave(b)
    }
  }

  async read(seq: number, offset: number, length: number): Promise<Buffer> {
    this.checkReadable(seq)
    this.checkRange(offset, length)
    return this.readAt(seq, offset, length)
  }

  checkRange(offset: number, length: number): void {
    const size = this.l.meta.size
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw new TidemarkError('READ_OUT_OF_RANGE', `volume ${this.l.meta.name}: read of ${length} bytes at ${offset} is outside the ${size}-byte volume`)
    }
  }

  private readAt(seq: number, offset: number, length: number): Promise<Buffer> {
    return this.leases.with(this.l.base, () => readImage(this.l, seq, offset, length))
  }
}
