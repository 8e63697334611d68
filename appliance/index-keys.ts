// The byte layout of the chunk index's LevelDB keys and values: the one
// place that encodes and decodes them (chunk-index.ts writes and iterates,
// image.ts and verify read through the decoders below). Changing anything
// here changes bytes on disk: bump INDEX_VERSION, and every index is rebuilt
// from the segments at open.
//
// Keys (all integers big-endian so LevelDB's byte order is numeric order):
//   'c' chunk u64 | seq u64 | segment u32 | frame offset u32     (25 bytes)
//       one per 64 KiB chunk (128 sectors) a CHANGE record touches. The
//       segment and offset make keys unique when MicroScan's pieces of one
//       write share a seq, and order them as the journal does. A forward
//       scan visits chunks in volume order and, inside a chunk, versions
//       oldest first: a whole-volume restore is one iterator pass.
//   'r' seq u64 | segment u32 | frame offset u32                 (17 bytes)
//       records spanning more than RANGE_CHUNKS chunks (mkfs's whole-disk
//       discard, a large WRITE_ZEROES): one key instead of one per chunk.
//       Readers merge them by seq. They are few (each covers >16 MiB), so
//       the volume keeps them in memory, loaded once at open.
//   'b' last seq u64 -> where a batch starts and ends, its first seq, record
//       count and wall time: `journal show` from a seq, points in time.
//   's' segment u32  -> JSON summary of a segment (records, first/last seq).
// Points in time (appliance/points.ts derives them from the journal too):
//   'k' seq u64      -> TimeMark JSON (label, consistency, wall time, group,
//       note, pinned): the catalog, one key per mark, in seq order.
//   'l' label, 0x00, seq u64 -> empty: TimeMarks by label.
//   'g' start seq u64 -> u64 LE end seq: a window of inexact points (start,
//       end) from a GAP marker to its EXACT one (end 0: still open).
//   't' ms u64 | seq u64 -> empty: the newest seq recorded at each capture
//       millisecond (--at), at most a few keys per batch.
//   'm'              -> JSON: the journal position the index covers (end of
//       the last indexed COMMIT: segment, offset, seq) and the volume's
//       counters. Written in the same LevelDB batch as the entries it
//       covers, so the index is always a prefix of the journal.
// Values of 'c' and 'r': u64 LE first sector, u32 LE sector count, u8 kind,
// u32 LE offset of the record's data in its segment (17 bytes). Sector and
// count are the whole record's; readers clip to the chunk.
import { RecordKind, SECTORS_PER_REGION } from '../proto/record'
import { readU64, readU64BE, writeU64, writeU64BE } from './journal-format'

/** A chunk is the dirty map's region (64 KiB): a fingerprint request for a region asks about one chunk. */
export const CHUNK_SECTORS = SECTORS_PER_REGION
export const CHUNK_BYTES = CHUNK_SECTORS * 512
/** A record touching more chunks than this goes to the 'r' key space. */
export const RANGE_CHUNKS = 256

export const K_CHUNK = 0x63 // 'c'
export const K_RANGE = 0x72 // 'r'
export const K_BATCH = 0x62 // 'b'
export const K_SEGMENT = 0x73 // 's'
export const K_MARK = 0x6b // 'k'
export const K_LABEL = 0x6c // 'l'
export const K_WINDOW = 0x67 // 'g'
export const K_TIME = 0x74 // 't'
export const META_KEY = Buffer.from('m')
export const INDEX_VERSION = 2

export const CHUNK_KEY_SIZE = 25
export const ENTRY_VALUE_SIZE = 17

export interface IndexMeta {
  version: number
  /** End of the last indexed COMMIT. */
  segment: number
  offset: number
  /** Its last seq (0: nothing indexed). */
  seq: number
  firstSeq: number
  records: number
  batches: number
  appBytes: number
  changedBytes: number
  wireBytes: number
}

export function emptyMeta(firstSegment: number, headerSize: number): IndexMeta {
  return {
    version: INDEX_VERSION,
    segment: firstSegment,
    offset: headerSize,
    seq: 0,
    firstSeq: 0,
    records: 0,
    batches: 0,
    appBytes: 0,
    changedBytes: 0,
    wireBytes: 0,
  }
}

/** A range entry ('r' key), kept in memory. */
export interface RangeEntry {
  seq: number
  segment: number
  offset: number
  sector: number
  count: number
  kind: number
}

export interface BatchLocation {
  lastSeq: number
  firstSeq: number
  segment: number
  offset: number
  end: number
  records: number
  wallMs: number
}

export interface SegmentSummary {
  records: number
  batches: number
  firstSeq: number
  lastSeq: number
}

export function chunkKey(chunk: number, seq: number, segment = 0, offset = 0): Buffer {
  const k = Buffer.allocUnsafe(CHUNK_KEY_SIZE)
  k[0] = K_CHUNK
  writeU64BE(k, 1, chunk)
  writeU64BE(k, 9, seq)
  k.writeUInt32BE(segment, 17)
  k.writeUInt32BE(offset, 21)
  return k
}

export function keyChunk(k: Buffer): number {
  return readU64BE(k, 1)
}
export function keySeq(k: Buffer): number {
  return readU64BE(k, 9)
}
export function keySegment(k: Buffer): number {
  return k.readUInt32BE(17)
}
export function keyOffset(k: Buffer): number {
  return k.readUInt32BE(21)
}
export function valueSector(v: Buffer): number {
  return readU64(v, 0)
}
export function valueCount(v: Buffer): number {
  return v.readUInt32LE(8)
}
export function valueKind(v: Buffer): number {
  return v[12]
}
export function valueDataOffset(v: Buffer): number {
  return v.readUInt32LE(13)
}

export function rangeKey(seq: number, segment: number, offset: number): Buffer {
  const k = Buffer.allocUnsafe(17)
  k[0] = K_RANGE
  writeU64BE(k, 1, seq)
  k.writeUInt32BE(segment, 9)
  k.writeUInt32BE(offset, 13)
  return k
}

export function entryValue(sector: number, count: number, kind: number, dataOffset: number): Buffer {
  const v = Buffer.allocUnsafe(ENTRY_VALUE_SIZE)
  writeU64(v, 0, sector)
  v.writeUInt32LE(count, 8)
  v[12] = kind
  v.writeUInt32LE(dataOffset, 13)
  return v
}

export function batchKey(lastSeq: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = K_BATCH
  writeU64BE(k, 1, lastSeq)
  return k
}

export function segmentKey(n: number): Buffer {
  const k = Buffer.allocUnsafe(5)
  k[0] = K_SEGMENT
  k.writeUInt32BE(n, 1)
  return k
}

export function markKey(seq: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = K_MARK
  writeU64BE(k, 1, seq)
  return k
}

export function labelKey(label: string, seq: number): Buffer {
  const l = Buffer.from(label, 'utf8')
  const k = Buffer.allocUnsafe(1 + l.length + 1 + 8)
  k[0] = K_LABEL
  l.copy(k, 1)
  k[1 + l.length] = 0
  writeU64BE(k, 2 + l.length, seq)
  return k
}

export function windowKey(start: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = K_WINDOW
  writeU64BE(k, 1, start)
  return k
}

export function timeKey(ms: number, seq: number): Buffer {
  const k = Buffer.allocUnsafe(17)
  k[0] = K_TIME
  writeU64BE(k, 1, ms)
  writeU64BE(k, 9, seq)
  return k
}

/** A catalogued TimeMark (the 'k' value plus its seq). */
export interface CatalogEntry {
  seq: number
  label: string
  consistency: 'app' | 'crash'
  wallMs: number
  group: string
  note: string
  pinned: boolean
}

/** Inexact points: every seq s with start < s < end (end 0: no end yet). */
export interface InexactWindow {
  start: number
  end: number
}

export const EMPTY = Buffer.alloc(0)

export function decodeBatchLocation(k: Buffer, v: Buffer): BatchLocation {
  return {
    lastSeq: seqKeySeq(k),
    segment: v.readUInt32LE(0),
    offset: v.readUInt32LE(4),
    end: v.readUInt32LE(8),
    firstSeq: readU64(v, 12),
    records: v.readUInt32LE(20),
    wallMs: readU64(v, 24),
  }
}

/** The seq a range ('r') key names. */
export function rangeKeySeq(k: Buffer): number {
  return readU64BE(k, 1)
}

/** An 'r' entry, as the volume keeps it in memory. */
export function decodeRangeEntry(k: Buffer, v: Buffer): RangeEntry {
  return { seq: rangeKeySeq(k), segment: k.readUInt32BE(9), offset: k.readUInt32BE(13), sector: valueSector(v), count: valueCount(v), kind: valueKind(v) }
}

/** The segment number an 's' key names. */
export function segmentKeyNumber(k: Buffer): number {
  return k.readUInt32BE(1)
}

/** The seq a 'b' (last seq), 'k' (mark) or 'g' (window start) key names: all are prefix + u64. */
export function seqKeySeq(k: Buffer): number {
  return readU64BE(k, 1)
}

/** The seq at the end of an 'l' key. */
export function labelKeySeq(k: Buffer): number {
  return readU64BE(k, k.length - 8)
}

/** The capture ms and the seq a 't' key names. */
export function decodeTimeKey(k: Buffer): { ms: number; seq: number } {
  return { ms: readU64BE(k, 1), seq: readU64BE(k, 9) }
}

/** A 'b' value: where the batch starts and ends, its first seq, record count and wall time. */
export function batchValue(b: BatchLocation): Buffer {
  const v = Buffer.allocUnsafe(36)
  v.writeUInt32LE(b.segment, 0)
  v.writeUInt32LE(b.offset, 4)
  v.writeUInt32LE(b.end, 8)
  writeU64(v, 12, b.firstSeq)
  v.writeUInt32LE(b.records, 20)
  writeU64(v, 24, b.wallMs)
  v.writeUInt32LE(0, 32)
  return v
}

/** A 'g' value: the window's end seq (0: still open). */
export function windowValue(end: number): Buffer {
  const v = Buffer.allocUnsafe(8)
  writeU64(v, 0, end)
  return v
}

/** The end seq a 'g' value holds (0: the window is still open). */
export function windowValueEnd(v: Buffer): number {
  return readU64(v, 0)
}

/** The seq a chunk or range key names (verify reads both key spaces). */
export function entryKeySeq(k: Buffer): number {
  return k[0] === K_CHUNK ? keySeq(k) : rangeKeySeq(k)
}

/** Records that leave every sector as it was (FLUSH, or no sectors) have no 'c' or 'r' entries. */
export function hasEntries(kind: number, count: number): boolean {
  return count !== 0 && kind !== RecordKind.Flush
}
