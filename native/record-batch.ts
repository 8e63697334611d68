// A batch of change records as the native tap hands them over (and as they
// travel in a ChangeBatch payload): one Buffer of
// records, each a 32-byte little-endian header and its sector data. The layout
// is defined in native/src/record.h; this file is its only reader in
// TypeScript. Reading a batch allocates no object per record: forEach hands
// the same cursor to the callback each time. Seqs never go back; pieces of one
// captured write that MicroScan split share its seq.

export const SECTOR_SIZE = 512
export const RECORD_HEADER_SIZE = 32

export const enum RecordKind {
  Write = 1,
  Trim = 2,
  Zero = 3,
  Flush = 4,
  Resync = 5,
  /** A TimeMark: no sectors; data = its metadata (UTF-8 JSON). */
  Mark = 6,
  /** Points after the last change before this marker are inexact ... */
  Gap = 7,
  /** ... until this marker. */
  Exact = 8,
}

export const RECORD_FLAG_FUA = 1

export const KIND_NAMES: Record<number, string> = {
  1: 'write',
  2: 'trim',
  3: 'zero',
  4: 'flush',
  5: 'resync',
  6: 'mark',
  7: 'gap',
  8: 'exact',
}

/** Largest MARK metadata (native kMaxMarkData). */
export const MAX_MARK_DATA = 4096

/**
 * A record's capture time: the header holds the wall clock in ms modulo 2^32;
 * `near` is any full time within 24 days of it (a batch's commit time).
 * Returns 0 for an unstamped record.
 */
export function fullTimeMs(low32: number, near: number): number {
  if (low32 === 0) return 0
  const delta = ((low32 - (near % 0x100000000)) | 0) // int32 difference
  return near + delta
}

/** A view of one record inside a batch. Valid only during the callback. */
export class RecordCursor {
  buf: Buffer = Buffer.alloc(0)
  offset = 0

  get seq(): number {
    return Number(this.buf.readBigUInt64LE(this.offset))
  }
  get sector(): number {
    return Number(this.buf.readBigUInt64LE(this.offset + 8))
  }
  get count(): number {
    return this.buf.readUInt32LE(this.offset + 16)
  }
  get kind(): RecordKind {
    return this.buf[this.offset + 20] as RecordKind
  }
  get flags(): number {
    return this.buf[this.offset + 21]
  }
  get dataLength(): number {
    return this.buf.readUInt32LE(this.offset + 24)
  }
  /** Capture wall clock, ms modulo 2^32 (see fullTimeMs). */
  get timeLow(): number {
    return this.buf.readUInt32LE(this.offset + 28)
  }
  /** The sector data (WRITE and RESYNC), as a view into the batch. */
  data(): Buffer {
    const start = this.offset + RECORD_HEADER_SIZE
    return this.buf.subarray(start, start + this.dataLength)
  }
  get byteLength(): number {
    return RECORD_HEADER_SIZE + this.dataLength
  }
}

export class RecordBatch {
  readonly buffer: Buffer
  readonly count: number
  readonly firstSeq: number
  readonly lastSeq: number

  constructor(buffer: Buffer) {
    this.buffer = buffer
    let n = 0
    let off = 0
    let first = 0
    let last = 0
    while (off < buffer.length) {
      if (off + RECORD_HEADER_SIZE > buffer.length) throw new Error(`truncated record header at byte ${off}`)
      const seq = Number(buffer.readBigUInt64LE(off))
      if (n === 0) first = seq
      else if (seq < last) throw new Error(`record seq ${seq} at byte ${off} goes back from ${last}`)
      last = seq
      const len = buffer.readUInt32LE(off + 24)
      off += RECORD_HEADER_SIZE + len
      if (off > buffer.length) throw new Error(`record at seq ${seq} runs past the end of the batch`)
      n++
    }
    this.count = n
    this.firstSeq = first
    this.lastSeq = last
  }

  forEach(fn: (r: RecordCursor) => void): void {
    const c = new RecordCursor()
    c.buf = this.buffer
    for (let off = 0; off < this.buffer.length; ) {
      c.offset = off
      fn(c)
      off += RECORD_HEADER_SIZE + this.buffer.readUInt32LE(off + 24)
    }
  }
}
