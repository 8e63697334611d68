// Assessment mode (`tidemark agent --assess`): the volumes are served and
// captured as usual, but nothing is replicated. Each pulled batch goes
// through MicroScan against the agent's own fingerprint cache and LZ4,
// exactly as the send path encodes it, and only its numbers are kept: what
// the application wrote, what really changed, what would cross the wire.
// From them: bytes per minute (p50 / p95 / max), the WAN bandwidth that would
// keep the RPO under 1 s, 10 s and 1 min, and the journal's growth per day.
// Zerto's WAN planner and Arcserve's assessment mode answer the same
// question before anyone buys a link.
//
// Memory stays constant however long it runs: minute totals (1440 a day) and,
// for the bandwidth, a queue simulated online for each of a ladder of
// candidate rates (100 ms steps): a byte that arrives waits behind the
// backlog, backlog / rate seconds; the answer for a target is the slowest
// rate whose worst wait stayed under it.
import type { Logger } from 'pino'
import { RECORD_HEADER_SIZE } from '../proto/record'
import { MicroScan } from './microscan'
import type { Tap } from './tap'

/** The step of the bandwidth simulation. */
const STEP_MS = 100
/** Candidate rates: from 8 KB/s, each 5 % above the last, up to about 100 GB/s. */
const RATE_LADDER = Array.from({ length: 340 }, (_, i) => 8e3 * 1.05 ** i)
/** The RPO targets reported. */
export const RPO_TARGETS_S = [1, 10, 60]
const PULL_BYTES = 4 * 1024 * 1024

export interface Spread {
  p50: number
  p95: number
  max: number
}

export interface VolumeAssessment {
  volume: string
  seconds: number
  appBytes: number
  changedBytes: number
  wireBytes: number
  records: number
  /** bytes per minute over the minutes of the run (a run shorter than one: its rate, scaled to a minute) */
  perMinute: { app: Spread; changed: Spread; wire: Spread; minutes: number; scaled: boolean }
  /** the slowest link (bytes per second) that keeps the RPO under each target, or null if none up to 100 GB/s does */
  wanBytesPerSecond: Record<string, number | null>
  /** what the appliance's journal would grow by in a day at this run's mean rate, before retention */
  journalBytesPerDay: number
}

export interface AssessmentReport {
  seconds: number
  volumes: VolumeAssessment[]
}

/** One volume's counters and its online bandwidth simulation. */
class VolumeMeter {
  app = 0
  changed = 0
  wire = 0
  records = 0
  /** totals of the minutes gone, and of the one under way */
  private readonly minutes: Array<[number, number, number]> = []
  private minute: [number, number, number] = [0, 0, 0]
  /** wire bytes in the current step */
  private stepWire = 0
  private readonly backlog = new Float64Array(RATE_LADDER.length)
  private readonly worstWait = new Float64Array(RATE_LADDER.length)

  add(app: number, changed: number, wire: number, records: number): void {
    this.app += app
    this.changed += changed
    this.wire += wire
    this.records += records
    this.minute[0] += app
    this.minute[1] += changed
    this.minute[2] += wire
    this.stepWire += wire
  }

  /** The end of a STEP_MS step: every candidate link sends what it can of its backlog. */
  step(): void {
    const w = this.stepWire
    this.stepWire = 0
    for (let i = 0; i < RATE_LADDER.length; i++) {
      const rate = RATE_LADDER[i]
      const b = Math.max(0, this.backlog[i] + w - (rate * STEP_MS) / 1000)
      this.backlog[i] = b
      // What arrived in this step waits for the backlog before it: the step itself, plus draining the rest.
      const wait = b > 0 ? STEP_MS / 1000 + b / rate : 0
      if (wait > this.worstWait[i]) this.worstWait[i] = wait
    }
  }

  endMinute(): void {
    this.minutes.push(this.minute)
    this.minute = [0, 0, 0]
  }

  report(volume: string, seconds: number): VolumeAssessment {
    const whole = this.minutes.length > 0
    // Without a whole minute, the partial one scaled to a minute.
    const rows = whole ? this.minutes : [this.minute.map((x) => (seconds > 0 ? (x * 60) / seconds : 0)) as [number, number, number]]
    const spread = (k: number): Spread => {
      const v = rows.map((r) => r[k]).sort((a, b) => a - b)
      const at = (q: number): number => v[Math.min(v.length - 1, Math.ceil(q * v.length) - 1)]
      return { p50: at(0.5), p95: at(0.95), max: v[v.length - 1] }
    }
    const wan: Record<string, number | null> = {}
    for (const t of RPO_TARGETS_S) {
      const i = RATE_LADDER.findIndex((_, j) => this.worstWait[j] <= t)
      wan[`${t}s`] = i < 0 ? null : this.wire === 0 ? 0 : Math.round(RATE_LADDER[i])
    }
    // The journal keeps each record's header and its changed sectors (uncompressed).
    const journalBytes = this.changed + this.records * RECORD_HEADER_SIZE
    return {
      volume,
      seconds,
      appBytes: this.app,
      changedBytes: this.changed,
      wireBytes: this.wire,
      records: this.records,
      perMinute: { app: spread(0), changed: spread(1), wire: spread(2), minutes: rows.length, scaled: !whole },
      wanBytesPerSecond: wan,
      journalBytesPerDay: seconds > 0 ? Math.round((journalBytes * 86400) / seconds) : 0,
    }
  }
}

export class Assessment {
  private readonly meters: VolumeMeter[]
  private readonly scans: MicroScan[]
  private readonly loops: Array<Promise<void>> = []
  private readonly abort = new AbortController()
  private readonly started = performance.now()
  private readonly stepTimer: NodeJS.Timeout
  private readonly minuteTimer: NodeJS.Timeout
  private ended: number | null = null

  constructor(
    private readonly tap: Tap,
    cacheBytes: number,
    private readonly log: Logger
  ) {
    const n = tap.volumes.length
    this.meters = tap.volumes.map(() => new VolumeMeter())
    this.scans = tap.volumes.map((v) => new MicroScan({ volumeBytes: tap.volumeSize(v), cacheBytes: Math.floor(cacheBytes / n) }))
    this.stepTimer = setInterval(() => this.meters.forEach((m) => m.step()), STEP_MS)
    this.minuteTimer = setInterval(() => this.meters.forEach((m) => m.endMinute()), 60_000)
    tap.volumes.forEach((_, i) => this.loops.push(this.drain(i)))
  }

  /** Pulls, scans and encodes as the send path would, counts, acknowledges. */
  private async drain(i: number): Promise<void> {
    const ms = this.scans[i]
    const m = this.meters[i]
    try {
      // reuse: the batch is scanned and acknowledged before the next pull
      for await (const batch of this.tap.records(i, { maxBytes: PULL_BYTES, signal: this.abort.signal, reuse: true })) {
        const out = ms.encode(batch)
        m.add(out.appBytes, out.changedBytes, (out.msg.payload as Buffer).length, out.records)
        this.tap.ack(i, batch.lastSeq)
      }
    } catch (err) {
      if ((err as { code?: string }).code === 'TAP_CLOSED') return
      this.log.error({ err, volume: this.tap.volumes[i] }, 'assessment: draining records failed')
    }
  }

  /** Stops counting (the tap is closing); the report covers until now. */
  async stop(): Promise<void> {
    if (this.ended === null) this.ended = performance.now()
    clearInterval(this.stepTimer)
    clearInterval(this.minuteTimer)
    // What the last partial step held still waits on the candidate links.
    this.meters.forEach((m) => m.step())
    this.abort.abort()
    await Promise.all(this.loops)
  }

  report(): AssessmentReport {
    const seconds = ((this.ended ?? performance.now()) - this.started) / 1000
    return { seconds, volumes: this.meters.map((m, i) => m.report(this.tap.volumes[i], seconds)) }
  }
}
