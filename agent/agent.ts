// `tidemark agent`: the data tap plus the consumers that drain it.
//
// With an appliance, each volume has a Replicator (agent/replicator.ts) that
// streams its records over one shared gRPC channel, MicroScan in front and
// one throttle for the link. Without one, a volume's records go to one of two
// local sinks: the capture log (durable, then acknowledged, so the dirty map
// tracks exactly what the log lacks), or nowhere (consumed, counted,
// acknowledged). In assessment mode (agent/assessment.ts) they are scanned
// and encoded as if for the wire, counted, and acknowledged.
import path from 'node:path'
import type { Logger } from 'pino'
import { initHash } from '../proto/hash'
import { SEED_SEQ } from '../proto/seed'
import { StatsLineGate } from '../proto/stats-line-gate'
import type { NbdListenerOptions } from '../native/nbd-listener'
import type { ReplicationClient } from '../proto/generated/tidemark/v1/Replication'
import { Assessment } from './assessment'
import { CaptureLogWriter } from './capture-log'
import { DEFAULT_CACHE_BYTES, MicroScan } from './microscan'
import { applianceClient, Replicator, type ReplicatorStats, type TlsFiles } from './replicator'
import { Tap, type VolumeStats } from './tap'
import { Throttle } from './throttle'
import { ControlServer } from './control'
import { TimeMarks, type CreateTimeMark } from './timemarks'

export interface AgentOptions {
  stateDir: string
  nbd: { unix?: string; tcp?: { host: string; port: number } }
  /** TLS, connection cap and handshake deadline of the NBD listener */
  nbdListener?: NbdListenerOptions
  volumes: Array<{ name: string; path: string }>
  group?: string
  bufferBytes?: number
  /** how long a write may wait for room in a full record buffer before the volume falls behind, ms (default 1000; 0: at once) */
  congestionWaitMs?: number
  /** directory for per-volume capture logs (NAME.tmcap) */
  captureLogDir?: string
  /** how often to log counts, ms (0: never) */
  statsIntervalMs?: number
  /** replicate to this appliance (HOST:PORT) instead of a local sink */
  appliance?: { address: string; tls?: TlsFiles }
  /** data bytes per second on the wire, all volumes together (0 or absent: no limit) */
  throttleBytesPerSecond?: number
  /** budget for sent, unacknowledged batches, all volumes together (default 64 MiB) */
  memoryBytes?: number
  /** MicroScan fingerprint cache, all volumes together (default 256 MiB) */
  fingerprintCacheBytes?: number
  /** false: send every captured sector (for comparisons) */
  microscan?: boolean
  /** replicate nowhere: measure what replication would send (agent/assessment.ts) */
  assess?: boolean
  /** how this agent names itself to the appliance (default: the host name) */
  agentId?: string
  /** unix socket path for `tidemark timemark create` */
  control?: string
  /** TimeMarks taken on a schedule */
  schedule?: TimeMarkSchedule[]
  /**
   * Volumes the appliance holds a seed of (Admin.SeedVolume), by name: the
   * generation each continues, its initial copy comparing every region
   * (volume-state.ts)
   */
  seeded?: Record<string, string>
  /** a failed hook's output goes into the (replicated) TimeMark note */
  hookOutputInNote?: boolean
  logger: Logger
}

/** One scheduled TimeMark: every `everyMs`, of the group (or of each volume without one). */
export interface TimeMarkSchedule {
  everyMs: number
  label: string
  quiesce?: string
  thaw?: string
  hookTimeoutMs?: number
}

export const DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024
const LAG_SAMPLE_MS = 100

const PULL_BYTES = 4 * 1024 * 1024
const DRAIN_ON_STOP_MS = 10_000
/** With an appliance, a stop waits this long for it to acknowledge what was captured (a reconnect included). */
const DRAIN_TO_APPLIANCE_ON_STOP_MS = 30_000

export class Agent {
  readonly tap: Tap
  private readonly log: Logger
  private readonly writers: Array<CaptureLogWriter | null>
  private readonly abort = new AbortController()
  private readonly loops: Array<Promise<void>> = []
  private timer: NodeJS.Timeout | null = null
  // A lag that grows while disconnected, a copy's rate and time left: they move with the clock alone.
  private readonly statsGate = new StatsLineGate(['rpoLagMs', 'syncProgress.mbPerSecond', 'syncProgress.secondsLeft'])
  private lagTimer: NodeJS.Timeout | null = null
  private stopping: Promise<void> | null = null
  private replicators: Replicator[] = []
  private client: ReplicationClient | null = null
  timemarks!: TimeMarks
  private control: ControlServer | null = null
  private readonly schedules: NodeJS.Timeout[] = []
  /** --assess: what replication would have sent */
  assessment: Assessment | null = null

  private constructor(tap: Tap, writers: Array<CaptureLogWriter | null>, log: Logger) {
    this.tap = tap
    this.writers = writers
    this.log = log
  }

  static async start(opts: AgentOptions): Promise<Agent> {
    const log = opts.logger
    const writers: Array<CaptureLogWriter | null> = []
    if (opts.appliance || opts.assess) await initHash()
    for (const v of opts.volumes) {
      if (!opts.captureLogDir || opts.appliance || opts.assess) {
        writers.push(null)
        continue
      }
      const w = await CaptureLogWriter.open(path.join(opts.captureLogDir, `${v.name}.tmcap`))
      log.info({ volume: v.name, file: w.file, lastSeq: w.lastSeq }, 'capture log open')
      writers.push(w)
    }
    const tap = Tap.open({
      stateDir: opts.stateDir,
      // A seeded volume's seqs start above the seed's point (proto/seed.ts), before the first write.
      volumes: opts.volumes.map((v) => ({ ...v, group: opts.group, seqFloor: opts.seeded?.[v.name] ? SEED_SEQ : 0 })),
      unix: opts.nbd.unix,
      tcp: opts.nbd.tcp,
      bufferBytes: opts.bufferBytes,
      congestionWaitMs: opts.congestionWaitMs,
      listener: opts.nbdListener,
      logger: log,
    })
    const agent = new Agent(tap, writers, log)
    if (opts.appliance) {
      try {
        agent.startReplication(opts, opts.appliance)
      } catch (err) {
        await tap.close()
        throw err
      }
    } else if (opts.assess) {
      agent.assessment = new Assessment(tap, opts.fingerprintCacheBytes ?? DEFAULT_CACHE_BYTES, log)
    } else {
      tap.volumes.forEach((_, i) => agent.loops.push(agent.drain(i)))
    }
    agent.timemarks = new TimeMarks(tap, agent.replicators, opts.group, log, opts.hookOutputInNote)
    if (opts.control) {
      try {
        agent.control = await ControlServer.start(opts.control, agent.timemarks, log)
      } catch (err) {
        await agent.stop()
        throw err
      }
    }
    for (const s of opts.schedule ?? []) agent.schedule(s, opts.group)
    const every = opts.statsIntervalMs ?? 10_000
    if (every > 0) {
      agent.timer = setInterval(() => agent.logStats('stats'), every)
      agent.timer.unref()
    }
    log.info(
      {
        nbd: opts.nbd.unix ? `unix:${opts.nbd.unix}` : `tcp:${opts.nbd.tcp?.host}:${tap.tcpPort}`,
        volumes: tap.stats().map((s) => ({ name: s.name, size: s.size, mode: s.mode, dirtyRegions: s.dirtyRegions })),
        try: opts.nbd.unix
          ? `qemu-io -f raw -c 'write -P 0xab 0 64k' 'nbd+unix:///${opts.volumes[0].name}?socket=${opts.nbd.unix}'`
          : undefined,
        sink: opts.appliance
          ? `appliance ${opts.appliance.address}${opts.appliance.tls ? ' (mutual TLS)' : ''}`
          : opts.assess
            ? 'assessment: replicated nowhere, measured as if sent'
            : opts.captureLogDir
            ? `capture log in ${opts.captureLogDir}`
            : 'none (records are counted and acknowledged)',
      },
      'serving'
    )
    return agent
  }

  private startReplication(opts: AgentOptions, appliance: { address: string; tls?: TlsFiles }): void {
    const n = this.tap.volumes.length
    const client = applianceClient(appliance.address, appliance.tls)
    this.client = client
    const throttle = new Throttle(opts.throttleBytesPerSecond ?? 0)
    const memory = opts.memoryBytes ?? DEFAULT_MEMORY_BYTES
    const cache = opts.fingerprintCacheBytes ?? DEFAULT_CACHE_BYTES
    this.replicators = this.tap.volumes.map(
      (name) =>
        new Replicator({
          tap: this.tap,
          volume: name,
          group: opts.group,
          stateDir: opts.stateDir,
          agentId: opts.agentId ?? 'agent',
          client,
          appliance: appliance.address,
          tls: appliance.tls,
          throttle,
          // Shares of the budgets: a volume whose link is down cannot starve the others.
          memoryBytes: Math.floor(memory / n),
          microscan: new MicroScan({
            volumeBytes: this.tap.volumeSize(name),
            cacheBytes: Math.floor(cache / n),
            enabled: opts.microscan ?? true,
          }),
          logger: this.log,
          seededGeneration: opts.seeded?.[name],
        })
    )
    for (const r of this.replicators) r.start()
    this.lagTimer = setInterval(() => {
      const now = performance.now()
      const stats = this.tap.stats()
      this.replicators.forEach((r, i) => r.sample(stats[i].volumeSeq, now, stats[i].mode))
    }, LAG_SAMPLE_MS)
    this.lagTimer.unref()
  }

  private schedule(s: TimeMarkSchedule, group: string | undefined): void {
    const scopes: CreateTimeMark[] = group ? [{ group }] : this.tap.volumes.map((volume) => ({ volume }))
    let running = false
    const t = setInterval(() => {
      if (running) return // a slow hook: skip this round rather than pile up
      running = true
      Promise.all(
        scopes.map((scope) =>
          this.timemarks
            .create({ ...scope, label: s.label, quiesce: s.quiesce, thaw: s.thaw, hookTimeoutMs: s.hookTimeoutMs, noWait: true })
            .catch((err: Error) => this.log.warn({ ...scope, label: s.label }, `scheduled TimeMark not taken: ${err.message}`))
        )
      ).finally(() => (running = false))
    }, s.everyMs)
    t.unref()
    this.schedules.push(t)
  }

  /** The volumes' replicators, in tap order (empty without an appliance): what the metrics read. */
  replication(): readonly Replicator[] {
    return this.replicators
  }

  /** Per-volume replication counters (empty without an appliance). */
  replicationStats(): ReplicatorStats[] {
    return this.replicators.map((r) => r.stats())
  }

  private async drain(i: number): Promise<void> {
    const w = this.writers[i]
    try {
      // reuse: the batch is written and acknowledged before the next pull
      for await (const batch of this.tap.records(i, { maxBytes: PULL_BYTES, signal: this.abort.signal, reuse: true })) {
        if (w) {
          w.append(batch)
          w.sync()
        }
        this.tap.ack(i, batch.lastSeq)
      }
    } catch (err) {
      if ((err as { code?: string }).code === 'TAP_CLOSED') return
      this.log.error({ err, volume: this.tap.volumes[i] }, 'draining records failed; the dirty map keeps what was not acknowledged')
    }
  }

  stats(): VolumeStats[] {
    return this.tap.stats()
  }

  /** The periodic line: at info when it changed since it was last logged (or a minute passed), else at debug; the final one always. */
  private logStats(msg: string, always = false): void {
    // The listener's refusals, once they happen: someone is knocking.
    const l = this.tap.listenerStats()
    if (l.refusedConnections || l.handshakeTimeouts || l.rejectedHandshakes) {
      if (always || this.statsGate.due('', { nbdListener: l })) this.log.info({ nbdListener: l }, msg)
      else this.log.debug({ nbdListener: l }, msg)
    }
    const repl = this.replicationStats()
    for (const [i, s] of this.tap.stats().entries()) {
      const r = repl[i]
      const line = {
        volume: s.name,
        mode: s.mode,
        writes: s.writes,
        flushes: s.flushes,
        trims: s.trims,
        zeroes: s.zeroes,
        bytesWritten: s.bytesWritten,
        records: s.records,
        recordBytes: s.recordBytes,
        droppedRecords: s.droppedRecords,
        behindEvents: s.behindEvents,
        resyncRecords: s.resyncRecords,
        resyncHoles: s.resyncHoles,
        writebacks: s.writebacks,
        congestionWaits: s.congestionWaits,
        congestionWaitMs: s.congestionWaitMs,
        dirtyRegions: s.dirtyRegions,
        staleRegions: s.staleRegions,
        lastSeq: s.lastSeq,
        ackedSeq: s.ackedSeq,
        rejected: s.rejected,
        connections: s.connections,
        ...(r && {
          connected: r.connected,
          dataChannel: r.dataChannel,
          appBytes: r.appBytes,
          changedBytes: r.changedBytes,
          wireBytes: r.wireBytes,
          batches: r.batches,
          resentBatches: r.resentBatches,
          durableSeq: r.durableSeq,
          rpoLagMs: r.rpoLagMs,
          rpoP50Ms: r.rpoP50Ms,
          rpoP99Ms: r.rpoP99Ms,
          rpoSamples: r.rpoSamples,
          windowBytes: r.windowBytes,
          waitDrainMs: r.waitDrainMs,
          waitBudgetMs: r.waitBudgetMs,
          fingerprintRequests: r.fingerprintRequests,
          fingerprintsInFlightMax: r.fingerprintsInFlightMax,
          waitFingerprintsMs: r.waitFingerprintsMs,
          streamErrors: r.streamErrors,
          syncProgress: r.syncProgress,
        }),
      }
      if (always || this.statsGate.due(s.name, line)) this.log.info(line, msg)
      else this.log.debug(line, msg)
    }
  }

  /** Stops serving: in-flight requests finish, records still held stay in the dirty map. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.timer) clearInterval(this.timer)
      for (const t of this.schedules) clearInterval(t)
      await this.control?.close()
      // Serve no more, then let the consumers drain what was captured (and
      // finish a resync in progress) so a clean stop leaves a clean dirty map.
      await this.tap.stopServing()
      const deadline = Date.now() + (this.replicators.length ? DRAIN_TO_APPLIANCE_ON_STOP_MS : DRAIN_ON_STOP_MS)
      const busy = (): boolean =>
        this.replicators.length
          ? this.replicators.some((r) => !r.caughtUp())
          : this.tap.stats().some((s) => s.ringRecords > 0 || s.mode === 'resyncing')
      if (busy()) this.log.info('draining: waiting for the appliance to acknowledge what was captured')
      for (const r of this.replicators) r.hurry()
      while (Date.now() < deadline && busy()) {
        await new Promise((r) => setTimeout(r, 10))
      }
      if (this.replicators.length && busy()) {
        this.log.warn('stopping before the appliance acknowledged everything; the dirty map keeps what it lacks')
      }
      if (this.lagTimer) clearInterval(this.lagTimer)
      await Promise.all(this.replicators.map((r) => r.stop()))
      this.client?.close()
      await this.tap.close()
      this.abort.abort()
      await Promise.all(this.loops)
      await this.assessment?.stop()
      this.logStats('final stats', true)
      for (const w of this.writers) w?.close()
    })()
    return this.stopping
  }
}
