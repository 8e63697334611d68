// The initial copy of one volume: which regions the appliance does not hold
// durably yet, how fast that shrinks, and NAME.sync so a restart resumes it.
//
// When the Welcome asks for a full sync, Tap.resyncFrom(vol, R) turns every
// region from R on into RESYNC records (seqs assigned under the volume lock,
// so replay in seq order is exact while the application writes). A region
// leaves the pending set when an ack covers a batch that carried it (the
// replicator hands the regions of each acknowledged batch to done()); the
// lowest region still pending is saved to NAME.sync about once a second, so
// a restart after kill -9 resumes there instead of at zero. A saved value
// that lags only makes a restart copy more, never less.
//
// When every region has been copied and acknowledged and the tap is recording
// normally again, SyncProgress{done == total} tells the appliance the
// generation is complete (maybeFinish says exactly when).
//
// A copy to a replica that held nothing when it began (durable seq 0) knows
// that every region no batch has written since still reads as zeroes there
// (`fresh`, one bit per region), and asks fingerprints only for the others:
// the copy of a new volume costs no round trips for regions the application
// leaves alone.
import type { Logger } from 'pino'
import type { SyncProgress } from '../proto/generated/tidemark/v1/SyncProgress'
import { zeroSectorFingerprint } from '../proto/hash'
import { carriesSectorData, REGION_SIZE, SECTORS_PER_REGION } from '../proto/record'
import type { RecordBatch } from '../native/record-batch'
import type { MicroScan, ReplicaFingerprints } from './microscan'
import type { Tap } from './tap'
import type { VolumeState } from './volume-state'

const PROGRESS_EVERY_MS = 5_000
export const SYNC_FILE_EVERY_MS = 1_000

export interface SyncProgressStats {
  percent: number
  regionsDone: number
  regionsTotal: number
  mbPerSecond: number
  secondsLeft: number | null
  complete: boolean
}

interface CopyState {
  generation: string
  total: number
  /** one bit per region not yet durable at the appliance */
  pending: Uint32Array
  pendingCount: number
  /** every region below it is durable */
  low: number
  startedAt: number
  startRegions: number
  lastTick: { at: number; done: number }
  rate: number
  savedLow: number
  savedAt: number
  /** set when every region is durable: the volume seq to wait for (see maybeFinish) */
  finishSeq: number
  finishBehindEvents: number
  complete: boolean
}

export interface InitialCopyOptions {
  tap: Tap
  volume: string
  regions: number
  state: VolumeState
  microscan: MicroScan
  logger: Logger
  /** the highest seq the appliance holds durably */
  durableSeq: () => number
  /** report progress to the appliance now, if a stream is up */
  report: () => void
}

const hasBit = (bits: Uint32Array, g: number): boolean => (bits[g >>> 5] & (1 << (g & 31))) !== 0

export class InitialCopy {
  private c: CopyState | null = null
  /**
   * While copying to a replica that held nothing when the copy began: one
   * bit per region that any batch since then may have written. Every other
   * region still reads as zeroes there. Null otherwise.
   */
  private fresh: Uint32Array | null = null
  private zeroPage: BigUint64Array | null = null
  private readonly log: Logger

  constructor(private readonly o: InitialCopyOptions) {
    this.log = o.logger
  }

  /** A copy runs and some region is not yet durable (or the finish not yet reported). */
  get inProgress(): boolean {
    return !!this.c && !this.c.complete
  }

  get complete(): boolean {
    return !!this.c?.complete
  }

  /** The Welcome said whether the appliance needs a full copy. */
  welcome(fullSync: boolean, durableSeq: number, windowEmpty: boolean): void {
    const c = this.c
    if (fullSync) {
      if (c && c.generation === this.o.state.generation) {
        // A copy already runs in this process: the tap still holds its stale
        // regions (pump() reports a finished one again).
        return
      }
      const from = this.o.state.copyResumeRegion(this.o.regions)
      if (from > 0) this.log.info({ nextRegion: from, regions: this.o.regions }, `resuming the initial copy at ${((100 * from) / this.o.regions).toFixed(1)} %`)
      // A replica that holds nothing yet, and nothing of ours on the way to it.
      this.start(from, from === 0 && durableSeq === 0 && windowEmpty)
    } else if (!c || c.complete) {
      if (c) this.log.info('the appliance holds a complete copy')
      this.c = null
      this.o.state.removeCopy().catch((err) => this.log.warn({ err }, 'cannot remove the finished initial copy\'s progress file'))
    }
  }

  /** The replica lost data: copy the whole volume again (to a replica of zeroes if it holds nothing). */
  restart(replicaEmpty: boolean): void {
    this.start(0, replicaEmpty)
  }

  private start(from: number, replicaEmpty: boolean): void {
    const total = this.o.regions
    this.fresh = replicaEmpty ? new Uint32Array(Math.ceil(total / 32)) : null
    const pending = new Uint32Array(Math.ceil(total / 32))
    for (let g = from; g < total; g++) pending[g >>> 5] |= 1 << (g & 31)
    const now = performance.now()
    this.c = {
      generation: this.o.state.generation,
      total,
      pending,
      pendingCount: total - from,
      low: from,
      startedAt: now,
      startRegions: from,
      lastTick: { at: now, done: from },
      rate: 0,
      savedLow: -1,
      savedAt: 0,
      finishSeq: 0,
      finishBehindEvents: 0,
      complete: false,
    }
    this.save(true)
    const marked = from < total ? this.o.tap.resyncFrom(this.o.volume, from) : 0
    this.log.info(
      { regionsTotal: total, fromRegion: from, marked, bytes: (total - from) * REGION_SIZE },
      from === 0 ? 'initial copy: copying the whole volume' : 'initial copy: resuming'
    )
    this.maybeFinish()
  }

  /** Of a batch's RESYNC regions, those the copy still waits for (null: none, or no copy). */
  regionsToCopy(regions: number[]): number[] | null {
    const c = this.c
    if (!c || c.complete || !regions.length) return null
    return regions.filter((g) => hasBit(c.pending, g))
  }

  /** These regions are durable at the appliance. */
  done(regions: number[]): void {
    const c = this.c
    if (!c) return
    for (const g of regions) {
      const m = 1 << (g & 31)
      if (c.pending[g >>> 5] & m) {
        c.pending[g >>> 5] &= ~m
        c.pendingCount--
      }
    }
    while (c.low < c.total && !hasBit(c.pending, c.low)) c.low++
  }

  // ---- a copy to a replica of zeroes ----

  /** Of these regions, those the replica may hold other than zeroes in; null: all of them (not a fresh copy). */
  regionsToAsk(regions: number[]): number[] | null {
    const fresh = this.fresh
    return fresh ? regions.filter((g) => hasBit(fresh, g)) : null
  }

  /** The regions the replica was not asked about read as zeroes there. */
  fillZeroes(regions: number[], replica: ReplicaFingerprints): void {
    for (const g of regions) if (!replica.has(g)) replica.set(g, this.zeroFingerprints(g))
  }

  /** Notes the regions the batch's WRITE and RESYNC records may change at the replica (trims leave zeroes zero). */
  noteWritten(batch: RecordBatch): void {
    const bits = this.fresh
    if (!bits) return
    batch.forEach((r) => {
      if (!carriesSectorData(r.kind)) return
      const first = r.sector
      const g1 = Math.floor((first + r.count - 1) / SECTORS_PER_REGION)
      for (let g = Math.floor(first / SECTORS_PER_REGION); g <= g1; g++) bits[g >>> 5] |= 1 << (g & 31)
    })
  }

  /** The fingerprints of a region that reads as zeroes. */
  private zeroFingerprints(g: number): BigUint64Array {
    if (!this.zeroPage) this.zeroPage = new BigUint64Array(SECTORS_PER_REGION).fill(zeroSectorFingerprint())
    return this.zeroPage.subarray(0, this.o.microscan.regionSectors(g))
  }

  // ---- finishing and progress ----

  /**
   * The copy is complete when every region is durable and the replica equals
   * the volume at some seq: the tap records normally (nothing stale) and the
   * appliance holds every change up to a seq taken at such a moment, with no
   * behind period since.
   */
  maybeFinish(): void {
    const c = this.c
    if (!c || c.complete || c.pendingCount > 0) return
    const s = this.o.tap.stats().find((v) => v.name === this.o.volume)
    if (!s) return
    if (s.mode !== 'normal' || (c.finishSeq && s.behindEvents !== c.finishBehindEvents)) {
      c.finishSeq = 0
      return
    }
    if (!c.finishSeq) {
      c.finishSeq = Math.max(1, s.volumeSeq)
      c.finishBehindEvents = s.behindEvents
    }
    const durableSeq = this.o.durableSeq()
    if (durableSeq < c.finishSeq && s.volumeSeq > 0) return
    c.complete = true
    this.fresh = null
    this.save(true)
    const secs = (performance.now() - c.startedAt) / 1000
    this.log.info({ regionsTotal: c.total, seconds: Math.round(secs * 10) / 10, durableSeq }, 'initial copy complete')
    this.o.report()
  }

  progress(): SyncProgressStats | null {
    const c = this.c
    if (!c) return null
    const done = c.total - c.pendingCount
    const left = c.pendingCount * REGION_SIZE
    return {
      percent: c.total ? Math.floor((1000 * done) / c.total) / 10 : 100,
      regionsDone: done,
      regionsTotal: c.total,
      mbPerSecond: Math.round((c.rate / 1e6) * 10) / 10,
      secondsLeft: c.complete ? 0 : c.rate > 0 ? Math.round(left / c.rate) : null,
      complete: c.complete,
    }
  }

  /** The SyncProgress message for the appliance (null: no copy). Done == total only once complete. */
  progressMessage(): SyncProgress | null {
    const c = this.c
    if (!c) return null
    return {
      regionsDone: c.complete ? c.total : c.total - c.pendingCount - (c.pendingCount === 0 ? 1 : 0),
      regionsTotal: c.total,
      bytesPerSecond: Math.round(c.rate),
    }
  }

  /** Once a second: save the copy's progress; every few seconds, report it. */
  tick(): void {
    const c = this.c
    if (!c) return
    this.maybeFinish()
    this.save(false)
    const now = performance.now()
    if (now - c.lastTick.at < PROGRESS_EVERY_MS || c.complete) return
    const done = c.total - c.pendingCount
    const rate = ((done - c.lastTick.done) * REGION_SIZE) / ((now - c.lastTick.at) / 1000)
    c.rate = c.rate ? c.rate * 0.5 + rate * 0.5 : rate
    c.lastTick = { at: now, done }
    const p = this.progress()!
    this.log.info(
      { percent: p.percent, regionsDone: done, regionsTotal: c.total, MBps: p.mbPerSecond, secondsLeft: p.secondsLeft },
      `initial copy ${p.percent.toFixed(1)} %, ${p.mbPerSecond} MB/s, ${p.secondsLeft === null ? 'time left unknown' : `${p.secondsLeft} s left`}`
    )
    this.o.report()
  }

  /** Queues NAME.sync when the lowest pending region moved (at most once a second unless forced). */
  save(force: boolean): void {
    const c = this.c
    if (!c) return
    const next = c.complete ? c.total : c.low
    const now = performance.now()
    if (next === c.savedLow || (!force && now - c.savedAt < SYNC_FILE_EVERY_MS)) return
    c.savedLow = next
    c.savedAt = now
    this.o.state.saveCopy({ generation: c.generation, nextRegion: next, regions: c.total }).catch((err) => {
      // Try again at the next tick (unless a later value was saved meanwhile).
      if (c.savedLow === next) c.savedLow = -1
      this.log.warn({ err }, 'cannot save the initial copy\'s progress; a restart would start it over')
    })
  }
}
