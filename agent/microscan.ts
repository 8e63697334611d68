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
// unknown, pages kept in a few large BigUint64Array slabs and evicted whole,
// least recently used first (a Map keeps insertion order; touching a page
// re-inserts it). A miss only costs bandwidth: an unknown sector is sent.
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
import os from 'node:os'
import type { RecordBatch, RecordCursor } from '../native/record-batch'
import {
  RECORD_HEADER_SIZE,
  REGION_SIZE,
  RecordKind,
  SECTOR_SIZE,
  SECTORS_PER_REGION,
  carriesSectorData,
  setRecordDataLength,
  setRecordSectors,
  zeroesSectors,
} from '../proto/record'
import { sectorFingerprints, zeroSectorFingerprint } from '../proto/hash'
import { TidemarkError } from '../proto/errors'

// The cache's page is the dirty map's region (proto/record.ts), re-exported
// under the names agent/replicator.ts imports.
export { SECTORS_PER_REGION }
export const REGION_BYTES = REGION_SIZE
export const DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

const PAGE_BYTES = SECTORS_PER_REGION * 8
/** A page's share of the Map entry and slot bookkeeping, counted against the budget. */
const PAGE_OVERHEAD = 64
/** Pages per slab: slabs of 1 MiB are allocated as the cache fills. */
const SLAB_SHIFT = 10
const SLAB_PAGES = 1 << SLAB_SHIFT
/** A TRIM/ZERO over more sectors than this only updates pages already cached. */
const TRIM_CREATE_LIMIT = 16 * SECTORS_PER_REGION
const LITTLE_ENDIAN = os.endianness() === 'LE'

export interface MicroScanOptions {
  /** size of the volume, bytes */
  volumeBytes: number
  /** fingerprint cache budget, bytes (default 256 MiB); at most one page per region is ever held */
  cacheBytes?: number
  /** false: send every sector (for comparisons); trims still travel as metadata */
  enabled?: boolean
}

export interface ScanResult {
  /** the records to send, in the tap's layout */
  raw: Buffer
  records: number
  /** the pulled batch's seq range (even if every record was dropped) */
  firstSeq: number
  lastSeq: number
  /** bytes the application wrote (WRITE records) */
  appBytes: number
  /** sector bytes sent (WRITE and RESYNC) */
  changedBytes: number
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

/**
 * Writes one record for `count` sectors of a captured WRITE/RESYNC record `r`
 * (its seq, kind and flags), starting `from` sectors into its data; returns
 * the new write offset.
 */
function emit(out: Buffer, w: number, r: RecordCursor, sector: number, count: number, data: Buffer, from: number): number {
  r.buf.copy(out, w, r.offset, r.offset + RECORD_HEADER_SIZE)
  setRecordSectors(out, w, sector, count, count * SECTOR_SIZE)
  w += RECORD_HEADER_SIZE
  data.copy(out, w, from * SECTOR_SIZE, (from + count) * SECTOR_SIZE)
  return w + count * SECTOR_SIZE
}

export class MicroScan {
  readonly enabled: boolean
  readonly maxPages: number
  private readonly regions: number
  private readonly totalSectors: number
  private readonly slabs: BigUint64Array[] = []
  /** region -> slot, least recently used first */
  private readonly slots = new Map<number, number>()
  private nextSlot = 0
  private scratch = Buffer.alloc(0)
  private fps = new BigUint64Array(2048)
  private zeroFp = 0n
  private st: MicroScanStats

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
    this.maxPages = Math.min(this.regions, Math.floor(budget / (PAGE_BYTES + PAGE_OVERHEAD)))
    this.st = { cachePages: 0, cacheMaxPages: this.maxPages, cacheBytes: 0, sectorsSeen: 0, sectorsDropped: 0, misses: 0, evictions: 0 }
  }

  stats(): MicroScanStats {
    this.st.cachePages = this.slots.size
    let slabBytes = 0
    for (const slab of this.slabs) slabBytes += slab.byteLength
    this.st.cacheBytes = slabBytes + this.slots.size * PAGE_OVERHEAD
    return { ...this.st }
  }

  /** Forgets everything: the replica may no longer hold what the cache says. */
  clear(): void {
    this.slots.clear()
    this.nextSlot = 0
  }

  /** The distinct regions of the batch's RESYNC records, in order (what to ask the appliance for). */
  resyncRegions(batch: RecordBatch): number[] {
    const out: number[] = []
    let last = -1
    batch.forEach((r) => {
      if (r.kind !== RecordKind.Resync) return
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
    if (!this.zeroFp) this.zeroFp = zeroSectorFingerprint()
    // Worst case: every other sector changed, a 32-byte header per 512 bytes.
    const need = Math.ceil((batch.buffer.length * 17) / 16) + RECORD_HEADER_SIZE
    if (this.scratch.length < need) this.scratch = Buffer.allocUnsafe(Math.max(need, 1 << 20))
    const out = this.scratch
    let w = 0
    let records = 0
    let appBytes = 0
    let changedSectors = 0
    // Sectors of the replica's regions written earlier in this batch.
    let touched: Map<number, Uint8Array> | null = null
    if (replica) {
      touched = new Map()
      for (const [g, fp] of replica) {
        touched.set(g, new Uint8Array(SECTORS_PER_REGION))
        // The cache learns what the replica holds, as of the start of this batch.
        const slot = this.page(g, true)
        if (slot < 0) continue
        const slab = this.slabs[slot >> SLAB_SHIFT]
        slab.set(fp, (slot & (SLAB_PAGES - 1)) * SECTORS_PER_REGION)
      }
    }

    batch.forEach((r) => {
      const kind = r.kind
      if (carriesSectorData(kind)) {
        if (kind === RecordKind.Write) appBytes += r.count * SECTOR_SIZE
        const data = r.data()
        const count = r.count
        const first = r.sector
        if (this.fps.length < count) this.fps = new BigUint64Array(count)
        const fps = this.fps
        sectorFingerprints(data, fps)
        this.st.sectorsSeen += count
        let runStart = -1
        let region = -1
        let slab: BigUint64Array | null = null
        let base = 0
        let rf: BigUint64Array | undefined
        let tm: Uint8Array | undefined
        for (let i = 0; i < count; i++) {
          const sector = first + i
          const g = Math.floor(sector / SECTORS_PER_REGION)
          if (g !== region) {
            region = g
            const slot = this.page(g, true)
            slab = slot < 0 ? null : this.slabs[slot >> SLAB_SHIFT]
            base = (slot & (SLAB_PAGES - 1)) * SECTORS_PER_REGION
            rf = kind === RecordKind.Resync ? replica?.get(g) : undefined
            tm = touched?.get(g)
          }
          const off = sector - g * SECTORS_PER_REGION
          const fp = fps[i]
          let known: bigint
          if (rf && !(tm && tm[off])) known = rf[off]
          else known = slab ? slab[base + off] : 0n
          if (tm) tm[off] = 1
          if (this.enabled && known !== 0n && known === fp) {
            this.st.sectorsDropped++
            if (runStart >= 0) {
              w = emit(out, w, r, first + runStart, i - runStart, data, runStart)
              changedSectors += i - runStart
              records++
              runStart = -1
            }
          } else {
            if (known === 0n) this.st.misses++
            if (runStart < 0) runStart = i
          }
          if (slab) slab[base + off] = fp
        }
        if (runStart >= 0) {
          w = emit(out, w, r, first + runStart, count - runStart, data, runStart)
          changedSectors += count - runStart
          records++
        }
      } else if (zeroesSectors(kind)) {
        // Metadata only: the header as captured (it carries no data).
        r.buf.copy(out, w, r.offset, r.offset + RECORD_HEADER_SIZE)
        setRecordDataLength(out, w, 0)
        w += RECORD_HEADER_SIZE
        records++
        this.setZero(r.sector, r.count, touched)
      } else {
        // FLUSH (and anything newer than this reader): passed through whole.
        const n = r.byteLength
        r.buf.copy(out, w, r.offset, r.offset + n)
        w += n
        records++
      }
    })

    return {
      raw: Buffer.from(out.subarray(0, w)),
      records,
      firstSeq: batch.firstSeq,
      lastSeq: batch.lastSeq,
      appBytes,
      changedBytes: changedSectors * SECTOR_SIZE,
    }
  }

  /** The sectors read as zeroes now. */
  private setZero(first: number, count: number, touched: Map<number, Uint8Array> | null): void {
    if (count <= 0) return
    const end = first + count
    const g0 = Math.floor(first / SECTORS_PER_REGION)
    const g1 = Math.floor((end - 1) / SECTORS_PER_REGION)
    const fill = (g: number, slot: number): void => {
      const lo = Math.max(first, g * SECTORS_PER_REGION) - g * SECTORS_PER_REGION
      const hi = Math.min(end, (g + 1) * SECTORS_PER_REGION) - g * SECTORS_PER_REGION
      if (slot >= 0) {
        const base = (slot & (SLAB_PAGES - 1)) * SECTORS_PER_REGION
        this.slabs[slot >> SLAB_SHIFT].fill(this.zeroFp, base + lo, base + hi)
      }
      const tm = touched?.get(g)
      if (tm) tm.fill(1, lo, hi)
    }
    if (count <= TRIM_CREATE_LIMIT) {
      for (let g = g0; g <= g1; g++) fill(g, this.page(g, true))
      return
    }
    // A huge range (a mkfs discarding the device): update only what is held.
    if (g1 - g0 + 1 <= this.slots.size) {
      for (let g = g0; g <= g1; g++) {
        const slot = this.slots.get(g)
        if (slot !== undefined || touched?.has(g)) fill(g, slot ?? -1)
      }
    } else {
      for (const [g, slot] of this.slots) if (g >= g0 && g <= g1) fill(g, slot)
      if (touched) for (const g of touched.keys()) if (g >= g0 && g <= g1 && !this.slots.has(g)) fill(g, -1)
    }
  }

  /** The slot of a region's page, most recently used now; with create, allocated (evicting) if absent. -1 if none. */
  private page(region: number, create: boolean): number {
    const slot = this.slots.get(region)
    if (slot !== undefined) {
      this.slots.delete(region)
      this.slots.set(region, slot)
      return slot
    }
    if (!create || this.maxPages === 0) return -1
    let s: number
    if (this.nextSlot < this.maxPages) {
      s = this.nextSlot++
      if (s >> SLAB_SHIFT >= this.slabs.length) {
        const left = this.maxPages - (this.slabs.length << SLAB_SHIFT)
        this.slabs.push(new BigUint64Array(Math.min(SLAB_PAGES, left) * SECTORS_PER_REGION))
      }
    } else {
      const oldest = this.slots.keys().next().value as number
      s = this.slots.get(oldest)!
      this.slots.delete(oldest)
      this.st.evictions++
    }
    const base = (s & (SLAB_PAGES - 1)) * SECTORS_PER_REGION
    this.slabs[s >> SLAB_SHIFT].fill(0n, base, base + SECTORS_PER_REGION)
    this.slots.set(region, s)
    return s
  }
}
