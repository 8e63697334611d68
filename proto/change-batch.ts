// The ChangeBatch payload: change records in the tap's layout
// (proto/record.ts), checksummed with xxh64 before compression and
// compressed with LZ4 when that pays. One module for both ends, so the agent
// that encodes and the appliance that verifies cannot drift apart (the
// appliance decodes and verifies the bytes natively: see batchEncoding).
// The agent encodes natively too, in the same call that scans a pulled batch
// (native/src/batch_ingest.h EncodeBatchPayload mirrors encodeBatch's rule;
// test/microscan.test.ts holds the two to the same constants and results);
// encodeBatch stays the TypeScript statement of the rule, for tests.
import { compressSync } from 'lz4-napi'
import type { ChangeBatch } from './generated/tidemark/v1/ChangeBatch'
import type { ChangeBatch__Output } from './generated/tidemark/v1/ChangeBatch'
import { TidemarkError } from './errors'
import { checksumBytes } from './hash'
import { MAX_BATCH_BYTES } from './load'

/** Payloads smaller than this are sent raw: LZ4's framing would not pay. */
export const MIN_COMPRESS = 1024
/**
 * Incompressible data costs LZ4 time for nothing (≈ 230 MB/s on 1 MiB of
 * random bytes here, against GB/s for compressible data): try a 64 KiB
 * sample first and skip the batch if the sample does not shrink by 10 %.
 */
export const SAMPLE = 64 * 1024
export const WORTH = 0.9

export interface BatchMeta {
  firstSeq: number
  lastSeq: number
  recordCount: number
  appBytes: number
  changedBytes: number
}

export function encodeBatch(raw: Buffer, meta: BatchMeta, compress = true): ChangeBatch {
  let payload = raw
  let compression: 'COMPRESSION_NONE' | 'COMPRESSION_LZ4' = 'COMPRESSION_NONE'
  if (compress && raw.length >= MIN_COMPRESS) {
    const sampleOk = raw.length <= SAMPLE * 2 || compressSync(raw.subarray(0, SAMPLE)).length < SAMPLE * WORTH
    if (sampleOk) {
      const c = compressSync(raw)
      if (c.length < raw.length * WORTH) {
        payload = c
        compression = 'COMPRESSION_LZ4'
      }
    }
  }
  return {
    firstSeq: meta.firstSeq,
    lastSeq: meta.lastSeq,
    recordCount: meta.recordCount,
    rawLength: raw.length,
    compression,
    checksum: checksumBytes(raw),
    payload,
    appBytes: meta.appBytes,
    changedBytes: meta.changedBytes,
  }
}

/** How a received batch's payload travels: what the appliance's native ingest decodes and checks. */
export interface PayloadEncoding {
  compression: 'COMPRESSION_NONE' | 'COMPRESSION_LZ4'
  /** bytes of the raw records */
  rawLength: number
  /** xxh64 (seed 0) of the raw records, 8 bytes little-endian */
  checksum: Buffer
}

/**
 * What a received batch says about its payload, checked where that costs
 * nothing per byte: BATCH_TOO_LARGE, BATCH_CORRUPT (checksum width, an LZ4
 * payload that does not announce the raw length, an unknown compression).
 * The bytes themselves (LZ4, the length, BATCH_CHECKSUM) are checked by the
 * appliance's native ingest (native/src/batch_ingest.h, with the same
 * messages), so JavaScript never touches them.
 */
export function batchEncoding(b: ChangeBatch__Output, maxRaw = MAX_BATCH_BYTES): PayloadEncoding {
  if (b.rawLength > maxRaw) {
    throw new TidemarkError('BATCH_TOO_LARGE', `batch of ${b.rawLength} bytes is over the ${maxRaw}-byte limit`)
  }
  if (!b.checksum || b.checksum.length !== 8) {
    throw new TidemarkError('BATCH_CORRUPT', `batch checksum must be 8 bytes, not ${b.checksum?.length ?? 0}`)
  }
  if (b.compression === 'COMPRESSION_LZ4') {
    // The u32 LE raw length lz4-napi prepends: checked before anything is
    // allocated for it.
    if (b.payload.length < 4 || b.payload.readUInt32LE(0) !== b.rawLength) {
      throw new TidemarkError('BATCH_CORRUPT', `LZ4 payload does not announce the batch's ${b.rawLength} raw bytes`)
    }
  } else if (b.compression !== 'COMPRESSION_NONE') {
    throw new TidemarkError('BATCH_CORRUPT', `unknown compression ${String(b.compression)}`)
  }
  return { compression: b.compression, rawLength: b.rawLength, checksum: b.checksum }
}
