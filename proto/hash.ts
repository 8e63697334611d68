// xxhash for both ends of the wire: batch checksums and sector fingerprints.
//
// xxhash-wasm is initialised once (it compiles a small wasm module); after
// `await initHash()` every function here is synchronous. Measured on this
// kind of machine: h64Raw over 512-byte sectors runs at about 2 GB/s
// (3.9 M sectors/s), so fingerprinting every captured sector in TypeScript is
// affordable.
//
// Fingerprint width: 64 bits. MicroScan drops a sector when the fingerprint
// of its new contents equals the fingerprint of what the replica holds, so a
// collision would silently keep a stale sector. For data that is not crafted
// against xxhash, the chance per comparison is 2^-64; at 10^12 sector writes
// (half a petabyte of 512-byte sectors) the chance of even one false drop is
// about 5 x 10^-8. A 32-bit fingerprint would already expect a false drop
// after 2^32 comparisons (2 TiB), which is why 32 bits is not enough.
// xxhash is not a cryptographic hash: someone who can choose the contents of
// two versions of a sector could make them collide; the cost of that is a
// stale sector in their own data, detected by the byte-exact restore tests.
import xxhash from 'xxhash-wasm'
import { TidemarkError } from './errors'
import { SECTOR_SIZE } from './record'

type Api = Awaited<ReturnType<typeof xxhash>>
let api: Api | null = null
let pending: Promise<void> | null = null

/** The fingerprinted unit: one sector (proto/record.ts). */
export const SECTOR = SECTOR_SIZE

export function initHash(): Promise<void> {
  pending ??= xxhash().then((a) => {
    api = a
  })
  return pending
}

function hasher(): Api {
  if (!api) throw new TidemarkError('HASH_NOT_READY', 'xxhash is not initialised: await initHash() first')
  return api
}

/** xxh64 (seed 0) of the bytes. */
export function h64(data: Uint8Array): bigint {
  return hasher().h64Raw(data, 0n)
}

/** The 8-byte little-endian checksum a ChangeBatch carries. */
export function checksumBytes(data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(8)
  b.writeBigUInt64LE(hasher().h64Raw(data, 0n))
  return b
}

/**
 * One xxh64 per 512-byte sector of `data` (whose length is a multiple of
 * 512), written into out[at..]. Returns the number of sectors.
 */
export function sectorFingerprints(data: Uint8Array, out: BigUint64Array, at = 0): number {
  const h = hasher().h64Raw
  const n = data.length / SECTOR
  for (let i = 0; i < n; i++) out[at + i] = h(data.subarray(i * SECTOR, (i + 1) * SECTOR), 0n)
  return n
}

let zeroFp: bigint | null = null
/** The fingerprint of an all-zero sector (what a never-written sector holds). */
export function zeroSectorFingerprint(): bigint {
  zeroFp ??= h64(new Uint8Array(SECTOR))
  return zeroFp
}
