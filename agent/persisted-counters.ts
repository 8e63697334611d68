// The agent's byte counters across its restarts: NAME.counters in --state DIR
// (JSON: {"appBytes", "changedBytes", "wireBytes"}), beside NAME.gen and
// NAME.acked (volume-state.ts). The replicator counts from zero in each
// process; what earlier processes counted is kept here and added, so
// tidemark_agent_*_bytes_total never go backwards across a restart.
//
// Written like the other state files (native/atomic-file.ts: temp file,
// fsync, rename), every SAVE_EVERY_MS while the numbers move and once at
// stop, whether or not anything scrapes them (AgentByteCounters runs with
// every replicating agent). A crash loses at most the last interval's counts: the counter then
// steps back a little at the next start, which Prometheus takes for a reset,
// as it would without this file. A file that cannot be read is logged and
// started over from zero.
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { AtomicFileWriter } from '../native/atomic-file'
import type { Agent } from './agent'

export const SAVE_EVERY_MS = 10_000

export interface ByteCounts {
  appBytes: number
  changedBytes: number
  wireBytes: number
}

const ZERO: ByteCounts = { appBytes: 0, changedBytes: 0, wireBytes: 0 }

export class PersistedCounters {
  /** what earlier processes counted */
  readonly base: ByteCounts
  private readonly writer: AtomicFileWriter
  private lastSaved = ''

  constructor(stateDir: string, volume: string, log: Logger) {
    const file = path.join(stateDir, `${volume}.counters`)
    this.writer = new AtomicFileWriter(file, (e) => log.warn({ volume, file }, `cannot save the byte counters: ${e.message}`), 0o600)
    this.base = { ...ZERO }
    let text: string
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ volume, file }, `cannot read the byte counters, starting them at 0: ${(err as Error).message}`)
      return
    }
    try {
      const o = JSON.parse(text) as Partial<ByteCounts>
      for (const k of ['appBytes', 'changedBytes', 'wireBytes'] as const) {
        const v = o[k]
        if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) this.base[k] = v
      }
      this.lastSaved = JSON.stringify(this.base)
    } catch (err) {
      log.warn({ volume, file }, `the byte counters file is not JSON, starting them at 0: ${(err as Error).message}`)
    }
  }

  /** The totals: the base plus what this process counted. */
  total(now: ByteCounts): ByteCounts {
    return { appBytes: this.base.appBytes + now.appBytes, changedBytes: this.base.changedBytes + now.changedBytes, wireBytes: this.base.wireBytes + now.wireBytes }
  }

  /** Queues the totals to be written if they changed (returns at once). */
  save(now: ByteCounts): void {
    const text = JSON.stringify(this.total(now))
    if (text === this.lastSaved) return
    this.lastSaved = text
    this.writer.set(`${text}\n`)
  }

  flush(): Promise<void> {
    return this.writer.flush().catch(() => undefined) // logged by the writer's onError
  }
}

/** Every replicated volume's counters, kept for an agent: saved every SAVE_EVERY_MS and at close. */
export class AgentByteCounters {
  private readonly files: PersistedCounters[]
  private readonly timer: NodeJS.Timeout

  constructor(
    private readonly agent: Agent,
    stateDir: string,
    log: Logger
  ) {
    this.files = agent.replication().map((r) => new PersistedCounters(stateDir, r.volume, log))
    this.timer = setInterval(() => this.save(), SAVE_EVERY_MS)
    this.timer.unref()
  }

  /** Each replicated volume's totals across restarts, in tap order. */
  totals(): Array<ByteCounts & { volume: string }> {
    return this.agent.replicationStats().map((r, i) => ({ volume: r.volume, ...this.files[i].total(r) }))
  }

  private save(): void {
    this.agent.replicationStats().forEach((r, i) => this.files[i].save(r))
  }

  /** Saves a last time: call after the agent stopped, when its counts are final. */
  async close(): Promise<void> {
    clearInterval(this.timer)
    this.save()
    await Promise.all(this.files.map((f) => f.flush()))
  }
}
