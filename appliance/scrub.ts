// The journal scrub: every volume's segments re-read and every frame's
// checksum checked (volume-verify.ts, what `journal verify` does), a few
// minutes after the appliance starts and then every --scrub-every seconds.
//
// Reads of points do not check checksums: a point map sends a pread's bytes
// straight to the client, which is what makes a read cost a pread. Damage at
// rest in a segment that was verified when it was written (a flipped bit on
// the disk, a bad sector) is found here instead, remembered (corrupt.json),
// and from then on every point after it is refused with the place named,
// by restore, by the NBD exports and by stats. Volumes are scrubbed one at a
// time; a scrub that finds nothing logs one info line.
import type { Logger } from 'pino'
import type { ApplianceStore } from './store'

/** The first scrub after a start waits at most this long (ms). */
export const FIRST_SCRUB_MAX_MS = 5 * 60_000

export class Scrubber {
  private timer: NodeJS.Timeout | null = null
  private first: NodeJS.Timeout | null = null
  private running: Promise<unknown> = Promise.resolve()
  private stopped = false
  /** Per volume, the problems the last scrub found: the same ones again are not logged again. */
  private readonly known = new Map<string, string>()
  scrubs = 0

  constructor(
    private readonly store: ApplianceStore,
    private readonly log: Logger
  ) {}

  /** Every everyMs (0: never), the first run after min(everyMs, FIRST_SCRUB_MAX_MS). */
  start(everyMs: number): void {
    if (everyMs <= 0) return
    const run = (): void => {
      this.running = this.running.then(() => this.runAll()).catch(() => {})
    }
    this.first = setTimeout(() => {
      run()
      this.timer = setInterval(run, everyMs)
      this.timer.unref()
    }, Math.min(everyMs, FIRST_SCRUB_MAX_MS))
    this.first.unref()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.first) clearTimeout(this.first)
    if (this.timer) clearInterval(this.timer)
    await this.running
  }

  private async runAll(): Promise<void> {
    for (const v of this.store.volumes()) {
      if (this.stopped) return
      const t0 = Date.now()
      try {
        const r = await v.verify({ quiet: true })
        this.scrubs++
        const ctx = { volume: v.meta.name, records: r.records, bytes: r.bytes, ms: Date.now() - t0 }
        const key = r.problems.join('\n')
        const again = this.known.get(v.meta.name) === key
        this.known.set(v.meta.name, key)
        if (r.ok) this.log.info(ctx, `journal scrub of ${v.meta.name}: clean`)
        else if (again) this.log.debug(ctx, `journal scrub of ${v.meta.name}: the same ${r.problems.length} problems as before`)
        else this.log.error({ ...ctx, problems: r.problems }, `journal scrub of ${v.meta.name}: ${r.problems.length} problems: ${r.problems[0]}`)
      } catch (err) {
        this.log.warn({ volume: v.meta.name, err: (err as Error).message }, `journal scrub of ${v.meta.name} could not run: ${(err as Error).message}`)
      }
    }
  }
}
