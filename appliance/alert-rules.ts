// When each alert fires: the eight rules of the operator plane, read from the
// same VolumeStatus and StoreStatus the JSON API serves (volume-status.ts),
// so an alert never says something the status view contradicts.
//
//   RpoBreach              rpo.seconds above --rpo-target's warning (error) threshold
//   ReplicationStale       nothing became durable for longer than the RPO target
//                          while the agent is connected with a backlog
//   HistoryShrinking       history under 85 % (warning) / 75 % (error) of --history-target,
//                          once retention has given history up (a young volume is not
//                          shrinking), never during the initial copy
//   JournalNearLimit       journal above 90 % of the volume's --retain journal cap
//   StoreNearlyFull        free space under 10 % (warning) / 5 % (error) of --data's file system
//   Behind                 state behind for longer than --alert-behind-after
//   ResyncWithoutProgress  a resync or initial copy whose remaining bytes (or percent)
//                          did not improve for --alert-stall-after, while connected
//   AgentDisconnected      no agent attached for longer than the RPO target (error:
//                          its error threshold), or 60 s without a target
//   PlanTestFailed         a recovery plan's last scheduled test failed (error)
//   PlanTestOverdue        no scheduled test of a plan has passed for two of its periods
//
// Four rules need to know since when something holds, which one status does
// not say: the rules keep that per volume (VolumeMemory), starting from the
// first evaluation after the appliance starts. Each condition is reported at
// its worst severity only; the engine (alerts.ts) turns the conditions of
// successive evaluations into starts and ends.
import type { AlertName, AlertSeverity, StoreStatus, VolumeStatus } from '../client/status-api'
import type { PlanProofStatus } from './plan-schedule'

/** An alert's condition as one evaluation sees it (alerts.ts adds `since`). */
export interface Condition {
  name: AlertName
  severity: AlertSeverity
  volume: string | null
  plan?: string
  value: number
  threshold: number
  summary: string
  action: string
}

export interface AlertRuleOptions {
  /** Behind fires after this long in state behind */
  behindAfterSeconds: number
  /** ResyncWithoutProgress fires after this long without progress */
  stallAfterSeconds: number
  /** the --retain journal cap of a volume, null without one */
  journalCap: (volume: string) => number | null
  /** the scheduled plan tests (plan-schedule.ts) */
  plans?: () => PlanProofStatus[]
}

/** AgentDisconnected's threshold for a volume without an RPO target. */
export const DISCONNECTED_DEFAULT_SECONDS = 60
export const HISTORY_WARNING_RATIO = 0.85
export const HISTORY_ERROR_RATIO = 0.75
export const JOURNAL_CAP_RATIO = 0.9
export const STORE_FREE_WARNING_PERCENT = 10
export const STORE_FREE_ERROR_PERCENT = 5

interface VolumeMemory {
  durableSeq: number
  /** since when nothing became durable while there was something to send */
  staleSince: number
  behindSince: number | null
  disconnectedSince: number | null
  /** the sync's last reading and when it last improved on the one before */
  sync: { remaining: number | null; percent: number | null; progressAt: number } | null
}

function secs(x: number): string {
  if (x >= 7200) return `${(x / 3600).toFixed(1)} h`
  if (x >= 120) return `${(x / 60).toFixed(1)} min`
  return `${x.toFixed(x < 10 ? 1 : 0)} s`
}

function bytes(x: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (x >= 1024 && i < u.length - 1) {
    x /= 1024
    i++
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${u[i]}`
}

/** The severity a value above a warning and an optional error threshold has, or null. */
function above(value: number, warn: number, error: number | null): [AlertSeverity, number] | null {
  if (error !== null && value > error) return ['error', error]
  if (value > warn) return ['warning', warn]
  return null
}

export class AlertRules {
  private readonly memory = new Map<string, VolumeMemory>()

  constructor(private readonly o: AlertRuleOptions) {}

  /** The conditions holding at `now` (ms), given every volume's status and the store's (null: unreadable). */
  evaluate(now: number, volumes: VolumeStatus[], store: StoreStatus | null): Condition[] {
    const out: Condition[] = []
    const seen = new Set<string>()
    for (const v of volumes) {
      seen.add(v.volume)
      this.volume(now, v, out)
    }
    // A volume that went away (retired, renamed) forgets its clocks.
    for (const name of this.memory.keys()) if (!seen.has(name)) this.memory.delete(name)
    if (store && store.totalBytes > 0) {
      const percent = (100 * store.freeBytes) / store.totalBytes
      const sev: [AlertSeverity, number] | null =
        percent < STORE_FREE_ERROR_PERCENT ? ['error', STORE_FREE_ERROR_PERCENT] : percent < STORE_FREE_WARNING_PERCENT ? ['warning', STORE_FREE_WARNING_PERCENT] : null
      if (sev) {
        out.push({
          name: 'StoreNearlyFull',
          severity: sev[0],
          volume: null,
          value: Math.round(percent * 100) / 100,
          threshold: sev[1],
          summary: `the store's file system has ${bytes(store.freeBytes)} free of ${bytes(store.totalBytes)} (${percent.toFixed(1)} %, under ${sev[1]} %)`,
          action: 'free space on the file system holding --data, grow it, or shorten --retain so compaction gives history up; when it fills, journaling stops and agents fall behind',
        })
      }
    }
    for (const p of this.o.plans?.() ?? []) this.plan(now, p, out)
    return out
  }

  /** A scheduled plan test that failed, or none passed for two periods: the journal is not proven recoverable. */
  private plan(now: number, p: PlanProofStatus, out: Condition[]): void {
    const run = `tidemark plan test --plan ${p.file}`
    if (p.lastResult === 'failed') {
      out.push({
        name: 'PlanTestFailed',
        severity: 'error',
        volume: null,
        plan: p.plan,
        value: p.lastSuccess === null ? 0 : Math.round((now - p.lastSuccess) / 1000),
        threshold: 0,
        summary: `the scheduled test of recovery plan ${p.plan} failed: ${p.lastError ?? 'a check failed'}`,
        action: `run ${run} to see its report (each machine's check and console tail); fix the plan or the recovery site before it is needed`,
      })
      return
    }
    const last = p.lastSuccess ?? p.scheduledSince
    const overdue = (now - last) / 1000
    const limit = (2 * p.everyMs) / 1000
    if (overdue > limit) {
      out.push({
        name: 'PlanTestOverdue',
        severity: 'warning',
        volume: null,
        plan: p.plan,
        value: Math.round(overdue),
        threshold: limit,
        summary: `no scheduled test of recovery plan ${p.plan} has passed for ${secs(overdue)} (it runs every ${secs(p.everyMs / 1000)})${p.running ? '; one is running' : ''}`,
        action: `see the appliance's log for the plan's runs, or run ${run}`,
      })
    }
  }

  private volume(now: number, v: VolumeStatus, out: Condition[]): void {
    let m = this.memory.get(v.volume)
    if (!m) {
      m = { durableSeq: v.journal.durableSeq, staleSince: now, behindSince: null, disconnectedSince: null, sync: null }
      this.memory.set(v.volume, m)
    }
    const push = (name: AlertName, sev: [AlertSeverity, number], value: number, summary: string, action: string): void => {
      out.push({ name, severity: sev[0], volume: v.volume, value: Math.round(value * 1000) / 1000, threshold: sev[1], summary: `volume ${v.volume}: ${summary}`, action })
    }
    const warn = v.rpo.targetSeconds
    const err = v.rpo.errorSeconds

    if (warn !== null && v.rpo.seconds !== null) {
      const sev = above(v.rpo.seconds, warn, err)
      if (sev) {
        push('RpoBreach', sev, v.rpo.seconds, `RPO ${secs(v.rpo.seconds)} is above its ${sev[0]} threshold of ${secs(sev[1])}`,
          "check the agent (its log, tidemark_agent_backlog_bytes) and the link to the appliance: a stopped or overloaded agent, or a WAN slower than the volume's writes, lets the RPO grow")
      }
    }

    // Stale: something to send, a stream to send it on, and nothing durable. Either missing restarts the clock.
    if (v.journal.durableSeq !== m.durableSeq || !v.agent.connected || !(v.backlogBytes !== null && v.backlogBytes > 0)) m.staleSince = now
    m.durableSeq = v.journal.durableSeq
    if (warn !== null) {
      const stale = (now - m.staleSince) / 1000
      const sev = above(stale, warn, err)
      if (sev) {
        push('ReplicationStale', sev, stale, `nothing became durable for ${secs(stale)} while the agent is connected with ${bytes(v.backlogBytes ?? 0)} to send`,
          "the stream is attached but not moving: look for the agent's send errors and the appliance's journal errors in their logs; restarting the agent resumes from its dirty map")
      }
    }

    const target = v.history.targetSeconds
    const copying = v.state === 'initial_copy' || v.sync?.kind === 'initial_copy'
    if (target !== null && v.history.trimmed && !copying) {
      const sev: [AlertSeverity, number] | null =
        v.history.seconds < HISTORY_ERROR_RATIO * target ? ['error', HISTORY_ERROR_RATIO * target] : v.history.seconds < HISTORY_WARNING_RATIO * target ? ['warning', HISTORY_WARNING_RATIO * target] : null
      if (sev) {
        push('HistoryShrinking', sev, v.history.seconds, `the journal reaches back ${secs(v.history.seconds)}, under ${Math.round((100 * sev[1]) / target)} % of its target of ${secs(target)}`,
          'retention is giving history up early (the --retain journal cap, or disk pressure): raise the cap or add space to the store, or lower --history-target if less is enough')
      }
    }

    const cap = this.o.journalCap(v.volume)
    if (cap !== null && v.journal.bytes > JOURNAL_CAP_RATIO * cap) {
      push('JournalNearLimit', ['warning', JOURNAL_CAP_RATIO * cap], v.journal.bytes, `the journal holds ${bytes(v.journal.bytes)}, over 90 % of its cap of ${bytes(cap)}`,
        'past the cap retention gives history up early: raise the journal cap in --retain if the store has room, or expect HistoryShrinking')
    }

    if (v.state === 'behind') m.behindSince ??= now
    else m.behindSince = null
    if (m.behindSince !== null) {
      const behind = (now - m.behindSince) / 1000
      if (behind > this.o.behindAfterSeconds) {
        push('Behind', ['warning', this.o.behindAfterSeconds], behind, `behind for ${secs(behind)}: the agent keeps only a dirty map and resyncs when it catches up`,
          "the volume's writes outrun the link or the appliance: look at the app vs wire rates and --throttle, the WAN, and the appliance's ingest")
      }
    }

    // Progress of a sync: fewer remaining bytes, or a higher percent. Only while an agent can make any.
    if (!v.sync || !v.agent.connected) m.sync = null
    else {
      const rem = v.sync.remainingBytes
      const pct = v.sync.percent
      // Against the last reading, not the best: new writes may add to a resync, and its shrinking again is progress.
      const s = m.sync
      const moved = !s || (rem !== null && s.remaining !== null && rem < s.remaining) || (pct !== null && s.percent !== null && pct > s.percent)
      const progressAt = moved ? now : s.progressAt
      m.sync = { remaining: rem, percent: pct, progressAt }
      const still = (now - progressAt) / 1000
      if (still > this.o.stallAfterSeconds) {
        const kind = v.sync.kind === 'initial_copy' ? 'the initial copy' : 'a resync'
        push('ResyncWithoutProgress', ['warning', this.o.stallAfterSeconds], still,
          `${kind} made no progress for ${secs(still)}${rem !== null ? ` (${bytes(rem)} remaining)` : ''}`,
          "the agent is attached but its copy does not move: look for read errors on the protected volume and send errors in the agent's log; restarting the agent restarts the copy from its dirty map")
      }
    }

    if (v.agent.connected) m.disconnectedSince = null
    else m.disconnectedSince ??= Math.min(now, v.agent.lastHeard ? Date.parse(v.agent.lastHeard) : now)
    if (m.disconnectedSince !== null) {
      const gone = (now - m.disconnectedSince) / 1000
      const sev = warn !== null ? above(gone, warn, err) : above(gone, DISCONNECTED_DEFAULT_SECONDS, null)
      if (sev) {
        push('AgentDisconnected', sev, gone, `no agent attached for ${secs(gone)}${v.agent.lastHeard ? ` (last heard ${v.agent.lastHeard})` : ''}`,
          "start or reach the agent that protects it (its host, the tidemark agent service, the network and TLS to the appliance's --listen); writes meanwhile are kept in its dirty map")
      }
    }
  }
}
