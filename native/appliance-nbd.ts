// Types for the addon's appliance classes (native/src/appliance_nbd_addon.cc):
// point maps, exports over them, and the appliance's NBD server. The layout
// of a map extent (native/src/point_map.h) is encoded here and nowhere else
// in TypeScript.
import { native } from './index'

/** A file a map names besides segments: the base image. Sectors in no extent read as zeroes. */
export const MAP_BASE_FILE = -2
export const MAP_ZERO_FILE = -1

const L = native.pointMapLayout
export const MAP_EXTENT_SIZE = L.size

/** Writes one extent at byte `at` of buf. */
export function putExtent(buf: Buffer, at: number, sector: number, count: number, file: number, pos: number): void {
  buf.writeBigUInt64LE(BigInt(sector), at + L.sector)
  buf.writeBigUInt64LE(BigInt(pos), at + L.pos)
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
}

export interface ApplianceExportConfig {
  name: string
  description: string
  size: number
  writable: boolean
  overlayDir?: string
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
  setListing(entries: Array<{ name: string; description: string }>): void
  tcpPort(): number
  rejectedHandshakes(): number
  close(): Promise<void>
}

const n = native as unknown as {
  PointMap: new (config: { path?: string; size: number; files: Array<[number, number]> }) => PointMapHandle
  ApplianceExport: new (config: ApplianceExportConfig, map: PointMapHandle) => ApplianceExportHandle
  ApplianceNbd: new (
    config: { unix?: string; tcpHost?: string; tcpPort?: number },
    onOpen: (id: number, name: string) => void,
    onLog: (level: number, message: string) => void
  ) => ApplianceNbdHandle
}

export function openPointMap(config: { path?: string; size: number; files: Array<[number, number]> }): PointMapHandle {
  return new n.PointMap(config)
}

export function openApplianceExport(config: ApplianceExportConfig, map: PointMapHandle): ApplianceExportHandle {
  return new n.ApplianceExport(config, map)
}

export function listenApplianceNbd(
  config: { unix?: string; tcpHost?: string; tcpPort?: number },
  onOpen: (id: number, name: string) => void,
  onLog: (level: number, message: string) => void
): ApplianceNbdHandle {
  return new n.ApplianceNbd(config, onOpen, onLog)
}
