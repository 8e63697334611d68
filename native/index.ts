// Loads the native addon (build/Release/tidemark_native.node) from the
// repository root, whether this file runs from source or from dist/.
import fs from 'node:fs'
import path from 'node:path'

export interface NativeVolumeStats {
  name: string
  size: number
  reads: number
  writes: number
  trims: number
  zeroes: number
  flushes: number
  bytesRead: number
  bytesWritten: number
  records: number
  recordBytes: number
  droppedRecords: number
  droppedBytes: number
  resyncRecords: number
  /** of those, regions that were holes in the volume's file: ZERO records with RECORD_FLAG_RESYNC, nothing read */
  resyncHoles: number
  /** write-behind rounds: the volume file's dirty pages written to its disk every 8 MiB written */
  writebacks: number
  /** writes that waited for room in a full record buffer instead of falling behind, and their wait in all (ms) */
  congestionWaits: number
  congestionWaitMs: number
  /** writes waiting for room now */
  congestionWaiting: number
  behindEvents: number
  marks: number
  gaps: number
  rejected: number
  ioErrors: number
  connections: number
  connectionsTotal: number
  lastSeq: number
  ackedSeq: number
  ringUsed: number
  ringCapacity: number
  ringRecords: number
  dirtyRegions: number
  staleRegions: number
  regions: number
  regionSize: number
  /** the next region the resync (or the initial copy) looks at */
  resyncCursor: number
  /** the newest seq of a change to this volume (a group's other volumes excluded) */
  volumeSeq: number
  mode: 'normal' | 'behind' | 'resyncing'
}

/** An NBD listener's refusals since it started (native/src/nbd_server.h). */
export interface NbdListenerStats {
  /** closed at once: the connection cap was reached */
  refusedConnections: number
  /** closed: the handshake did not finish within its deadline */
  handshakeTimeouts: number
  /** closed or answered with an error: a bad handshake */
  rejectedHandshakes: number
}

export interface NativeTapConfig {
  stateDir: string
  bufferBytes: number
  congestionWaitMs?: number
  unix?: string
  tcpHost?: string
  tcpPort?: number
  volumes: Array<{ name: string; path: string; group?: string; readOnly?: boolean }>
}

export const EVENT_LOG = 0
export const EVENT_READABLE = 1

export interface NativeTap {
  pull(volume: number, maxBytes: number, into?: Buffer): Buffer | number | undefined
  ack(volume: number, seq: number): void
  mark(volume: number): number
  timemark(volumes: number[], metadata: Buffer): number
  dirty(volume: number): Buffer
  read(volume: number, offset: number, length: number): Promise<Buffer>
  stats(): NativeVolumeStats[]
  close(): Promise<void>
  stopServing(): Promise<void>
  tcpPort(): number
  droppedEvents(): number
  listenerStats(): NbdListenerStats
  resyncFrom(volume: number, region: number): number
  raiseSeq(volume: number, floor: number): void
}

/** The change-record layout as native/src/record.h compiled it (offsets by offsetof). */
export interface NativeRecordLayout {
  headerSize: number
  /** byte offset of each header field */
  fields: Record<'seq' | 'sector' | 'count' | 'kind' | 'flags' | 'reserved' | 'dataLength' | 'time', number>
  /** byte width of each header field */
  fieldSizes: Record<'seq' | 'sector' | 'count' | 'kind' | 'flags' | 'reserved' | 'dataLength' | 'time', number>
  kinds: Record<'write' | 'trim' | 'zero' | 'flush' | 'resync' | 'mark' | 'gap' | 'exact', number>
  flags: { fua: number; resync: number }
  maxMarkData: number
  sectorSize: number
  regionSize: number
}

/** native/src/scan_addon.cc: MicroScan's per-sector work and the ChangeBatch payload, one call per batch. */
export interface NativeMicroScanHandle {
  scan(batch: Buffer, regions: Float64Array | null, fps: BigUint64Array | null, mode: number, nums: Float64Array, checksum: Buffer | null, into?: Buffer): Buffer | number
  /** scan on libuv's pool: nums and checksum are written when it resolves; batch and fps must not change until then. */
  scanAsync(batch: Buffer, regions: Float64Array | null, fps: BigUint64Array | null, mode: number, nums: Float64Array, checksum: Buffer | null, into?: Buffer): Promise<Buffer | number>
  /** the payload buffer (into) a scan of a batch of this many bytes needs */
  outputBound(batchBytes: number): number
  clear(): void
  stats(): Float64Array
}

export interface NativeModule {
  NativeMicroScan: new (volumeBytes: number, cacheBytes: number, enabled: boolean) => NativeMicroScanHandle
  scanEncodeLayout: { minCompress: number; sample: number; worth: number; pageOverhead: number; trimCreateLimit: number }
  NativeTap: new (
    config: NativeTapConfig,
    onEvent: (type: number, volume: number, level: number, message: string) => void
  ) => NativeTap
  regionSize: number
  recordHeaderSize: number
  recordLayout: NativeRecordLayout
  /** Positional reads on a worker thread: reqs holds (fd, position, length, offset in buf) quadruples. */
  readBatch(buf: Buffer, reqs: Float64Array): Promise<void>
  /** getsockopt(SO_PEERCRED) on a connected unix socket's fd (appliance/unix-listener.ts). */
  peerCredentials(fd: number): { uid: number; gid: number; pid: number }
  /** The appliance's NBD server and point maps (native/appliance-nbd.ts types them). */
  PointMap: unknown
  ApplianceExport: unknown
  ApplianceNbd: unknown
  /** A journal segment's O_DIRECT appender (native/journal-append.ts types it). */
  JournalAppender: unknown
  /** Byte offsets of native/src/point_map.h's MapExtent, and its size. */
  pointMapLayout: { size: number; sector: number; pos: number; count: number; file: number }
  /**
   * Decodes, checks and frames one ChangeBatch for the journal
   * (native/src/batch_ingest.h; appliance/record-check.ts is its one caller
   * and names the numbers in `nums`).
   */
  frameBatch(payload: Buffer, nums: Float64Array, checksum: Buffer | null, where: string, into?: Buffer): FrameBatchResult
  /** frameBatch on libuv's pool: payload, checksum and into must not change until it settles. */
  frameBatchAsync(payload: Buffer, nums: Float64Array, checksum: Buffer | null, where: string, into?: Buffer): Promise<FrameBatchResult>
  /** The journal frame constants as native/src/batch_ingest.h compiled them. */
  journalFrameLayout: {
    frameHeaderSize: number
    commitBodySize: number
    frameChange: number
    frameCommit: number
    checkedStride: number
    checkedFields: Record<'seq' | 'sector' | 'count' | 'kind' | 'offset', number>
    /** how many numbers frameBatch reads from `nums` */
    args: number
  }
}

/**
 * frameBatch's answer: error code (null: the batch is good) and message, the
 * framed batch and the checked records (also when the batch failed part way:
 * the records before the problem), how many records and MARK records those
 * are, and the metadata of a MARK record the batch failed at (and the text
 * naming that record).
 */
export type FrameBatchResult = [
  code: string | null,
  message: string,
  framed: Buffer | null,
  recs: Float64Array | null,
  records: number,
  marks: number,
  pendingMark: Buffer | null,
  pendingMarkAt: string,
]

function findRoot(start: string): string {
  let dir = start
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'CMakeLists.txt'))) return dir
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`cannot find the tidemark repository root above ${start}`)
    dir = up
  }
}

const addonPath = path.join(findRoot(__dirname), 'build', 'Release', 'tidemark_native.node')
if (!fs.existsSync(addonPath)) {
  throw Object.assign(new Error(`the native addon is not built (${addonPath} is missing): run npm install`), {
    code: 'TAP_NOT_BUILT',
  })
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: NativeModule = require(addonPath)
