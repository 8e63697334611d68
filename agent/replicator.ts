// The replicator: one volume's records, from the tap to an appliance, over
// one Replicate stream. This file is the loop; the rooms it composes hold
// the rest:
//   replication-session.ts  the gRPC stream (Hello/Welcome, acks, fingerprint requests)
//   data-channel.ts         the connection beside it that carries the batches
//   resync-pipeline.ts      pulled batches waiting for their fingerprints, in pull order
//   send-window.ts          sent, unacknowledged batches within the memory budget
//   initial-copy.ts         the full copy: pending regions, progress, NAME.sync
//   volume-state.ts         NAME.gen, NAME.acked, NAME.sync, written asynchronously
//   rpo-lag.ts              the RPO lag and its percentiles
//   capture-clock.ts        the RPO points batches and heartbeats report to the appliance
//
// One loop per volume, strictly in order:
//   connect   open the stream, send Hello, wait for the Welcome. Its durable
//             seq D acknowledges everything up to D (tap.ack); the window's
//             later batches are sent again, in order, before anything new.
//   pull      up to 1 MiB from the tap (more while the stream pushes back),
//             but only while the send window is within the memory budget.
//   compare   a batch holding RESYNC records asks the appliance for the
//             fingerprints of their regions as it is pulled (answered in
//             stream order, after every batch written before the request), so
//             the resync sends only sectors that differ (DRBD's checksum
//             resync). While the reply is out, up to PIPELINE_DEPTH more
//             batches are pulled and ask theirs; batches leave in pull order.
//   scan      MicroScan drops sectors the replica already holds.
//   send      the scan's ChangeBatch (xxh64 + LZ4, made in the same native
//             call, on libuv's pool), keep it in the window, wait for the
//             throttle, write it respecting flow control (write() false ->
//             'drain'). The batch states the pulled batch's seq range even if
//             MicroScan dropped every record, so acks still move.
// Acks arrive on the stream's 'data' event at any time and release the
// window (and the tap's dirty map) at once; nothing waits behind data.
//
// A pulled batch is kept until it has been scanned into the window, so a
// stream that breaks while waiting for fingerprints costs a second request,
// never a record (resync-pipeline.ts asks again, in order, after the resend).
//
// If the appliance holds another generation, or less than it once
// acknowledged, the replica lost data: the MicroScan cache is cleared and the
// whole volume is copied again.
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import type { ReplicationClient } from '../proto/generated/tidemark/v1/Replication'
import type { Welcome__Output } from '../proto/generated/tidemark/v1/Welcome'
import { MAX_BATCH_BYTES, PROTOCOL_VERSION } from '../proto/load'
import { isHoleResync, isResync, RecordKind, REGION_SIZE } from '../proto/record'
import { RecordBatch } from '../native/record-batch'
import { InitialCopy, SYNC_FILE_EVERY_MS, type SyncProgressStats } from './initial-copy'
import type { MicroScan } from './microscan'
import { addressHost } from './data-channel'
import { BACKOFF_MAX_MS, BACKOFF_MIN_MS, NO_SPACE_BACKOFF_MAX_MS, describeStreamError, Session, SessionClosed, type TlsFiles } from './replication-session'
import { ResyncPipeline, type PipelineEntry } from './resync-pipeline'
import { RpoLag } from './rpo-lag'
import { CaptureClock } from './capture-clock'
import { SendWindow, type WindowEntry } from './send-window'
import { PayloadBuffers } from './payload-buffers'
import type { Tap, VolumeStats } from './tap'
import type { Throttle } from './throttle'
import { VolumeState } from './volume-state'

export { applianceClient, type TlsFiles } from './replication-session'
export type { SyncProgressStats } from './initial-copy'

const PULL_BYTES = 1024 * 1024
/**
 * Nagle for batches: a small pull while earlier batches are still in flight
 * waits up to COALESCE_MS (or the next ack) for more records, so a stream of
 * small synchronous writes becomes a few batches worth compressing instead of
 * one message per write. With nothing in flight it leaves at once.
 */
const COALESCE_BYTES = 256 * 1024
const COALESCE_MS = 5
/** While the stream pushes back (or a resync runs), pull this much at once. */
const PULL_BYTES_BLOCKED = 4 * 1024 * 1024
/** A pull may add one record past its maximum: at most 1 MiB of data (tap.ts records()). */
const PULL_SLACK = 1024 * 1024 + 4096
const WELCOME_TIMEOUT_MS = 30_000
/** Pulled batches from this size up are scanned on libuv's pool; smaller ones on the main thread. */
const POOL_SCAN_BYTES = 256 * 1024
/** Payload buffers kept for reuse (payload-buffers.ts), at most; and never more than the window's budget. */
const PAYLOADS_KEPT = 64 * 1024 * 1024
/** How often a live stream reports the volume's RPO point and state (replication.proto Heartbeat). */
export const HEARTBEAT_MS = 1000

export interface ReplicatorOptions {
  tap: Tap
  volume: string
  group?: string
  stateDir: string
  agentId: string
  client: ReplicationClient
  /** HOST:PORT, for logs and for the data channel's host */
  appliance: string
  /** the stream's TLS files, which the data channel uses too */
  tls?: TlsFiles
  throttle: Throttle
  /** budget for sent, unacknowledged batches, bytes */
  memoryBytes: number
  microscan: MicroScan
  logger: Logger
  /** the appliance holds a seed of this volume under this generation (agent --seeded, volume-state.ts) */
  seededGeneration?: string
}

export interface ReplicatorStats {
  volume: string
  connected: boolean
  /** the batches travel on a data channel beside the stream (not on the stream) */
  dataChannel: boolean
  generation: string
  appBytes: number
  changedBytes: number
  wireBytes: number
  batches: number
  resentBatches: number
  durableSeq: number
  rpoLagMs: number
  /** over the newest resolved samples (a sample resolves when an ack covers its seq) */
  rpoP50Ms: number | null
  rpoP99Ms: number | null
  rpoSamples: number
  windowBatches: number
  windowBytes: number
  fingerprintRequests: number
  /** the most fingerprint requests waiting for replies at once (the resync's pipelining) */
  fingerprintsInFlightMax: number
  waitDrainMs: number
  waitBudgetMs: number
  waitFingerprintsMs: number
  streamErrors: number
  lastError: string | null
  syncProgress: SyncProgressStats | null
}

export class Replicator {
  readonly volume: string
  private readonly o: ReplicatorOptions
  private readonly log: Logger
  private readonly tap: Tap
  private readonly ms: MicroScan
  private readonly state: VolumeState
  private readonly window: SendWindow
  private readonly payloads: PayloadBuffers
  private readonly copy: InitialCopy
  private readonly lag = new RpoLag()
  private readonly clock = new CaptureClock()
  /** the session whose pump runs: heartbeats go only there (not between the Welcome and the data channel) */
  private pumping: Session | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private durableSeq = 0
  /**
   * Pulled batches until they are in the window, in pool buffers (not one
   * Buffer per pull: a new Buffer per batch kept V8's collector busy).
   */
  private readonly pipe: ResyncPipeline
  /** a small pull waiting for more records to join it (not yet in the pipeline) */
  private held: RecordBatch | null = null
  private session: Session | null = null
  private stopped = false
  private stopWake: (() => void) | null = null
  private readonly stopPromise: Promise<void>
  private ackWaiters: Array<() => void> = []
  /** TimeMarks being waited for: seq -> whether the pump has passed its MARK. */
  private readonly expectedMarks = new Map<number, boolean>()
  private backoffWake: (() => void) | null = null
  private readable: Promise<void> | null = null
  private loop: Promise<void> | null = null
  private lastHadResync = false
  private attempts = 0
  /** errors logged since the stream last made progress: each is logged once */
  private seenErrors = new Set<string>()
  /** data channel failures logged (once each, for the agent's life: a firewall does not heal by itself) */
  private readonly seenDataErrors = new Set<string>()
  private progressTimer: NodeJS.Timeout | null = null
  private maxBatch = MAX_BATCH_BYTES
  private readonly st = {
    appBytes: 0,
    changedBytes: 0,
    wireBytes: 0,
    batches: 0,
    resentBatches: 0,
    streamErrors: 0,
    lastError: null as string | null,
    // Where the loop waits (ms): flow control, the memory budget, fingerprint replies.
    waitDrainMs: 0,
    waitBudgetMs: 0,
    waitFingerprintsMs: 0,
  }

  /** Reads the volume's state files (making its generation the first time); start() begins replicating. */
  constructor(o: ReplicatorOptions) {
    this.o = o
    this.volume = o.volume
    this.tap = o.tap
    this.ms = o.microscan
    this.log = o.logger.child({ volume: o.volume })
    const seed = o.seededGeneration ? { generation: o.seededGeneration, regions: Math.ceil(o.tap.volumeSize(o.volume) / REGION_SIZE) } : undefined
    const state = (this.state = new VolumeState(o.stateDir, o.volume, this.log, seed))
    this.window = new SendWindow(o.memoryBytes)
    this.payloads = new PayloadBuffers(Math.min(o.memoryBytes, PAYLOADS_KEPT))
    this.copy = new InitialCopy({
      tap: o.tap,
      volume: o.volume,
      regions: Math.ceil(o.tap.volumeSize(o.volume) / REGION_SIZE),
      state,
      microscan: o.microscan,
      logger: this.log,
      durableSeq: () => this.durableSeq,
      report: () => {
        if (this.session?.live) this.sendProgress(this.session)
      },
    })
    this.pipe = new ResyncPipeline(o.microscan, this.copy, PULL_BYTES_BLOCKED + PULL_SLACK)
    this.stopPromise = new Promise((resolve) => (this.stopWake = resolve))
  }

  start(): void {
    this.loop ??= this.run()
    this.progressTimer = setInterval(() => this.copy.tick(), SYNC_FILE_EVERY_MS)
    this.progressTimer.unref()
    this.heartbeatTimer = setInterval(() => this.heartbeat(), HEARTBEAT_MS)
    this.heartbeatTimer.unref()
  }

  /** True once nothing captured is waiting: the window is acknowledged and the tap holds nothing. */
  caughtUp(): boolean {
    if (this.window.length || this.held || this.pipe.length) return false
    const s = this.tap.stats().find((v) => v.name === this.volume)
    return !!s && s.ringRecords === 0 && s.mode === 'normal' && this.durableSeq >= s.volumeSeq
  }

  /**
   * Call right after Tap.timemark returned seq (synchronously, before the
   * pump can pull): the pump then notes the MARK when it passes.
   */
  expectMark(seq: number): void {
    this.expectedMarks.set(seq, false)
  }

  /**
   * Resolves 'durable' once the appliance holds the MARK at seq, 'lost' if
   * the stream got past seq without it (the tap fell behind and dropped it
   * before it was pulled), 'timeout' after ms.
   */
  async waitMark(seq: number, ms: number): Promise<'durable' | 'lost' | 'timeout'> {
    const deadline = Date.now() + ms
    try {
      for (;;) {
        if (this.durableSeq >= seq) return this.expectedMarks.get(seq) ? 'durable' : 'lost'
        const left = deadline - Date.now()
        if (left <= 0) return 'timeout'
        let timer: NodeJS.Timeout | undefined
        await Promise.race([this.nextAck(), new Promise((r) => (timer = setTimeout(r, Math.min(left, 1000))))])
        clearTimeout(timer)
      }
    } finally {
      this.expectedMarks.delete(seq)
    }
  }

  /** Reconnects now if waiting out a backoff (the agent is draining to stop). */
  hurry(): void {
    this.attempts = 0
    this.backoffWake?.()
  }

  /** Ends the stream and the loop; resolves once the state files hold what the loop last knew. */
  async stop(): Promise<void> {
    this.stopped = true
    this.stopWake?.()
    if (this.progressTimer) clearInterval(this.progressTimer)
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer)
    this.session?.end()
    await this.loop
    this.copy.save(true)
    await this.state.flush()
  }

  /** Called about every 100 ms with the volume's newest seq and the tap's mode, for the RPO lag and points. */
  sample(volumeSeq: number, now: number, mode: string = 'normal'): void {
    this.lag.sample(volumeSeq, now, this.durableSeq)
    this.clock.sample(volumeSeq, Date.now(), mode === 'normal' && !this.copy.inProgress)
  }

  /** RPO lags resolved since `from` (rpo-lag.ts resolvedSince), for the agent's histogram. */
  rpoLagsSince(from: number): { lagsMs: number[]; count: number } {
    return this.lag.resolvedSince(from)
  }

  // What the metrics and the heartbeats say of the volume. Each takes the
  // tap's stats of it when the caller has them (a heartbeat reads them once).

  private tapStats(): VolumeStats | undefined {
    return this.tap.stats().find((v) => v.name === this.volume)
  }

  /** The volume's state as its metrics and heartbeats name it. */
  volumeState(v = this.tapStats()): 'normal' | 'behind' | 'resync' | 'initial_copy' | 'disconnected' | 'no_space' {
    const connected = !!this.session?.welcome && !this.session.isClosed
    if (!connected) return this.st.lastError?.includes('NO_SPACE') ? 'no_space' : 'disconnected'
    if (this.copy.inProgress) return 'initial_copy'
    return v?.mode === 'behind' ? 'behind' : v?.mode === 'resyncing' ? 'resync' : 'normal'
  }

  /** Bytes still to resend: the dirty regions of a resync, or the rest of the initial copy. */
  resyncRemainingBytes(v = this.tapStats()): number {
    if (!v) return 0
    const p = this.copy.progress()
    if (p && !p.complete) return Math.min(v.size, (p.regionsTotal - p.regionsDone) * REGION_SIZE)
    return v.mode === 'normal' ? 0 : Math.min(v.size, v.dirtyRegions * v.regionSize)
  }

  /** Captured and not yet acknowledged: the tap's buffer and the send window. */
  backlogBytes(v = this.tapStats()): number {
    return (v?.ringUsed ?? 0) + this.window.bytes + this.pipe.bytes
  }

  /** Every HEARTBEAT_MS on a pumping stream: the RPO point, the state, the backlog (replication.proto Heartbeat). */
  private heartbeat(): void {
    const s = this.session
    if (!s || s !== this.pumping || !s.live) return
    const p = this.clock.current()
    const v = this.tapStats()
    const state = this.volumeState(v)
    try {
      s.write({
        heartbeat: {
          seq: p?.seq ?? 0,
          capturedBeforeMs: p?.capturedBeforeMs ?? 0,
          // the stream is live, so never disconnected or no_space here
          state: state === 'disconnected' || state === 'no_space' ? 'normal' : state,
          backlogBytes: this.backlogBytes(v),
          resyncRemainingBytes: this.resyncRemainingBytes(v),
        },
      })
    } catch {
      // the stream closed: the next one reports again
    }
  }

  stats(): ReplicatorStats {
    return {
      volume: this.volume,
      connected: !!this.session?.welcome && !this.session.isClosed,
      dataChannel: !!this.session?.data && !this.session.isClosed,
      generation: this.state.generation,
      appBytes: this.st.appBytes,
      changedBytes: this.st.changedBytes,
      wireBytes: this.st.wireBytes,
      batches: this.st.batches,
      resentBatches: this.st.resentBatches,
      durableSeq: this.durableSeq,
      rpoLagMs: this.lag.lagMs(),
      ...this.lag.percentiles(),
      windowBatches: this.window.length,
      windowBytes: this.window.bytes,
      fingerprintRequests: this.pipe.st.fingerprintRequests,
      fingerprintsInFlightMax: this.pipe.st.fingerprintsInFlightMax,
      waitDrainMs: Math.round(this.st.waitDrainMs),
      waitBudgetMs: Math.round(this.st.waitBudgetMs),
      waitFingerprintsMs: Math.round(this.st.waitFingerprintsMs),
      streamErrors: this.st.streamErrors,
      lastError: this.st.lastError,
      syncProgress: this.copy.progress(),
    }
  }

  // ---- the loop ----

  private async run(): Promise<void> {
    while (!this.stopped) {
      let s: Session | null = null
      try {
        // The generation is durable before a Hello names it (the first time only).
        await this.state.durable()
        s = new Session(this.o.client, (seq) => this.onAck(seq))
        this.session = s
        s.write({
          hello: {
            protocol: PROTOCOL_VERSION,
            agentId: this.o.agentId,
            volume: this.volume,
            generation: this.state.generation,
            size: this.tap.volumeSize(this.volume),
            group: this.o.group ?? '',
            ackedSeq: this.state.ackedSeq,
          },
        })
        const w = await Promise.race([s.waitWelcome(WELCOME_TIMEOUT_MS), this.stopPromise.then(() => null)])
        if (!w) break
        this.welcome(w)
        const dataErr = await s.openData(addressHost(this.o.appliance), this.o.tls)
        if (dataErr) this.dataChannelFailed(dataErr)
        this.pumping = s
        await this.pump(s)
        // The pump also ends without a throw when the stream closes while it waits on an ack or
        // on the tap: the appliance's reason is the session's, and must be reported all the same.
        if (s.error && !(s.error instanceof SessionClosed) && !this.stopped) this.streamFailed(s.error)
      } catch (err) {
        // A request that was waiting when the stream ended fails with SessionClosed; the reason is the session's.
        if (!this.stopped) this.streamFailed(err instanceof SessionClosed && s?.error && !(s.error instanceof SessionClosed) ? s.error : (err as Error))
      } finally {
        if (this.pumping === s) this.pumping = null
        s?.close(new SessionClosed('session over'))
        if (this.session === s) this.session = null
      }
      if (this.stopped) break
      // A full appliance gets longer to make room (up to a minute) than a dead link.
      const cap = this.st.lastError?.includes('NO_SPACE') ? NO_SPACE_BACKOFF_MAX_MS : BACKOFF_MAX_MS
      const delay = Math.min(cap, BACKOFF_MIN_MS * 2 ** Math.min(this.attempts++, 12)) * (0.5 + Math.random() / 2)
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        new Promise<void>((r) => {
          this.backoffWake = r
          timer = setTimeout(r, delay)
        }),
        this.stopPromise,
      ])
      clearTimeout(timer)
      this.backoffWake = null
    }
  }

  private streamFailed(err: Error): void {
    if (err instanceof SessionClosed) return
    const { code, message, key, refused } = describeStreamError(err)
    this.st.streamErrors++
    this.st.lastError = `${code}: ${message}`
    if (this.seenErrors.has(key)) {
      this.log.debug({ code, appliance: this.o.appliance }, `replication stream failed again: ${message}`)
      return
    }
    if (this.seenErrors.size < 32) this.seenErrors.add(key)
    const ctx = { code, appliance: this.o.appliance, durableSeq: this.durableSeq, windowBatches: this.window.length }
    if (message.startsWith('NO_SPACE')) {
      this.log.error(ctx, `the appliance is out of space for volume ${this.volume}: ${message.replace(/^NO_SPACE: /, '')}; the tap keeps the changed regions in its dirty map and the agent retries with a growing backoff`)
    } else if (refused) this.log.error(ctx, `the appliance ended the replication stream: ${message}; retrying with backoff`)
    else this.log.warn(ctx, `replication stream to ${this.o.appliance} failed: ${message}; reconnecting with backoff`)
  }

  /** Logged once per reason: the stream carries the batches itself, slower but whole. */
  private dataChannelFailed(err: Error): void {
    const key = `data ${err.message}`
    if (this.seenDataErrors.has(key)) return
    this.seenDataErrors.add(key)
    this.log.warn({ appliance: this.o.appliance }, `${err.message}; sending the batches on the replication stream instead`)
  }

  private welcome(w: Welcome__Output): void {
    this.maxBatch = Math.min(MAX_BATCH_BYTES, w.maxBatchBytes || MAX_BATCH_BYTES)
    const ackedSeq = this.state.ackedSeq
    const lostGeneration = w.generation !== this.state.generation
    const lostData = w.durableSeq < ackedSeq
    if (w.durableSeq > this.tap.mark(this.volume)) this.tap.raiseSeq(this.volume, w.durableSeq)
    this.log.info(
      { appliance: this.o.appliance, applianceId: w.applianceId, durableSeq: w.durableSeq, fullSync: w.fullSync, resend: this.window.countAfter(w.durableSeq) },
      'connected to the appliance'
    )
    if (lostGeneration || lostData) {
      this.log.warn(
        { generation: this.state.generation, applianceGeneration: w.generation, durableSeq: w.durableSeq, ackedSeq },
        lostGeneration
          ? 'the appliance holds another generation of this volume: copying the whole volume'
          : `the appliance holds less than it acknowledged (durable seq ${w.durableSeq} < ${ackedSeq}): copying the whole volume`
      )
      // Nothing the replica was thought to hold can be trusted, and the copy
      // covers every batch still in the window.
      this.ms.clear()
      for (const e of this.window.clear()) {
        e.done = true
        this.recycle(e)
      }
      this.durableSeq = w.durableSeq
      this.lag.forgetUpTo(w.durableSeq)
      this.clock.reset()
      this.copy.restart(w.durableSeq === 0)
      // After the copy's NAME.sync was queued: see volume-state.ts.
      this.state.resetAcked(w.durableSeq)
      return
    }
    this.onAck(w.durableSeq)
    this.copy.welcome(w.fullSync, w.durableSeq, this.window.length === 0)
  }

  /** Sends the window again, then pulls, compares, scans and sends until the stream ends. */
  private async pump(s: Session): Promise<void> {
    for (const e of this.window.snapshot()) {
      if (e.lastSeq <= this.durableSeq) continue
      await this.send(s, e)
    }
    // Batches pulled on the last stream ask again, now that the window is sent.
    this.pipe.askAgain(s)
    if (this.copy.complete) this.sendProgress(s)
    while (!this.stopped && !s.isClosed) {
      if (this.window.full) {
        const t0 = performance.now()
        await Promise.race([this.nextAck(), s.closed, this.stopPromise])
        this.st.waitBudgetMs += performance.now() - t0
        continue
      }
      const head = this.pipe.head
      if (head && this.pipe.ready(head)) {
        await this.sendBatch(s, head)
        continue
      }
      // While the head waits for fingerprints, pull the next batches and ask
      // for theirs; what they hold counts against the memory budget already.
      const room = this.pipe.hasRoom && (!head || this.window.bytes + this.pipe.bytes < this.o.memoryBytes)
      if (room && (await this.pull(s))) continue
      if (head) {
        // The reply, or records to pull (and ask about) meanwhile.
        const t0 = performance.now()
        await Promise.race([this.pipe.wait(head), s.closed, this.stopPromise, ...(room ? [this.tapReadable()] : [])])
        this.st.waitFingerprintsMs += performance.now() - t0
        continue
      }
      // The tap wakes us when records arrive or when it falls behind; the
      // timer is a safety net (a pull is what starts a resync).
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.tapReadable(), s.closed, this.stopPromise, new Promise((r) => (timer = setTimeout(r, 1000)))])
      clearTimeout(timer)
    }
  }

  /** Resolves when the tap may hold records (armed by the last empty pull). */
  private tapReadable(): Promise<void> {
    return (this.readable ??= this.tap.wait(this.volume).then(() => {
      this.readable = null
    }))
  }

  /** Pulls a batch into a pool buffer and hands it to the pipeline (which asks for its fingerprints); false: the tap held nothing. */
  private async pull(s: Session): Promise<boolean> {
    // Coalesce while the stream pushes back, and during a resync (one
    // fingerprint round trip per pulled batch).
    const want = s.blocked || this.lastHadResync ? PULL_BYTES_BLOCKED : PULL_BYTES
    const max = Math.min(want, Math.floor(this.maxBatch / 2))
    const buf = this.pipe.buffer()
    let batch = this.tap.next(this.volume, max, buf)
    if (batch && batch.buffer.length < COALESCE_BYTES && this.window.length > 0 && this.pipe.length === 0) {
      this.held = batch
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.nextAck(), s.closed, this.stopPromise, new Promise((r) => (timer = setTimeout(r, COALESCE_MS)))])
      clearTimeout(timer)
      // The rest of the pull buffer takes the records that follow, so the two are one batch without a copy.
      const have = batch.buffer.length
      const more = this.tap.next(this.volume, Math.max(1, max - have), buf.subarray(have))
      if (more) {
        const joined = more.buffer.buffer === buf.buffer && more.buffer.byteOffset === buf.byteOffset + have
        batch = new RecordBatch(joined ? buf.subarray(0, have + more.buffer.length) : Buffer.concat([batch.buffer, more.buffer]))
      }
      this.held = null
    }
    if (!batch) {
      this.pipe.giveBack(buf)
      return false
    }
    let hasResync = false
    const marks = this.expectedMarks
    batch.forEach((r) => {
      const kind: number = r.kind
      if (isResync(kind) || isHoleResync(kind, r.flags)) hasResync = true
      else if (kind === RecordKind.Mark && marks.has(r.seq)) marks.set(r.seq, true)
    })
    this.lastHadResync = hasResync
    this.pipe.add(s, batch, buf, hasResync)
    return true
  }

  /** Scans the pipeline's head (its fingerprints in) into the window and sends it. */
  private async sendBatch(s: Session, p: PipelineEntry): Promise<void> {
    const batch = p.batch
    // One native call: scan, checksum, LZ4 (agent/microscan.ts). On libuv's pool, except for a
    // small batch, which the hop to another thread would delay more than scanning it here costs.
    const replica = this.pipe.replica(p)
    let home: Buffer | null = null
    let out
    if (batch.buffer.length >= POOL_SCAN_BYTES) {
      home = this.payloads.take(this.ms.outputBound(batch.buffer.length))
      out = await this.ms.encodeAsync(batch, replica, true, home)
      const payload = out.msg.payload as Buffer
      if (payload.length * 2 < home.length) {
        // LZ4 shrank it a lot: a copy of its own, and the big buffer back at once.
        out.msg.payload = Buffer.from(payload)
        this.payloads.give(home)
        home = null
      }
    } else out = this.ms.encode(batch, replica)
    this.copy.noteWritten(batch)
    const msg = out.msg
    msg.capturedBeforeMs = this.clock.forBatch(out.lastSeq)
    if (msg.rawLength! > this.maxBatch) {
      throw new TidemarkError('BATCH_TOO_LARGE', `a batch of ${msg.rawLength} bytes is over the appliance's ${this.maxBatch}-byte limit`)
    }
    const e = SendWindow.entry(out.firstSeq, out.lastSeq, msg, p.regions.length, this.copy.regionsToCopy(p.regions), home)
    this.st.appBytes += out.appBytes
    this.st.changedBytes += out.changedBytes
    this.window.add(e)
    this.pipe.done(p)
    await this.send(s, e)
  }

  private async send(s: Session, e: WindowEntry): Promise<void> {
    const payload = e.msg.payload as Buffer
    await this.o.throttle.take(payload.length)
    if (s.blocked) {
      const t0 = performance.now()
      await s.drain()
      this.st.waitDrainMs += performance.now() - t0
    }
    // The ack may have come while we waited (or the window was given up: its payload buffer may be another batch's now).
    if ((e.lastSeq <= this.durableSeq && e.sends > 0) || e.done) return
    if (e.home) {
      e.writing++
      s.write({ batch: e.msg }, () => {
        e.writing--
        this.recycle(e)
      })
    } else s.write({ batch: e.msg })
    if (e.sends++ > 0) this.st.resentBatches++
    else {
      this.st.batches++
      this.st.wireBytes += payload.length
    }
  }

  private onAck(seq: number): void {
    const advanced = seq > this.durableSeq
    if (advanced) this.durableSeq = seq
    // Noted before the tap forgets the regions, written behind it (volume-state.ts
    // says why a lagging NAME.acked is safe): a later appliance that reports
    // less than this has lost data.
    this.state.raiseAcked(seq)
    if (seq > 0 && !this.stopped) this.tap.ack(this.volume, seq)
    const released = this.window.release(seq)
    for (const e of released) {
      if (e.copyRegions) this.copy.done(e.copyRegions)
      e.done = true
      this.recycle(e)
    }
    this.lag.acked(seq)
    this.clock.acked(seq)
    if (released.length || advanced) {
      // Progress (not the ack every session starts with): the next failure is
      // news again, and reconnects start fast. An appliance that welcomes the
      // agent and then refuses its batches (out of space) must not reset the
      // backoff each time, or the agent would reconnect ten times a second.
      this.attempts = 0
      this.seenErrors.clear()
    }
    const waiters = this.ackWaiters
    this.ackWaiters = []
    for (const w of waiters) w()
    this.copy.maybeFinish()
  }

  /** An entry's payload buffer back for later batches, once nothing will read it again. */
  private recycle(e: WindowEntry): void {
    if (!e.done || e.writing > 0 || !e.home) return
    this.payloads.give(e.home)
    e.home = null
  }

  private nextAck(): Promise<void> {
    return new Promise((resolve) => this.ackWaiters.push(resolve))
  }

  private sendProgress(s: Session): void {
    const progress = this.copy.progressMessage()
    if (!progress) return
    try {
      s.write({ progress })
    } catch {
      // the stream closed: the next Welcome asks again
    }
  }
}
