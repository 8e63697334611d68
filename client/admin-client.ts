// A client of an appliance's Admin service, for the CLI commands, tests and
// benchmarks. It takes typed options (flag parsing stays in cli/).
import fs from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import { TidemarkError } from '../proto/errors'
import { fromStatus } from '../proto/status'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import { adminProto, FLOW_CONTROL_WINDOW, MAX_MESSAGE_BYTES } from '../proto/load'

/** PEM contents, or the paths of the files that hold them. */
export interface ClientTls {
  cert: string | Buffer
  key: string | Buffer
  ca: string | Buffer
}

export interface AdminClientOptions {
  /** HOST:PORT ([v6]:PORT for IPv6) */
  address: string
  /** mutual TLS; without it the channel is not encrypted */
  tls?: ClientTls
}

/** "HOST:PORT" as a gRPC target (an IPv6 host in brackets). */
export function grpcTarget(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function pem(v: string | Buffer): Buffer {
  if (Buffer.isBuffer(v)) return v
  try {
    return fs.readFileSync(v)
  } catch (err) {
    throw new TidemarkError('TLS_FILE', `cannot read ${v}: ${(err as Error).message}`)
  }
}

export function adminClient(opts: AdminClientOptions): AdminClient {
  const creds = opts.tls
    ? grpc.credentials.createSsl(pem(opts.tls.ca), pem(opts.tls.key), pem(opts.tls.cert))
    : grpc.credentials.createInsecure()
  return new adminProto.Admin(opts.address, creds, {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    // A restore streams the volume to us: HTTP/2's default 64 KiB window
    // would make every megabyte wait for window updates.
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
  })
}

/** A gRPC error as one line: the appliance's own message and code when it sent them. */
export function clientError(command: string, err: unknown): TidemarkError {
  return fromStatus(err, `tidemark ${command}: `)
}

export function unary<Req, Res>(
  fn: (req: Req, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown,
  req: Req
): Promise<Res> {
  return new Promise((resolve, reject) =>
    fn(req, { deadline: Date.now() + 60_000 }, (err, res) => (err ? reject(err) : resolve(res!)))
  )
}
