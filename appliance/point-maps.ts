// The point maps of one volume (native/src/point_map.h): for a seq, where
// every sector's newest version at or below it lives, so that the
// appliance's NBD exports and Admin.Read read a point with a pread instead
// of an index walk per chunk.
//
// A map is built by one forward pass over the index (image.ts forwardPlans,
// the walk a whole-volume restore makes), written to a file under
// DATA/maps/, mmap'd by the native side and unlinked at once: nothing is left
// behind however the process ends, and the kernel pages the map, so memory
// stays bounded for any volume size. Built maps are kept for the last few
// seqs asked for (a view or a remote TimeView reads one seq many times).
//
// The newest point has a live map: built once, then every committed batch's
// extents are painted over it in memory (batch-writer.ts calls committed()),
// so `VOLUME@latest` opens at once however fast the volume is written. When
// its in-memory delta passes LIVE_DELTA_MAX extents, the next request for the
// newest point builds a fresh base map. A compaction or a reload drops every
// map (invalidate()): exports already open keep theirs, whose files the
// native side holds by dup'd descriptors.
//
// Every map reads through the volume's replica image (replica-image.ts)
// where the image holds the map's version of a sector: the live map is also
// what a replica round copies from.
import fs from 'node:fs'
import path from 'node:path'
import { MAP_BASE_FILE, MAP_EXTENT_SIZE, MAP_ZERO_FILE, openPointMap, putExtent, type PointMapHandle, type ReplicaImageHandle } from '../native/appliance-nbd'
import { SECTOR_SIZE, carriesSectorData } from '../proto/record'
import { TidemarkError } from '../proto/errors'
import { CHUNK_BYTES, hasEntries } from './index-keys'
import { CHANGE_DATA_OFFSET } from './journal-format'
import { BASE, forwardPlans } from './image'
import type { ReaderLeases } from './image-reads'
import { R_COUNT, R_KIND, R_OFFSET, R_SECTOR, STRIDE } from './record-check'
import type { VolumeLedger } from './volume-ledger'

/** Built maps kept per volume, besides the live one. */
const CACHED_MAPS = 4
/** In-memory extents the live map takes before its base is rebuilt. */
export const LIVE_DELTA_MAX = 256 * 1024
/** Extents written to the map file at a time. */
const WRITE_EXTENTS = 64 * 1024
/** Longest run one extent holds (its count is 32 bits). */
const MAX_RUN = 0x7fffffff

/**
 * The byte ranges of whole regions, adjacent ones joined, for
 * PointMap.fingerprints: per-sector xxh64s (8 bytes little-endian each) as
 * the map holds them, what a resync or a failback compares its own sectors
 * against, read and hashed on a worker thread.
 */
export function regionRanges(volume: string, size: number, regions: number[]): Float64Array {
  const ranges: number[] = []
  for (const r of regions) {
    const off = r * CHUNK_BYTES
    if (!Number.isSafeInteger(r) || r < 0 || off >= size) {
      throw new TidemarkError('REGION_OUT_OF_RANGE', `volume ${volume}: region ${r} is outside the ${size}-byte volume`)
    }
    const len = Math.min(CHUNK_BYTES, size - off)
    const n = ranges.length
    if (n && ranges[n - 2] + ranges[n - 1] === off) ranges[n - 1] += len
    else ranges.push(off, len)
  }
  return new Float64Array(ranges)
}

/** One committed batch, as the batch writer has it. */
export interface CommittedBatch {
  recs: Float64Array
  recordCount: number
  segment: number
  /** The batch's frame offset in its segment. */
  offset: number
  lastSeq: number
}

interface Live {
  seq: number
  map: PointMapHandle
  files: Set<number>
}

export class PointMaps {
  private readonly cache = new Map<number, Promise<PointMapHandle>>()
  private live: Live | null = null
  private liveBuild: Promise<Live> | null = null
  /** Batches committed while the live map is being built. */
  private pending: CommittedBatch[] = []
  private generation = 0
  private replica: ReplicaImageHandle | undefined
  built = 0
  buildMs = 0

  constructor(
    private readonly l: VolumeLedger,
    private readonly leases: ReaderLeases,
    private readonly mapsDir: string
  ) {}

  /** The map of `seq` (the caller checked that seq is readable). */
  async get(seq: number): Promise<PointMapHandle> {
    if (seq === this.l.durableSeq) {
      const live = await this.liveMap()
      // A batch may have committed while the map was built: then it is no longer this seq's.
      if (live.seq === seq) return live.map
    }
    let p = this.cache.get(seq)
    if (p) {
      this.cache.delete(seq) // most recently used last
      this.cache.set(seq, p)
      return p
    }
    p = this.build(seq).then((b) => b.map)
    p.catch(() => this.cache.delete(seq))
    this.cache.set(seq, p)
    while (this.cache.size > CACHED_MAPS) this.cache.delete(this.cache.keys().next().value as number)
    return p
  }

  /** Maps made from now on read through the volume's replica image. */
  useReplica(replica: ReplicaImageHandle): void {
    this.replica = replica
  }

  /** The newest point's live map and the seq it is at now (a replica round's source). */
  async newest(): Promise<{ seq: number; map: PointMapHandle }> {
    return this.liveMap()
  }

  /** Paints a committed batch over the live map (called in commit order, after durableSeq moved). */
  committed(b: CommittedBatch): void {
    if (this.liveBuild) {
      this.pending.push(b)
      return
    }
    if (this.live) this.apply(this.live, b)
  }

  /** Forgets every map (the base or the segments changed). Open exports keep theirs. */
  invalidate(): void {
    this.generation++
    this.cache.clear()
    this.live = null
    this.liveBuild = null
    this.pending = []
  }

  stats(): { built: number; buildMs: number; cached: number; liveSeq: number; liveDelta: number } {
    return { built: this.built, buildMs: this.buildMs, cached: this.cache.size, liveSeq: this.live?.seq ?? 0, liveDelta: this.live?.map.deltaExtents() ?? 0 }
  }

  private async liveMap(): Promise<Live> {
    if (this.live && this.live.map.deltaExtents() <= LIVE_DELTA_MAX) return this.live
    if (this.liveBuild) return this.liveBuild
    const gen = this.generation
    this.pending = []
    const p = this.build(this.l.durableSeq).then((b) => {
      if (gen !== this.generation) return b // invalidated meanwhile: serve this request, keep nothing
      const live: Live = { seq: b.seq, map: b.map, files: b.files }
      for (const c of this.pending) if (c.lastSeq > live.seq) this.apply(live, c)
      this.pending = []
      this.live = live
      this.liveBuild = null
      return live
    })
    p.catch(() => {
      if (gen === this.generation) this.liveBuild = null
    })
    this.liveBuild = p
    return p
  }

  private apply(live: Live, b: CommittedBatch): void {
    const seg = this.l.segment(b.segment)
    if (!live.files.has(b.segment) && seg) {
      live.map.addFile(b.segment, seg.fd)
      live.files.add(b.segment)
    }
    const buf = Buffer.allocUnsafe(b.recordCount * MAP_EXTENT_SIZE)
    let n = 0
    for (let i = 0; i < b.recordCount; i++) {
      const o = i * STRIDE
      const kind = b.recs[o + R_KIND]
      const count = b.recs[o + R_COUNT]
      if (!hasEntries(kind, count)) continue
      const data = carriesSectorData(kind)
      // R_OFFSET is the record's frame offset inside the batch (batch-writer.ts).
      const pos = data ? b.offset + b.recs[o + R_OFFSET] + CHANGE_DATA_OFFSET : 0
      putExtent(buf, n * MAP_EXTENT_SIZE, b.recs[o + R_SECTOR], count, data ? b.segment : MAP_ZERO_FILE, pos)
      n++
    }
    if (n) live.map.apply(buf.subarray(0, n * MAP_EXTENT_SIZE))
    live.seq = b.lastSeq
  }

  /** One forward pass over the index at seq, into a map file the native side maps. */
  private async build(seq: number): Promise<{ seq: number; map: PointMapHandle; files: Set<number> }> {
    const t0 = performance.now()
    const l = this.l
    const base = this.leases.enter(l.base)
    await fs.promises.mkdir(this.mapsDir, { recursive: true, mode: 0o700 })
    const file = path.join(this.mapsDir, `${l.meta.name}.${seq}.${process.pid}.${Math.random().toString(36).slice(2)}.map`)
    const fh = await fs.promises.open(file, 'w', 0o600)
    try {
      const buf = Buffer.allocUnsafe(WRITE_EXTENTS * MAP_EXTENT_SIZE)
      let n = 0
      // The run being extended: sectors [runSector, runSector + runCount) from runFile at runPos.
      let runSector = 0
      let runCount = 0
      let runFile = MAP_ZERO_FILE
      let runPos = 0
      const emit = async (): Promise<void> => {
        if (runCount === 0) return
        putExtent(buf, n * MAP_EXTENT_SIZE, runSector, runCount, runFile, runPos)
        runCount = 0
        if (++n === WRITE_EXTENTS) {
          await fh.write(buf, 0, n * MAP_EXTENT_SIZE)
          n = 0
        }
      }
      for await (const plan of forwardPlans(l, seq, base)) {
        for (let i = 0; i < plan.n; i++) {
          const s = plan.seg[i]
          if (s === -1) {
            await emit()
            continue
          }
          const sector = plan.first + i
          const file = s === BASE ? MAP_BASE_FILE : s
          const pos = plan.off[i]
          if (runCount && runFile === file && runSector + runCount === sector && runPos + runCount * SECTOR_SIZE === pos && runCount < MAX_RUN) {
            runCount++
            continue
          }
          await emit()
          runSector = sector
          runCount = 1
          runFile = file
          runPos = pos
        }
      }
      await emit()
      if (n) await fh.write(buf, 0, n * MAP_EXTENT_SIZE)
      await fh.close()
      const files: Array<[number, number]> = []
      const nums = new Set<number>()
      for (const [num, seg] of l.journal.segments) {
        files.push([num, seg.fd])
        nums.add(num)
      }
      if (base) files.push([MAP_BASE_FILE, base.fd])
      const map = openPointMap({ path: file, size: l.meta.size, files, replica: this.replica })
      this.built++
      this.buildMs += performance.now() - t0
      return { seq, map, files: nums }
    } finally {
      await fh.close().catch(() => {})
      await fs.promises.rm(file, { force: true })
      this.leases.leave(base)
    }
  }
}
