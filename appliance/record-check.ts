// Validation of a ChangeBatch payload at the appliance's boundary, before a
// byte of it reaches the journal (DESIGN contract 5; nbdkit's
// server/backend.c validates once so the layers below never re-check).
//
// Input: the raw payload (already decompressed and checksum-verified by
// proto/change-batch.ts decodeBatch) and the batch's declared seqs and
// record count. Output: the records as a flat Float64Array (no object per
// record): record i is at i*STRIDE, its fields named by CheckedField (seq,
// first sector, sector count, kind, offset of its 32-byte header in the
// payload). Any problem throws a
// TidemarkError with a stable code:
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
import { TidemarkError } from '../proto/errors'
import {
  MAX_MARK_DATA,
  RECORD_HEADER_SIZE,
  RecordKind,
  SECTOR_SIZE,
  carriesSectorData,
  changesSectors,
  isKnownKind,
  isMarker,
  kindName,
  recordCount,
  recordData,
  recordDataLength,
  recordFieldsSafe,
  recordKind,
  recordReserved,
  recordSector,
  recordSeq,
} from '../proto/record'
import { parseMarkMeta } from '../proto/timemark-meta'

/** The fields of one checked record in checkBatch's output: record i is out[i*STRIDE + field]. */
export const CheckedField = {
  seq: 0,
  sector: 1,
  /** sectors changed: 0 for FLUSH and the markers */
  count: 2,
  kind: 3,
  /** offset of the record's header in the payload */
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
}

/** 'WRITE', 'MARK', ... as messages name kinds. */
function upper(kind: number): string {
  return kindName(kind).toUpperCase()
}

export function checkBatch(
  raw: Buffer,
  b: BatchDecl,
  ctx: { volume: string; lastAcceptedSeq: number; sizeSectors: number }
): Float64Array {
  const where = `volume ${ctx.volume}, batch seqs ${b.firstSeq}..${b.lastSeq}`
  if (!Number.isSafeInteger(b.firstSeq) || !Number.isSafeInteger(b.lastSeq) || b.firstSeq < 1) {
    throw new TidemarkError('SEQ_OUT_OF_ORDER', `${where}: seqs must be positive integers`)
  }
  if (b.firstSeq <= ctx.lastAcceptedSeq) {
    throw new TidemarkError('SEQ_OUT_OF_ORDER', `${where}: first seq ${b.firstSeq} is not above the last accepted seq ${ctx.lastAcceptedSeq}`)
  }
  if (b.lastSeq < b.firstSeq) {
    throw new TidemarkError('SEQ_OUT_OF_ORDER', `${where}: last seq ${b.lastSeq} is below first seq ${b.firstSeq}`)
  }
  if (!Number.isInteger(b.recordCount) || b.recordCount < 0 || b.recordCount * RECORD_HEADER_SIZE > raw.length) {
    throw new TidemarkError('RECORD_MALFORMED', `${where}: record count ${b.recordCount} does not fit ${raw.length} payload bytes`)
  }
  const out = new Float64Array(b.recordCount * STRIDE)
  let prev = b.firstSeq
  let n = 0
  let off = 0
  while (off < raw.length) {
    if (off + RECORD_HEADER_SIZE > raw.length) {
      throw new TidemarkError('RECORD_MALFORMED', `${where}: truncated record header at payload byte ${off} (${raw.length - off} bytes left)`)
    }
    if (!recordFieldsSafe(raw, off)) {
      throw new TidemarkError('RECORD_MALFORMED', `${where}: record at payload byte ${off} has a seq or sector beyond 2^53`)
    }
    const seq = recordSeq(raw, off)
    const sector = recordSector(raw, off)
    const count = recordCount(raw, off)
    const kind = recordKind(raw, off)
    const dataLen = recordDataLength(raw, off)
    const at = `${where}: record ${n} (seq ${seq}, payload byte ${off})`
    if (seq < prev) {
      throw new TidemarkError('SEQ_OUT_OF_ORDER', `${at}: seq goes back from ${prev}`)
    }
    if (seq > b.lastSeq) {
      throw new TidemarkError('SEQ_OUT_OF_ORDER', `${at}: seq is past the batch's last seq ${b.lastSeq}`)
    }
    prev = seq
    if (!isKnownKind(kind)) throw new TidemarkError('RECORD_MALFORMED', `${at}: unknown kind ${kind}`)
    if (recordReserved(raw, off) !== 0) {
      throw new TidemarkError('RECORD_MALFORMED', `${at}: reserved header field is not zero`)
    }
    if (isMarker(kind)) {
      if (count !== 0 || sector !== 0) throw new TidemarkError('RECORD_MALFORMED', `${at}: a ${upper(kind)} marker names sectors`)
      if (kind !== RecordKind.Mark && dataLen !== 0) throw new TidemarkError('RECORD_MALFORMED', `${at}: a ${upper(kind)} marker carries ${dataLen} data bytes`)
      if (kind === RecordKind.Mark) {
        if (dataLen > MAX_MARK_DATA || off + RECORD_HEADER_SIZE + dataLen > raw.length) {
          throw new TidemarkError('RECORD_MALFORMED', `${at}: MARK metadata of ${dataLen} bytes is over ${MAX_MARK_DATA} or runs past the payload`)
        }
        const why = parseMarkMeta(recordData(raw, off))
        if (typeof why === 'string') throw new TidemarkError('RECORD_MALFORMED', `${at}: MARK metadata ${why}`)
      }
    } else if (carriesSectorData(kind)) {
      if (dataLen !== count * SECTOR_SIZE) {
        throw new TidemarkError('RECORD_MALFORMED', `${at}: ${count} sectors need ${count * SECTOR_SIZE} data bytes, record has ${dataLen}`)
      }
    } else if (dataLen !== 0) {
      throw new TidemarkError('RECORD_MALFORMED', `${at}: ${upper(kind)} record carries ${dataLen} data bytes`)
    }
    if (off + RECORD_HEADER_SIZE + dataLen > raw.length) {
      throw new TidemarkError('RECORD_MALFORMED', `${at}: data runs past the end of the ${raw.length}-byte payload`)
    }
    if (changesSectors(kind) && sector + count > ctx.sizeSectors) {
      throw new TidemarkError(
        'RECORD_OUT_OF_RANGE',
        `${at}: sectors ${sector}..${sector + count - 1} are past the end of the volume (${ctx.sizeSectors} sectors)`
      )
    }
    if (n >= b.recordCount) {
      throw new TidemarkError('RECORD_MALFORMED', `${where}: payload holds more than the ${b.recordCount} records the batch declares`)
    }
    const o = n * STRIDE
    out[o + CheckedField.seq] = seq
    out[o + CheckedField.sector] = sector
    out[o + CheckedField.count] = changesSectors(kind) ? count : 0
    out[o + CheckedField.kind] = kind
    out[o + CheckedField.offset] = off
    n++
    off += RECORD_HEADER_SIZE + dataLen
  }
  if (n !== b.recordCount) {
    throw new TidemarkError('RECORD_MALFORMED', `${where}: payload holds ${n} records, the batch declares ${b.recordCount}`)
  }
  return out
}
