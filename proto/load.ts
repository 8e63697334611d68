// Loads the tidemark.v1 services for @grpc/grpc-js. The .proto files under
// proto/tidemark/v1/ are the contract; the TypeScript types in
// proto/generated/ come from them by `npm run proto` and are never edited by
// hand. The loader options here must match that script's flags.
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import type { ProtoGrpcType as AdminProto } from './generated/admin'
import type { ProtoGrpcType as ControlProto } from './generated/control'
import type { ProtoGrpcType as ReplicationProto } from './generated/replication'

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
}

function load<T>(file: string): T {
  // Works from source (proto/load.ts) and from dist/proto/load.js.
  const dirs = [path.join(__dirname), path.join(__dirname, '..', '..', 'proto')]
  const def = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: dirs })
  return grpc.loadPackageDefinition(def) as unknown as T
}

export const replicationProto = load<ReplicationProto>('tidemark/v1/replication.proto').tidemark.v1
export const adminProto = load<AdminProto>('tidemark/v1/admin.proto').tidemark.v1
export const controlProto = load<ControlProto>('tidemark/v1/control.proto').tidemark.v1

/** Largest gRPC message either side accepts: a batch of 8 MiB raw plus framing. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024
/** Largest raw (uncompressed) ChangeBatch payload. */
export const MAX_BATCH_BYTES = 8 * 1024 * 1024
export const PROTOCOL_VERSION = 1
/**
 * HTTP/2 flow-control window for a client that receives bulk data (the CLI
 * during a restore). Node's default of 64 KiB holds every megabyte up for 16
 * window updates; measured, a 2 GiB restore went from 128 to 166 MB/s.
 */
export const FLOW_CONTROL_WINDOW = 16 * 1024 * 1024
