// A ChangeBatch at the appliance's boundary: decoded, validated and framed
// for the journal before a byte of it reaches the journal (DESIGN contract
// 5; nbdkit's server/backend.c validates once so the layers below never
// re-check).
//
// The per-byte work is native (native/src/batch_ingest.h, one call per
// batch): the LZ4 block, the payload's xxh64, every record's bounds and the
// CHANGE and COMMIT frames (journal-format.ts's layout). This module keeps
// what is per batch or per TimeMark: the declaration's numbers as JavaScript
// sees them, and a MARK record's metadata, which is JSON checked by
// proto/timemark-meta.ts. It names the rules and codes; the native side
// words its messages exactly as listed here, and the two are checked against
// each other case by case (test/record-check.test.ts):
//   BATCH_CORRUPT       an LZ4 payload that cannot be decompressed, a raw
//                       length that disagrees with the payload (the cheap
//                       header checks are proto/change-batch.ts batchEncoding)
//   BATCH_CHECKSUM      the raw records are not the ones the agent checksummed
//   SEQ_OUT_OF_ORDER    first seq not above the last accepted seq, last < first,
//                       a record seq outside [first, last] or going back
//                       (equal consecutive seqs are allowed: MicroScan splits
//                       one captured write into pieces that share its seq)
//   RECORD_OUT_OF_RANGE sectors past the end of the volume
//   RECORD_MALFORMED    unknown kind, data length != count*512 for WRITE and
//                       RESYNC, data on TRIM/ZERO/FLUSH/GAP/EXACT, a marker
//                       with sectors, MARK metadata that is not a TimeMark's
//                       JSON, a nonzero reserved field, a truncated record,
//                       a record count that does not match the batch
// The first problem in record order is the one reported.
//
// Output: the framed batch (CHANGE frames + COMMIT, ready to append) and the
// records as a flat Float64Array (no object per record): record i is at
// i*STRIDE, its fields named by CheckedField (seq, first sector, sectors
// changed, kind, offset of its CHANGE frame in the framed buffer).
import { native, type FrameBatchResult } from '../native'
import { TidemarkError } from '../proto/errors'
import type { PayloadEncoding } from '../proto/change-batch'
import { RecordKind, recordData } from '../proto/record'
import { parseMarkMeta } from '../proto/timemark-meta'
import { FRAME_HEADER_SIZE } from './journal-format'

/** The fields of one checked record: record i is recs[i*STRIDE + field] (native/src/batch_ingest.h CheckedField). */
export const CheckedField = {
  seq: 0,
  sector: 1,
  /** sectors changed: 0 for FLUSH and the markers */
  count: 2,
  kind: 3,
  /** offset of the record's CHANGE frame in the framed batch */
  offset: 4,
} as const
export const STRIDE = 5
// The field indexes under their old names: kept for volume-store until it moves.
export const R_SEQ = CheckedField.seq
export const R_SECTOR = CheckedField.sector
export const R_COUNT = CheckedField.count
export const R_KIND = CheckedField.kind
export const R_OFFSET = CheckedField.offset

export interface BatchDecl {
  firstSeq: number
  lastSeq: number
  recordCount: number
  /** the COMMIT's counters */
  appBytes: number
  changedBytes: number
  wireBytes: number
}

export interface FramedBatch {
  /** CHANGE frames and the COMMIT: the bytes the journal appends */
  framed: Buffer
  recs: Float64Array
}

/** frameBatch's numbers, in native/src/ingest_addon.cc's order (one array, reused by the synchronous call; the native side reads it before returning either way). */
const FrameArg = {
  compression: 0,
  rawLength: 1,
  firstSeq: 2,
  lastSeq: 3,
  recordCount: 4,
  lastAcceptedSeq: 5,
  sizeSectors: 6,
  appBytes: 7,
  changedBytes: 8,
  wireBytes: 9,
  wallMs: 10,
} as const
const nums = new Float64Array(native.journalFrameLayout.args)

/**
 * Decodes (when `encoding` says how the payload travels; without it the
 * payload is raw records the caller made), checks and frames a batch, or
 * throws a TidemarkError with a stable code. `into`, when it is exactly the
 * framed size (batchFramedSize), receives the frames (a reused buffer).
 */
export function checkAndFrame(payload: Buffer, b: BatchDecl, ctx: CheckContext, encoding?: PayloadEncoding, into?: Buffer): FramedBatch {
  const where = whereOf(ctx, b)
  setNums(payload, b, ctx, encoding)
  return finish(native.frameBatch(payload, nums, encoding ? encoding.checksum : null, where, into), payload, b, where, encoding)
}

/**
 * checkAndFrame with the per-byte work on libuv's pool (another core): the
 * same checks, codes and messages. `payload` and `into` must stay as they are
 * until it settles.
 */
export async function checkAndFrameAsync(payload: Buffer, b: BatchDecl, ctx: CheckContext, encoding?: PayloadEncoding, into?: Buffer): Promise<FramedBatch> {
  const where = whereOf(ctx, b)
  setNums(payload, b, ctx, encoding)
  const r = await native.frameBatchAsync(payload, nums, encoding ? encoding.checksum : null, where, into)
  return finish(r, payload, b, where, encoding)
}

export interface CheckContext {
  volume: string
  lastAcceptedSeq: number
  sizeSectors: number
  wallMs: number
}

function whereOf(ctx: CheckContext, b: BatchDecl): string {
  return `volume ${ctx.volume}, batch seqs ${b.firstSeq}..${b.lastSeq}`
}

function setNums(payload: Buffer, b: BatchDecl, ctx: CheckContext, encoding?: PayloadEncoding): void {
  nums[FrameArg.compression] = encoding?.compression === 'COMPRESSION_LZ4' ? 1 : 0
  nums[FrameArg.rawLength] = encoding ? encoding.rawLength : payload.length
  nums[FrameArg.firstSeq] = b.firstSeq
  nums[FrameArg.lastSeq] = b.lastSeq
  nums[FrameArg.recordCount] = b.recordCount
  nums[FrameArg.lastAcceptedSeq] = ctx.lastAcceptedSeq
  nums[FrameArg.sizeSectors] = ctx.sizeSectors
  nums[FrameArg.appBytes] = b.appBytes
  nums[FrameArg.changedBytes] = b.changedBytes
  nums[FrameArg.wireBytes] = b.wireBytes
  nums[FrameArg.wallMs] = ctx.wallMs
}

/** The native answer as a FramedBatch, or the first problem in record order as a TidemarkError. */
function finish(r: FrameBatchResult, payload: Buffer, b: BatchDecl, where: string, encoding?: PayloadEncoding): FramedBatch {
  const [code, message, framed, recs, records, marks, pendingMark, pendingMarkAt] = r
  // The payload's own problems come first: nothing about its records can be trusted.
  if (code !== null && code.startsWith('BATCH_')) throw new TidemarkError(code, message)
  // The declaration as JavaScript numbers (the native side saw them as integers).
  if (!Number.isSafeInteger(b.firstSeq) || !Number.isSafeInteger(b.lastSeq) || b.firstSeq < 1) {
    throw new TidemarkError('SEQ_OUT_OF_ORDER', `${where}: seqs must be positive integers`)
  }
  const rawLength = encoding ? encoding.rawLength : payload.length
  if (!Number.isInteger(b.recordCount) || b.recordCount < 0) {
    throw new TidemarkError('RECORD_MALFORMED', `${where}: record count ${b.recordCount} does not fit ${rawLength} payload bytes`)
  }
  // MARK metadata, in record order, before any problem found after it.
  if (marks > 0) checkMarks(framed!, recs!, records, where)
  if (pendingMark) {
    const why = parseMarkMeta(pendingMark)
    if (typeof why === 'string') throw new TidemarkError('RECORD_MALFORMED', `${pendingMarkAt}: MARK metadata ${why}`)
  }
  if (code !== null) throw new TidemarkError(code, message)
  return { framed: framed!, recs: recs! }
}

function checkMarks(framed: Buffer, recs: Float64Array, records: number, where: string): void {
  for (let i = 0; i < records; i++) {
    const o = i * STRIDE
    if (recs[o + CheckedField.kind] !== RecordKind.Mark) continue
    const at = recs[o + CheckedField.offset] + FRAME_HEADER_SIZE
    const why = parseMarkMeta(recordData(framed, at))
    if (typeof why === 'string') {
      // The record's offset in the payload: the frame headers before it are not in the payload.
      const payloadByte = recs[o + CheckedField.offset] - i * FRAME_HEADER_SIZE
      throw new TidemarkError(
        'RECORD_MALFORMED',
        `${where}: record ${i} (seq ${recs[o + CheckedField.seq]}, payload byte ${payloadByte}): MARK metadata ${why}`
      )
    }
  }
}
