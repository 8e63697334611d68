// What `tidemark status` prints: one block from the API's three answers
// (volumes, store, alerts), as text for a person. One line per volume —
// state, RPO / target, history / target, backlog, app → changed → wire MB/s
// with the two reductions (MicroScan's app:changed, LZ4's changed:wire),
// journal size, the newest TimeMark and its age, and overall (ok, or the worst
// severity with the alerts' names) — a progress line under each volume with a
// sync, and the store's free space with its alerts.
//
// A resync's size is not known up front (the API gives its remaining bytes
// and, for the initial copy only, a percent): SyncTracker remembers, across a
// --watch's refreshes, the most remaining bytes it saw and the rate they
// shrink at, so a watched resync gets a bar, a rate and an ETA too.
import type { Alert, StoreStatus, VolumeStatus } from '../client/status-api'

export interface StatusData {
  volumes: VolumeStatus[]
  store: StoreStatus
  alerts: Alert[]
}

function mb(bytes: number): string {
  const x = bytes / 1e6
  if (x >= 1e6) return `${(x / 1e6).toFixed(1)} TB`
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)} GB`
  return `${x.toFixed(x >= 100 ? 0 : 1)} MB`
}

/** 0.8s, 45s, 12m, 3.5h, 7d. */
export function dur(s: number | null): string {
  if (s === null) return '-'
  if (s < 10) return `${s.toFixed(1)}s`
  if (s < 120) return `${Math.round(s)}s`
  if (s < 7200) return `${Math.round(s / 60)}m`
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`
  return `${(s / 86400).toFixed(1)}d`
}

function ratio(a: number, b: number): string {
  return b > 0 && a > 0 ? `${(a / b).toFixed(1)}x` : '-'
}

/** The volume's alerts: "ok", or the worst severity with their names. */
export function overall(alerts: Alert[]): string {
  if (!alerts.length) return 'ok'
  const worst = alerts.some((a) => a.severity === 'error') ? 'error' : 'warning'
  return `${worst}: ${[...new Set(alerts.map((a) => a.name))].join(', ')}`
}

interface SyncSeen {
  maxRemaining: number
  last: [ms: number, remaining: number] | null
  bytesPerSecond: number | null
}

export class SyncTracker {
  private readonly seen = new Map<string, SyncSeen>()

  /** The bar's fraction done (null: unknown), the rate and the ETA in seconds, for a volume's sync now. */
  progress(v: VolumeStatus, now: number): { fraction: number | null; bytesPerSecond: number | null; etaSeconds: number | null } {
    const s = v.sync
    if (!s) {
      this.seen.delete(v.volume)
      return { fraction: null, bytesPerSecond: null, etaSeconds: null }
    }
    let m = this.seen.get(v.volume)
    if (!m) this.seen.set(v.volume, (m = { maxRemaining: 0, last: null, bytesPerSecond: null }))
    const rem = s.remainingBytes
    if (rem !== null) {
      if (m.last && now > m.last[0] && rem <= m.last[1]) m.bytesPerSecond = (m.last[1] - rem) / ((now - m.last[0]) / 1000)
      m.last = [now, rem]
      m.maxRemaining = Math.max(m.maxRemaining, rem)
    }
    const rate = s.bytesPerSecond ?? m.bytesPerSecond
    const fraction = s.percent !== null ? s.percent / 100 : rem !== null && m.maxRemaining > rem ? 1 - rem / m.maxRemaining : null
    const etaSeconds = rem !== null && rate ? rem / rate : null
    return { fraction, bytesPerSecond: rate, etaSeconds }
  }
}

const BAR = 30

function bar(fraction: number | null): string {
  if (fraction === null) return `[${' '.repeat(BAR)}]   ?  `
  const f = Math.min(1, Math.max(0, fraction))
  const n = Math.round(f * BAR)
  return `[${'#'.repeat(n)}${'-'.repeat(BAR - n)}] ${(f * 100).toFixed(1).padStart(5)} %`
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '))
}

/** The block of lines for one refresh (no trailing newline). */
export function renderStatus(d: StatusData, sync: SyncTracker, now = Date.now()): string {
  const rows: string[][] = [['VOLUME', 'STATE', 'RPO/TARGET', 'HISTORY/TARGET', 'BACKLOG', 'APP → CHANGED → WIRE MB/s (REDUCTIONS)', 'JOURNAL', 'LAST TIMEMARK', 'OVERALL']]
  const under = new Map<number, string>()
  for (const v of d.volumes) {
    const r = v.rates
    const moving = r.appBytesPerSecond > 0
    // Over the last ~10 s while writes arrive; since the volume's creation when it is idle.
    const reductions = moving
      ? `${ratio(r.appBytesPerSecond, r.changedBytesPerSecond)} ${ratio(r.changedBytesPerSecond, r.wireBytesPerSecond)}`
      : `${ratio(v.bytes.app, v.bytes.changed)} ${ratio(v.bytes.changed, v.bytes.wire)} total`
    const flow = `${(r.appBytesPerSecond / 1e6).toFixed(2)} → ${(r.changedBytesPerSecond / 1e6).toFixed(2)} → ${(r.wireBytesPerSecond / 1e6).toFixed(2)} (${reductions})`
    const m = v.lastTimeMark
    const mark = m ? `#${m.id}${m.label ? ` ${m.label}` : ''}, ${dur(Math.max(0, (now - Date.parse(m.time)) / 1000))} ago` : '-'
    rows.push([
      v.volume,
      v.state,
      `${dur(v.rpo.seconds)}/${dur(v.rpo.targetSeconds)}`,
      `${dur(v.history.seconds)}/${dur(v.history.targetSeconds)}`,
      v.backlogBytes === null ? '-' : mb(v.backlogBytes),
      flow,
      mb(v.journal.bytes),
      mark,
      overall(d.alerts.filter((a) => a.volume === v.volume)),
    ])
    if (v.sync) {
      const p = sync.progress(v, now)
      const kind = v.sync.kind === 'initial_copy' ? 'initial copy' : 'resync'
      const left = v.sync.remainingBytes === null ? '' : `  ${mb(v.sync.remainingBytes)} left`
      const rate = p.bytesPerSecond === null ? '' : `  ${(p.bytesPerSecond / 1e6).toFixed(1)} MB/s`
      const eta = p.etaSeconds === null ? '  ETA -' : `  ETA ${dur(p.etaSeconds)}`
      under.set(rows.length - 1, `  ${kind.padEnd(12)} ${bar(p.fraction)}${left}${rate}${eta}`)
    } else sync.progress(v, now)
  }
  const lines: string[] = []
  table(rows).forEach((line, i) => {
    lines.push(line)
    const u = under.get(i)
    if (u) lines.push(u)
  })
  if (d.volumes.length === 0) lines.push('(no volumes)')
  const s = d.store
  const pct = s.totalBytes > 0 ? ` (${((100 * s.freeBytes) / s.totalBytes).toFixed(1)} %)` : ''
  const storeAlerts = d.alerts.filter((a) => a.volume === null)
  lines.push(`store: ${mb(s.freeBytes)} free of ${mb(s.totalBytes)}${pct}, journals ${mb(s.journalBytes)}, ${s.volumes} volume${s.volumes === 1 ? '' : 's'}  ${overall(storeAlerts)}`)
  return lines.join('\n')
}
