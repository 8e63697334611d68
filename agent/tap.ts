// The data tap, seen from TypeScript.
//
// A thin facade over the native tap (native/src/tap.h): it validates
// arguments, turns volume names into indexes, and turns the native "records
// are available" event into an async iterator. Everything on the I/O path
// runs on native threads; nothing here is called per NBD request.
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { EVENT_LOG, EVENT_READABLE, native, type NativeTap, type NativeVolumeStats, type NbdListenerStats } from '../native/index'
import { TidemarkError } from '../proto/errors'
import { RecordBatch } from '../native/record-batch'
import { nbdListenerConfig, type NbdListenerOptions } from '../native/nbd-listener'
import { REGION_SIZE as RECORD_REGION_SIZE } from '../proto/record'

export interface TapVolume {
  name: string
  path: string
  /** volumes in one group share one seq space (one TimeMark covers all) */
  group?: string
  readOnly?: boolean
  /** never hand out a seq at or below this one, from the first write on (a seeded volume: proto/seed.ts) */
  seqFloor?: number
}

export interface TapOptions {
  stateDir: string
  volumes: TapVolume[]
  /** unix socket path for the NBD listener */
  unix?: string
  /** TCP listener; port 0 picks a free one (see Tap.tcpPort) */
  tcp?: { host: string; port: number }
  /** record buffer per volume, bytes (default 64 MiB, at least 1 MiB) */
  bufferBytes?: number
  /**
   * how long a write may wait for room in a full record buffer, while the
   * consumer drains it, before the volume falls behind, ms (default 1000; 0: at once)
   */
  congestionWaitMs?: number
  /** TLS, connection cap and handshake deadline of the NBD listener */
  listener?: NbdListenerOptions
  logger?: Logger
}

export type VolumeStats = NativeVolumeStats

export interface DirtyRange {
  offset: number
  length: number
}

export const DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
/** native/src/volume.h kDefaultCongestionWaitMs */
export const DEFAULT_CONGESTION_WAIT_MS = 1000
export const DEFAULT_BATCH_BYTES = 1024 * 1024
// The dirty map's region is the format's REGION_SIZE (proto/record.ts); the
// addon reports its own, and a build where the two differ must not start.
if (native.regionSize !== RECORD_REGION_SIZE) {
  throw new Error(`native region size ${native.regionSize} is not the ${RECORD_REGION_SIZE} bytes proto/record.ts defines`)
}
export const REGION_SIZE: number = RECORD_REGION_SIZE

const NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/

export class Tap extends EventEmitter {
  readonly volumes: readonly string[]
  private readonly handle: NativeTap
  private readonly index = new Map<string, number>()
  private readonly sizes: number[]
  private readonly waiters: Array<(() => void) | null>
  private readonly groups = new Map<string, number>()
  private readonly volumeGroups: Array<string | undefined> = []
  private closed = false

  private constructor(handle: NativeTap, opts: TapOptions, waiters: Array<(() => void) | null>) {
    super()
    this.handle = handle
    this.waiters = waiters
    this.volumes = opts.volumes.map((v) => v.name)
    opts.volumes.forEach((v, i) => {
      this.index.set(v.name, i)
      if (v.group && !this.groups.has(v.group)) this.groups.set(v.group, i)
      this.volumeGroups[i] = v.group
    })
    this.sizes = handle.stats().map((s) => s.size)
  }

  static open(opts: TapOptions): Tap {
    if (!opts || typeof opts !== 'object') throw new TidemarkError('TAP_INVALID_ARGUMENT', 'tap options are required')
    if (typeof opts.stateDir !== 'string' || !opts.stateDir) {
      throw new TidemarkError('TAP_INVALID_ARGUMENT', 'stateDir is required')
    }
    if (!Array.isArray(opts.volumes) || opts.volumes.length === 0) {
      throw new TidemarkError('TAP_INVALID_ARGUMENT', 'at least one volume is required')
    }
    const seen = new Set<string>()
    for (const v of opts.volumes) {
      if (!v || typeof v.name !== 'string' || !NAME_RE.test(v.name)) {
        throw new TidemarkError(
          'TAP_INVALID_ARGUMENT',
          `volume name ${JSON.stringify(v?.name)} is not valid (letters, digits, '-', '_', '.'; at most 128)`
        )
      }
      if (seen.has(v.name)) throw new TidemarkError('TAP_INVALID_ARGUMENT', `volume ${v.name} is named twice`)
      seen.add(v.name)
      if (typeof v.path !== 'string' || !v.path) {
        throw new TidemarkError('TAP_INVALID_ARGUMENT', `volume ${v.name} has no path`)
      }
      if (v.group !== undefined && !NAME_RE.test(v.group)) {
        throw new TidemarkError('TAP_INVALID_ARGUMENT', `group name ${JSON.stringify(v.group)} is not valid`)
      }
    }
    if (!opts.unix && !opts.tcp) {
      throw new TidemarkError('TAP_INVALID_ARGUMENT', 'give an NBD listener: a unix socket path or a TCP address')
    }
    const bufferBytes = opts.bufferBytes ?? DEFAULT_BUFFER_BYTES
    if (!Number.isSafeInteger(bufferBytes) || bufferBytes < 1024 * 1024) {
      throw new TidemarkError('TAP_INVALID_ARGUMENT', `bufferBytes must be an integer of at least 1 MiB, not ${bufferBytes}`)
    }
    const congestionWaitMs = opts.congestionWaitMs ?? DEFAULT_CONGESTION_WAIT_MS
    if (!Number.isSafeInteger(congestionWaitMs) || congestionWaitMs < 0 || congestionWaitMs > 60_000) {
      throw new TidemarkError('TAP_INVALID_ARGUMENT', `congestionWaitMs must be an integer from 0 to 60000, not ${congestionWaitMs}`)
    }
    fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 })
    if (opts.unix) fs.mkdirSync(path.dirname(opts.unix), { recursive: true, mode: 0o700 })

    const log = opts.logger
    const waiters: Array<(() => void) | null> = opts.volumes.map(() => null)
    let tap: Tap | null = null
    const onEvent = (type: number, volume: number, level: number, message: string): void => {
      if (type === EVENT_READABLE) {
        const w = waiters[volume]
        waiters[volume] = null
        if (w) w()
        tap?.emit('readable', volume)
      } else if (type === EVENT_LOG && log) {
        if (level >= 50) log.error(message)
        else if (level >= 40) log.warn(message)
        else if (level >= 30) log.info(message)
        else log.debug(message)
      }
    }
    let handle: NativeTap
    try {
      handle = new native.NativeTap(
        {
          stateDir: opts.stateDir,
          bufferBytes,
          congestionWaitMs,
          unix: opts.unix,
          tcpHost: opts.tcp?.host,
          tcpPort: opts.tcp?.port ?? 0,
          ...nbdListenerConfig(opts.listener),
          volumes: opts.volumes.map((v) => ({ name: v.name, path: v.path, group: v.group, readOnly: !!v.readOnly, seqFloor: v.seqFloor ?? 0 })),
        },
        onEvent
      )
    } catch (err) {
      const e = err as Error & { code?: string }
      throw new TidemarkError(e.code ?? 'TAP_OPEN_FAILED', e.message)
    }
    tap = new Tap(handle, opts, waiters)
    return tap
  }

  /** The NBD listener's refusals (connection cap, handshake deadline, bad handshakes). */
  listenerStats(): NbdListenerStats {
    return this.handle.listenerStats()
  }

  /** The TCP port the NBD listener bound (useful with port 0), or 0. */
  get tcpPort(): number {
    return this.handle.tcpPort()
  }

  volumeIndex(volume: string | number): number {
    if (typeof volume === 'number') {
      if (Number.isInteger(volume) && volume >= 0 && volume < this.volumes.length) return volume
    } else {
      const i = this.index.get(volume)
      if (i !== undefined) return i
    }
    throw new TidemarkError('TAP_UNKNOWN_VOLUME', `no volume ${JSON.stringify(volume)} in this tap`)
  }

  volumeSize(volume: string | number): number {
    return this.sizes[this.volumeIndex(volume)]
  }

  private live(): void {
    if (this.closed) throw new TidemarkError('TAP_CLOSED', 'the tap is closed')
  }

  /**
   * Takes the next batch of records (up to maxBytes, at least one record), or
   * null if none is held. With `into`, a batch that fits is a view of it,
   * valid until `into` is used again.
   */
  next(volume: string | number, maxBytes = DEFAULT_BATCH_BYTES, into?: Buffer): RecordBatch | null {
    this.live()
    const got = this.handle.pull(this.volumeIndex(volume), maxBytes, into)
    if (typeof got === 'number') return new RecordBatch(into!.subarray(0, got))
    return got ? new RecordBatch(got) : null
  }

  /** Waits until records may be available for the volume (or the tap closes). */
  wait(volume: string | number): Promise<void> {
    const i = this.volumeIndex(volume)
    return new Promise((resolve) => {
      const prev = this.waiters[i]
      this.waiters[i] = () => {
        prev?.()
        resolve()
      }
    })
  }

  /**
   * Batches as they are captured, until the tap closes or the signal aborts.
   * `reuse`: each batch is a view of one buffer, valid only until the loop
   * asks for the next (for a consumer that is done with a batch by then).
   */
  async *records(
    volume: string | number,
    opts: { maxBytes?: number; signal?: AbortSignal; reuse?: boolean } = {}
  ): AsyncGenerator<RecordBatch> {
    const i = this.volumeIndex(volume)
    // Room for maxBytes plus the one record a pull may add past it (at most 1 MiB of data).
    const into = opts.reuse ? Buffer.allocUnsafeSlow((opts.maxBytes ?? DEFAULT_BATCH_BYTES) + 1024 * 1024 + 4096) : undefined
    const onAbort = (): void => {
      const w = this.waiters[i]
      this.waiters[i] = null
      w?.()
    }
    opts.signal?.addEventListener('abort', onAbort)
    try {
      while (!this.closed && !opts.signal?.aborted) {
        const batch = this.next(i, opts.maxBytes, into)
        if (batch) {
          yield batch
          continue
        }
        // An empty pull arms the native notification; it is delivered on this
        // thread later, so waiting now cannot miss it.
        await this.wait(i)
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort)
    }
  }

  /** The appliance (or sink) holds every record up to seq: its regions may leave the dirty map. */
  ack(volume: string | number, seq: number): void {
    this.live()
    if (!Number.isSafeInteger(seq) || seq < 0) throw new TidemarkError('TAP_INVALID_ARGUMENT', `bad seq ${seq}`)
    this.handle.ack(this.volumeIndex(volume), seq)
  }

  /**
   * Copies the volume from `region` (64 KiB regions) to its end through the
   * resync machinery: every region there becomes stale and comes back as a
   * RESYNC record whose seq orders it exactly among the application's writes.
   * The initial copy calls it with 0, a resumed copy with where it got to.
   * Returns the number of regions newly marked.
   */
  resyncFrom(volume: string | number, region: number): number {
    this.live()
    const i = this.volumeIndex(volume)
    const regions = Math.ceil(this.sizes[i] / REGION_SIZE)
    if (!Number.isSafeInteger(region) || region < 0 || region > regions) {
      throw new TidemarkError('TAP_INVALID_ARGUMENT', `region ${region} is outside volume ${this.volumes[i]} (${regions} regions)`)
    }
    return this.handle.resyncFrom(i, region)
  }

  /** Never hand out a seq at or below floor (for the volume's whole group). */
  raiseSeq(volume: string | number, floor: number): void {
    this.live()
    if (!Number.isSafeInteger(floor) || floor < 0) throw new TidemarkError('TAP_INVALID_ARGUMENT', `bad seq ${floor}`)
    this.handle.raiseSeq(this.volumeIndex(volume), floor)
  }

  /**
   * A barrier: every write acknowledged to a client before this call has a
   * seq at or below the returned one; every later write is above it.
   */
  mark(volume: string | number): number {
    this.live()
    return this.handle.mark(this.volumeIndex(volume))
  }

  /** The barrier for a consistency group (its volumes share one seq space). */
  markGroup(group: string): number {
    const i = this.groups.get(group)
    if (i === undefined) throw new TidemarkError('TAP_UNKNOWN_GROUP', `no group ${JSON.stringify(group)} in this tap`)
    return this.mark(i)
  }

  /** The volumes of a consistency group, in tap order. */
  groupVolumes(group: string): string[] {
    if (!this.groups.has(group)) throw new TidemarkError('TAP_UNKNOWN_GROUP', `no group ${JSON.stringify(group)} in this tap`)
    return this.volumes.filter((_, i) => this.volumeGroups[i] === group)
  }

  /**
   * A TimeMark: takes a fresh seq S with the change locks of every named
   * volume held (they must share one seq space: one volume or one whole
   * group) and puts a MARK record carrying `metadata` at S into each
   * volume's stream. Every write acknowledged before the call is below S,
   * every later one above it. Throws TAP_MARK_REFUSED (with the reason) when
   * a volume is behind or resyncing, or its record buffer is full.
   */
  timemark(volumes: Array<string | number>, metadata: Buffer): number {
    this.live()
    if (!Array.isArray(volumes) || volumes.length === 0) throw new TidemarkError('TAP_INVALID_ARGUMENT', 'a TimeMark needs at least one volume')
    if (!Buffer.isBuffer(metadata)) throw new TidemarkError('TAP_INVALID_ARGUMENT', 'TimeMark metadata must be a Buffer')
    try {
      return this.handle.timemark(volumes.map((v) => this.volumeIndex(v)), metadata)
    } catch (err) {
      const e = err as Error & { code?: string }
      throw new TidemarkError(e.code ?? 'TAP_MARK_REFUSED', e.message)
    }
  }

  /** The dirty map as byte ranges of the volume (adjacent regions merged). */
  dirtyRegions(volume: string | number): DirtyRange[] {
    this.live()
    const i = this.volumeIndex(volume)
    const bits = this.handle.dirty(i)
    const size = this.sizes[i]
    const out: DirtyRange[] = []
    for (let byte = 0; byte < bits.length; byte++) {
      if (bits[byte] === 0) continue
      for (let b = 0; b < 8; b++) {
        if (!(bits[byte] & (1 << b))) continue
        const offset = (byte * 8 + b) * REGION_SIZE
        const length = Math.min(REGION_SIZE, size - offset)
        const last = out[out.length - 1]
        if (last && last.offset + last.length === offset) last.length += length
        else out.push({ offset, length })
      }
    }
    return out
  }

  /** Reads the volume's current contents (for resync), off the event loop. */
  read(volume: string | number, offset: number, length: number): Promise<Buffer> {
    this.live()
    return this.handle.read(this.volumeIndex(volume), offset, length)
  }

  stats(): VolumeStats[] {
    return this.handle.stats()
  }

  /**
   * Stops serving NBD: no new connections, in-flight requests finish, then
   * every connection closes. Captured records can still be pulled and acked.
   */
  async stopServing(): Promise<void> {
    this.live()
    await this.handle.stopServing()
  }

  /** Stops listening, lets in-flight requests finish, closes the volumes. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.handle.close()
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i]
      this.waiters[i] = null
      w?.()
    }
    this.emit('close')
  }
}
