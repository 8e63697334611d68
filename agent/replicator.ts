// The replicator: one volume's records, from the tap to an appliance, over
// one Replicate stream (proto/tidemark/v1/replication.proto is the protocol).
//
// One loop per volume, strictly in order:
//   connect   open the stream, send Hello, wait for the Welcome. Its durable
//             seq D acknowledges everything up to D (tap.ack); the window's
//             later batches are sent again, in order, before anything new.
//   pull      up to 1 MiB from the tap (more while the stream pushes back),
//             but only while the window of sent, unacknowledged batches is
//             within the memory budget. Over it, the loop stops pulling: the
//             tap's ring fills, the tap falls behind on its own and keeps only
//             its dirty map, and the application never waits on the WAN.
//   compare   a batch holding RESYNC records asks the appliance for the
//             fingerprints of their regions first (answered in stream order,
//             after every batch written before the request), so the resync
//             sends only sectors that differ (DRBD's checksum resync).
//   scan      MicroScan drops sectors the replica already holds.
//   send      encodeBatch (xxh64 + LZ4), keep it in the window, wait for the
//             throttle, write it respecting flow control (write() false ->
//             'drain'). The batch states the pulled batch's seq range even if
//             MicroScan dropped every record, so acks still move.
// Acks arrive on the stream's 'data' event at any time and release the
// window (and the tap's dirty map) at once; nothing waits behind data.
//
// A pulled batch is kept until it has been scanned into the window, so a
// stream that breaks while waiting for fingerprints costs a second request,
// never a record. The window is resent whole after a reconnect: the appliance
// may have lost batches it had not yet made durable, and later fingerprints
// were computed after them.
//
// Initial copy: when the Welcome asks for a full sync, Tap.resyncFrom(vol, R)
// turns every region from R on into RESYNC records (seqs assigned under the
// volume lock, so replay in seq order is exact while the application writes).
// Which regions are durable at the appliance is tracked here, and the lowest
// region not yet durable is written to STATE/NAME.sync (temp file + rename),
// so a restart after kill -9 resumes there instead of at zero. When every
// region has been copied and acknowledged and the tap is recording normally
// again, SyncProgress{done == total} tells the appliance the generation is
// complete. A copy to a replica that held nothing when it began (durable
// seq 0) knows that every region no batch has written since still reads as
// zeroes there, and asks fingerprints only for the others: the copy of a new
// volume costs no round trips for regions the application leaves alone.
// If the appliance holds another generation, or less than it once
// acknowledged, the replica lost data: the MicroScan cache is cleared and the
// whole volume is copied again.
//
// State files per volume: NAME.gen (the generation id, made the first time
// the volume is protected), NAME.acked (the highest durable seq seen, written
// in place before the tap is told, so a rolled-back appliance is noticed),
// NAME.sync (an unfinished initial copy).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { encodeBatch } from '../proto/change-batch'
import { TidemarkError } from '../proto/errors'
import type { AgentMessage } from '../proto/generated/tidemark/v1/AgentMessage'
import type { ApplianceMessage__Output } from '../proto/generated/tidemark/v1/ApplianceMessage'
import type { ChangeBatch } from '../proto/generated/tidemark/v1/ChangeBatch'
import type { ReplicationClient } from '../proto/generated/tidemark/v1/Replication'
import type { Welcome__Output } from '../proto/generated/tidemark/v1/Welcome'
import { MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { RecordBatch, RecordKind } from '../native/record-batch'
import { MicroScan, REGION_BYTES, SECTORS_PER_REGION, type ReplicaFingerprints } from './microscan'
import { zeroSectorFingerprint } from '../proto/hash'
import type { Tap } from './tap'
import type { Throttle } from './throttle'

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
/** Bookkeeping counted against the memory budget for each window entry. */
const ENTRY_OVERHEAD = 256
const WELCOME_TIMEOUT_MS = 30_000
const FINGERPRINT_TIMEOUT_MS = 60_000
const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 5_000
const PROGRESS_EVERY_MS = 5_000
const SYNC_FILE_EVERY_MS = 1_000
const MAX_REGIONS_PER_REQUEST = 4096
/** Samples kept for the RPO lag estimate (thinned beyond this). */
const MAX_LAG_SAMPLES = 2048
/** Resolved lag samples kept for the percentiles (the newest; about 7 minutes of writing). */
const LAG_RESOLVED_KEPT = 4096

export interface TlsFiles {
  cert: string
  key: string
  ca: string
}

/** One channel per appliance; every volume's stream shares it. */
export function applianceClient(address: string, tls?: TlsFiles): ReplicationClient {
  const creds = tls
    ? grpc.credentials.createSsl(fs.readFileSync(tls.ca), fs.readFileSync(tls.key), fs.readFileSync(tls.cert))
    : grpc.credentials.createInsecure()
  return new replicationProto.Replication(address, creds, {
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    // Notice a dead appliance or a cut link even while no ack is due.
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.initial_reconnect_backoff_ms': BACKOFF_MIN_MS,
    'grpc.max_reconnect_backoff_ms': BACKOFF_MAX_MS,
  })
}

export interface ReplicatorOptions {
  tap: Tap
  volume: string
  group?: string
  stateDir: string
  agentId: string
  client: ReplicationClient
  /** for logs */
  appliance: string
  throttle: Throttle
  /** budget for sent, unacknowledged batches, bytes */
  memoryBytes: number
  microscan: MicroScan
  logger: Logger
}

export interface SyncProgressStats {
  percent: number
  regionsDone: number
  regionsTotal: number
  mbPerSecond: number
  secondsLeft: number | null
  complete: boolean
}

export interface ReplicatorStats {
  volume: string
  connected: boolean
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
  waitDrainMs: number
  waitBudgetMs: number
  waitFingerprintsMs: number
  streamErrors: number
  lastError: string | null
  syncProgress: SyncProgressStats | null
}

interface Entry {
  firstSeq: number
  lastSeq: number
  msg: ChangeBatch
  bytes: number
  sends: number
  /** regions of the initial copy this batch carries as RESYNC records */
  copyRegions: number[] | null
}

interface CopyState {
  generation: string
  total: number
  /** one bit per region not yet durable at the appliance */
  pending: Uint32Array
  pendingCount: number
  /** every region below it is durable */
  low: number
  startedAt: number
  startRegions: number
  lastTick: { at: number; done: number }
  rate: number
  savedLow: number
  savedAt: number
  /** set when every region is durable: the volume seq to wait for (see maybeFinishCopy) */
  finishSeq: number
  finishBehindEvents: number
  complete: boolean
}

class SessionClosed extends Error {}

/** One Replicate stream: the call, its Welcome, the fingerprint requests awaiting replies. */
class Session {
  readonly call: grpc.ClientDuplexStream<AgentMessage, ApplianceMessage__Output>
  readonly closed: Promise<Error>
  welcome: Welcome__Output | null = null
  blocked = false
  error: Error | null = null
  private closeFn!: (e: Error) => void
  private onWelcome: ((w: Welcome__Output) => void) | null = null
  private readonly waiting = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void; regions: number[] }>()

  constructor(client: ReplicationClient, onAck: (seq: number) => void) {
    this.closed = new Promise((resolve) => (this.closeFn = resolve))
    this.call = client.replicate()
    this.call.on('data', (m: ApplianceMessage__Output) => {
      if (m.body === 'ack' && m.ack) {
        try {
          onAck(m.ack.durableSeq)
        } catch (err) {
          this.close(err as Error)
        }
      }
      else if (m.body === 'fingerprints' && m.fingerprints) {
        const f = m.fingerprints
        const w = this.waiting.get(f.id)
        if (!w) return this.close(new TidemarkError('PROTOCOL', `fingerprints for request ${f.id}, which is not waiting`))
        this.waiting.delete(f.id)
        if (f.regions.length !== w.regions.length || f.regions.some((g, i) => g !== w.regions[i])) {
          w.reject(new TidemarkError('PROTOCOL', `fingerprints for request ${f.id} name other regions than asked for`))
        } else w.resolve(f.fingerprints)
      } else if (m.body === 'welcome' && m.welcome) {
        this.welcome = m.welcome
        this.onWelcome?.(m.welcome)
      }
    })
    // 'error' carries the appliance's status; 'status' follows it, and comes
    // alone when the appliance ends the stream with OK.
    this.call.on('error', (e) => this.close(e))
    this.call.on('status', (st: grpc.StatusObject) => {
      if (st.code === grpc.status.OK) this.close(new TidemarkError('STREAM_ENDED', 'the appliance ended the stream'))
      else this.close(Object.assign(new Error(st.details), { code: st.code, details: st.details }))
    })
    this.call.on('drain', () => (this.blocked = false))
  }

  get isClosed(): boolean {
    return this.error !== null
  }

  close(e: Error, cancel = true): void {
    if (this.error) return
    this.error = e
    for (const w of this.waiting.values()) w.reject(new SessionClosed(e.message))
    this.waiting.clear()
    this.closeFn(e)
    this.call.on('error', () => undefined)
    if (cancel) this.call.cancel()
  }

  /** Half-closes the stream (the agent is stopping); the appliance finishes what it holds. */
  end(): void {
    if (this.error) return
    this.call.end()
    this.close(new SessionClosed('stopped'), false)
  }

  waitWelcome(ms: number): Promise<Welcome__Output> {
    if (this.welcome) return Promise.resolve(this.welcome)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new TidemarkError('WELCOME_TIMEOUT', `no welcome within ${ms / 1000} s`)), ms)
      this.onWelcome = (w) => {
        clearTimeout(timer)
        resolve(w)
      }
      this.closed.then((e) => {
        clearTimeout(timer)
        reject(e)
      })
    })
  }

  write(m: AgentMessage): void {
    if (this.error) throw new SessionClosed(this.error.message)
    if (!this.call.write(m)) this.blocked = true
  }

  /** Resolves when the stream takes more data (or rejects when it closes). */
  async drain(): Promise<void> {
    while (this.blocked) {
      if (this.error) throw new SessionClosed(this.error.message)
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.call.off('drain', done)
          resolve()
        }
        this.call.on('drain', done)
        this.closed.then(done)
      })
    }
    if (this.error) throw new SessionClosed(this.error.message)
  }

  fingerprints(id: number, regions: number[]): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close(new TidemarkError('FINGERPRINT_TIMEOUT', `no fingerprints within ${FINGERPRINT_TIMEOUT_MS / 1000} s`))
      }, FINGERPRINT_TIMEOUT_MS)
      const done = <T>(fn: (v: T) => void) => (v: T) => {
        clearTimeout(timer)
        fn(v)
      }
      this.waiting.set(id, { resolve: done(resolve), reject: done(reject), regions })
      try {
        this.write({ fingerprintRequest: { id, regions } })
      } catch (e) {
        this.waiting.delete(id)
        clearTimeout(timer)
        reject(e)
      }
    })
  }
}

/** Writes a small file atomically: temp file, fsync, rename. */
function writeFileAtomic(file: string, data: string): void {
  const tmp = `${file}.tmp`
  const fd = fs.openSync(tmp, 'w')
  try {
    fs.writeSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
}

export class Replicator {
  readonly volume: string
  private readonly o: ReplicatorOptions
  private readonly log: Logger
  private readonly tap: Tap
  private readonly ms: MicroScan
  private readonly regions: number
  private readonly genFile: string
  private readonly syncFile: string
  private readonly ackFd: number
  private readonly generation: string
  private ackedSeq: number
  private durableSeq = 0
  private window: Entry[] = []
  private windowBytes = 0
  private held: RecordBatch | null = null
  private session: Session | null = null
  private copy: CopyState | null = null
  /**
   * While copying to a replica that held nothing when the copy began (durable
   * seq 0): one bit per region that any batch since then may have written.
   * Every other region still reads as zeroes there, so its RESYNC needs no
   * fingerprint round trip. Null otherwise.
   */
  private fresh: Uint32Array | null = null
  private zeroPage: BigUint64Array | null = null
  private stopped = false
  private stopWake: (() => void) | null = null
  private readonly stopPromise: Promise<void>
  private ackWaiters: Array<() => void> = []
  /** TimeMarks being waited for: seq -> whether the pump has passed its MARK. */
  private readonly expectedMarks = new Map<number, boolean>()
  private backoffWake: (() => void) | null = null
  private readable: Promise<void> | null = null
  private loop: Promise<void> | null = null
  private fpId = 0
  private lastHadResync = false
  private attempts = 0
  /** errors logged since the stream last made progress: each is logged once */
  private seenErrors = new Set<string>()
  private lagSamples: Array<[number, number]> = []
  /** ack time - sample time, ms, of resolved samples: a ring of the newest LAG_RESOLVED_KEPT */
  private readonly lagResolved = new Float64Array(LAG_RESOLVED_KEPT)
  private lagResolvedCount = 0
  private progressTimer: NodeJS.Timeout | null = null
  private maxBatch = MAX_BATCH_BYTES
  private readonly st = {
    appBytes: 0,
    changedBytes: 0,
    wireBytes: 0,
    batches: 0,
    resentBatches: 0,
    fingerprintRequests: 0,
    streamErrors: 0,
    lastError: null as string | null,
    // Where the loop waits (ms): flow control, the memory budget, fingerprint replies.
    waitDrainMs: 0,
    waitBudgetMs: 0,
    waitFingerprintsMs: 0,
  }

  constructor(o: ReplicatorOptions) {
    this.o = o
    this.volume = o.volume
    this.tap = o.tap
    this.ms = o.microscan
    this.log = o.logger.child({ volume: o.volume })
    this.regions = Math.ceil(o.tap.volumeSize(o.volume) / REGION_BYTES)
    this.genFile = path.join(o.stateDir, `${o.volume}.gen`)
    this.syncFile = path.join(o.stateDir, `${o.volume}.sync`)
    const ackFile = path.join(o.stateDir, `${o.volume}.acked`)
    let gen: string | null = null
    try {
      gen = fs.readFileSync(this.genFile, 'utf8').trim() || null
    } catch {
      gen = null
    }
    let fresh = false
    if (!gen) {
      gen = crypto.randomUUID()
      writeFileAtomic(this.genFile, `${gen}\n`)
      fresh = true
      this.log.info({ generation: gen }, 'first protection of this volume: new generation')
    }
    this.generation = gen
    // NAME.acked: u64 LE, the highest durable seq this generation has seen.
    this.ackFd = fs.openSync(ackFile, fs.existsSync(ackFile) && !fresh ? 'r+' : 'w+')
    const b = Buffer.alloc(8)
    const n = fs.readSync(this.ackFd, b, 0, 8, 0)
    this.ackedSeq = n === 8 ? Number(b.readBigUInt64LE(0)) : 0
    if (n !== 8) this.persistAcked(0)
    this.stopPromise = new Promise((resolve) => (this.stopWake = resolve))
  }

  start(): void {
    this.loop ??= this.run()
    this.progressTimer = setInterval(() => this.tick(), SYNC_FILE_EVERY_MS)
    this.progressTimer.unref()
  }

  /** True once nothing captured is waiting: the window is acknowledged and the tap holds nothing. */
  caughtUp(): boolean {
    if (this.window.length || this.held) return false
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

  async stop(): Promise<void> {
    this.stopped = true
    this.stopWake?.()
    if (this.progressTimer) clearInterval(this.progressTimer)
    this.session?.end()
    await this.loop
    this.saveSync(true)
    fs.closeSync(this.ackFd)
  }

  /** Called about every 100 ms with the volume's newest seq, for the RPO lag. */
  sample(volumeSeq: number, now: number): void {
    const last = this.lagSamples[this.lagSamples.length - 1]
    if (volumeSeq <= this.durableSeq || (last && last[0] >= volumeSeq)) return
    this.lagSamples.push([volumeSeq, now])
    if (this.lagSamples.length > MAX_LAG_SAMPLES) {
      // Keep the oldest (it sets the lag) and every other one after it.
      this.lagSamples = [this.lagSamples[0], ...this.lagSamples.slice(1).filter((_, i) => i % 2 === 1)]
    }
  }

  private lagPercentiles(): { rpoP50Ms: number | null; rpoP99Ms: number | null; rpoSamples: number } {
    const n = Math.min(this.lagResolvedCount, LAG_RESOLVED_KEPT)
    if (n === 0) return { rpoP50Ms: null, rpoP99Ms: null, rpoSamples: 0 }
    const xs = this.lagResolved.slice(0, n).sort()
    const at = (p: number): number => Math.round(xs[Math.min(n - 1, Math.ceil(p * n) - 1)])
    return { rpoP50Ms: at(0.5), rpoP99Ms: at(0.99), rpoSamples: n }
  }

  stats(): ReplicatorStats {
    return {
      volume: this.volume,
      connected: !!this.session?.welcome && !this.session.isClosed,
      generation: this.generation,
      appBytes: this.st.appBytes,
      changedBytes: this.st.changedBytes,
      wireBytes: this.st.wireBytes,
      batches: this.st.batches,
      resentBatches: this.st.resentBatches,
      durableSeq: this.durableSeq,
      rpoLagMs: this.lagSamples.length ? Math.round(performance.now() - this.lagSamples[0][1]) : 0,
      ...this.lagPercentiles(),
      windowBatches: this.window.length,
      windowBytes: this.windowBytes,
      fingerprintRequests: this.st.fingerprintRequests,
      waitDrainMs: Math.round(this.st.waitDrainMs),
      waitBudgetMs: Math.round(this.st.waitBudgetMs),
      waitFingerprintsMs: Math.round(this.st.waitFingerprintsMs),
      streamErrors: this.st.streamErrors,
      lastError: this.st.lastError,
      syncProgress: this.progress(),
    }
  }

  // ---- the loop ----

  private async run(): Promise<void> {
    while (!this.stopped) {
      let s: Session | null = null
      try {
        s = new Session(this.o.client, (seq) => this.onAck(seq))
        this.session = s
        s.write({
          hello: {
            protocol: PROTOCOL_VERSION,
            agentId: this.o.agentId,
            volume: this.volume,
            generation: this.generation,
            size: this.tap.volumeSize(this.volume),
            group: this.o.group ?? '',
            ackedSeq: this.ackedSeq,
          },
        })
        const w = await Promise.race([s.waitWelcome(WELCOME_TIMEOUT_MS), this.stopPromise.then(() => null)])
        if (!w) break
        this.welcome(s, w)
        await this.pump(s)
      } catch (err) {
        if (!this.stopped) this.streamFailed(err as Error)
      } finally {
        s?.close(new SessionClosed('session over'))
        if (this.session === s) this.session = null
      }
      if (this.stopped) break
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(this.attempts++, 10)) * (0.5 + Math.random() / 2)
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
    const e = err as Error & { code?: number | string; details?: string }
    this.st.streamErrors++
    const code = typeof e.code === 'number' ? grpc.status[e.code] ?? String(e.code) : String(e.code ?? 'ERROR')
    const message = e.details ?? e.message
    this.st.lastError = `${code}: ${message}`
    // grpc-js puts the time of the last connection attempt into the message.
    const key = `${code} ${message.replace(/\(\d{4}-\d\d-\d\dT[^)]*\)/g, '')}`
    if (this.seenErrors.has(key)) {
      this.log.debug({ code, appliance: this.o.appliance }, `replication stream failed again: ${message}`)
      return
    }
    if (this.seenErrors.size < 32) this.seenErrors.add(key)
    // The appliance refused something we sent: that is a bug or an attack, not weather.
    const refused = [
      grpc.status.INVALID_ARGUMENT,
      grpc.status.DATA_LOSS,
      grpc.status.FAILED_PRECONDITION,
      grpc.status.OUT_OF_RANGE,
      grpc.status.PERMISSION_DENIED,
      grpc.status.NOT_FOUND,
      grpc.status.RESOURCE_EXHAUSTED,
      grpc.status.UNAUTHENTICATED,
      grpc.status.INTERNAL,
      grpc.status.UNIMPLEMENTED,
    ].includes(e.code as grpc.status)
    const ctx = { code, appliance: this.o.appliance, durableSeq: this.durableSeq, windowBatches: this.window.length }
    if (refused) this.log.error(ctx, `the appliance ended the replication stream: ${message}; retrying with backoff`)
    else this.log.warn(ctx, `replication stream to ${this.o.appliance} failed: ${message}; reconnecting with backoff`)
  }

  private welcome(s: Session, w: Welcome__Output): void {
    this.maxBatch = Math.min(MAX_BATCH_BYTES, w.maxBatchBytes || MAX_BATCH_BYTES)
    const lostGeneration = w.generation !== this.generation
    const lostData = w.durableSeq < this.ackedSeq
    if (w.durableSeq > this.tap.mark(this.volume)) this.tap.raiseSeq(this.volume, w.durableSeq)
    this.log.info(
      { appliance: this.o.appliance, applianceId: w.applianceId, durableSeq: w.durableSeq, fullSync: w.fullSync, resend: this.window.filter((e) => e.lastSeq > w.durableSeq).length },
      'connected to the appliance'
    )
    if (lostGeneration || lostData) {
      this.log.warn(
        { generation: this.generation, applianceGeneration: w.generation, durableSeq: w.durableSeq, ackedSeq: this.ackedSeq },
        lostGeneration
          ? 'the appliance holds another generation of this volume: copying the whole volume'
          : `the appliance holds less than it acknowledged (durable seq ${w.durableSeq} < ${this.ackedSeq}): copying the whole volume`
      )
      // Nothing the replica was thought to hold can be trusted, and the copy
      // covers every batch still in the window.
      this.ms.clear()
      this.window = []
      this.windowBytes = 0
      this.ackedSeq = w.durableSeq
      this.persistAcked(w.durableSeq)
      this.durableSeq = w.durableSeq
      this.lagSamples = this.lagSamples.filter((x) => x[0] > w.durableSeq)
      this.fresh = w.durableSeq === 0 ? new Uint32Array(Math.ceil(this.regions / 32)) : null
      this.startCopy(0)
      return
    }
    this.onAck(w.durableSeq)
    if (w.fullSync) {
      if (this.copy && this.copy.generation === this.generation) {
        // A copy already runs in this process: the tap still holds its stale
        // regions (pump() reports a finished one again).
        return
      }
      let from = 0
      try {
        const j = JSON.parse(fs.readFileSync(this.syncFile, 'utf8'))
        if (j.generation === this.generation && Number.isSafeInteger(j.nextRegion) && j.nextRegion >= 0) {
          from = Math.min(j.nextRegion, this.regions)
        }
      } catch {
        from = 0
      }
      if (from > 0) this.log.info({ nextRegion: from, regions: this.regions }, `resuming the initial copy at ${((100 * from) / this.regions).toFixed(1)} %`)
      // A replica that holds nothing yet, and nothing of ours on the way to it.
      this.fresh = from === 0 && w.durableSeq === 0 && this.window.length === 0 ? new Uint32Array(Math.ceil(this.regions / 32)) : null
      this.startCopy(from)
    } else if (!this.copy || this.copy.complete) {
      if (this.copy) this.log.info('the appliance holds a complete copy')
      this.copy = null
      fs.rmSync(this.syncFile, { force: true })
    }
  }

  /** Sends the window again, then pulls, compares, scans and sends until the stream ends. */
  private async pump(s: Session): Promise<void> {
    for (const e of [...this.window]) {
      if (e.lastSeq <= this.durableSeq) continue
      await this.send(s, e)
    }
    if (this.copy?.complete) this.sendProgress(s)
    while (!this.stopped && !s.isClosed) {
      if (this.windowBytes >= this.o.memoryBytes) {
        const t0 = performance.now()
        await Promise.race([this.nextAck(), s.closed, this.stopPromise])
        this.st.waitBudgetMs += performance.now() - t0
        continue
      }
      // Coalesce while the stream pushes back, and during a resync (one
      // fingerprint round trip per pulled batch).
      const want = s.blocked || this.lastHadResync ? PULL_BYTES_BLOCKED : PULL_BYTES
      const max = Math.min(want, Math.floor(this.maxBatch / 2))
      let batch = this.held ?? this.tap.next(this.volume, max)
      if (batch && !this.held && batch.buffer.length < COALESCE_BYTES && this.window.length > 0) {
        this.held = batch
        let timer: NodeJS.Timeout | undefined
        await Promise.race([this.nextAck(), s.closed, this.stopPromise, new Promise((r) => (timer = setTimeout(r, COALESCE_MS)))])
        clearTimeout(timer)
        const more = this.tap.next(this.volume, Math.max(1, max - batch.buffer.length))
        if (more) batch = this.held = new RecordBatch(Buffer.concat([batch.buffer, more.buffer]))
      }
      if (!batch) {
        this.readable ??= this.tap.wait(this.volume).then(() => {
          this.readable = null
        })
        // The tap wakes us when records arrive or when it falls behind; the
        // timer is a safety net (a pull is what starts a resync).
        let timer: NodeJS.Timeout | undefined
        await Promise.race([this.readable, s.closed, this.stopPromise, new Promise((r) => (timer = setTimeout(r, 1000)))])
        clearTimeout(timer)
        continue
      }
      this.held = batch
      let regions: number[] = []
      let hasResync = false
      const marks = this.expectedMarks
      batch.forEach((r) => {
        if (r.kind === RecordKind.Resync) hasResync = true
        else if (r.kind === RecordKind.Mark && marks.has(r.seq)) marks.set(r.seq, true)
      })
      if (hasResync) regions = this.ms.resyncRegions(batch)
      this.lastHadResync = hasResync
      let replica: ReplicaFingerprints | null = null
      if (hasResync && this.ms.enabled) {
        const fresh = this.fresh
        if (fresh) {
          const ask = regions.filter((g) => (fresh[g >>> 5] & (1 << (g & 31))) !== 0)
          replica = ask.length ? await this.fetchFingerprints(s, ask) : new Map()
          for (const g of regions) if (!replica.has(g)) replica.set(g, this.zeroFingerprints(g))
        } else {
          replica = await this.fetchFingerprints(s, regions)
        }
      }
      const out = this.ms.scan(batch, replica)
      if (this.fresh) this.markWritten(this.fresh, batch)
      this.held = null
      if (out.raw.length > this.maxBatch) {
        throw new TidemarkError('BATCH_TOO_LARGE', `a batch of ${out.raw.length} bytes is over the appliance's ${this.maxBatch}-byte limit`)
      }
      const msg = encodeBatch(out.raw, {
        firstSeq: out.firstSeq,
        lastSeq: out.lastSeq,
        recordCount: out.records,
        appBytes: out.appBytes,
        changedBytes: out.changedBytes,
      })
      const payload = msg.payload as Buffer
      const e: Entry = {
        firstSeq: out.firstSeq,
        lastSeq: out.lastSeq,
        msg,
        bytes: payload.length + ENTRY_OVERHEAD + regions.length * 8,
        sends: 0,
        copyRegions: this.copy && !this.copy.complete && regions.length ? regions.filter((g) => this.isPending(g)) : null,
      }
      this.st.appBytes += out.appBytes
      this.st.changedBytes += out.changedBytes
      this.window.push(e)
      this.windowBytes += e.bytes
      await this.send(s, e)
    }
  }

  /** The fingerprints of a region that reads as zeroes. */
  private zeroFingerprints(g: number): BigUint64Array {
    if (!this.zeroPage) this.zeroPage = new BigUint64Array(SECTORS_PER_REGION).fill(zeroSectorFingerprint())
    return this.zeroPage.subarray(0, this.ms.regionSectors(g))
  }

  /** Notes the regions the batch's WRITE and RESYNC records may change at the replica (trims leave zeroes zero). */
  private markWritten(bits: Uint32Array, batch: RecordBatch): void {
    batch.forEach((r) => {
      if (r.kind !== RecordKind.Write && r.kind !== RecordKind.Resync) return
      const first = r.sector
      const g1 = Math.floor((first + r.count - 1) / SECTORS_PER_REGION)
      for (let g = Math.floor(first / SECTORS_PER_REGION); g <= g1; g++) bits[g >>> 5] |= 1 << (g & 31)
    })
  }

  private async fetchFingerprints(s: Session, regions: number[]): Promise<ReplicaFingerprints> {
    const replica: ReplicaFingerprints = new Map()
    for (let i = 0; i < regions.length; i += MAX_REGIONS_PER_REQUEST) {
      const part = regions.slice(i, i + MAX_REGIONS_PER_REQUEST)
      this.st.fingerprintRequests++
      const t0 = performance.now()
      const bytes = await s.fingerprints(++this.fpId, part)
      this.st.waitFingerprintsMs += performance.now() - t0
      for (const [g, fp] of this.ms.parseFingerprints(part, bytes)) replica.set(g, fp)
    }
    return replica
  }

  private async send(s: Session, e: Entry): Promise<void> {
    const payload = e.msg.payload as Buffer
    await this.o.throttle.take(payload.length)
    if (s.blocked) {
      const t0 = performance.now()
      await s.drain()
      this.st.waitDrainMs += performance.now() - t0
    }
    // The ack may have come while we waited.
    if (e.lastSeq <= this.durableSeq && e.sends > 0) return
    s.write({ batch: e.msg })
    if (e.sends++ > 0) this.st.resentBatches++
    else {
      this.st.batches++
      this.st.wireBytes += payload.length
    }
  }

  private onAck(seq: number): void {
    if (seq > this.durableSeq) this.durableSeq = seq
    if (seq > this.ackedSeq) {
      // Before the tap forgets the regions: a later appliance that reports
      // less than this has lost data.
      this.ackedSeq = seq
      this.persistAcked(seq)
    }
    if (seq > 0 && !this.stopped) this.tap.ack(this.volume, seq)
    let i = 0
    while (i < this.window.length && this.window[i].lastSeq <= seq) {
      const e = this.window[i]
      this.windowBytes -= e.bytes
      if (e.copyRegions) this.copyDone(e.copyRegions)
      i++
    }
    if (i) this.window.splice(0, i)
    let k = 0
    while (k < this.lagSamples.length && this.lagSamples[k][0] <= seq) k++
    if (k) {
      const now = performance.now()
      for (let j = 0; j < k; j++) this.lagResolved[this.lagResolvedCount++ % LAG_RESOLVED_KEPT] = now - this.lagSamples[j][1]
      this.lagSamples.splice(0, k)
    }
    if (i || seq > 0) {
      // Progress: the next failure is news again, and reconnects start fast.
      this.attempts = 0
      this.seenErrors.clear()
    }
    const waiters = this.ackWaiters
    this.ackWaiters = []
    for (const w of waiters) w()
    this.maybeFinishCopy()
  }

  private nextAck(): Promise<void> {
    return new Promise((resolve) => this.ackWaiters.push(resolve))
  }

  private persistAcked(seq: number): void {
    const b = Buffer.alloc(8)
    b.writeBigUInt64LE(BigInt(seq))
    fs.writeSync(this.ackFd, b, 0, 8, 0)
  }

  // ---- the initial copy ----

  private startCopy(from: number): void {
    const total = this.regions
    const pending = new Uint32Array(Math.ceil(total / 32))
    for (let g = from; g < total; g++) pending[g >>> 5] |= 1 << (g & 31)
    const now = performance.now()
    this.copy = {
      generation: this.generation,
      total,
      pending,
      pendingCount: total - from,
      low: from,
      startedAt: now,
      startRegions: from,
      lastTick: { at: now, done: from },
      rate: 0,
      savedLow: -1,
      savedAt: 0,
      finishSeq: 0,
      finishBehindEvents: 0,
      complete: false,
    }
    this.saveSync(true)
    const marked = from < total ? this.tap.resyncFrom(this.volume, from) : 0
    this.log.info(
      { regionsTotal: total, fromRegion: from, marked, bytes: (total - from) * REGION_BYTES },
      from === 0 ? 'initial copy: copying the whole volume' : 'initial copy: resuming'
    )
    this.maybeFinishCopy()
  }

  private isPending(g: number): boolean {
    return !!this.copy && (this.copy.pending[g >>> 5] & (1 << (g & 31))) !== 0
  }

  private copyDone(regions: number[]): void {
    const c = this.copy
    if (!c) return
    for (const g of regions) {
      const m = 1 << (g & 31)
      if (c.pending[g >>> 5] & m) {
        c.pending[g >>> 5] &= ~m
        c.pendingCount--
      }
    }
    while (c.low < c.total && !(c.pending[c.low >>> 5] & (1 << (c.low & 31)))) c.low++
  }

  /**
   * The copy is complete when every region is durable and the replica equals
   * the volume at some seq: the tap records normally (nothing stale) and the
   * appliance holds every change up to a seq taken at such a moment, with no
   * behind period since.
   */
  private maybeFinishCopy(): void {
    const c = this.copy
    if (!c || c.complete || c.pendingCount > 0) return
    const s = this.tap.stats().find((v) => v.name === this.volume)
    if (!s) return
    if (s.mode !== 'normal' || (c.finishSeq && s.behindEvents !== c.finishBehindEvents)) {
      c.finishSeq = 0
      return
    }
    if (!c.finishSeq) {
      c.finishSeq = Math.max(1, s.volumeSeq)
      c.finishBehindEvents = s.behindEvents
    }
    if (this.durableSeq < c.finishSeq && s.volumeSeq > 0) return
    c.complete = true
    this.fresh = null
    this.saveSync(true)
    const secs = (performance.now() - c.startedAt) / 1000
    this.log.info(
      { regionsTotal: c.total, seconds: Math.round(secs * 10) / 10, durableSeq: this.durableSeq },
      'initial copy complete'
    )
    if (this.session && !this.session.isClosed && this.session.welcome) this.sendProgress(this.session)
  }

  private progress(): SyncProgressStats | null {
    const c = this.copy
    if (!c) return null
    const done = c.total - c.pendingCount
    const left = c.pendingCount * REGION_BYTES
    return {
      percent: c.total ? Math.floor((1000 * done) / c.total) / 10 : 100,
      regionsDone: done,
      regionsTotal: c.total,
      mbPerSecond: Math.round((c.rate / 1e6) * 10) / 10,
      secondsLeft: c.complete ? 0 : c.rate > 0 ? Math.round(left / c.rate) : null,
      complete: c.complete,
    }
  }

  private sendProgress(s: Session): void {
    const c = this.copy
    if (!c) return
    try {
      s.write({
        progress: {
          regionsDone: c.complete ? c.total : c.total - c.pendingCount - (c.pendingCount === 0 ? 1 : 0),
          regionsTotal: c.total,
          bytesPerSecond: Math.round(c.rate),
        },
      })
    } catch {
      // the stream closed: the next Welcome asks again
    }
  }

  /** Once a second: save the copy's progress; every few seconds, report it. */
  private tick(): void {
    const c = this.copy
    if (!c) return
    this.maybeFinishCopy()
    this.saveSync(false)
    const now = performance.now()
    if (now - c.lastTick.at < PROGRESS_EVERY_MS || c.complete) return
    const done = c.total - c.pendingCount
    const rate = ((done - c.lastTick.done) * REGION_BYTES) / ((now - c.lastTick.at) / 1000)
    c.rate = c.rate ? c.rate * 0.5 + rate * 0.5 : rate
    c.lastTick = { at: now, done }
    const p = this.progress()!
    this.log.info(
      { percent: p.percent, regionsDone: done, regionsTotal: c.total, MBps: p.mbPerSecond, secondsLeft: p.secondsLeft },
      `initial copy ${p.percent.toFixed(1)} %, ${p.mbPerSecond} MB/s, ${p.secondsLeft === null ? 'time left unknown' : `${p.secondsLeft} s left`}`
    )
    if (this.session && !this.session.isClosed && this.session.welcome) this.sendProgress(this.session)
  }

  private saveSync(force: boolean): void {
    const c = this.copy
    if (!c) return
    const next = c.complete ? c.total : c.low
    const now = performance.now()
    if (next === c.savedLow || (!force && now - c.savedAt < SYNC_FILE_EVERY_MS)) return
    try {
      writeFileAtomic(this.syncFile, `${JSON.stringify({ generation: c.generation, nextRegion: next, regions: c.total })}\n`)
      c.savedLow = next
      c.savedAt = now
    } catch (err) {
      this.log.warn({ err, file: this.syncFile }, 'cannot save the initial copy\'s progress; a restart would start it over')
    }
  }
}
