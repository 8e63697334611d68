// A TimeView's TypeScript side: validates the settings, opens the native
// export (native/src/view.h behind the tap's NBD front) and answers its reads
// with the caller's read function (the CLI's is Admin.Read at the appliance).
//
// The native side asks for whole 64 KiB chunks, in runs of up to 4 MiB, and
// caches them; it asks from many threads at once (every request that misses,
// and read-ahead of sequential streams). This side makes those calls
// concurrently, at most maxFetches at a time (the rest wait in order of
// asking), so a burst of misses overlaps its round trips without flooding
// the appliance; it moves bytes and counts: fetches, bytes and the time the
// appliance took, for the stats line.
import os from 'node:os'
import { TidemarkError } from '../proto/errors'
import { native } from './index'
import { nbdListenerConfig, type NbdListenerOptions } from './nbd-listener'

/** Largest read the native side asks for (the Admin.Read limit). */
export const VIEW_MAX_FETCH = 4 * 1024 * 1024
/** Reads of the point in flight at once, by default. */
export const VIEW_MAX_FETCHES = 16

export interface TimeViewOptions {
  /** the export name: the volume's name */
  volume: string
  size: number
  /** what the export is, for NBD_INFO_DESCRIPTION (nbdinfo shows it) */
  description: string
  writable: boolean
  endpoint: { unix: string } | { tcp: { host: string; port: number } }
  /** TLS, connection cap and handshake deadline of the NBD listener */
  listener?: NbdListenerOptions
  /** where a writable view's overlay lives (an unnamed file; default os.tmpdir()) */
  overlayDir?: string
  /** the chunk cache's budget (default 64 MiB; 0: no cache) */
  cacheBytes?: number
  /** how far a sequential stream is read ahead (default 16 MiB; all streams together at most a quarter of the cache; 0: none) */
  readAheadBytes?: number
  /** calls of `read` in flight at once (default VIEW_MAX_FETCHES) */
  maxFetches?: number
  /**
   * Read the point from this NBD export instead (the appliance's own
   * VOLUME@seq=N, native/src/nbd_source.h): misses never go through `read`.
   */
  upstream?: ({ unix: string } | { host: string; port: number }) & { export: string; tls?: { cert: string; key: string; ca: string } }
  /** bytes [offset, offset+length) of the point; length <= VIEW_MAX_FETCH */
  read: (offset: number, length: number) => Promise<Buffer>
  /** native log lines, pino levels (30 info, 40 warn, 50 error) */
  log: (level: number, message: string) => void
}

export interface TimeViewStats {
  reads: number
  bytesRead: number
  writes: number
  bytesWritten: number
  trims: number
  zeroes: number
  flushes: number
  chunkHits: number
  chunkMisses: number
  fetches: number
  fetchBytes: number
  fetchErrors: number
  cacheBytes: number
  cacheEvictions: number
  overlayBytes: number
  /** chunks a read found being fetched for another and waited for (one fetch, not two) */
  fetchWaits: number
  readAheadFetches: number
  readAheadBytes: number
  /** the most fetches the native side had in flight at once */
  fetchesInFlightMax: number
  rejected: number
  ioErrors: number
  connections: number
  connectionsTotal: number
  /** time the read function took, all fetches together, and the slowest one */
  fetchMs: number
  fetchMaxMs: number
  /** the most calls of `read` in flight at once (at most maxFetches) */
  readsInFlightMax: number
}

interface NativeViewHandle {
  complete(id: number, data: Buffer): boolean
  fail(id: number, message: string): boolean
  stats(): Omit<TimeViewStats, 'fetchMs' | 'fetchMaxMs' | 'readsInFlightMax'>
  tcpPort(): number
  close(): Promise<void>
}
type NativeViewCtor = new (
  config: Record<string, unknown>,
  onFetch: (id: number, offset: number, length: number) => void,
  onLog: (level: number, message: string) => void
) => NativeViewHandle

function invalid(msg: string): TidemarkError {
  return new TidemarkError('VIEW_INVALID_ARGUMENT', msg)
}

export class TimeView {
  private fetchMs = 0
  private fetchMaxMs = 0
  private inFlight = 0
  private inFlightMax = 0
  /** fetches waiting for a free slot, oldest first */
  private readonly waiting: Array<[id: number, offset: number, length: number]> = []
  private closing: Promise<void> | undefined

  private constructor(private readonly handle: NativeViewHandle, readonly options: TimeViewOptions, private readonly maxFetches: number) {}

  static open(o: TimeViewOptions): TimeView {
    if (!o.volume || o.volume.length > 4096) throw invalid('a TimeView needs a volume name (at most 4096 bytes, the NBD limit)')
    if (!Number.isSafeInteger(o.size) || o.size <= 0 || o.size % 512 !== 0) {
      throw invalid(`volume ${o.volume} has size ${o.size}, not a positive multiple of 512 bytes`)
    }
    const cacheBytes = o.cacheBytes ?? 64 * 1024 * 1024
    if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 0) throw invalid(`cache size ${cacheBytes} is not a byte count`)
    const readAheadBytes = o.readAheadBytes ?? 16 * 1024 * 1024
    if (!Number.isSafeInteger(readAheadBytes) || readAheadBytes < 0) throw invalid(`read-ahead ${readAheadBytes} is not a byte count`)
    const maxFetches = o.maxFetches ?? VIEW_MAX_FETCHES
    if (!Number.isSafeInteger(maxFetches) || maxFetches < 1) throw invalid(`at most ${maxFetches} reads at once: give a positive count`)
    const config: Record<string, unknown> = {
      name: o.volume,
      size: o.size,
      description: o.description,
      writable: o.writable,
      overlayDir: o.overlayDir ?? os.tmpdir(),
      cacheBytes,
      readAheadBytes,
      ...nbdListenerConfig(o.listener),
    }
    if (o.upstream) {
      const u = o.upstream
      config.upstream = {
        ...('unix' in u ? { unix: u.unix } : { host: u.host, port: u.port }),
        export: u.export,
        ...(u.tls ? { tlsCert: u.tls.cert, tlsKey: u.tls.key, tlsCa: u.tls.ca } : {}),
      }
    }
    if ('unix' in o.endpoint) config.unix = o.endpoint.unix
    else {
      config.tcpHost = o.endpoint.tcp.host
      config.tcpPort = o.endpoint.tcp.port
    }
    const Ctor = (native as unknown as { NativeView?: NativeViewCtor }).NativeView
    if (!Ctor) throw new TidemarkError('VIEW_NOT_BUILT', 'the native addon has no NativeView: rebuild it (npm run build:native)')
    let view: TimeView | undefined
    const onFetch = (id: number, offset: number, length: number): void => {
      view!.fetch(id, offset, length)
    }
    let handle: NativeViewHandle
    try {
      handle = new Ctor(config, onFetch, (level, message) => o.log(level, message))
    } catch (err) {
      const e = err as Error & { code?: string }
      throw new TidemarkError(e.code ?? 'VIEW_OPEN_FAILED', e.message)
    }
    view = new TimeView(handle, o, maxFetches)
    return view
  }

  private fetch(id: number, offset: number, length: number): void {
    if (this.inFlight >= this.maxFetches) {
      this.waiting.push([id, offset, length])
      return
    }
    this.inFlight++
    if (this.inFlight > this.inFlightMax) this.inFlightMax = this.inFlight
    const t0 = performance.now()
    const done = (): void => {
      this.timed(t0)
      this.inFlight--
      const next = this.waiting.shift()
      if (next) this.fetch(...next)
    }
    let call: Promise<Buffer>
    try {
      call = this.options.read(offset, length)
    } catch (err) {
      call = Promise.reject(err)
    }
    call.then(
      (data) => {
        done()
        this.handle.complete(id, data)
      },
      (err: unknown) => {
        done()
        this.handle.fail(id, (err as Error).message ?? String(err))
      }
    )
  }

  private timed(t0: number): void {
    const ms = performance.now() - t0
    this.fetchMs += ms
    if (ms > this.fetchMaxMs) this.fetchMaxMs = ms
  }

  /** The TCP port bound (with tcp port 0), else 0. */
  get tcpPort(): number {
    return this.handle.tcpPort()
  }

  stats(): TimeViewStats {
    return { ...this.handle.stats(), fetchMs: Math.round(this.fetchMs), fetchMaxMs: Math.round(this.fetchMaxMs), readsInFlightMax: this.inFlightMax }
  }

  /** Stops listening, lets in-flight requests finish, closes connections, discards the overlay. */
  close(): Promise<void> {
    this.closing ??= this.handle.close()
    return this.closing
  }
}
