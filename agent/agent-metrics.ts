// The agent's Prometheus metrics (served at /metrics by cli/http-server.ts
// with `tidemark agent --http HOST:PORT`). Nothing is counted on the write
// path for them: every metric is a collect() callback that reads, when
// scraped, the stats the agent keeps anyway — the tap's (native counters),
// each replicator's stats() — and the RPO histogram reads the lags the
// replicator resolved since the last scrape (rpo-lag.ts resolvedSince).
//
// Every volume's series exist from the first scrape (zero). The byte
// counters survive a restart (persisted-counters.ts, which the agent's command
// runs whether or not it serves metrics); the tap's request
// counters are the native tap's, which start at zero with the process, as
// Prometheus expects of a counter after a restart.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { VOLUME_STATES } from '../client/status-api'
import { metricsRegistry, setCounter } from '../proto/metrics-registry'
import type { Agent } from './agent'
import type { AgentByteCounters } from './persisted-counters'

/** Seconds; an RPO beyond 10 minutes is "very late" whatever its exact value. */
const RPO_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600]

const TAP_OPS = [
  ['read', 'reads'],
  ['write', 'writes'],
  ['flush', 'flushes'],
  ['trim', 'trims'],
  ['zero', 'zeroes'],
] as const

export class AgentMetrics {
  readonly registry: Registry
  private readonly rpoSeen: number[]

  constructor(agent: Agent, counters: AgentByteCounters | null) {
    const reg = (this.registry = metricsRegistry('agent'))
    const volumes = agent.tap.volumes
    const repl = (): ReturnType<Agent['replicationStats']> => agent.replicationStats()
    this.rpoSeen = volumes.map(() => 0)
    // Without kept counters (no appliance, no replicated volume) the process's own.
    const totals = (): Array<{ volume: string; appBytes: number; changedBytes: number; wireBytes: number }> => counters?.totals() ?? repl()
    const self = this

    const bytes = (name: string, help: string, key: 'appBytes' | 'changedBytes' | 'wireBytes'): void => {
      new Counter({
        name,
        help,
        labelNames: ['volume'],
        registers: [reg],
        collect() {
          setCounter(this, totals().map((t) => [{ volume: t.volume }, t[key]]))
        },
      })
    }
    bytes('tidemark_agent_app_bytes_total', 'Bytes the application wrote to the volume (replicated volumes; across agent restarts).', 'appBytes')
    bytes('tidemark_agent_changed_bytes_total', 'Bytes of the sectors whose contents really changed (MicroScan: what the replica lacked).', 'changedBytes')
    bytes('tidemark_agent_wire_bytes_total', 'Bytes of batch payload sent to the appliance (after LZ4), resends not counted.', 'wireBytes')

    new Gauge({
      name: 'tidemark_agent_backlog_bytes',
      help: 'Bytes captured and not yet acknowledged by the appliance: the tap buffer and the send window.',
      labelNames: ['volume'],
      registers: [reg],
      collect() {
        this.reset()
        const tap = agent.tap.stats()
        agent.replication().forEach((r, i) => this.set({ volume: r.volume }, r.backlogBytes(tap[i])))
      },
    })
    new Gauge({
      name: 'tidemark_agent_connected',
      help: '1 while the volume\'s replication stream is connected and welcomed.',
      labelNames: ['volume'],
      registers: [reg],
      collect() {
        this.reset()
        for (const r of repl()) this.set({ volume: r.volume }, r.connected ? 1 : 0)
      },
    })
    new Gauge({
      name: 'tidemark_volume_state',
      help: 'One series per state, 1 for the state the volume is in: normal, behind, resync, initial_copy, disconnected, no_space.',
      labelNames: ['volume', 'state'],
      registers: [reg],
      collect() {
        this.reset()
        const rs = agent.replication()
        const tap = agent.tap.stats()
        volumes.forEach((volume, i) => {
          // Without an appliance there is no stream: the tap's mode is the state.
          const t = tap[i]
          const m = t?.mode
          const now = rs[i] ? rs[i].volumeState(t) : m === 'behind' ? 'behind' : m === 'resyncing' ? 'resync' : 'normal'
          for (const state of VOLUME_STATES) this.set({ volume, state }, state === now ? 1 : 0)
        })
      },
    })
    new Gauge({
      name: 'tidemark_volume_resync_remaining_bytes',
      help: 'Bytes still to resend: the dirty regions of a resync, or the rest of the initial copy.',
      labelNames: ['volume'],
      registers: [reg],
      collect() {
        this.reset()
        const rs = agent.replication()
        const tap = agent.tap.stats()
        volumes.forEach((volume, i) => {
          const t = tap[i]
          this.set({ volume }, rs[i] ? rs[i].resyncRemainingBytes(t) : t && t.mode !== 'normal' ? t.dirtyRegions * t.regionSize : 0)
        })
      },
    })
    new Counter({
      name: 'tidemark_agent_tap_requests_total',
      help: 'NBD requests the data tap served, by op (since the agent started).',
      labelNames: ['volume', 'op'],
      registers: [reg],
      collect() {
        const rows: Array<[Record<string, string>, number]> = []
        for (const s of agent.tap.stats()) for (const [op, key] of TAP_OPS) rows.push([{ volume: s.name, op }, s[key]])
        setCounter(this, rows)
      },
    })
    new Counter({
      name: 'tidemark_agent_congestion_waits_total',
      help: 'Writes that found the record buffer full and waited for replication to make room, instead of the volume falling behind (since the agent started).',
      labelNames: ['volume'],
      registers: [reg],
      collect() {
        setCounter(this, agent.tap.stats().map((s) => [{ volume: s.name }, s.congestionWaits]))
      },
    })
    new Counter({
      name: 'tidemark_agent_congestion_wait_seconds_total',
      help: 'Time writes spent waiting for room in the record buffer: what a burst faster than replication cost the application (since the agent started).',
      labelNames: ['volume'],
      registers: [reg],
      collect() {
        setCounter(this, agent.tap.stats().map((s) => [{ volume: s.name }, s.congestionWaitMs / 1000]))
      },
    })
    const hist = new Histogram({
      name: 'tidemark_agent_rpo_seconds',
      help: 'Time from a write (sampled every 100 ms) to the appliance acknowledging it durable.',
      labelNames: ['volume'],
      buckets: RPO_BUCKETS,
      registers: [reg],
      collect() {
        agent.replication().forEach((r, i) => {
          const { lagsMs, count } = r.rpoLagsSince(self.rpoSeen[i])
          self.rpoSeen[i] = count
          for (const ms of lagsMs) this.observe({ volume: r.volume }, ms / 1000)
        })
      },
    })
    // Every replicated volume's histogram exists before its first sample.
    for (const r of agent.replication()) hist.zero({ volume: r.volume })
  }

  metrics(): Promise<string> {
    return this.registry.metrics()
  }
}
