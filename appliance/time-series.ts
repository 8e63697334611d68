// The appliance's time series for the dashboard: every second, each volume's
// status (volume-status.ts) and the store's free space become one sample,
// kept at two resolutions under DATA/timeseries/ in ring files
// (series-ring.ts, which says why rings and not LevelDB):
//   NAME.1s.ring    1 s for the last hour (3600 slots)
//   NAME.1m.ring    1 min for 30 days (43200 slots): the minute's average,
//                   its maximum for the RPO (a minute's worst is what a
//                   breach is about; its average would hide a spike)
//   _store.1s.ring, _store.1m.ring   the same for the store ('_' starts no volume name)
// So the disk used is fixed per volume (about 0.35 MB + 4.1 MB) whatever the
// uptime. A minute is written when the next one starts, and the minute in
// progress at close() is written then; at open, the minutes the 1 s ring
// holds whole are written again from it (a SIGKILL mid-minute lost one), and
// the minute in progress is taken up where it was.
//
// Sampling reads the same status() the API and /metrics serve, so a chart
// can never disagree with them. A ring file per volume is opened the first
// time the volume is sampled and stays open (two fds per volume).
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { SERIES_STEPS, STORE_COLUMNS, VOLUME_COLUMNS, type SeriesReply, type SeriesStep } from '../client/series-api'
import type { StoreStatus, VolumeStatus } from '../client/status-api'
import { TidemarkError } from '../proto/errors'
import { SeriesRing, type RingRange } from './series-ring'

const SECOND = SERIES_STEPS['1s']
const MINUTE = SERIES_STEPS['1m']
export const FINE_SLOTS = 3600
export const COARSE_SLOTS = 30 * 24 * 60
const STORE_KEY = '_store'

/** What the series read: the status source (volume-status.ts), or a test's. */
export interface SeriesSource {
  volumes(): Promise<VolumeStatus[]>
  storeStatus(): Promise<StoreStatus>
}

export function volumeSample(s: VolumeStatus): number[] {
  const row: Record<(typeof VOLUME_COLUMNS)[number], number | null> = {
    rpoSeconds: s.rpo.seconds,
    rpoTargetSeconds: s.rpo.targetSeconds,
    rpoErrorSeconds: s.rpo.errorSeconds,
    appBytesPerSecond: s.rates.appBytesPerSecond,
    changedBytesPerSecond: s.rates.changedBytesPerSecond,
    wireBytesPerSecond: s.rates.wireBytesPerSecond,
    journalBytes: s.journal.bytes,
    historySeconds: s.history.seconds,
    historyTargetSeconds: s.history.targetSeconds,
    backlogBytes: s.backlogBytes,
  }
  return VOLUME_COLUMNS.map((c) => row[c] ?? NaN)
}

/** One series (a volume's or the store's): its two rings and the minute being summed. */
class Track {
  minute = 0
  readonly sum: Float64Array
  readonly count: Uint32Array
  readonly max: Float64Array

  constructor(
    readonly fine: SeriesRing,
    readonly coarse: SeriesRing,
    /** the column whose minute is its maximum, not its average (-1: none) */
    private readonly maxColumn: number
  ) {
    const n = fine.shape.columns
    this.sum = new Float64Array(n)
    this.count = new Uint32Array(n)
    this.max = new Float64Array(n)
  }

  add(tMs: number, values: ArrayLike<number>): void {
    const m = Math.floor(tMs / MINUTE)
    if (m !== this.minute) {
      this.flush()
      this.minute = m
    }
    for (let c = 0; c < values.length; c++) {
      const v = values[c]
      if (Number.isNaN(v)) continue // "not known" does not pull an average to zero
      if (this.count[c] === 0 || v > this.max[c]) this.max[c] = v
      this.sum[c] += v
      this.count[c]++
    }
  }

  /** Writes the minute summed so far (if any) to the 1 min ring. */
  flush(): void {
    if (this.minute === 0 || !this.count.some((n) => n > 0)) return
    const row = Array.from(this.sum, (s, c) => (this.count[c] === 0 ? NaN : c === this.maxColumn ? this.max[c] : s / this.count[c]))
    this.coarse.write(this.minute * MINUTE, row)
    this.sum.fill(0)
    this.count.fill(0)
  }

  /**
   * After a restart: rewrites every minute the 1 s ring holds whole from its
   * seconds (a crash lost the minute in progress, or a close wrote it half
   * done and the run after it added more), and takes up the current one. The
   * 1 s ring holds every sample that went into a minute, so rewriting a
   * minute it holds whole gives what the live sums gave; the oldest minute,
   * partly overwritten already, is left as it was written.
   */
  recover(nowMs: number): void {
    const firstWhole = Math.ceil((nowMs - (FINE_SLOTS - 1) * SECOND) / MINUTE) * MINUTE
    const fine = this.fine.read(firstWhole, nowMs)
    for (let i = 0; i < fine.t.length; i++) this.add(fine.t[i], fine.values.map((col) => col[i]))
    // A past minute left in the sums goes to disk now; the current one stays open.
    if (this.minute !== Math.floor(nowMs / MINUTE)) {
      this.flush()
      this.minute = 0
    }
  }

  close(): void {
    this.flush()
    this.fine.close()
    this.coarse.close()
  }
}

export class TimeSeries {
  private readonly tracks = new Map<string, Track>()
  private timer: NodeJS.Timeout | null = null
  private sampling: Promise<void> | null = null
  private closed = false

  constructor(
    private readonly dir: string,
    private readonly source: SeriesSource,
    private readonly log?: Logger
  ) {}

  /** DATA/timeseries: where an appliance with data directory DATA keeps its series. */
  static dirOf(dataDir: string): string {
    return path.join(dataDir, 'timeseries')
  }

  start(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.tick()
    this.timer = setInterval(() => this.tick(), SECOND)
    this.timer.unref()
  }

  private tick(): void {
    // A sample still running (a slow statfs on a busy disk) is not started twice.
    if (this.sampling) return
    this.sampling = this.sample().then(
      () => {
        this.sampling = null
      },
      (err: unknown) => {
        this.sampling = null
        this.log?.warn({ err }, `time series sample failed: ${(err as Error).message}`)
      }
    )
  }

  /** Takes one sample of every volume and of the store, at nowMs. */
  async sample(nowMs = Date.now()): Promise<void> {
    const [vols, store] = await Promise.all([this.source.volumes(), this.source.storeStatus()])
    if (this.closed) return
    for (const v of vols) this.record(v.volume, nowMs, volumeSample(v))
    this.record(STORE_KEY, nowMs, [store.freeBytes])
  }

  private record(key: string, tMs: number, values: number[]): void {
    const tr = this.track(key, values.length, tMs)
    tr.fine.write(tMs, values)
    tr.add(tMs, values)
  }

  private track(key: string, columns: number, nowMs: number): Track {
    let tr = this.tracks.get(key)
    if (tr) return tr
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    const fine = SeriesRing.open(path.join(this.dir, `${key}.1s.ring`), { columns, stepMs: SECOND, slots: FINE_SLOTS })
    const coarse = SeriesRing.open(path.join(this.dir, `${key}.1m.ring`), { columns, stepMs: MINUTE, slots: COARSE_SLOTS })
    tr = new Track(fine, coarse, key === STORE_KEY ? -1 : VOLUME_COLUMNS.indexOf('rpoSeconds'))
    tr.recover(nowMs)
    this.tracks.set(key, tr)
    return tr
  }

  /**
   * A volume's series (or the store's, volume null) between fromMs and toMs
   * at `step`; the default step is 1s when fromMs is within the 1 s ring's
   * reach of nowMs, else 1m. A volume never sampled has no points (the caller
   * says whether it exists).
   */
  series(volume: string | null, range: { fromMs?: number; toMs?: number; step?: SeriesStep }, nowMs = Date.now()): SeriesReply {
    const toMs = range.toMs ?? nowMs
    const fromMs = range.fromMs ?? toMs - FINE_SLOTS * SECOND
    if (fromMs > toMs) throw new TidemarkError('INVALID_ARGUMENT', `from ${new Date(fromMs).toISOString()} is after to ${new Date(toMs).toISOString()}`)
    const step: SeriesStep = range.step ?? (fromMs >= nowMs - FINE_SLOTS * SECOND ? '1s' : '1m')
    const columns: readonly string[] = volume === null ? STORE_COLUMNS : VOLUME_COLUMNS
    const key = volume ?? STORE_KEY
    const tr = this.tracks.get(key)
    let got: RingRange
    if (tr) {
      got = (step === '1s' ? tr.fine : tr.coarse).read(fromMs, toMs)
    } else {
      // Not sampled since this start (yet): its files may still hold what an earlier run kept.
      got = this.readClosed(key, columns.length, step, fromMs, toMs)
    }
    const reply: SeriesReply = { volume, step, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString(), t: got.t.map((ms) => ms / 1000) }
    const cols = reply as unknown as Record<string, Array<number | null>>
    columns.forEach((c, i) => (cols[c] = got.values[i].map((v) => (Number.isNaN(v) ? null : v))))
    return reply
  }

  private readClosed(key: string, columns: number, step: SeriesStep, fromMs: number, toMs: number): RingRange {
    const file = path.join(this.dir, `${key}.${step}.ring`)
    const empty: RingRange = { t: [], values: Array.from({ length: columns }, () => []) }
    if (!fs.existsSync(file)) return empty
    const ring = SeriesRing.open(file, { columns, stepMs: SERIES_STEPS[step], slots: step === '1s' ? FINE_SLOTS : COARSE_SLOTS })
    try {
      return ring.read(fromMs, toMs)
    } finally {
      ring.close()
    }
  }

  /** Stops sampling, writes the minute in progress, closes the files. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.sampling
    this.closed = true
    for (const tr of this.tracks.values()) tr.close()
    this.tracks.clear()
  }
}
