// `tidemark agent`: the data tap plus the consumers that drain it.
//
// Until replication lands, a volume's records go to one of two sinks: the
// capture log (durable, then acknowledged, so the dirty map tracks exactly
// what the log lacks), or nowhere (consumed, counted, acknowledged).
import path from 'node:path'
import type { Logger } from 'pino'
import { CaptureLogWriter } from './capture-log'
import { Tap, type VolumeStats } from './tap'

export interface AgentOptions {
  stateDir: string
  nbd: { unix?: string; tcp?: { host: string; port: number } }
  volumes: Array<{ name: string; path: string }>
  group?: string
  bufferBytes?: number
  /** directory for per-volume capture logs (NAME.tmcap) */
  captureLogDir?: string
  /** how often to log counts, ms (0: never) */
  statsIntervalMs?: number
  logger: Logger
}

const PULL_BYTES = 4 * 1024 * 1024
const DRAIN_ON_STOP_MS = 10_000

export class Agent {
  readonly tap: Tap
  private readonly log: Logger
  private readonly writers: Array<CaptureLogWriter | null>
  private readonly abort = new AbortController()
  private readonly loops: Array<Promise<void>> = []
  private timer: NodeJS.Timeout | null = null
  private stopping: Promise<void> | null = null

  private constructor(tap: Tap, writers: Array<CaptureLogWriter | null>, log: Logger) {
    this.tap = tap
    this.writers = writers
    this.log = log
  }

  static async start(opts: AgentOptions): Promise<Agent> {
    const log = opts.logger
    const writers: Array<CaptureLogWriter | null> = []
    for (const v of opts.volumes) {
      if (!opts.captureLogDir) {
        writers.push(null)
        continue
      }
      const w = await CaptureLogWriter.open(path.join(opts.captureLogDir, `${v.name}.tmcap`))
      log.info({ volume: v.name, file: w.file, lastSeq: w.lastSeq }, 'capture log open')
      writers.push(w)
    }
    const tap = Tap.open({
      stateDir: opts.stateDir,
      volumes: opts.volumes.map((v) => ({ ...v, group: opts.group })),
      unix: opts.nbd.unix,
      tcp: opts.nbd.tcp,
      bufferBytes: opts.bufferBytes,
      logger: log,
    })
    const agent = new Agent(tap, writers, log)
    tap.volumes.forEach((_, i) => agent.loops.push(agent.drain(i)))
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
        sink: opts.captureLogDir ? `capture log in ${opts.captureLogDir}` : 'none (records are counted and acknowledged)',
      },
      'serving'
    )
    return agent
  }

  private async drain(i: number): Promise<void> {
    const w = this.writers[i]
    try {
      for await (const batch of this.tap.records(i, { maxBytes: PULL_BYTES, signal: this.abort.signal })) {
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

  private logStats(msg: string): void {
    for (const s of this.tap.stats()) {
      this.log.info(
        {
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
          resyncRecords: s.resyncRecords,
          dirtyRegions: s.dirtyRegions,
          staleRegions: s.staleRegions,
          lastSeq: s.lastSeq,
          ackedSeq: s.ackedSeq,
          rejected: s.rejected,
          connections: s.connections,
        },
        msg
      )
    }
  }

  /** Stops serving: in-flight requests finish, records still held stay in the dirty map. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.timer) clearInterval(this.timer)
      // Serve no more, then let the consumers drain what was captured (and
      // finish a resync in progress) so a clean stop leaves a clean dirty map.
      await this.tap.stopServing()
      const deadline = Date.now() + DRAIN_ON_STOP_MS
      while (Date.now() < deadline && this.tap.stats().some((s) => s.ringRecords > 0 || s.mode === 'resyncing')) {
        await new Promise((r) => setTimeout(r, 10))
      }
      await this.tap.close()
      this.abort.abort()
      await Promise.all(this.loops)
      this.logStats('final stats')
      for (const w of this.writers) w?.close()
    })()
    return this.stopping
  }
}
