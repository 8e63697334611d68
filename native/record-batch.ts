// A batch of change records as the native tap hands them over (and as they
// travel in a ChangeBatch payload): one Buffer of records laid end to end.
// The record format itself belongs to proto/record.ts (and, natively, to
// native/src/record.h); this file only iterates a batch, reading every field
// through proto/record.ts. Reading a batch allocates no object per record:
// forEach hands the same cursor to the callback each time. Seqs never go
// back; pieces of one captured write that MicroScan split share its seq.
import {
  MIN_RECORD_KIND,
  MAX_RECORD_KIND,
  RECORD_HEADER_SIZE,
  RecordKind,
  kindName,
  recordByteLength,
  recordCount,
  recordData,
  recordDataLength,
  recordFlags,
  recordKind,
  recordSector,
  recordSeq,
  recordTimeLow,
} from '../proto/record'

// The format's constants, re-exported for the modules that import them from
// here (agent/replicator.ts, agent/capture-log.ts, tests).
export { MAX_MARK_DATA, RECORD_FLAG_FUA, RECORD_HEADER_SIZE, RecordKind, SECTOR_SIZE, fullTimeMs } from '../proto/record'

/** Kind number -> name. Kept for volume-store until it moves (new code: kindName from proto/record.ts). */
export const KIND_NAMES: Record<number, string> = {}
for (let k = MIN_RECORD_KIND; k <= MAX_RECORD_KIND; k++) KIND_NAMES[k] = kindName(k)

/** A view of one record inside a batch. Valid only during the callback. */
export class RecordCursor {
  buf: Buffer = Buffer.alloc(0)
  offset = 0

  get seq(): number {
    return recordSeq(this.buf, this.offset)
  }
  get sector(): number {
    return recordSector(this.buf, this.offset)
  }
  get count(): number {
    return recordCount(this.buf, this.offset)
  }
  get kind(): RecordKind {
    return recordKind(this.buf, this.offset) as RecordKind
  }
  get flags(): number {
    return recordFlags(this.buf, this.offset)
  }
  get dataLength(): number {
    return recordDataLength(this.buf, this.offset)
  }
  /** Capture wall clock, ms modulo 2^32 (see fullTimeMs). */
  get timeLow(): number {
    return recordTimeLow(this.buf, this.offset)
  }
  /** The record's data (WRITE and RESYNC sectors, MARK metadata), as a view into the batch. */
  data(): Buffer {
    return recordData(this.buf, this.offset)
  }
  get byteLength(): number {
    return recordByteLength(this.buf, this.offset)
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
      const seq = recordSeq(buffer, off)
      if (n === 0) first = seq
      else if (seq < last) throw new Error(`record seq ${seq} at byte ${off} goes back from ${last}`)
      last = seq
      off += recordByteLength(buffer, off)
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
      off += recordByteLength(this.buffer, off)
    }
  }
}
