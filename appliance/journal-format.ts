// The journal's on-disk format: the one module that both the writer
// (journal.ts) and every reader (recovery, verify, `journal show`, restores)
// use, so the two sides cannot drift apart (LevelDB's db/log_format.h).
// Every encoding is a size/encode/decode triple: compute the size, allocate
// once, write. One writer is native: ingest frames each batch's CHANGE and
// COMMIT frames in C++ (native/src/batch_ingest.h mirrors the frame layout
// below, as native/src/record.h mirrors proto/record.ts), and
// test/record-check.test.ts holds its output to encodeBatchFrames, byte for
// byte. A change here is a change there.
//
// A segment file (segments/NNNNNNNN.tmj) is a fixed 512-byte header followed
// by frames, appended and never rewritten:
//
//   segment header (SEGMENT_HEADER_SIZE = 512 bytes, little-endian)
//     0  "TIDEJRNL"        8 bytes magic
//     8  u16 version (1)   10 u16 header size (512)
//     12 u32 segment number
//     16 u64 created (wall ms)
//     24 u16 volume name length, name bytes, u16 generation length, generation bytes
//     ... zero padding ...
//     508 u32 checksum: low 32 bits of xxh64 (seed 0) over bytes 0..508
//
//   frame
//     0  u32 checksum      low 32 bits of xxh64 (seed 0) over bytes 4 .. 12+length
//                          (length, type, reserved and body: one contiguous hash)
//     4  u32 length        body bytes
//     8  u8  type          1 CHANGE, 2 COMMIT
//     9  u8[3] reserved    0
//     12 body
//
//   CHANGE body = the change record exactly as the tap and the ChangeBatch
//     payload lay it out (proto/record.ts owns it): a 32-byte header
//     {u64 seq, u64 first sector, u32 count, u8 kind, u8 flags, u16 0,
//     u32 data length, u32 time} and its data: the sectors for WRITE and
//     RESYNC, a TimeMark's metadata for MARK, nothing for the other kinds.
//     The data is stored raw, never compressed: a restore or a TimeView
//     preads it straight from the segment at a known offset (frame + 44),
//     and the index can point at any sector inside a record.
//   COMMIT body (56 bytes) ends a batch: u64 first seq, u64 last seq,
//     u32 record count, u32 0, u64 app bytes, u64 changed bytes,
//     u64 wire bytes, u64 wall time ms.
//
// Grammar: segment = header batch*; batch = CHANGE* COMMIT. A batch never
// spans two segments. A batch counts only once its COMMIT is read back
// intact: CHANGE records after the last COMMIT of the last segment are a
// torn tail (a crash mid-write), like a frame cut off at the end of the file.
// A checksum mismatch with intact frames after it is corruption.
import { TidemarkError } from '../proto/errors'
import { h64 } from '../proto/hash'
import {
  MAX_MARK_DATA,
  MAX_RECORD_DATA,
  RECORD_HEADER_SIZE,
  SECTOR_SIZE,
  expectedDataLength,
  isKnownKind,
  isMarker,
  recordCount,
  readU64LE as readU64,
  recordDataLength,
  recordKind,
  writeU64LE as writeU64,
} from '../proto/record'

export const SEGMENT_MAGIC = Buffer.from('TIDEJRNL', 'latin1')
export const FORMAT_VERSION = 1
export const SEGMENT_HEADER_SIZE = 512
export const FRAME_HEADER_SIZE = 12
export const FRAME_CHANGE = 1
export const FRAME_COMMIT = 2
export const COMMIT_BODY_SIZE = 56
/** Offset of a CHANGE record's sector data from the start of its frame. */
export const CHANGE_DATA_OFFSET = FRAME_HEADER_SIZE + RECORD_HEADER_SIZE
/**
 * Upper bound on one CHANGE record's data (proto/record.ts MAX_RECORD_DATA),
 * used only to tell a plausible frame from garbage while resynchronising
 * after corruption. Batches are at most 8 MiB raw (proto/load.ts); 64 MiB
 * leaves room to raise that.
 */
export const MAX_CHANGE_DATA = MAX_RECORD_DATA
/** Segment offsets are u32 in the index. */
export const MAX_SEGMENT_BYTES = 0xffffffff - MAX_CHANGE_DATA
export const MAX_NAME_BYTES = 200

/** Low 32 bits of xxh64: the frame and header checksum. */
export function checksum32(data: Uint8Array): number {
  return Number(h64(data) & 0xffffffffn)
}

// ---- segment header ----------------------------------------------------------

export interface SegmentHeader {
  segment: number
  created: number
  volume: string
  generation: string
}

export function encodeSegmentHeader(h: SegmentHeader): Buffer {
  const name = Buffer.from(h.volume, 'utf8')
  const gen = Buffer.from(h.generation, 'utf8')
  if (name.length > MAX_NAME_BYTES || gen.length > MAX_NAME_BYTES) {
    throw new TidemarkError('BAD_VOLUME_NAME', `volume name or generation of volume ${h.volume} is longer than ${MAX_NAME_BYTES} bytes`)
  }
  const b = Buffer.alloc(SEGMENT_HEADER_SIZE)
  SEGMENT_MAGIC.copy(b, 0)
  b.writeUInt16LE(FORMAT_VERSION, 8)
  b.writeUInt16LE(SEGMENT_HEADER_SIZE, 10)
  b.writeUInt32LE(h.segment, 12)
  writeU64(b, 16, h.created)
  let p = 24
  b.writeUInt16LE(name.length, p)
  name.copy(b, p + 2)
  p += 2 + name.length
  b.writeUInt16LE(gen.length, p)
  gen.copy(b, p + 2)
  b.writeUInt32LE(checksum32(b.subarray(0, SEGMENT_HEADER_SIZE - 4)), SEGMENT_HEADER_SIZE - 4)
  return b
}

/** The header, or a string saying why these bytes are not one. */
export function decodeSegmentHeader(b: Buffer): SegmentHeader | string {
  if (b.length < SEGMENT_HEADER_SIZE) return `header is ${b.length} bytes, expected ${SEGMENT_HEADER_SIZE}`
  if (!b.subarray(0, 8).equals(SEGMENT_MAGIC)) return 'bad magic (not a tidemark journal segment)'
  const sum = b.readUInt32LE(SEGMENT_HEADER_SIZE - 4)
  if (checksum32(b.subarray(0, SEGMENT_HEADER_SIZE - 4)) !== sum) return 'header checksum mismatch'
  const version = b.readUInt16LE(8)
  if (version !== FORMAT_VERSION) return `format version ${version}, this build reads ${FORMAT_VERSION}`
  if (b.readUInt16LE(10) !== SEGMENT_HEADER_SIZE) return `header size ${b.readUInt16LE(10)}`
  const nameLen = b.readUInt16LE(24)
  if (nameLen > MAX_NAME_BYTES) return 'volume name too long'
  const volume = b.toString('utf8', 26, 26 + nameLen)
  const genAt = 26 + nameLen
  const genLen = b.readUInt16LE(genAt)
  if (genLen > MAX_NAME_BYTES) return 'generation too long'
  const generation = b.toString('utf8', genAt + 2, genAt + 2 + genLen)
  return { segment: b.readUInt32LE(12), created: readU64(b, 16), volume, generation }
}

// ---- frames ------------------------------------------------------------------

/** Bytes a batch of `changeBodyBytes` (the raw payload) in `records` records takes framed. */
export function batchFramedSize(rawBytes: number, records: number): number {
  return rawBytes + records * FRAME_HEADER_SIZE + FRAME_HEADER_SIZE + COMMIT_BODY_SIZE
}

/** Writes the frame header for a body already placed at out[at+12 .. at+12+length]. */
export function sealFrame(out: Buffer, at: number, type: number, length: number): void {
  out.writeUInt32LE(length, at + 4)
  out[at + 8] = type
  out[at + 9] = 0
  out[at + 10] = 0
  out[at + 11] = 0
  out.writeUInt32LE(checksum32(out.subarray(at + 4, at + FRAME_HEADER_SIZE + length)), at)
}

export interface CommitBody {
  firstSeq: number
  lastSeq: number
  recordCount: number
  appBytes: number
  changedBytes: number
  wireBytes: number
  wallMs: number
}

export function encodeCommit(out: Buffer, at: number, c: CommitBody): number {
  const b = at + FRAME_HEADER_SIZE
  writeU64(out, b, c.firstSeq)
  writeU64(out, b + 8, c.lastSeq)
  out.writeUInt32LE(c.recordCount, b + 16)
  out.writeUInt32LE(0, b + 20)
  writeU64(out, b + 24, c.appBytes)
  writeU64(out, b + 32, c.changedBytes)
  writeU64(out, b + 40, c.wireBytes)
  writeU64(out, b + 48, c.wallMs)
  sealFrame(out, at, FRAME_COMMIT, COMMIT_BODY_SIZE)
  return at + FRAME_HEADER_SIZE + COMMIT_BODY_SIZE
}

/**
 * A batch framed by TypeScript: each record behind its CHANGE frame header,
 * then the COMMIT. The appliance's ingest frames batches natively
 * (native/src/batch_ingest.h, the same layout); this is the reference that
 * test/record-check.test.ts holds it to, byte for byte.
 */
export function encodeBatchFrames(records: Buffer[], c: CommitBody): Buffer {
  const out = Buffer.alloc(batchFramedSize(records.reduce((n, r) => n + r.length, 0), records.length))
  let at = 0
  for (const r of records) {
    r.copy(out, at + FRAME_HEADER_SIZE)
    sealFrame(out, at, FRAME_CHANGE, r.length)
    at += FRAME_HEADER_SIZE + r.length
  }
  encodeCommit(out, at, c)
  return out
}

export function decodeCommit(body: Buffer): CommitBody {
  return {
    firstSeq: readU64(body, 0),
    lastSeq: readU64(body, 8),
    recordCount: body.readUInt32LE(16),
    appBytes: readU64(body, 24),
    changedBytes: readU64(body, 32),
    wireBytes: readU64(body, 40),
    wallMs: readU64(body, 48),
  }
}

export interface FrameHeader {
  checksum: number
  length: number
  type: number
}

export function decodeFrameHeader(b: Buffer, at: number): FrameHeader {
  return { checksum: b.readUInt32LE(at), length: b.readUInt32LE(at + 4), type: b[at + 8] }
}

/**
 * Whether the frame header at b[at..] is shaped like one this writer could
 * have produced (type, reserved bytes, length agreeing with the body it
 * announces). Cheap: used to find candidate frames when resynchronising
 * after corruption, before paying for the checksum. When `available` allows,
 * the CHANGE record's header is checked too: a kind this build knows, and
 * the data length its kind and sector count imply (markers: no sectors, and
 * no data except a MARK's metadata of at most MAX_MARK_DATA bytes).
 */
export function plausibleFrame(b: Buffer, at: number, available: number): boolean {
  if (available < FRAME_HEADER_SIZE) return false
  const type = b[at + 8]
  if (b[at + 9] !== 0 || b[at + 10] !== 0 || b[at + 11] !== 0) return false
  const length = b.readUInt32LE(at + 4)
  if (type === FRAME_COMMIT) return length === COMMIT_BODY_SIZE
  if (type !== FRAME_CHANGE) return false
  if (length < RECORD_HEADER_SIZE || length > RECORD_HEADER_SIZE + MAX_CHANGE_DATA) return false
  if (available < FRAME_HEADER_SIZE + RECORD_HEADER_SIZE) return true
  const rec = at + FRAME_HEADER_SIZE
  const kind = recordKind(b, rec)
  if (!isKnownKind(kind)) return false
  const dataLength = recordDataLength(b, rec)
  if (dataLength !== length - RECORD_HEADER_SIZE) return false
  const count = recordCount(b, rec)
  if (isMarker(kind) && count !== 0) return false
  const expected = expectedDataLength(kind, count)
  return expected < 0 ? dataLength <= MAX_MARK_DATA : dataLength === expected
}

/** Checks a whole frame (header + body present in b). */
export function frameChecksumOk(b: Buffer, at: number): boolean {
  const length = b.readUInt32LE(at + 4)
  return checksum32(b.subarray(at + 4, at + FRAME_HEADER_SIZE + length)) === b.readUInt32LE(at)
}

// A CHANGE body's record header is read through proto/record.ts (recordSeq,
// recordKind, ...), never here.
export { SECTOR_SIZE, RECORD_HEADER_SIZE }

// ---- u64 as JS numbers (seqs and sectors stay below 2^53) -----------------------------

// Little-endian: proto/record.ts has the one writer and reader.
export { readU64, writeU64 }

export function writeU64BE(b: Buffer, at: number, v: number): void {
  b.writeUInt32BE(Math.floor(v / 0x100000000), at)
  b.writeUInt32BE(v >>> 0, at + 4)
}

export function readU64BE(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x100000000 + b.readUInt32BE(at + 4)
}
