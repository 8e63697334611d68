// Whether a periodic stats line is worth a line in the log: the agent and
// the appliance count every --stats-interval, but an idle volume's counts
// do not move, and a wall of identical lines every 10 seconds hides the ones
// that matter. A line is logged when its values differ from the last line
// logged under the same key (a volume, the listener), and otherwise at most
// once per IDLE_REPEAT_MS, so a quiet log still shows the process is alive
// and what it holds. The lines held back are logged at debug level instead:
// whoever wants every tick (a test reading the lines as a probe of the
// counters) asks for --log-level debug.
//
// Some fields move while nothing happens (a window measured up to now, a
// lag while disconnected, a rate or ETA that decays): they are left out of
// the comparison, by their path ("syncProgress.mbPerSecond"), and still
// logged with the rest of the line.

/** The longest an unchanged line is held back. */
export const IDLE_REPEAT_MS = 60_000

export class StatsLineGate {
  private readonly last = new Map<string, { values: string; atMs: number }>()
  private readonly ignored: Set<string>

  /** ignore: paths of fields that drift on their own ("rpoLagMs", "syncProgress.secondsLeft") */
  constructor(ignore: string[], private readonly repeatMs = IDLE_REPEAT_MS) {
    this.ignored = new Set(ignore)
  }

  /** Whether to log `fields` under `key` now; when it says yes, they become the line to compare the next ones with. */
  due(key: string, fields: Record<string, unknown>, nowMs = Date.now()): boolean {
    const values = JSON.stringify(fields, this.ignored.size ? this.replacer() : undefined)
    const prev = this.last.get(key)
    if (prev && prev.values === values && nowMs - prev.atMs < this.repeatMs) return false
    this.last.set(key, { values, atMs: nowMs })
    return true
  }

  /** A JSON.stringify replacer that leaves out the ignored paths (tracking the path through nested objects). */
  private replacer(): (this: unknown, k: string, v: unknown) => unknown {
    const paths = new WeakMap<object, string>()
    const ignored = this.ignored
    return function (this: unknown, k: string, v: unknown): unknown {
      const parent = paths.get(this as object)
      const at = k === '' ? '' : parent ? `${parent}.${k}` : k
      if (at && ignored.has(at)) return undefined
      if (v && typeof v === 'object') paths.set(v, at)
      return v
    }
  }
}
