// The appliance's Prometheus metrics (served at /metrics by cli/http-server.ts
// with `tidemark appliance --http HOST:PORT`). Each scrape takes one snapshot
// of every volume's status (volume-status.ts, the same the JSON API serves,
// so the two never disagree) and the collect() callbacks read it; nothing is
// counted on the ingest path for them.
//
// Every known volume's series exist from the first scrape (zero). The byte
// counter is the volume's own (kept in its index), so it never goes
// backwards across a reconnect or a restart; the rejection counter is the
// process's, reset by a restart as Prometheus expects. Targets exist only
// for volumes a --rpo-target / --history-target rule names.
import { Counter, Gauge, type Registry } from 'prom-client'
import { VOLUME_STATES, type Alert, type StoreStatus, type VolumeStatus } from '../client/status-api'
import { metricsRegistry, setCounter } from '../proto/metrics-registry'
import type { PlanProofStatus } from './plan-schedule'
import type { AlertEngine } from './alerts'
import type { ReplicationService } from './replication-service'
import type { VolumeStatusSource } from './volume-status'

export class ApplianceMetrics {
  readonly registry: Registry
  private volumes: VolumeStatus[] = []
  private store: StoreStatus | null = null
  /** the scheduled plan tests (plan-schedule.ts), shown to a caller who may see every volume */
  private plans: PlanProofStatus[] = []
  private planSource: (() => PlanProofStatus[]) | null = null
  private alerts: Alert[] = []
  private scraping: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly status: VolumeStatusSource,
    replication: ReplicationService,
    private readonly alertEngine: AlertEngine
  ) {
    const reg = (this.registry = metricsRegistry('appliance'))
    const self = this
    const perVolume = (name: string, help: string, value: (v: VolumeStatus) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames: ['volume'],
        registers: [reg],
        collect() {
          this.reset()
          for (const v of self.volumes) {
            const x = value(v)
            if (x !== null) this.set({ volume: v.volume }, x)
          }
        },
      })
    }
    new Counter({
      name: 'tidemark_appliance_received_bytes_total',
      help: 'Batch payload bytes received from the volume\'s agents and journaled (as they crossed the wire).',
      labelNames: ['volume'],
      registers: [reg],
      collect() {
        setCounter(this, self.volumes.map((v) => [{ volume: v.volume }, v.bytes.wire]))
      },
    })
    perVolume('tidemark_appliance_journal_bytes', 'Bytes of the volume\'s journal segments on disk.', (v) => v.journal.bytes)
    // Unknown until an agent reports (or the journal says when its newest batch came): 0, never absent.
    perVolume(
      'tidemark_volume_rpo_seconds',
      'What would be lost if the protected site vanished now: now minus the newest time before which every captured write is durable here.',
      (v) => v.rpo.seconds ?? 0
    )
    new Gauge({
      name: 'tidemark_volume_rpo_target_seconds',
      help: 'The --rpo-target thresholds of the volume, by severity (warning, error).',
      labelNames: ['volume', 'severity'],
      registers: [reg],
      collect() {
        this.reset()
        for (const v of self.volumes) {
          if (v.rpo.targetSeconds !== null) this.set({ volume: v.volume, severity: 'warning' }, v.rpo.targetSeconds)
          if (v.rpo.errorSeconds !== null) this.set({ volume: v.volume, severity: 'error' }, v.rpo.errorSeconds)
        }
      },
    })
    perVolume('tidemark_journal_history_seconds', 'How far back the volume\'s journal reaches: from its oldest point to now.', (v) => v.history.seconds)
    perVolume('tidemark_journal_history_target_seconds', 'The --history-target of the volume.', (v) => v.history.targetSeconds)
    // What tells a shrinking history from a young one (HistoryShrinking, here and in contrib/prometheus).
    perVolume(
      'tidemark_journal_history_trimmed',
      'Whether retention has given up the volume\'s oldest history (1): its journal no longer reaches back to its creation.',
      (v) => (v.history.trimmed ? 1 : 0)
    )
    perVolume('tidemark_timemarks', 'TimeMarks in the volume\'s catalog.', (v) => v.timemarks)
    perVolume(
      'tidemark_timemark_last_timestamp_seconds',
      'When the volume\'s newest TimeMark was taken (Unix seconds; 0: none).',
      (v) => (v.lastTimeMark ? Date.parse(v.lastTimeMark.time) / 1000 : 0)
    )
    perVolume('tidemark_volume_resync_remaining_bytes', 'Bytes the volume\'s agent still has to resend (its last report; 0 when none).', (v) => (v.sync?.remainingBytes ?? 0))
    new Gauge({
      name: 'tidemark_volume_state',
      help: 'One series per state, 1 for the state the volume is in: normal, behind, resync, initial_copy, disconnected, no_space.',
      labelNames: ['volume', 'state'],
      registers: [reg],
      collect() {
        this.reset()
        for (const v of self.volumes) for (const state of VOLUME_STATES) this.set({ volume: v.volume, state }, state === v.state ? 1 : 0)
      },
    })
    new Counter({
      name: 'tidemark_appliance_rejected_total',
      help: 'Replication streams, batches and data connections refused, by error code (since the appliance started).',
      labelNames: ['code'],
      registers: [reg],
      collect() {
        setCounter(this, Object.entries(replication.rejected).map(([code, n]) => [{ code }, n]))
      },
    })
    new Gauge({
      name: 'tidemark_store_free_bytes',
      help: 'Bytes the appliance may still write on the file system holding its --data directory.',
      registers: [reg],
      collect() {
        if (self.store) this.set(self.store.freeBytes)
      },
    })
    // Continuous recoverability proof (plan-schedule.ts): one series per scheduled plan, once it has run.
    const perPlan = (name: string, help: string, value: (p: PlanProofStatus) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames: ['plan'],
        registers: [reg],
        collect() {
          this.reset()
          for (const p of self.plans) {
            const x = value(p)
            if (x !== null) this.set({ plan: p.plan }, x)
          }
        },
      })
    }
    perPlan('tidemark_plan_last_success_timestamp_seconds', 'When the plan\'s scheduled test last passed (every check green).', (p) => (p.lastSuccess === null ? null : p.lastSuccess / 1000))
    perPlan('tidemark_plan_rto_seconds', 'The recovery time the plan\'s last passed test measured: start to every check green.', (p) => p.rtoSeconds)
    perPlan('tidemark_plan_last_run_timestamp_seconds', 'When the plan\'s scheduled test last ran.', (p) => (p.lastRun === null ? null : p.lastRun / 1000))
    perPlan('tidemark_plan_last_result', '1 if the plan\'s last scheduled test passed, 0 if it failed.', (p) => (p.lastResult === null ? null : p.lastResult === 'passed' ? 1 : 0))
    new Gauge({
      name: 'tidemark_store_size_bytes',
      help: 'The size of the file system holding the appliance\'s --data directory (StoreNearlyFull compares the free bytes with it).',
      registers: [reg],
      collect() {
        if (self.store) this.set(self.store.totalBytes)
      },
    })
    // Firing alerts only (1), as Prometheus's own ALERTS series: a resolved alert's series goes away.
    new Gauge({
      name: 'tidemark_alerts_firing',
      help: '1 for each alert firing (alerts.ts), by alert, severity and volume (none for the store\'s), or plan for a recovery plan\'s.',
      labelNames: ['alert', 'severity', 'volume', 'plan'],
      registers: [reg],
      collect() {
        this.reset()
        for (const a of self.alerts) {
          const where = a.plan !== undefined ? { plan: a.plan } : a.volume === null ? {} : { volume: a.volume }
          this.set({ alert: a.name, severity: a.severity, ...where }, 1)
        }
      },
    })
  }

  /** The scheduled plan tests to report (plan-schedule.ts). */
  setPlans(source: () => PlanProofStatus[]): void {
    this.planSource = source
  }

  /** The exposition text for the volumes named (all: null), after one snapshot of their status. */
  metrics(visible: string[] | null, showPlans = visible === null): Promise<string> {
    // One scrape at a time: the collect() callbacks read the snapshot this scrape took.
    const run = this.scraping.then(async () => {
      this.volumes = await this.status.volumes(visible)
      this.store = await this.status.storeStatus()
      this.plans = showPlans && this.planSource ? this.planSource() : []
      this.alerts = this.alertEngine.firing(visible)
      return this.registry.metrics()
    })
    this.scraping = run.catch(() => undefined)
    return run
  }
}
