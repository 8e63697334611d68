// The Replication service: one bidirectional stream per protected volume.
//
// A stream is a small state machine: it waits for a Hello, checks that the
// caller may write the volume, attaches it in the store (which decides
// whether the agent must copy the whole volume) and answers a Welcome. Then
// every ChangeBatch's payload is handed as it arrived to the volume store,
// which decodes it (LZ4, xxh64) and validates and frames its records in one
// native call (record-check.ts), journals them and resolves once they are
// durable; the durable seq goes back as an Ack. Appends are issued in arrival
// order and may overlap (the store group-commits them), so a fast agent keeps
// several batches in flight; past MAX_PENDING_BYTES the stream is paused,
// which is gRPC flow control pushing back on the agent.
//
// Bad input ends the stream with a status that says what and why; nothing of
// the offending batch reaches the journal, and the agent's other streams
// (other volumes) go on. Every rejection is counted by code and logged.
//
// With a data channel (data-channel.ts) the Welcome carries a token; once the
// agent's data connection names it, the stream's messages arrive there
// instead (a batch still on the stream then is a protocol error), and flow
// control pauses that connection. Either way they go through `handle` in
// order. The stream and its data connection live and die together: the agent
// ends both when it stops, and the stream finishes only after the connection
// has delivered everything it carried.
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { REGION_SIZE } from '../proto/record'
import { batchEncoding } from '../proto/change-batch'
import { badName } from '../proto/bounded-strings'
import { TidemarkError } from '../proto/errors'
import type { AgentMessage__Output } from '../proto/generated/tidemark/v1/AgentMessage'
import type { ApplianceMessage } from '../proto/generated/tidemark/v1/ApplianceMessage'
import { MAX_BATCH_BYTES, PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { toStatus } from '../proto/status'
import { alreadyLogged } from './access-policy'
import { AgentReports } from './agent-reports'
import type { Authorizer } from './authorizer'
import type { DataChannelServer, DataConnection } from './data-channel'
import { alreadyCounted, type IdentityLimits } from './identity-limits'
import type { ApplianceStore } from './store'
import type { VolumeStore } from './volume-store'

const MAX_PENDING_BYTES = 64 * 1024 * 1024
const NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/

type Call = grpc.ServerDuplexStream<AgentMessage__Output, ApplianceMessage>

/** Refusals the volume store logged once when its fault began (batch-writer.ts): not logged again per stream. */
const LOGGED_BY_STORE = new Set(['NO_SPACE', 'JOURNAL_IO', 'JOURNAL_READ_ONLY'])

/**
 * Fingerprint requests one stream may have unanswered or unread at once. The
 * agent's resync pipeline keeps at most PIPELINE_DEPTH (4) in flight; a reply
 * is up to 4096 regions x 1 KiB, so this bounds what one stream can make the
 * appliance hold for a reader that never reads to 64 MiB.
 */
export const MAX_FINGERPRINTS_IN_FLIGHT = 16

export interface StreamInfo {
  volume: string
  agentId: string
  identity: string
  peer: string
  since: string
  batches: number
  lastAckMs: number
}

export class ReplicationService {
  /** rejections by code, across every stream */
  readonly rejected: Record<string, number> = {}
  /**
   * The same per volume, for stats callers who may see only some volumes.
   * Only volumes the store holds: hellos naming made-up volumes grow nothing.
   */
  private readonly rejectedOf = new Map<string, Record<string, number>>()
  /** Caps per identity (identity-limits.ts): streams, volume size, and through the store volumes created. */
  limits: IdentityLimits | null = null
  private readonly streams = new Map<Call, StreamInfo>()
  /** the stream that owns each volume, and how to retire it */
  private readonly active = new Map<string, { call: Call; retire: (why?: string) => Promise<void> }>()

  constructor(
    private readonly store: ApplianceStore,
    private readonly auth: Authorizer,
    private readonly log: Logger,
    private readonly applianceId: string,
    private readonly data: DataChannelServer | null = null,
    /** RPO points, states and progress the agents report (agent-reports.ts) */
    readonly reports: AgentReports = new AgentReports()
  ) {
    // Connections the data channel refuses count with the streams' rejections.
    if (data) data.rejected = this.rejected
  }

  addToServer(server: grpc.Server): void {
    server.addService(replicationProto.Replication.service, {
      replicate: (call: Call) => this.replicate(call),
    })
  }

  info(): StreamInfo[] {
    return [...this.streams.values()]
  }

  /** Ends the stream replicating `volume`, if any, once its appends settle (an admin is changing the volume). */
  async endStream(volume: string, why: string): Promise<void> {
    await this.active.get(volume)?.retire(why)
  }

  /** Ends every stream (the appliance is stopping); agents reconnect later. */
  closeAll(): void {
    for (const call of this.streams.keys()) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'the appliance is stopping' })
    }
  }

  /** Counts a rejection by code, appliance-wide and for `volume` if the store holds it. */
  countRejection(code: string, volume: string | null): void {
    this.rejected[code] = (this.rejected[code] ?? 0) + 1
    if (volume === null || !this.store.get(volume)) return
    let of = this.rejectedOf.get(volume)
    if (!of) this.rejectedOf.set(volume, (of = {}))
    of[code] = (of[code] ?? 0) + 1
  }

  /** Open streams and rejections of the `volumes` a caller may see (stats for a caller who may not see them all). */
  countsFor(volumes: Set<string>): { streams: number; rejected: Record<string, number> } {
    const rejected: Record<string, number> = {}
    for (const v of volumes) for (const [code, n] of Object.entries(this.rejectedOf.get(v) ?? {})) rejected[code] = (rejected[code] ?? 0) + n
    return { streams: [...this.streams.values()].filter((s) => volumes.has(s.volume)).length, rejected }
  }

  private reject(call: Call, err: unknown, ctx: Record<string, unknown>): void {
    const e = err instanceof TidemarkError ? err : new TidemarkError('INTERNAL', (err as Error)?.message ?? String(err))
    // The limits per identity count their refusals themselves (they also refuse outside streams).
    if (!alreadyCounted(e)) this.countRejection(e.code, typeof ctx.volume === 'string' ? ctx.volume : null)
    const status = toStatus(e)
    if (status.code === grpc.status.INTERNAL) this.log.error({ ...ctx, err }, `replication stream failed: ${e.message}`)
    else if (alreadyLogged(e)) this.log.debug({ ...ctx, code: e.code }, `replication stream refused: ${e.message}`)
    else if (LOGGED_BY_STORE.has(e.code)) this.log.debug({ ...ctx, code: e.code }, `replication stream refused: ${e.message}`)
    else this.log.warn({ ...ctx, code: e.code }, `replication stream rejected: ${e.message}`)
    call.emit('error', status)
  }

  private replicate(call: Call): void {
    const peer = call.getPeer()
    const identity = this.auth.identity(call)
    const viaUnix = this.auth.viaUnix(call)
    let vol: VolumeStore | null = null
    let info: StreamInfo | null = null
    let done = false
    let pendingBytes = 0
    let paused = false
    let attaching = false
    // The volume the hello named, for counting a refusal before it attached.
    let helloVolume: string | undefined
    // This stream's place under --limit-streams, given back when it ends.
    let releaseStream: () => void = () => {}
    // The data channel: its token (until used or the stream ends), its connection once attached.
    let dataToken: Buffer | null = null
    let dataConn: DataConnection | null = null
    let dataEnded: Promise<void> = Promise.resolve()
    let dataEnd: () => void = () => {}
    let sawStreamData = false
    const source = (): { pause(): void; resume(): void } => dataConn ?? call
    // Acks go out in append order, as each append becomes durable.
    // Fingerprints are computed when the request arrives (the store makes
    // them reflect every append issued before) and answered in request
    // order; they never hold an ack back, nor an ack them. `tail` settles
    // when everything issued so far has been answered.
    let ackTail: Promise<unknown> = Promise.resolve()
    let fpTail: Promise<unknown> = Promise.resolve()
    // Fingerprint requests not yet answered and flushed to the agent: an
    // agent that asks without reading the replies is refused, not buffered for.
    let fpInFlight = 0
    let tail: Promise<unknown> = Promise.resolve()
    const track = (p: Promise<unknown>): void => {
      p.catch(fail)
      tail = Promise.all([tail, p])
      tail.catch(() => undefined) // reported through fail() above
    }
    const queued: AgentMessage__Output[] = []
    const ctx = (): Record<string, unknown> => ({ peer, identity, volume: info?.volume ?? helloVolume })
    const retire = async (why = 'a newer stream from the agent replaced this one'): Promise<void> => {
      if (!done) {
        done = true
        call.emit('error', { code: grpc.status.ABORTED, details: `ABORTED: ${why}` })
      }
      await tail.catch(() => undefined)
    }

    const fail = (err: unknown): void => {
      if (done) return
      done = true
      this.reject(call, err, ctx())
    }
    const send = (m: ApplianceMessage, flushed?: () => void): void => {
      if (done) return
      if (flushed) call.write(m, flushed)
      else call.write(m)
    }

    const onHello = async (m: AgentMessage__Output): Promise<void> => {
      const h = m.hello!
      if (h.protocol !== PROTOCOL_VERSION) {
        throw new TidemarkError('PROTOCOL', `protocol version ${h.protocol} is not supported (this appliance speaks ${PROTOCOL_VERSION})`)
      }
      if (!NAME_RE.test(h.volume)) throw new TidemarkError('PROTOCOL', `volume name ${JSON.stringify(h.volume)} is not valid`)
      helloVolume = h.volume
      if (!h.generation || h.generation.length > 128) throw new TidemarkError('PROTOCOL', 'hello has no valid generation id')
      // Stored with the volume and shown by stats: bounded, no control characters.
      const badId = badName(h.agentId ?? '', 'the hello\'s agent id') ?? badName(h.group ?? '', 'the hello\'s group')
      if (badId) throw new TidemarkError('PROTOCOL', badId)
      if (!Number.isSafeInteger(h.size) || h.size <= 0 || h.size % 512 !== 0) {
        throw new TidemarkError('PROTOCOL', `volume ${h.volume}: size ${h.size} is not a positive multiple of 512`)
      }
      // The caller's role decides, never the agent id the hello states (anyone can write any id there).
      this.auth.require(call, 'Replicate', h.volume)
      this.limits?.checkVolumeSize(identity, h.volume, h.size)
      // A new generation or size retires the volume's history beside the new
      // one: only an admin's hello (or any, without roles) does that itself;
      // a writer's waits for an admin (store.ts, Admin.AcceptGeneration).
      const accept = !this.auth.policy || (identity !== null && this.auth.policy.allows(identity, 'admin', h.volume))
      // One writer per volume. A newer stream wins: the agent reconnected
      // (after a crash or a cut link) before the old stream's end reached us.
      // The old one is ended and its appends settle before this one starts.
      const other = this.active.get(h.volume)
      if (other && other.call !== call) {
        this.log.info({ ...ctx() }, 'a newer stream replaces the one replicating this volume')
        await other.retire()
      }
      // Taken once the stream it replaces has ended, so a reconnecting agent at its cap is not refused.
      if (done) return
      if (this.limits) releaseStream = this.limits.acquireStream(identity, h.volume)
      this.active.set(h.volume, { call, retire })
      const { volume, fullSync } = await this.store.attach({
        volume: h.volume,
        generation: h.generation,
        size: h.size,
        group: h.group,
        agentId: h.agentId,
      }, { accept, identity })
      vol = volume
      this.reports.attached(h.volume, volume.durableSeq)
      info = {
        volume: h.volume,
        agentId: h.agentId,
        identity: identity ?? '',
        peer,
        since: new Date().toISOString(),
        batches: 0,
        lastAckMs: 0,
      }
      this.streams.set(call, info)
      // The data channel is TCP beside the TCP listener: a stream from the unix listener keeps its batches on the stream.
      if (this.data && !viaUnix) dataToken = this.data.issue({ identity, attach: (conn) => attachData(conn) })
      this.log.info(
        { ...ctx(), agentId: h.agentId, generation: h.generation, durableSeq: volume.durableSeq, fullSync },
        'agent attached'
      )
      send({
        welcome: {
          durableSeq: volume.durableSeq,
          generation: volume.meta.generation,
          fullSync,
          applianceId: this.applianceId,
          maxBatchBytes: MAX_BATCH_BYTES,
          dataPort: dataToken ? this.data!.port : 0,
          dataToken: dataToken ?? Buffer.alloc(0),
        },
      })
    }

    const attachData = (conn: DataConnection): void => {
      dataToken = null
      if (done) return conn.destroy()
      if (sawStreamData) {
        conn.destroy()
        return fail(new TidemarkError('PROTOCOL', 'a data channel attached after messages came on the stream'))
      }
      dataConn = conn
      dataEnded = new Promise((resolve) => (dataEnd = resolve))
      if (paused) conn.pause()
      conn.onMessage = (m) => handle(m, true)
      conn.onClose = (err) => {
        dataEnd()
        if (err) fail(err)
      }
    }

    const onBatch = (m: AgentMessage__Output, fromData: boolean): void => {
      const b = m.batch!
      const wireBytes = b.payload.length
      // The cheap checks here; the bytes are decoded and checked in the store's one native call per batch.
      const encoding = batchEncoding(b)
      const rawLength = encoding.rawLength
      const v = vol!
      pendingBytes += rawLength
      if (pendingBytes > MAX_PENDING_BYTES && !paused) {
        paused = true
        source().pause()
      }
      // Issued now, in arrival order; resolves when durable.
      // A payload from the data channel lives in its reader's buffers: handed back once checked.
      const conn = fromData ? dataConn : null
      const payload = b.payload
      const released = conn ? () => conn.release(payload) : undefined
      const appended = v.append(b.payload, {
        firstSeq: b.firstSeq,
        lastSeq: b.lastSeq,
        recordCount: b.recordCount,
        appBytes: b.appBytes,
        changedBytes: b.changedBytes,
        wireBytes,
      }, encoding, released)
      // The store validates synchronously enough that a bad batch rejects
      // this promise; nothing of it is journaled.
      ackTail = Promise.all([ackTail, appended]).then(([, durable]) => {
        pendingBytes -= rawLength
        if (paused && pendingBytes <= MAX_PENDING_BYTES / 2) {
          paused = false
          source().resume()
        }
        info!.batches++
        info!.lastAckMs = Date.now()
        this.reports.durable(v.meta.name, durable as number)
        send({ ack: { durableSeq: durable as number } })
      })
      track(ackTail)
      this.reports.batch(v.meta.name, b.lastSeq, b.capturedBeforeMs)
    }

    const onFingerprints = (m: AgentMessage__Output): void => {
      const r = m.fingerprintRequest!
      const v = vol!
      const regions = r.regions
      const max = Math.ceil(v.meta.size / REGION_SIZE)
      for (const region of regions) {
        if (!Number.isSafeInteger(region) || region < 0 || region >= max) {
          throw new TidemarkError('RECORD_OUT_OF_RANGE', `fingerprint request for region ${region}; volume ${v.meta.name} has ${max}`)
        }
      }
      if (regions.length > 4096) throw new TidemarkError('PROTOCOL', `fingerprint request for ${regions.length} regions (at most 4096)`)
      if (fpInFlight >= MAX_FINGERPRINTS_IN_FLIGHT) {
        throw new TidemarkError(
          'TOO_MANY_REQUESTS',
          `more than ${MAX_FINGERPRINTS_IN_FLIGHT} fingerprint requests in flight on one stream (their replies not yet read by the agent)`
        )
      }
      fpInFlight++
      const fps = v.fingerprints(regions)
      fpTail = Promise.all([fpTail, fps]).then(([, buf]) => send({ fingerprints: { id: r.id, regions, fingerprints: buf } }, () => fpInFlight--))
      track(fpTail)
    }

    const onProgress = (m: AgentMessage__Output): void => {
      const p = m.progress!
      const v = vol!
      this.reports.progress(v.meta.name, p)
      if (p.regionsTotal > 0 && p.regionsDone >= p.regionsTotal && !v.fullSyncDone) {
        track(
          v.markFullSyncDone().then(() => {
            this.log.info({ ...ctx(), durableSeq: v.durableSeq }, 'initial copy complete')
          })
        )
      }
    }

    const handle = (m: AgentMessage__Output, fromData = false): void => {
      if (done) return
      try {
        if (m.body === 'dataHello') throw new TidemarkError('PROTOCOL', 'a DataHello on a Replicate stream (it opens a data channel)')
        if (vol && !fromData) {
          if (dataConn) throw new TidemarkError('PROTOCOL', `a ${m.body ?? 'empty message'} on the stream while its data channel is attached`)
          sawStreamData = true
        }
        if (!vol) {
          if (m.body !== 'hello') {
            throw new TidemarkError('UNKNOWN_VOLUME', `a ${m.body ?? 'empty message'} before the hello: no volume is attached to this stream`)
          }
          if (attaching) throw new TidemarkError('PROTOCOL', 'a second hello on one stream')
          attaching = true
          call.pause()
          onHello(m).then(
            () => {
              call.resume()
              while (queued.length && !done) handle(queued.shift()!)
            },
            fail
          )
          return
        }
        switch (m.body) {
          case 'batch':
            return onBatch(m, fromData)
          case 'fingerprintRequest':
            return onFingerprints(m)
          case 'progress':
            return onProgress(m)
          case 'heartbeat':
            return this.reports.heartbeat(vol.meta.name, m.heartbeat!)
          case 'hello':
            throw new TidemarkError('PROTOCOL', 'a second hello on one stream')
          default:
            throw new TidemarkError('PROTOCOL', 'an empty message')
        }
      } catch (err) {
        fail(err)
      }
    }

    call.on('data', (m: AgentMessage__Output) => {
      if (attaching && !vol) queued.push(m)
      else handle(m)
    })
    const cleanup = (): void => {
      done = true
      releaseStream()
      if (dataToken) this.data?.revoke(dataToken)
      dataToken = null
      dataConn?.destroy()
      this.streams.delete(call)
      // Set before the hello attached: a refused attach leaves no owner behind either.
      for (const [name, a] of this.active) if (a.call === call) this.active.delete(name)
    }
    call.on('end', () => {
      // The agent ends its data connection before the stream: what it carried is handled first.
      dataEnded.then(() => tail).then(
        () => {
          const failed = done
          cleanup()
          if (!failed) call.end()
        },
        () => cleanup()
      )
    })
    call.on('cancelled', cleanup)
    call.on('error', cleanup)
    call.on('close', cleanup)
  }
}
