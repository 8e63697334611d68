// One journal segment file, and a buffered sequential reader over one.
//
// The writer side is deliberately thin: a FileHandle kept open for the life
// of the volume, positioned writes (the journal assigns every batch its
// offset when append() is called, so writes never depend on a file cursor),
// fdatasync, and preads for restores. Nothing here is synchronous: the
// event loop never waits on the disk.
//
// SegmentReader walks frames from an offset, LevelDB log_reader style: it
// reports each frame, a clean end, a torn frame (cut off at the end of the
// file: a crash mid-write), or a bad frame (implausible header or checksum
// mismatch). It does not decide what a bad frame means; recovery and verify
// do (journal.ts): a bad frame followed by intact ones is corruption, a bad
// frame at the very end of the newest segment is a torn tail. Memory is one
// read window (1 MiB, grown to the largest frame met, at most one batch).
import fs from 'node:fs'
import path from 'node:path'
import type { FileHandle } from 'node:fs/promises'
import { syncDir } from '../native/atomic-file'
import { DIRECT_ALIGN, newJournalAppender, type JournalAppender } from '../native/journal-append'
import {
  FRAME_HEADER_SIZE,
  FRAME_CHANGE,
  FRAME_COMMIT,
  COMMIT_BODY_SIZE,
  RECORD_HEADER_SIZE,
  MAX_CHANGE_DATA,
  SEGMENT_HEADER_SIZE,
  decodeSegmentHeader,
  encodeSegmentHeader,
  frameChecksumOk,
  plausibleFrame,
  type SegmentHeader,
} from './journal-format'

export const SEGMENT_SUFFIX = '.tmj'

export function segmentFileName(n: number): string {
  return String(n).padStart(8, '0') + SEGMENT_SUFFIX
}

/** Segment numbers found in a directory, ascending. */
export async function listSegments(dir: string): Promise<number[]> {
  const names = await fs.promises.readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[]
    throw e
  })
  const out: number[] = []
  for (const n of names) {
    const m = /^(\d{8})\.tmj$/.exec(n)
    if (m) out.push(Number(m[1]))
  }
  return out.sort((a, b) => a - b)
}

// syncDir has one home, shared with the agent (native/atomic-file.ts); the
// journal and the base image still name it through this module.
export { syncDir }

export class SegmentFile {
  readonly number: number
  readonly path: string
  readonly fh: FileHandle
  /** Bytes in the file including writes not yet synced (the append position is tracked by the journal). */
  size: number
  // Summary for `journal ls`, kept current by the journal and persisted by the index.
  records = 0
  batches = 0
  firstSeq = 0
  lastSeq = 0
  /** The O_DIRECT appender while this segment is appended to (opened at its first direct append). */
  private appender: JournalAppender | null = null
  /** The file system refused O_DIRECT for this file. */
  private directRefused = false

  private constructor(n: number, p: string, fh: FileHandle, size: number) {
    this.number = n
    this.path = p
    this.fh = fh
    this.size = size
  }

  get name(): string {
    return segmentFileName(this.number)
  }

  /** The open file descriptor (batched native reads). */
  get fd(): number {
    return this.fh.fd
  }

  /** Creates the file with its header, durable (file and directory synced) before it returns. */
  static async create(dir: string, n: number, h: Omit<SegmentHeader, 'segment'>): Promise<SegmentFile> {
    const p = path.join(dir, segmentFileName(n))
    const fh = await fs.promises.open(p, 'wx+')
    try {
      const header = encodeSegmentHeader({ ...h, segment: n })
      await fh.write(header, 0, header.length, 0)
      await fh.datasync()
      await syncDir(dir)
    } catch (e) {
      await fh.close()
      throw e
    }
    return new SegmentFile(n, p, fh, SEGMENT_HEADER_SIZE)
  }

  static async open(dir: string, n: number): Promise<SegmentFile> {
    const p = path.join(dir, segmentFileName(n))
    const fh = await fs.promises.open(p, 'r+')
    const st = await fh.stat()
    return new SegmentFile(n, p, fh, st.size)
  }

  /** The header, or a string saying what is wrong with it. */
  async readHeader(): Promise<SegmentHeader | string> {
    const b = Buffer.alloc(SEGMENT_HEADER_SIZE)
    const { bytesRead } = await this.fh.read(b, 0, b.length, 0)
    return decodeSegmentHeader(b.subarray(0, bytesRead))
  }

  /** Reads exactly `length` bytes at `position` into buf[offset..]. */
  async readExact(buf: Buffer, offset: number, length: number, position: number): Promise<void> {
    let done = 0
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, offset + done, length - done, position + done)
      if (bytesRead === 0) throw new Error(`short read of ${this.path} at ${position + done}`)
      done += bytesRead
    }
  }

  /**
   * Appends bufs at offset (the segment's end) with O_DIRECT; false, having
   * written nothing, when the file system refuses O_DIRECT (the caller
   * writes through the page cache). The file may then hold up to
   * DIRECT_ALIGN - 1 zero bytes past `size` until endAppends().
   */
  async appendDirect(bufs: Buffer[], offset: number): Promise<boolean> {
    if (this.directRefused) return false
    if (!this.appender) {
      const a = newJournalAppender()
      if (!(await a.open(this.path, this.size))) {
        a.close()
        this.directRefused = true
        return false
      }
      this.appender = a
    }
    await this.appender.append(bufs, offset)
    return true
  }

  /** The segment is complete or closing: the padding of its last direct write is cut off. */
  async endAppends(): Promise<void> {
    const a = this.appender
    if (!a) return
    this.appender = null
    try {
      await a.trim()
    } finally {
      a.close()
    }
  }

  /** After a crash: the bytes from `at` to the end of the file are a direct write's zero padding (fewer than a block, all zero). */
  async zeroPaddingAt(at: number): Promise<boolean> {
    const n = this.size - at
    if (n <= 0 || n >= DIRECT_ALIGN) return false
    const b = Buffer.alloc(n)
    await this.readExact(b, 0, n, at)
    return b.every((x) => x === 0)
  }

  async truncate(length: number): Promise<void> {
    // The appender's kept block is stale once the file is cut: the next append opens a new one.
    this.appender?.close()
    this.appender = null
    await this.fh.truncate(length)
    await this.fh.datasync()
    this.size = length
  }

  async close(): Promise<void> {
    try {
      await this.endAppends()
    } finally {
      await this.fh.close()
    }
  }
}

export type ReadOutcome = 'frame' | 'end' | 'torn' | 'bad'

export class SegmentReader {
  private buf: Buffer
  private bufStart = 0
  private bufLen = 0
  /** Offset of the next frame to read. */
  pos: number
  // The frame last returned by next() === 'frame': body in buf[bodyAt .. bodyAt+length], valid until the next call.
  frameOffset = 0
  type = 0
  length = 0
  bodyAt = 0
  /** Why next() returned 'torn' or 'bad'. */
  problem = ''

  constructor(
    private readonly seg: SegmentFile,
    private readonly size: number,
    start: number,
    /** headersOnly: read only the frame header and the 32-byte change header, skip checksums (journal show). */
    private readonly opts: { headersOnly?: boolean } = {}
  ) {
    this.pos = start
    this.buf = Buffer.allocUnsafe(1 << 20)
  }

  get body(): Buffer {
    return this.buf
  }

  /** Makes file bytes [pos, pos+n) available in buf; false if the file ends first. */
  private async ensure(pos: number, n: number): Promise<boolean> {
    if (pos + n > this.size) return false
    if (pos >= this.bufStart && pos + n <= this.bufStart + this.bufLen) return true
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n)
    const len = Math.min(this.buf.length, this.size - pos)
    await this.seg.readExact(this.buf, 0, len, pos)
    this.bufStart = pos
    this.bufLen = len
    return true
  }

  async next(): Promise<ReadOutcome> {
    const pos = this.pos
    if (pos === this.size) return 'end'
    if (!(await this.ensure(pos, FRAME_HEADER_SIZE))) {
      this.problem = `${this.size - pos} bytes at the end are too short for a frame header`
      return 'torn'
    }
    let at = pos - this.bufStart
    const length = this.buf.readUInt32LE(at + 4)
    const type = this.buf[at + 8]
    const shapeOk =
      (type === FRAME_CHANGE && length >= RECORD_HEADER_SIZE && length <= RECORD_HEADER_SIZE + MAX_CHANGE_DATA) ||
      (type === FRAME_COMMIT && length === COMMIT_BODY_SIZE)
    if (!shapeOk || this.buf[at + 9] !== 0 || this.buf[at + 10] !== 0 || this.buf[at + 11] !== 0) {
      this.problem = `bad frame header (type ${type}, length ${length})`
      return 'bad'
    }
    if (pos + FRAME_HEADER_SIZE + length > this.size) {
      this.problem = `frame of ${length} bytes runs ${pos + FRAME_HEADER_SIZE + length - this.size} bytes past the end of the file`
      return 'torn'
    }
    const need = this.opts.headersOnly && type === FRAME_CHANGE ? FRAME_HEADER_SIZE + RECORD_HEADER_SIZE : FRAME_HEADER_SIZE + length
    await this.ensure(pos, need)
    at = pos - this.bufStart
    if (!this.opts.headersOnly && !frameChecksumOk(this.buf, at)) {
      this.problem = `checksum mismatch in a ${type === FRAME_CHANGE ? 'CHANGE' : 'COMMIT'} frame of ${length} bytes`
      return 'bad'
    }
    this.frameOffset = pos
    this.type = type
    this.length = length
    this.bodyAt = at + FRAME_HEADER_SIZE
    this.pos = pos + FRAME_HEADER_SIZE + length
    return 'frame'
  }

  /**
   * The offset of the first intact frame after `from` (a bad frame's offset),
   * or null if there is none before the end of the file. Tries the offset the
   * bad frame's own length points at first (a flipped byte in a body leaves
   * the length intact), then scans byte by byte for a plausible header whose
   * checksum holds. Only runs when something is already wrong.
   */
  async resync(from: number): Promise<number | null> {
    if (await this.ensure(from, FRAME_HEADER_SIZE)) {
      const len = this.buf.readUInt32LE(from - this.bufStart + 4)
      const guess = from + FRAME_HEADER_SIZE + len
      if (len <= RECORD_HEADER_SIZE + MAX_CHANGE_DATA && (await this.intactAt(guess))) return guess
    }
    for (let p = from + 1; p + FRAME_HEADER_SIZE <= this.size; p++) {
      if (!(p >= this.bufStart && p + FRAME_HEADER_SIZE + RECORD_HEADER_SIZE <= this.bufStart + this.bufLen)) {
        const n = Math.min(this.buf.length, this.size - p)
        await this.seg.readExact(this.buf, 0, n, p)
        this.bufStart = p
        this.bufLen = n
      }
      const at = p - this.bufStart
      if (!plausibleFrame(this.buf, at, this.bufLen - at)) continue
      if (await this.intactAt(p)) return p
    }
    return null
  }

  private async intactAt(p: number): Promise<boolean> {
    if (!(await this.ensure(p, FRAME_HEADER_SIZE))) return false
    let at = p - this.bufStart
    if (!plausibleFrame(this.buf, at, this.bufLen - at)) return false
    const len = this.buf.readUInt32LE(at + 4)
    if (!(await this.ensure(p, FRAME_HEADER_SIZE + len))) return false
    at = p - this.bufStart
    return frameChecksumOk(this.buf, at)
  }
}
