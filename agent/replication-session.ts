// The replication stream: one Replicate call of one volume (the protocol is
// proto/tidemark/v1/replication.proto), and the channel it runs on.
//
// A Session is one attempt: the call, the Welcome that answers the agent's
// Hello, and the fingerprint requests waiting for their replies. It knows
// nothing of batches, windows or state files; acks are handed to the
// replicator as they arrive (on the 'data' event, at any time, so nothing
// waits behind data). A session ends exactly once, with the error that ended
// it (`closed`); every waiter is released then, so a loop blocked on the
// stream wakes up and reconnects. SessionClosed marks an end that is not
// news (the loop's own close, a stop): it is never counted or logged.
//
// When the Welcome names a data channel (agent/data-channel.ts), openData
// connects it and every message after the Welcome goes there instead, in
// order; flow control is then the data connection's. Acks, fingerprints and
// the stream's status still come on the call. The two fail together: either
// one breaking closes the session.
//
// The channel (applianceClient) is shared by every volume's stream; its
// keepalive notices a dead appliance or a cut link while no ack is due.
import fs from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import { TidemarkError } from '../proto/errors'
import type { AgentMessage } from '../proto/generated/tidemark/v1/AgentMessage'
import type { ApplianceMessage__Output } from '../proto/generated/tidemark/v1/ApplianceMessage'
import type { ReplicationClient } from '../proto/generated/tidemark/v1/Replication'
import type { Welcome__Output } from '../proto/generated/tidemark/v1/Welcome'
import { FLOW_CONTROL_WINDOW, MAX_MESSAGE_BYTES, replicationProto } from '../proto/load'
import { DataChannel } from './data-channel'

export const BACKOFF_MIN_MS = 100
export const BACKOFF_MAX_MS = 5_000
/** The longest wait between attempts while the appliance is out of space. */
export const NO_SPACE_BACKOFF_MAX_MS = 60_000
const FINGERPRINT_TIMEOUT_MS = 60_000
/** How long a broken data channel waits for the stream's status before it ends the session itself. */
const DATA_STATUS_GRACE_MS = 1_000

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
    // Fingerprint replies are bulk (8 KiB per region asked): with Node's 64 KiB
    // window each 64 KiB of them costs a round trip, which over a 40 ms link
    // made a resync 2-3x slower than a local one (bench:resync-wan).
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
    // Notice a dead appliance or a cut link even while no ack is due.
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.initial_reconnect_backoff_ms': BACKOFF_MIN_MS,
    'grpc.max_reconnect_backoff_ms': BACKOFF_MAX_MS,
  })
}

/** The session ended by our own doing (or was already over): not news, not counted. */
export class SessionClosed extends Error {}

/** One Replicate stream: the call, its Welcome, the fingerprint requests awaiting replies. */
export class Session {
  readonly call: grpc.ClientDuplexStream<AgentMessage, ApplianceMessage__Output>
  readonly closed: Promise<Error>
  welcome: Welcome__Output | null = null
  blocked = false
  error: Error | null = null
  /** The data channel, once open: every message after the Welcome goes there. */
  data: DataChannel | null = null
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

  /**
   * Opens the data channel the Welcome names, if any, on `host`. Resolves
   * null once it carries the session (or there is none), or the error that
   * kept it shut: the stream then carries everything itself.
   */
  async openData(host: string, tls: TlsFiles | undefined): Promise<Error | null> {
    const w = this.welcome
    if (!w || !w.dataPort || !w.dataToken?.length) return null
    let d: DataChannel
    try {
      d = await DataChannel.connect(host, w.dataPort, w.dataToken, tls)
    } catch (err) {
      return err as Error
    }
    if (this.error) {
      d.destroy()
      throw new SessionClosed(this.error.message)
    }
    this.data = d
    d.onClose = (e) => this.dataClosed(e)
    d.onDrain(() => (this.blocked = false))
    return null
  }

  /**
   * The data channel broke. When the appliance ended the stream on purpose
   * (out of space, a refused batch) its status, which says why, follows on
   * the call at once: wait a moment for it, so the reason logged is the
   * appliance's and not a reset connection.
   */
  private dataClosed(e: Error): void {
    if (this.error) return
    const timer = setTimeout(() => this.close(e), DATA_STATUS_GRACE_MS)
    void this.closed.then(() => clearTimeout(timer))
  }

  get isClosed(): boolean {
    return this.error !== null
  }

  /** True while the stream is open and welcomed: progress reports may be written. */
  get live(): boolean {
    return !this.isClosed && this.welcome !== null
  }

  close(e: Error, cancel = true): void {
    if (this.error) return
    this.error = e
    for (const w of this.waiting.values()) w.reject(new SessionClosed(e.message))
    this.waiting.clear()
    this.closeFn(e)
    this.data?.destroy()
    this.call.on('error', () => undefined)
    if (cancel) this.call.cancel()
  }

  /** Half-closes the stream (the agent is stopping); the appliance finishes what it holds. */
  end(): void {
    if (this.error) return
    // The data channel first: the appliance finishes the stream once the channel has delivered everything.
    this.data?.end()
    this.data = null
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

  /** Writes a message; `written`, if given, is called once the stream or data channel no longer needs its bytes (maybe never, if it breaks first). */
  write(m: AgentMessage, written?: () => void): void {
    if (this.error) throw new SessionClosed(this.error.message)
    const ok = this.data && !m.hello ? this.data.write(m, written) : this.call.write(m, written)
    if (!ok) this.blocked = true
  }

  /** Resolves when the stream takes more data (or rejects when it closes). */
  async drain(): Promise<void> {
    while (this.blocked) {
      if (this.error) throw new SessionClosed(this.error.message)
      await new Promise<void>((resolve) => {
        let off = (): void => {}
        const done = (): void => {
          off()
          resolve()
        }
        if (this.data) off = this.data.onDrain(done)
        else {
          this.call.on('drain', done)
          off = () => this.call.off('drain', done)
        }
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

/** Statuses that mean the appliance refused something we sent. */
const REFUSED = [
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
]

/**
 * How a failed stream is reported: the status name, the appliance's words,
 * a key that is the same for the same failure (grpc-js puts the time of the
 * last connection attempt into the message), and whether the appliance
 * refused something we sent (a bug or an attack, not weather).
 */
export function describeStreamError(err: Error): { code: string; message: string; key: string; refused: boolean } {
  const e = err as Error & { code?: number | string; details?: string }
  const code = typeof e.code === 'number' ? grpc.status[e.code] ?? String(e.code) : String(e.code ?? 'ERROR')
  const message = e.details ?? e.message
  const key = `${code} ${message.replace(/\(\d{4}-\d\d-\d\dT[^)]*\)/g, '')}`
  return { code, message, key, refused: REFUSED.includes(e.code as grpc.status) }
}
