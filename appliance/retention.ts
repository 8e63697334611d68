// Retention: which history a volume keeps, and when to compact the rest.
//
// A rule is `PATTERN=SPEC` (`tidemark appliance --retain`, repeatable; the
// first rule whose pattern matches a volume applies: NAME, PREFIX* or *).
// SPEC is a comma-separated list of
//   DURATION   keep every point of the last DURATION (30m, 12h, 7d)
//   N marks    keep the newest N TimeMarks and every point after the oldest of them
//   SIZE       cap the journal at SIZE (20G): past it, history older than the
//              other rules want is given up too ("history shrinking"), and
//              stats warns
// A point is kept if any of the time and marks rules keeps it; pinned
// TimeMarks, the seqs of named views (view-registry.ts), and every point
// after them, are always kept. Without a rule a
// volume keeps everything. Under a retention lock (retention-lock.ts) no
// point younger than the lock is given up, by any rule, the size cap or
// disk pressure.
//
// Only the appliance's own clock and rules decide what goes, never what an
// agent says (a compromised agent must not shorten history):
// - Ages are measured by when the appliance committed a point (its batch's
//   commit time), as well as by the capture time the agent wrote in its
//   records: a point is old only when both say so, so records claiming to be
//   weeks old are not let go of early, by a window or by the lock.
// - An "N marks" rule counts TimeMarks, which agents create. A flood of marks
//   would push the older ones out in seconds. With a mark rate cap
//   (--limit-mark-rate COUNT/PERIOD, on by default) the marks rule never gives
//   up a point younger than N x PERIOD / COUNT: what N marks take at the
//   fastest rate an honest agent marks. Agents marking slower lose nothing;
//   faster ones keep more (the floor holds), and retention says so in stats
//   and the log. Marks are never refused: a refused mark would stop
//   replication of the writes around it.
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import type { ApplianceStore } from './store'
import type { CompactResult, VolumeStore } from './volume-store'

export interface RetentionSpec {
  timeMs?: number
  marks?: number
  maxBytes?: number
  text: string
}

export interface RetentionRule {
  pattern: string
  spec: RetentionSpec
}

/** --limit-mark-rate: at most `count` TimeMarks per `periodMs` count toward a marks rule's reach. */
export interface MarkRate {
  count: number
  periodMs: number
  text: string
}

/** The default mark rate: one every 5 minutes, faster than most schedules of application-consistent marks. */
export const DEFAULT_MARK_RATE = '12/h'

/** "12/h", "10/30m" (COUNT/PERIOD, PERIOD a duration or a unit) as a rate; "off" as null. */
export function parseMarkRate(text: string): MarkRate | null {
  if (text === 'off') return null
  const m = /^([1-9]\d*)\/(\d+(?:\.\d+)?)?([smhdw])$/.exec(text.trim())
  const periodMs = m ? (m[2] === undefined ? 1 : Number(m[2])) * UNITS[m[3]] : 0
  if (!m || !(periodMs > 0)) throw new TidemarkError('USAGE', `--limit-mark-rate '${text}' must be COUNT/PERIOD (12/h, 10/30m) or off`)
  return { count: Number(m[1]), periodMs, text }
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** "30m", "12h", "7d" as ms; null if it is not a duration. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(text)
  return m ? Number(m[1]) * UNITS[m[2]] : null
}

export function parseRetentionSpec(text: string): RetentionSpec {
  const spec: RetentionSpec = { text }
  for (const part of text.split(',').map((p) => p.trim())) {
    let m: RegExpExecArray | null
    const ms = parseDuration(part)
    if (ms !== null) spec.timeMs = ms
    else if ((m = /^(\d+)\s*marks?$/.exec(part))) spec.marks = Number(m[1])
    else if ((m = /^(\d+)([KMGT])i?B?$/i.exec(part))) spec.maxBytes = Number(m[1]) * 1024 ** (' KMGT'.indexOf(m[2].toUpperCase()))
    else throw new TidemarkError('USAGE', `retention '${part}' is not a duration (7d, 12h, 30m), a number of marks (100marks) or a size (20G)`)
  }
  if (spec.marks === 0) throw new TidemarkError('USAGE', `retention '${text}': keep at least 1 mark`)
  if (spec.timeMs === undefined && spec.marks === undefined && spec.maxBytes === undefined) {
    throw new TidemarkError('USAGE', `retention '${text}' says nothing to keep`)
  }
  return spec
}

export function parseRetentionRule(arg: string): RetentionRule {
  const eq = arg.indexOf('=')
  if (eq <= 0) throw new TidemarkError('USAGE', `--retain '${arg}' must be PATTERN=SPEC (for example '*=7d' or 'db*=100marks,20G')`)
  return { pattern: arg.slice(0, eq), spec: parseRetentionSpec(arg.slice(eq + 1)) }
}

export function ruleFor(rules: RetentionRule[], volume: string): RetentionSpec | null {
  return firstMatch(rules, volume)?.spec ?? null
}

/** The first rule whose pattern (NAME, PREFIX* or *) matches the volume: --retain's, and the targets' (volume-targets.ts). */
export function firstMatch<R extends { pattern: string }>(rules: R[], volume: string): R | null {
  for (const r of rules) {
    const p = r.pattern
    if (p === '*' || p === volume || (p.endsWith('*') && volume.startsWith(p.slice(0, -1)))) return r
  }
  return null
}

export interface RetentionPlan {
  /** Compact up to this seq (0: nothing has expired). */
  upTo: number
  /** Set when the size cap forces history out that the time or marks rules would keep. */
  shrinking: string | null
  /** Set when the mark rate cap keeps history a flood of TimeMarks would push out. */
  marksHeld?: string | null
}

/**
 * The newest seq the appliance had committed by `ms`, by its own clock (the
 * commit times of its batches), or the base's seq if none: nothing an agent
 * writes moves it. Commit times grow with seq, so a binary search over the
 * batch index: a few dozen lookups.
 */
export async function committedBy(v: VolumeStore, ms: number): Promise<number> {
  let lo = v.base?.seq ?? 0
  let hi = v.durableSeq
  while (lo < hi) {
    const mid = Math.floor((lo + hi + 1) / 2)
    const at = await v.timeOfSeq(mid)
    if (at !== 0 && at <= ms) lo = mid
    else hi = mid - 1
  }
  return lo
}

/** What the volume's rule lets go of now. */
export async function retentionPlan(
  v: VolumeStore,
  spec: RetentionSpec,
  now = Date.now(),
  held: number[] = [],
  lockMs = 0,
  markRate: MarkRate | null = null
): Promise<RetentionPlan> {
  if (!v.fullSyncDone) return { upTo: 0, shrinking: null }
  const floor = v.base?.seq ?? 0
  const wants: number[] = []
  // Old by the agent's capture times and by the appliance's commit times (see the top of this file).
  const olderThan = async (ms: number): Promise<number> => {
    const at = await v.seqAt(now - ms)
    return at ? Math.min(at.seq, await committedBy(v, now - ms)) : 0
  }
  if (spec.timeMs !== undefined) wants.push(await olderThan(spec.timeMs))
  let marksHeld: string | null = null
  if (spec.marks !== undefined) {
    const marks = await v.timemarks()
    let want = marks.length > spec.marks ? marks[marks.length - spec.marks].seq : 0
    if (want > 0 && markRate) {
      const floorMs = (spec.marks * markRate.periodMs) / markRate.count
      const reach = await committedBy(v, now - floorMs)
      if (want > reach) {
        marksHeld = `TimeMarks came faster than --limit-mark-rate ${markRate.text}: the ${spec.marks}marks rule keeps every point of the last ${Math.round(floorMs / 1000)} s (history after seq ${reach}), not only the newest ${spec.marks} marks`
        want = reach
      }
    }
    wants.push(want)
  }
  let upTo = wants.length ? Math.min(...wants) : 0
  // Seqs held like pinned marks: named views' (held).
  const pinned = [...v.pinnedSeqs, ...held].filter((s) => s >= floor).sort((a, b) => a - b)
  if (pinned.length) upTo = Math.min(upTo || Infinity, pinned[0])
  if (upTo === Infinity) upTo = 0
  let shrinking: string | null = null
  if (spec.maxBytes !== undefined && v.journalBytes > spec.maxBytes) {
    // The oldest segment boundary that brings the journal under the cap.
    let bytes = v.journalBytes
    let cut = 0
    for (const s of v.foldableSegments()) {
      if (bytes <= spec.maxBytes) break
      bytes -= s.bytes
      cut = s.lastSeq
    }
    if (pinned.length) cut = Math.min(cut, pinned[0])
    if (cut > upTo) {
      const kept = wants.length ? 'the configured window' : 'all history'
      shrinking = `history shrinking: the journal (${v.journalBytes} bytes) is over its ${spec.maxBytes}-byte cap, so history up to seq ${cut} goes before ${kept} asks`
      upTo = cut
    }
  }
  if (lockMs > 0) {
    // The newest point at least lockMs old may be folded into the base; nothing after it.
    const locked = await olderThan(lockMs)
    if (upTo > locked) {
      if (shrinking) shrinking = `the journal (${v.journalBytes} bytes) is over its ${spec.maxBytes}-byte cap, but the retention lock keeps every point after seq ${locked}`
      upTo = locked
    }
  }
  return { upTo: upTo > floor ? upTo : 0, shrinking, marksHeld }
}

/** Runs each volume's retention every so often, and on request. */
export class Retention {
  private timer: NodeJS.Timeout | null = null
  private running: Promise<unknown> = Promise.resolve()
  /** Per volume: the last plan's warning, the last compaction, what was given up under disk pressure. */
  readonly status = new Map<string, { shrinking: string | null; marksHeld: string | null; last: CompactResult | null; error: string | null; pressure: string | null }>()
  /** Seqs of a volume kept as if pinned: the named views' (appliance.ts sets it to ViewRegistry.seqsOf). */
  holds: (volume: string) => number[] = () => []
  private readonly inFlight = new Set<Promise<unknown>>()

  constructor(
    private readonly store: ApplianceStore,
    readonly rules: RetentionRule[],
    private readonly log: Logger,
    /** --retain-lock, in ms (0: none): no point younger than this is given up. */
    readonly lockMs = 0,
    /** --limit-mark-rate (null: off): how far a marks rule may reach. */
    readonly markRate: MarkRate | null = null
  ) {}

  start(everyMs: number): void {
    if (everyMs <= 0 || this.rules.length === 0) return
    this.timer = setInterval(() => {
      this.running = this.running.then(() => this.runAll()).catch(() => {})
    }, everyMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    await this.running
  }

  /**
   * A volume ran out of space: apply every volume's rule now instead of at
   * the next interval. This frees only what the rules already let go of
   * (never a pinned mark or what follows it); stats says what went.
   */
  underPressure(volume: string): void {
    if (this.rules.length === 0) return
    this.log.warn({ volume }, `volume ${volume} is out of space: applying retention now (only what the rules let go of)`)
    this.running = this.running.then(() => this.runAll(true)).catch(() => {})
  }

  private async runAll(pressure = false): Promise<void> {
    for (const v of this.store.volumes()) {
      if (!ruleFor(this.rules, v.name)) continue
      const r = await this.run(v).catch(() => null)
      if (pressure && r?.result) {
        const c = r.result
        const st = this.status.get(v.name)!
        st.pressure = `under disk pressure at ${new Date().toISOString()}: history up to seq ${c.baseSeq} folded into the base image, ${c.segmentsDropped} segments and ${c.expiredTimeMarks} TimeMarks given up, journal ${c.journalBytesBefore} -> ${c.journalBytesAfter} bytes`
        this.log.warn({ volume: v.name }, `retention ${st.pressure}`)
      }
    }
  }

  /** Applies the volume's rule now. Returns the compaction, or null if nothing has expired. */
  run(v: VolumeStore): Promise<{ plan: RetentionPlan; result: CompactResult | null; rule: string | null }> {
    const p = this.runNow(v)
    this.inFlight.add(p)
    const done = (): void => void this.inFlight.delete(p)
    p.then(done, done)
    return p
  }

  /**
   * Resolves once every run started before this call has ended: a hold added
   * now (a new view's seq) is then either in every later plan or already
   * folded into a base, which the caller can see (checkRetained).
   */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.inFlight])
  }

  private async runNow(v: VolumeStore): Promise<{ plan: RetentionPlan; result: CompactResult | null; rule: string | null }> {
    const spec = ruleFor(this.rules, v.name)
    if (!spec) return { plan: { upTo: 0, shrinking: null }, result: null, rule: null }
    const st = this.status.get(v.name) ?? { shrinking: null, marksHeld: null, last: null, error: null, pressure: null }
    this.status.set(v.name, st)
    try {
      const plan = await retentionPlan(v, spec, Date.now(), this.holds(v.name), this.lockMs, this.markRate)
      if (plan.shrinking && plan.shrinking !== st.shrinking) this.log.warn({ volume: v.name }, plan.shrinking)
      st.shrinking = plan.shrinking
      // Logged when it starts holding, not on every run while it does.
      if (plan.marksHeld && !st.marksHeld) this.log.warn({ volume: v.name, code: 'MARK_RATE' }, `volume ${v.name}: ${plan.marksHeld}`)
      st.marksHeld = plan.marksHeld ?? null
      const result = plan.upTo > 0 ? await v.compact(plan.upTo) : null
      if (result) st.last = result
      st.error = null
      return { plan, result, rule: spec.text }
    } catch (err) {
      st.error = (err as Error).message
      this.log.error({ volume: v.name, err: st.error }, `retention failed: ${st.error}`)
      throw err
    }
  }

  /** What stats shows: the rule, the retained window, the warning. */
  info(v: VolumeStore): Record<string, unknown> {
    const spec = ruleFor(this.rules, v.name)
    const st = this.status.get(v.name)
    return {
      rule: spec?.text ?? null,
      warning: [st?.shrinking, st?.marksHeld].filter(Boolean).join('; ') || null,
      lastCompaction: st?.last ?? null,
      error: st?.error ?? null,
      pressure: st?.pressure ?? null,
    }
  }
}
