// The ChangeBatch payload: change records in the tap's layout
// (proto/record.ts), checksummed with xxh64 before compression and
// compressed with LZ4 when that pays. One module for both ends, so the agent
// that encodes and the appliance that verifies cannot drift apart.
import { compressSync, uncompressSync } from 'lz4-napi'
import type { ChangeBatch } from './generated/tidemark/v1/ChangeBatch'
import type { ChangeBatch__Output } from './generated/tidemark/v1/ChangeBatch'
import { TidemarkError } from './errors'
import { checksumBytes } from './hash'
import { MAX_BATCH_BYTES } from './load'

/** Payloads smaller than this are sent raw: LZ4's framing would not pay. */
const MIN_COMPRESS = 1024
/**
 * Incompressible data costs LZ4 time for nothing (≈ 230 MB/s on 1 MiB of
 * random bytes here, against GB/s for compressible data): try a 64 KiB
 * sample first and skip the batch if the sample does not shrink by 10 %.
 */
const SAMPLE = 64 * 1024
const WORTH = 0.9

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

/**
 * The raw records of a received batch, or a TidemarkError saying what is
 * wrong with it: BATCH_TOO_LARGE, BATCH_CORRUPT (cannot be decompressed, or
 * lengths disagree), BATCH_CHECKSUM (the bytes are not the ones the agent
 * checksummed).
 */
export function decodeBatch(b: ChangeBatch__Output, maxRaw = MAX_BATCH_BYTES): Buffer {
  if (b.rawLength > maxRaw) {
    throw new TidemarkError('BATCH_TOO_LARGE', `batch of ${b.rawLength} bytes is over the ${maxRaw}-byte limit`)
  }
  if (!b.checksum || b.checksum.length !== 8) {
    throw new TidemarkError('BATCH_CORRUPT', `batch checksum must be 8 bytes, not ${b.checksum?.length ?? 0}`)
  }
  let raw: Buffer
  if (b.compression === 'COMPRESSION_LZ4') {
    // lz4-napi prepends the decompressed size (u32 LE) and would allocate
    // whatever it says: check it against the declared length first.
    if (b.payload.length < 4 || b.payload.readUInt32LE(0) !== b.rawLength) {
      throw new TidemarkError('BATCH_CORRUPT', `LZ4 payload does not announce the batch's ${b.rawLength} raw bytes`)
    }
    try {
      raw = uncompressSync(b.payload)
    } catch (err) {
      throw new TidemarkError('BATCH_CORRUPT', `LZ4 payload cannot be decompressed: ${(err as Error).message}`)
    }
  } else if (b.compression === 'COMPRESSION_NONE') {
    raw = b.payload
  } else {
    throw new TidemarkError('BATCH_CORRUPT', `unknown compression ${String(b.compression)}`)
  }
  if (raw.length !== b.rawLength) {
    throw new TidemarkError('BATCH_CORRUPT', `batch payload is ${raw.length} bytes, the batch says ${b.rawLength}`)
  }
  const sum = checksumBytes(raw)
  if (!sum.equals(b.checksum)) {
    throw new TidemarkError(
      'BATCH_CHECKSUM',
      `batch checksum mismatch (seqs ${b.firstSeq}..${b.lastSeq}): computed ${sum.toString('hex')}, batch says ${Buffer.from(b.checksum).toString('hex')}`
    )
  }
  return raw
}
