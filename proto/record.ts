// The change-record format, in TypeScript: its one owner. Every other module
// reads and writes record headers through this file, never by raw offset.
//
// A change record is a 32-byte little-endian header followed by its data. It
// is the same bytes in the native tap's ring (native/src/record.h, which owns
// the format on the C++ side), in a pulled batch, in a ChangeBatch payload and
// in a journal CHANGE frame's body:
//
//   0  u64 seq            8  u64 first sector     16 u32 sector count
//   20 u8  kind           21 u8  flags            22 u16 reserved (0)
//   24 u32 data length    28 u32 time             32 data[data length]
//
// Kinds: WRITE and RESYNC carry the sectors' contents (count * 512 bytes);
// TRIM and ZERO name sectors and carry nothing; FLUSH is a flush point with no
// sectors; MARK (a TimeMark; data = its metadata, UTF-8 JSON, at most
// MAX_MARK_DATA bytes), GAP and EXACT are markers with no sectors (see
// record.h for what they mean). time is the capture wall clock in ms modulo
// 2^32 (fullTimeMs restores it). The addon exports the C++ offsets and kinds
// (native.recordLayout) and test/record-format.test.ts checks that both sides
// agree.
//
// Hot paths (MicroScan, the journal's scan, batch validation) call the small
// readers below in their loops: they allocate nothing, and the header fields
// that are u64 on the wire are read as two u32 words (exact below 2^53, which
// batch validation enforces at the appliance's boundary).

export const SECTOR_SIZE = 512
export const SECTOR_SHIFT = 9
/** The dirty map's and the chunk index's unit: 64 KiB (native kRegionSize). */
export const REGION_SIZE = 64 * 1024
export const SECTORS_PER_REGION = REGION_SIZE / SECTOR_SIZE
export const RECORD_HEADER_SIZE = 32
/** Largest MARK metadata (native kMaxMarkData). */
export const MAX_MARK_DATA = 4096
/** Largest data one record may carry (a journal CHANGE frame's bound). */
export const MAX_RECORD_DATA = 64 * 1024 * 1024

/** Byte offsets of the header fields. */
export const RecordField = {
  seq: 0,
  sector: 8,
  count: 16,
  kind: 20,
  flags: 21,
  reserved: 22,
  dataLength: 24,
  time: 28,
} as const

export enum RecordKind {
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
export const MIN_RECORD_KIND = RecordKind.Write
export const MAX_RECORD_KIND = RecordKind.Exact

export const RECORD_FLAG_FUA = 1
/**
 * On a ZERO record: the resync of a region that is a hole in the volume's
 * file, standing for a RESYNC record of zeroes (same seq, same region).
 */
export const RECORD_FLAG_RESYNC = 2

/** A ZERO record that is the resync of a hole (it counts as the region copied). */
export function isHoleResync(kind: number, flags: number): boolean {
  return kind === RecordKind.Zero && (flags & RECORD_FLAG_RESYNC) !== 0
}

const KIND_NAMES: readonly string[] = ['', 'write', 'trim', 'zero', 'flush', 'resync', 'mark', 'gap', 'exact']

/** 'write', 'trim', ... or 'kind N' for a kind this build does not know. */
export function kindName(kind: number): string {
  return isKnownKind(kind) ? KIND_NAMES[kind] : `kind ${kind}`
}

export function isKnownKind(kind: number): boolean {
  return Number.isInteger(kind) && kind >= MIN_RECORD_KIND && kind <= MAX_RECORD_KIND
}
/** WRITE and RESYNC: the record's data is the sectors' contents. */
export function carriesSectorData(kind: number): boolean {
  return kind === RecordKind.Write || kind === RecordKind.Resync
}
/** WRITE, TRIM, ZERO and RESYNC change sectors; FLUSH and the markers do not. */
export function changesSectors(kind: number): boolean {
  return kind === RecordKind.Write || kind === RecordKind.Trim || kind === RecordKind.Zero || kind === RecordKind.Resync
}
/** TRIM and ZERO: the sectors now read as zeroes. */
export function zeroesSectors(kind: number): boolean {
  return kind === RecordKind.Trim || kind === RecordKind.Zero
}
/** MARK, GAP and EXACT: no sectors, a point in the stream. */
export function isMarker(kind: number): boolean {
  return kind === RecordKind.Mark || kind === RecordKind.Gap || kind === RecordKind.Exact
}
export function isResync(kind: number): boolean {
  return kind === RecordKind.Resync
}

/**
 * The data length a well-formed record of this kind and sector count has, or
 * -1 when any length up to MAX_MARK_DATA is allowed (MARK).
 */
export function expectedDataLength(kind: number, count: number): number {
  if (carriesSectorData(kind)) return count * SECTOR_SIZE
  if (kind === RecordKind.Mark) return -1
  return 0
}

// ---- readers (b: the buffer, at: the record's first byte) ----------------------------

/** Reads a u64 little-endian as a number (seqs, sectors and byte positions stay below 2^53). */
export function readU64LE(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x100000000
}

export function recordSeq(b: Buffer, at: number): number {
  return readU64LE(b, at + RecordField.seq)
}
export function recordSector(b: Buffer, at: number): number {
  return readU64LE(b, at + RecordField.sector)
}
export function recordCount(b: Buffer, at: number): number {
  return b.readUInt32LE(at + RecordField.count)
}
export function recordKind(b: Buffer, at: number): number {
  return b[at + RecordField.kind]
}
export function recordFlags(b: Buffer, at: number): number {
  return b[at + RecordField.flags]
}
export function recordReserved(b: Buffer, at: number): number {
  return b.readUInt16LE(at + RecordField.reserved)
}
export function recordDataLength(b: Buffer, at: number): number {
  return b.readUInt32LE(at + RecordField.dataLength)
}
/** Capture wall clock, ms modulo 2^32 (see fullTimeMs). */
export function recordTimeLow(b: Buffer, at: number): number {
  return b.readUInt32LE(at + RecordField.time)
}
/** Header plus data. */
export function recordByteLength(b: Buffer, at: number): number {
  return RECORD_HEADER_SIZE + recordDataLength(b, at)
}
/** The record's data as a view into b. */
export function recordData(b: Buffer, at: number): Buffer {
  const start = at + RECORD_HEADER_SIZE
  return b.subarray(start, start + recordDataLength(b, at))
}
/** True when the u64 seq and sector fields hold values JavaScript numbers represent exactly. */
export function recordFieldsSafe(b: Buffer, at: number): boolean {
  const MAX_SAFE_HI = 0x1fffff
  return b.readUInt32LE(at + RecordField.seq + 4) <= MAX_SAFE_HI && b.readUInt32LE(at + RecordField.sector + 4) <= MAX_SAFE_HI
}

/** A decoded header, for code that is not on a hot path. */
export interface RecordHeader {
  seq: number
  sector: number
  count: number
  kind: number
  flags: number
  dataLength: number
  /** ms modulo 2^32; 0 = not stamped */
  timeLow: number
}

export function decodeRecordHeader(b: Buffer, at: number): RecordHeader {
  return {
    seq: recordSeq(b, at),
    sector: recordSector(b, at),
    count: recordCount(b, at),
    kind: recordKind(b, at),
    flags: recordFlags(b, at),
    dataLength: recordDataLength(b, at),
    timeLow: recordTimeLow(b, at),
  }
}

/**
 * Writes a u64 (a seq, a sector, a byte position: below 2^53) little-endian as
 * two u32 halves: writeBigUInt64LE(BigInt(v)) allocates a BigInt per call,
 * which showed in the appliance's ingest profile (a point-map extent per record).
 */
export function writeU64LE(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x100000000, at)
  b.writeUInt32LE(Math.floor(v / 0x100000000), at + 4)
}

/** Writes a header at b[at..at+32) (reserved = 0). The data, if any, follows it. */
export function encodeRecordHeader(b: Buffer, at: number, h: RecordHeader): void {
  writeU64LE(b, at + RecordField.seq, h.seq)
  writeU64LE(b, at + RecordField.sector, h.sector)
  b.writeUInt32LE(h.count, at + RecordField.count)
  b[at + RecordField.kind] = h.kind
  b[at + RecordField.flags] = h.flags
  b.writeUInt16LE(0, at + RecordField.reserved)
  b.writeUInt32LE(h.dataLength, at + RecordField.dataLength)
  b.writeUInt32LE(h.timeLow >>> 0, at + RecordField.time)
}

/**
 * Rewrites the sector range of the header at b[at..] in place: first sector,
 * sector count and data length (MicroScan cuts a captured WRITE into runs
 * that keep its seq, kind, flags and time).
 */
export function setRecordSectors(b: Buffer, at: number, sector: number, count: number, dataLength: number): void {
  writeU64LE(b, at + RecordField.sector, sector)
  b.writeUInt32LE(count, at + RecordField.count)
  b.writeUInt32LE(dataLength, at + RecordField.dataLength)
}

/** Sets the data length of the header at b[at..] in place. */
export function setRecordDataLength(b: Buffer, at: number, dataLength: number): void {
  b.writeUInt32LE(dataLength, at + RecordField.dataLength)
}

/** A whole record (header + data) in a new Buffer. */
export function encodeRecord(h: Omit<RecordHeader, 'dataLength'>, data?: Buffer): Buffer {
  const len = data ? data.length : 0
  const b = Buffer.allocUnsafe(RECORD_HEADER_SIZE + len)
  encodeRecordHeader(b, 0, { ...h, dataLength: len })
  if (data) data.copy(b, RECORD_HEADER_SIZE)
  return b
}

/**
 * A record's capture time: the header holds the wall clock in ms modulo 2^32;
 * `near` is any full time within 24 days of it (a batch's commit time).
 * Returns 0 for an unstamped record.
 */
export function fullTimeMs(low32: number, near: number): number {
  if (low32 === 0) return 0
  const delta = (low32 - (near % 0x100000000)) | 0 // int32 difference
  return near + delta
}
