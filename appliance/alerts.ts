// The alerts engine: every second it reads every volume's status and the
// store's (volume-status.ts, what the JSON API serves), asks the rules
// (alert-rules.ts) which conditions hold, and turns the difference from the
// last evaluation into events:
//   start     a (name, volume) not firing before: one warn line, the command
//   severity  the same alert at another severity: one line (warn when worse,
//             info when better), the command with state "firing"
//   end       a firing alert whose condition no longer holds: one info line,
//             the command with state "resolved"
// What is firing is kept here for GET /api/v1/alerts and the
// tidemark_alerts_firing series (appliance-metrics.ts), both read between
// evaluations, so a scrape never waits on one.
//
// Evaluations never overlap: one that takes longer than a second (a slow
// statfs, a busy index) makes the next start later, not run beside it.
// Retired histories (NAME.retired-N) are read-only and have no agent: no rule
// applies to them.
import type { Logger } from 'pino'
import type { Alert } from '../client/status-api'
import type { AlertCommand } from './alert-command'
import type { AlertRules, Condition } from './alert-rules'
import type { VolumeStatusSource } from './volume-status'

export const EVALUATE_EVERY_MS = 1000

function key(c: { name: string; volume: string | null; plan?: string }): string {
  return `${c.name}\0${c.volume ?? ''}\0${c.plan ?? ''}`
}

function where(a: { volume: string | null; plan?: string }): string {
  return a.plan !== undefined ? `plan ${a.plan}` : a.volume === null ? 'the store' : `volume ${a.volume}`
}

export class AlertEngine {
  private readonly firingNow = new Map<string, Alert>()
  private timer: NodeJS.Timeout | null = null
  private evaluating: Promise<void> | null = null
  private stopped = false
  private failing = false

  constructor(
    private readonly status: VolumeStatusSource,
    private readonly rules: AlertRules,
    private readonly log: Logger,
    private readonly command: AlertCommand | null
  ) {}

  start(): void {
    const tick = (): void => {
      this.evaluating = this.evaluate().finally(() => {
        this.evaluating = null
        if (!this.stopped) this.timer = setTimeout(tick, EVALUATE_EVERY_MS)
      })
    }
    tick()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    await this.evaluating
    await this.command?.close()
  }

  /** The alerts firing, oldest first: those of the named volumes (all: null) and the store's. */
  firing(visible: string[] | null = null): Alert[] {
    const want = visible ? new Set(visible) : null
    return [...this.firingNow.values()].filter((a) => a.volume === null || !want || want.has(a.volume)).sort((a, b) => a.since.localeCompare(b.since))
  }

  private async evaluate(): Promise<void> {
    let conditions: Condition[]
    const now = Date.now()
    try {
      const names = this.status.names().filter((n) => !this.status.volume(n)?.retired)
      const [volumes, store] = await Promise.all([this.status.volumes(names), this.status.storeStatus().catch(() => null)])
      conditions = this.rules.evaluate(now, volumes, store)
      if (this.failing) this.log.info('alerts: evaluating again')
      this.failing = false
    } catch (err) {
      // Keep what is firing as it is: an unreadable status says nothing about the alerts.
      if (!this.failing) this.log.error({ err }, `alerts: cannot read the volumes' status: ${(err as Error).message}`)
      this.failing = true
      return
    }
    const held = new Set<string>()
    for (const c of conditions) {
      const k = key(c)
      held.add(k)
      const was = this.firingNow.get(k)
      // The API's order of keys: what, how bad, where, since when, then the numbers and the words.
      const a: Alert = {
        name: c.name,
        severity: c.severity,
        volume: c.volume,
        ...(c.plan !== undefined ? { plan: c.plan } : {}),
        since: was?.since ?? new Date(now).toISOString(),
        value: c.value,
        threshold: c.threshold,
        summary: c.summary,
        action: c.action,
      }
      this.firingNow.set(k, a)
      if (!was) {
        this.log.warn({ alert: a }, `alert ${a.name} (${a.severity}) firing on ${where(a)}: ${a.summary}`)
        this.command?.notify({ ...a, state: 'firing' })
      } else if (was.severity !== a.severity) {
        const worse = a.severity === 'error'
        this.log[worse ? 'warn' : 'info']({ alert: a }, `alert ${a.name} on ${where(a)} is now ${a.severity} (was ${was.severity}): ${a.summary}`)
        this.command?.notify({ ...a, state: 'firing' })
      }
    }
    for (const [k, a] of this.firingNow) {
      if (held.has(k)) continue
      this.firingNow.delete(k)
      const lasted = Math.round((now - Date.parse(a.since)) / 1000)
      this.log.info({ alert: a }, `alert ${a.name} resolved on ${where(a)} after ${lasted} s`)
      this.command?.notify({ ...a, state: 'resolved' })
    }
  }
}
