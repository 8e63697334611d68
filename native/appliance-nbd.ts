// Types for the addon's appliance classes (native/src/appliance_nbd_addon.cc):
// point maps, exports over them, and the appliance's NBD server. The layout
// of a map extent (native/src/point_map.h) is encoded here and nowhere else
// in TypeScript.
import { writeU64LE } from '../proto/record'
import { native } from './index'

/** A file a map names besides segments: the base image. Sectors in no extent read as zeroes. */
export const MAP_BASE_FILE = -2
export const MAP_ZERO_FILE = -1

const L = native.pointMapLayout
export const MAP_EXTENT_SIZE = L.size

/** Writes one extent at byte `at` of buf. */
export function putExtent(buf: Buffer, at: number, sector: number, count: number, file: number, pos: number): void {
  writeU64LE(buf, at + L.sector, sector)
  writeU64LE(buf, at + L.pos, pos)
  buf.writeUInt32LE(count, at + L.count)
  buf.writeInt32LE(file, at + L.file)
}

export interface PointMapHandle {
  /** Paints committed extents (a Buffer of MAP_EXTENT_SIZE-byte extents) over the map. */
  apply(extents: Buffer): void
  addFile(file: number, fd: number): void
  deltaExtents(): number
  /** Bytes of the point, read on a worker thread. */
  read(offset: number, length: number): Promise<Buffer>
  /** xxh64 of every 512-byte sector of (offset, length) pairs (whole sectors), 8 bytes little-endian each, read and hashed on a worker thread. */
  fingerprints(ranges: Float64Array): Promise<Buffer>
}

/** What a replica round copied, and the newest journal location the image now holds. */
export interface ReplicaRound {
  file: number
  pos: number
  bytes: number
  extents: number
  /** stopped by yieldRound(): nothing to save, the image stays unusable */
  interrupted: boolean
}

/** A volume's replica image (native/src/replica_image.h). */
export interface ReplicaImageHandle {
  /** Makes the image equal a snapshot of `map` taken now: what is newer than (fromFile, fromPos), or everything when full. */
  round(map: PointMapHandle, full: boolean, fromFile: number, fromPos: number, yieldable?: boolean): Promise<ReplicaRound>
  /** Stops the yieldable round under way, if any, at its next extent. */
  yieldRound(): void
  /** Not read from until the next round. */
  invalidate(): void
  /** Bytes readers took from the image instead of the journal. */
  bytesRead(): number
}

export interface PointMapConfig {
  /** The map file (absent: an empty base). */
  path?: string
  size: number
  /** [file, fd]: segment numbers and MAP_BASE_FILE; the fds are dup'd. */
  files: Array<[number, number]>
  /** Readers of this map read through the volume's replica image where it holds their version. */
  replica?: ReplicaImageHandle
}

export interface ApplianceExportConfig {
  name: string
  description: string
  size: number
  writable: boolean
  overlayDir?: string
  /** A durable overlay instead (a named writable view): its data file and its map (native/src/overlay.h). */
  overlayPath?: string
  overlayMapPath?: string
}

export interface ApplianceExportStats {
  reads: number
  bytesRead: number
  writes: number
  bytesWritten: number
  overlayBytes: number
  ioErrors: number
  rejected: number
  connections: number
  connectionsTotal: number
}

export interface ApplianceExportHandle {
  stats(): ApplianceExportStats
  /** Drops this handle's hold; connections keep the export until they end. */
  close(): void
}

export type NbdRefusal = 'unknown' | 'invalid' | 'policy' | 'unavailable'

export interface ApplianceNbdHandle {
  answer(id: number, exp: ApplianceExportHandle): boolean
  refuse(id: number, reason: NbdRefusal, message: string): boolean
  listed(id: number, entries: Array<{ name: string; description: string }>): boolean
  /** Cuts the connections serving the export (a deleted view); how many there were. */
  disconnect(exp: ApplianceExportHandle): number
  tcpPort(): number
  rejectedHandshakes(): number
  close(): Promise<void>
}

const n = native as unknown as {
  PointMap: new (config: PointMapConfig) => PointMapHandle
  ReplicaImage: new (fd: number) => ReplicaImageHandle
  ApplianceExport: new (config: ApplianceExportConfig, map: PointMapHandle, server?: ApplianceNbdHandle) => ApplianceExportHandle
  ApplianceNbd: new (
    config: ApplianceNbdConfig,
    onOpen: (id: number, name: string | null, identity: string) => void,
    onLog: (level: number, message: string) => void
  ) => ApplianceNbdHandle
}

export function openPointMap(config: PointMapConfig): PointMapHandle {
  return new n.PointMap(config)
}

/** The replica image open on fd (dup'd: the caller may close its own). */
export function openReplicaImage(fd: number): ReplicaImageHandle {
  return new n.ReplicaImage(fd)
}

/** An export over a snapshot of the map taken now; made for `server`, it logs (overlay errors) where the server does. */
export function openApplianceExport(config: ApplianceExportConfig, map: PointMapHandle, server?: ApplianceNbdHandle): ApplianceExportHandle {
  return new n.ApplianceExport(config, map, server)
}

/** Where to listen; with the TLS files, every client must STARTTLS with a certificate the CA signed. */
export interface ApplianceNbdConfig {
  unix?: string
  tcpHost?: string
  tcpPort?: number
  tlsCert?: string
  tlsKey?: string
  tlsCa?: string
  /** connections open at once (0: no cap) */
  maxConnections?: number
  /** the handshake deadline, ms of waiting for the client (native default 10 s) */
  handshakeTimeoutMs?: number
}

/**
 * onOpen(id, name, identity): a client names an export (answer or refuse),
 * or asks for the list (name null: listed). identity is its certificate's, "" without TLS.
 */
export function listenApplianceNbd(
  config: ApplianceNbdConfig,
  onOpen: (id: number, name: string | null, identity: string) => void,
  onLog: (level: number, message: string) => void
): ApplianceNbdHandle {
  return new n.ApplianceNbd(config, onOpen, onLog)
}
