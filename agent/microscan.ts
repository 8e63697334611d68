// MicroScan: send only the 512-byte sectors whose contents the replica does
// not already hold.
//
// A filesystem write of 4-32 KiB often changes one sector; the rest rewrite
// what is there. For every sector of a WRITE record we compare a fingerprint
// (xxh64, proto/hash.ts, where the 64-bit collision argument is written) of
// the new contents with the fingerprint of what the replica holds, and drop
// the sector when they are equal. The surviving sectors leave as runs: one
// record per run of changed sectors, all with the captured write's seq, kind
// and flags (the appliance applies pieces of one seq as one change).
//
// "What the replica holds" is a bounded cache, not a map of the volume
// (contract 6): one page of 128 u64 fingerprints per 64 KiB region, 0 meaning
// unknown, pages kept in 1 MiB slabs and evicted whole, least recently used
// first. A miss only costs bandwidth: an unknown sector is sent.
// The cache holds an invariant the replicator relies on: a known fingerprint
// always equals what the replica holds after every batch produced so far, so
// the cache changes exactly when a batch is produced (sent sectors, trims,
// fingerprints fetched from the appliance), and is cleared whenever the
// replica may have lost batches the agent already counted on.
//
// RESYNC records (after kill -9, after a behind period, and the initial copy)
// compare against the appliance's own fingerprints for their regions, fetched
// by the replicator for the whole pulled batch just before scanning it. A
// record earlier in the same batch that wrote some of those sectors makes the
// fetched fingerprints stale for them; such sectors are compared against the
// cache instead (which those records just updated) and sent when it does not
// know them. For a brand-new replica every sector is zero, so the initial copy
// skips all-zero sectors without a special case.
//
// TRIM and WRITE_ZEROES travel as metadata (a header, no data) and set their
// sectors to the zero-sector fingerprint, so writing zeroes over a trimmed
// range later costs nothing. FLUSH records always pass.
//
// The cache is not persisted across restarts: a cache written at some point
// and read back after a crash would claim sectors the replica may not hold
// (batches produced after the save but never made durable, or a replica that
// was rolled back), and the only safe use of it would need the same
// fingerprint round trip a resync does anyway. A restart starts cold; the
// resync after it fills the cache from the appliance's fingerprints.
// Where the work happens: the scan (fingerprints, cache, runs) and the
// ChangeBatch payload (xxh64, LZ4) run natively, one call per pulled batch
// (native/src/microscan.h, native/src/scan_addon.cc), so JavaScript touches no
// sector and allocates nothing per record; this class keeps the policy, the
// fingerprint replies and the statistics. Measured (bench:replication ingest,
// benchmarks/README.md): the agents went from 12.0 to 8.3 CPU-s per GB; the
// JavaScript scan called xxhash-wasm once per sector with a BigInt result,
// and every batch made three fresh Buffers (pull, scan output, LZ4).
import os from 'node:os'
import type { ChangeBatch } from '../proto/generated/tidemark/v1/ChangeBatch'
import type { RecordBatch } from '../native/record-batch'
import { native, type NativeMicroScanHandle } from '../native'
import { isHoleResync, REGION_SIZE, RecordKind, SECTOR_SIZE, SECTORS_PER_REGION } from '../proto/record'
import { TidemarkError } from '../proto/errors'

// The cache's page is the dirty map's region (proto/record.ts), re-exported
// under the names agent/replicator.ts imports.
export { SECTORS_PER_REGION }
export const REGION_BYTES = REGION_SIZE
export const DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

const LITTLE_ENDIAN = os.endianness() === 'LE'
/** scan modes (scan_addon.cc) */
const MODE_RAW = 0
const MODE_ENCODE = 1
const MODE_ENCODE_LZ4 = 2
/** nums written by the native scan */
const N_RECORDS = 0
const N_APP_BYTES = 1
const N_CHANGED_BYTES = 2
const N_RAW_LENGTH = 3
const N_COMPRESSION = 4

export interface MicroScanOptions {
  /** size of the volume, bytes */
  volumeBytes: number
  /** fingerprint cache budget, bytes (default 256 MiB); at most one page per region is ever held */
  cacheBytes?: number
  /** false: send every sector (for comparisons); trims still travel as metadata */
  enabled?: boolean
}

interface ScanCounts {
  records: number
  /** the pulled batch's seq range (even if every record was dropped) */
  firstSeq: number
  lastSeq: number
  /** bytes the application wrote (WRITE records) */
  appBytes: number
  /** sector bytes sent (WRITE and RESYNC) */
  changedBytes: number
}

export interface ScanResult extends ScanCounts {
  /** the records to send, in the tap's layout */
  raw: Buffer
}

export interface EncodedScan extends ScanCounts {
  /** the ChangeBatch to send: the records checksummed and, when it pays, LZ4-compressed (proto/change-batch.ts) */
  msg: ChangeBatch
}

/** The replica's fingerprints for some regions: region -> one u64 per sector. */
export type ReplicaFingerprints = Map<number, BigUint64Array>

export interface MicroScanStats {
  cachePages: number
  cacheMaxPages: number
  /** bytes of fingerprint state allocated (slabs plus bookkeeping) */
  cacheBytes: number
  sectorsSeen: number
  sectorsDropped: number
  misses: number
  evictions: number
}

export class MicroScan {
  readonly enabled: boolean
  readonly maxPages: number
  private readonly regions: number
  private readonly totalSectors: number
  private readonly h: NativeMicroScanHandle
  private readonly nums = new Float64Array(8)
  /** the replica's fingerprints laid end to end for the native scan, reused */
  private fpRegions = new Float64Array(64)
  private fpAll = new BigUint64Array(64 * SECTORS_PER_REGION)
  /** a scan on the pool is running (encodeAsync): the next must wait for it */
  private scanning = false

  constructor(opts: MicroScanOptions) {
    if (!Number.isSafeInteger(opts.volumeBytes) || opts.volumeBytes <= 0 || opts.volumeBytes % SECTOR_SIZE !== 0) {
      throw new TidemarkError('MICROSCAN_INVALID_ARGUMENT', `volume size ${opts.volumeBytes} is not a positive multiple of 512`)
    }
    const budget = opts.cacheBytes ?? DEFAULT_CACHE_BYTES
    if (!Number.isSafeInteger(budget) || budget < 0) {
      throw new TidemarkError('MICROSCAN_INVALID_ARGUMENT', `fingerprint cache size ${budget} is not a byte count`)
    }
    this.enabled = opts.enabled ?? true
    this.totalSectors = opts.volumeBytes / SECTOR_SIZE
    this.regions = Math.ceil(this.totalSectors / SECTORS_PER_REGION)
    this.h = new native.NativeMicroScan(opts.volumeBytes, budget, this.enabled)
    this.maxPages = this.h.stats()[1]
  }

  stats(): MicroScanStats {
    const s = this.h.stats()
    return { cachePages: s[0], cacheMaxPages: s[1], cacheBytes: s[2], sectorsSeen: s[3], sectorsDropped: s[4], misses: s[5], evictions: s[6] }
  }

  /** Forgets everything: the replica may no longer hold what the cache says. */
  clear(): void {
    this.h.clear()
  }

  /** The distinct regions of the batch's RESYNC records, in order (what to ask the appliance for). */
  resyncRegions(batch: RecordBatch): number[] {
    const out: number[] = []
    let last = -1
    batch.forEach((r) => {
      // A hole sent as a ZERO record stands for a RESYNC record: its region's fingerprints decide whether it is sent.
      if (r.kind !== RecordKind.Resync && !isHoleResync(r.kind, r.flags)) return
      const r0 = Math.floor(r.sector / SECTORS_PER_REGION)
      const r1 = Math.floor((r.sector + Math.max(r.count, 1) - 1) / SECTORS_PER_REGION)
      for (let g = r0; g <= r1; g++) if (g !== last && !out.includes(g)) out.push((last = g))
    })
    return out
  }

  /** Sectors in a region (the last one of a volume may be short). */
  regionSectors(region: number): number {
    return Math.min(SECTORS_PER_REGION, this.totalSectors - region * SECTORS_PER_REGION)
  }

  /**
   * Splits a Fingerprints reply (one little-endian u64 per sector, regions in
   * the order asked) into one array per region, or throws if it does not
   * match the regions asked for.
   */
  parseFingerprints(regions: readonly number[], bytes: Uint8Array): ReplicaFingerprints {
    let want = 0
    for (const g of regions) {
      if (!Number.isSafeInteger(g) || g < 0 || g >= this.regions) {
        throw new TidemarkError('FINGERPRINTS_MALFORMED', `fingerprints for region ${g}; the volume has ${this.regions}`)
      }
      want += this.regionSectors(g) * 8
    }
    if (bytes.length !== want) {
      throw new TidemarkError('FINGERPRINTS_MALFORMED', `fingerprints for ${regions.length} regions are ${bytes.length} bytes, expected ${want}`)
    }
    // One aligned copy, then views per region.
    const all = new BigUint64Array(want / 8)
    if (LITTLE_ENDIAN) new Uint8Array(all.buffer).set(bytes)
    else {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
      for (let i = 0; i < all.length; i++) all[i] = dv.getBigUint64(i * 8, true)
    }
    const out: ReplicaFingerprints = new Map()
    let at = 0
    for (const g of regions) {
      const n = this.regionSectors(g)
      out.set(g, all.subarray(at, at + n))
      at += n
    }
    return out
  }

  /**
   * Drops the sectors the replica already holds from a pulled batch and
   * returns the records to send. `replica` holds the appliance's fingerprints
   * for the regions of the batch's RESYNC records (see resyncRegions), taken
   * after every batch produced before this one; without it RESYNC records
   * compare against the cache.
   */
  scan(batch: RecordBatch, replica: ReplicaFingerprints | null = null): ScanResult {
    const raw = this.run(batch, replica, MODE_RAW, null)
    return { raw, ...this.counts(batch) }
  }

  /**
   * scan, and the result encoded as the ChangeBatch to send (checksum, LZ4
   * when it pays), in the same native call: the agent's send path.
   */
  encode(batch: RecordBatch, replica: ReplicaFingerprints | null = null, compress = true): EncodedScan {
    const checksum = Buffer.allocUnsafe(8)
    const payload = this.run(batch, replica, compress ? MODE_ENCODE_LZ4 : MODE_ENCODE, checksum)
    return this.encoded(batch, payload, checksum)
  }

  /**
   * encode on libuv's pool, so the agent's main thread goes on pulling and
   * sending (and volumes scan in parallel). One at a time per scanner, in
   * pull order: the caller awaits it before the next scan, and the batch's
   * buffer must not change until it settles. With `into` (outputBound(batch
   * bytes) or more) the payload is a view of it.
   */
  async encodeAsync(batch: RecordBatch, replica: ReplicaFingerprints | null = null, compress = true, into?: Buffer): Promise<EncodedScan> {
    if (this.scanning) throw new TidemarkError('INTERNAL', 'MicroScan: a scan was started while another was running (scans must follow pull order)')
    this.scanning = true
    try {
      const checksum = Buffer.allocUnsafe(8)
      const got = await this.run(batch, replica, compress ? MODE_ENCODE_LZ4 : MODE_ENCODE, checksum, true, into)
      return this.encoded(batch, typeof got === 'number' ? into!.subarray(0, got) : got, checksum)
    } finally {
      this.scanning = false
    }
  }

  private encoded(batch: RecordBatch, payload: Buffer, checksum: Buffer): EncodedScan {
    const c = this.counts(batch)
    const msg: ChangeBatch = {
      firstSeq: c.firstSeq,
      lastSeq: c.lastSeq,
      recordCount: c.records,
      rawLength: this.nums[N_RAW_LENGTH],
      compression: this.nums[N_COMPRESSION] === 1 ? 'COMPRESSION_LZ4' : 'COMPRESSION_NONE',
      checksum,
      payload,
      appBytes: c.appBytes,
      changedBytes: c.changedBytes,
    }
    return { msg, ...c }
  }

  /** The payload buffer a scan of a batch of this many bytes needs (encodeAsync's `into`). */
  outputBound(batchBytes: number): number {
    return this.h.outputBound(batchBytes)
  }

  private run(batch: RecordBatch, replica: ReplicaFingerprints | null, mode: number, checksum: Buffer | null): Buffer
  private run(batch: RecordBatch, replica: ReplicaFingerprints | null, mode: number, checksum: Buffer | null, onPool: true, into?: Buffer): Promise<Buffer | number>
  private run(batch: RecordBatch, replica: ReplicaFingerprints | null, mode: number, checksum: Buffer | null, onPool = false, into?: Buffer): Buffer | number | Promise<Buffer | number> {
    const scan = onPool ? this.h.scanAsync.bind(this.h) : this.h.scan.bind(this.h)
    if (!replica) return scan(batch.buffer, null, null, mode, this.nums, checksum, into)
    // The fingerprints laid end to end, in the map's order: one crossing, not one per region.
    let sectors = 0
    for (const fp of replica.values()) sectors += fp.length
    if (this.fpRegions.length < replica.size) this.fpRegions = new Float64Array(replica.size * 2)
    if (this.fpAll.length < sectors) this.fpAll = new BigUint64Array(sectors * 2)
    let i = 0
    let at = 0
    for (const [g, fp] of replica) {
      if (fp.length !== this.regionSectors(g)) {
        throw new TidemarkError('FINGERPRINTS_MALFORMED', `region ${g} has ${fp.length} fingerprints, it holds ${this.regionSectors(g)} sectors`)
      }
      this.fpRegions[i++] = g
      this.fpAll.set(fp, at)
      at += fp.length
    }
    return scan(batch.buffer, this.fpRegions.subarray(0, i), this.fpAll.subarray(0, at), mode, this.nums, checksum, into)
  }

  private counts(batch: RecordBatch): ScanCounts {
    const n = this.nums
    return { records: n[N_RECORDS], firstSeq: batch.firstSeq, lastSeq: batch.lastSeq, appBytes: n[N_APP_BYTES], changedBytes: n[N_CHANGED_BYTES] }
  }
}
