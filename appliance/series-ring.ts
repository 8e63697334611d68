// A fixed-size ring file of time-series samples: the one owner of the format,
// for the writer and the reader alike (time-series.ts keeps two per volume,
// one per resolution).
//
// Why ring files and not LevelDB with key pruning: the data is dense (one
// sample per step, always), every record has the same size, and the bound on
// disk is then a property of the file, not of a pruning job that must keep
// up. A sample is one pwrite at an offset computed from its time; a read of a
// time range is at most two preads. Nothing to compact, nothing to index.
//
//   header (HEADER_SIZE = 64 bytes, little-endian)
//     0  "TMSERIES"     8 bytes magic
//     8  u32 version (1)
//     12 u32 columns    values per record
//     16 u32 stepMs     the resolution (1000, 60000)
//     20 u32 slots      records in the ring (3600 for an hour of seconds)
//     24 ... zero
//   record i (at HEADER_SIZE + i * recordSize, recordSize = 8 * (columns + 2))
//     f64 t             the sample's time in ms, a multiple of stepMs
//     f64 value * columns   NaN is "not known" (null in the API)
//     f64 t             again: a record torn by a crash mid-write has two
//                       different times and is skipped (LevelDB's torn tail,
//                       at the cost of 8 bytes instead of a checksum)
//
// A sample's slot is (t / stepMs) mod slots, so the ring needs no head
// pointer: a slot holds a valid sample for time T only if both its times are
// T. Slots written before a restart keep their old times, so a restart shows
// the old points and a gap where the appliance was down, and wraparound
// overwrites the oldest slot in place. The file is created at its full size
// (sparse) and never grows. No fsync: these are observations, not data; a
// power cut loses the last seconds of a chart, never its shape.
import fs from 'node:fs'
import { TidemarkError } from '../proto/errors'

export const HEADER_SIZE = 64
const MAGIC = Buffer.from('TMSERIES')
const VERSION = 1

export interface RingShape {
  columns: number
  stepMs: number
  slots: number
}

/** The samples of a time range, oldest first: t[i] with values[c][i]. */
export interface RingRange {
  t: number[]
  values: number[][]
}

export function recordSize(columns: number): number {
  return 8 * (columns + 2)
}

export function ringFileSize(shape: RingShape): number {
  return HEADER_SIZE + shape.slots * recordSize(shape.columns)
}

function encodeHeader(s: RingShape): Buffer {
  const b = Buffer.alloc(HEADER_SIZE)
  MAGIC.copy(b, 0)
  b.writeUInt32LE(VERSION, 8)
  b.writeUInt32LE(s.columns, 12)
  b.writeUInt32LE(s.stepMs, 16)
  b.writeUInt32LE(s.slots, 20)
  return b
}

function sameHeader(b: Buffer, s: RingShape): boolean {
  return b.length === HEADER_SIZE && b.subarray(0, 8).equals(MAGIC) && b.readUInt32LE(8) === VERSION && b.readUInt32LE(12) === s.columns && b.readUInt32LE(16) === s.stepMs && b.readUInt32LE(20) === s.slots
}

export class SeriesRing {
  private readonly rec: Buffer
  private readonly size: number

  private constructor(
    private fd: number,
    readonly file: string,
    readonly shape: RingShape,
    /** true when the file was (re)created empty: missing, torn header, or another shape */
    readonly fresh: boolean
  ) {
    this.size = recordSize(shape.columns)
    // One record buffer reused by every write: a sample per second per volume allocates nothing.
    this.rec = Buffer.alloc(this.size)
  }

  /**
   * Opens FILE, creating it at its full size when it is missing. A file of
   * another shape (columns, step, slots changed between versions) or with a
   * torn header cannot be read as this one: it is started again, empty.
   */
  static open(file: string, shape: RingShape): SeriesRing {
    if (!Number.isInteger(shape.columns) || shape.columns < 1 || !Number.isInteger(shape.stepMs) || shape.stepMs < 1 || !Number.isInteger(shape.slots) || shape.slots < 1) {
      throw new TidemarkError('INVALID_ARGUMENT', `a series ring needs whole positive columns, stepMs and slots (got ${JSON.stringify(shape)})`)
    }
    // Owner-only, like every file the appliance creates: the series tell volumes' names and activity.
    let fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600)
    const head = Buffer.alloc(HEADER_SIZE)
    const n = fs.readSync(fd, head, 0, HEADER_SIZE, 0)
    let fresh = false
    if (n !== HEADER_SIZE || !sameHeader(head, shape) || fs.fstatSync(fd).size !== ringFileSize(shape)) {
      fs.closeSync(fd)
      // Truncate to zero first so no record of another shape survives at an offset this one reads.
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600)
      fs.ftruncateSync(fd, ringFileSize(shape))
      fs.writeSync(fd, encodeHeader(shape), 0, HEADER_SIZE, 0)
      fresh = true
    }
    return new SeriesRing(fd, file, shape, fresh)
  }

  private slotOf(t: number): number {
    return (Math.floor(t / this.shape.stepMs) % this.shape.slots) * this.size + HEADER_SIZE
  }

  /** Writes the sample for the step holding tMs (its time rounded down to the step); NaN or null values are "not known". */
  write(tMs: number, values: ArrayLike<number | null>): void {
    if (values.length !== this.shape.columns) throw new TidemarkError('INVALID_ARGUMENT', `a sample of ${this.file} has ${this.shape.columns} values, not ${values.length}`)
    const t = Math.floor(tMs / this.shape.stepMs) * this.shape.stepMs
    if (!(t > 0)) throw new TidemarkError('INVALID_ARGUMENT', `a sample's time must be after 1970 (got ${tMs})`)
    const b = this.rec
    b.writeDoubleLE(t, 0)
    for (let i = 0; i < values.length; i++) {
      const v = values[i]
      b.writeDoubleLE(v === null ? NaN : v, 8 + 8 * i)
    }
    b.writeDoubleLE(t, this.size - 8)
    fs.writeSync(this.fd, b, 0, this.size, this.slotOf(t))
  }

  /**
   * The samples with fromMs <= t <= toMs that the ring still holds, oldest
   * first. The range is cut to the ring's reach (slots steps back from toMs):
   * older samples have been overwritten.
   */
  read(fromMs: number, toMs: number): RingRange {
    const { stepMs, slots, columns } = this.shape
    const out: RingRange = { t: [], values: Array.from({ length: columns }, () => []) }
    const last = Math.floor(toMs / stepMs)
    const first = Math.max(Math.ceil(fromMs / stepMs), last - slots + 1, 1)
    if (first > last) return out
    const count = last - first + 1
    const buf = Buffer.alloc(count * this.size)
    // At most two preads: from the first step's slot to the end of the file, then from slot 0.
    const s0 = first % slots
    const head = Math.min(count, slots - s0)
    fs.readSync(this.fd, buf, 0, head * this.size, HEADER_SIZE + s0 * this.size)
    if (head < count) fs.readSync(this.fd, buf, head * this.size, (count - head) * this.size, HEADER_SIZE)
    for (let i = 0; i < count; i++) {
      const o = i * this.size
      const want = (first + i) * stepMs
      if (buf.readDoubleLE(o) !== want || buf.readDoubleLE(o + this.size - 8) !== want) continue // empty, stale or torn
      out.t.push(want)
      for (let c = 0; c < columns; c++) out.values[c].push(buf.readDoubleLE(o + 8 + 8 * c))
    }
    return out
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd)
    this.fd = -1
  }
}
