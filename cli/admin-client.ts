// A client of an appliance's Admin service, for the CLI commands.
import fs from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import type { TidemarkError } from '../proto/errors'
import { fromStatus } from '../proto/status'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import { adminProto, FLOW_CONTROL_WINDOW, MAX_MESSAGE_BYTES } from '../proto/load'
import { parseHostPort, parseTlsFlags, usage, type Parsed } from './args'

export const CLIENT_FLAGS = {
  appliance: { value: true },
  'tls-cert': { value: true },
  'tls-key': { value: true },
  'tls-ca': { value: true },
}

export function adminClient(a: Parsed, command: string): AdminClient {
  const ep = a.get('appliance')?.[0]
  if (!ep) throw usage(command, '--appliance HOST:PORT is required')
  const { host, port } = parseHostPort(ep, '--appliance', command)
  const tls = parseTlsFlags((n) => a.get(n)?.[0], command)
  let creds: grpc.ChannelCredentials
  if (tls) {
    const read = (f: string): Buffer => {
      try {
        return fs.readFileSync(f)
      } catch (err) {
        throw usage(command, `cannot read ${f}: ${(err as Error).message}`)
      }
    }
    creds = grpc.credentials.createSsl(read(tls.ca), read(tls.key), read(tls.cert))
  } else {
    creds = grpc.credentials.createInsecure()
  }
  const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
  return new adminProto.Admin(target, creds, {
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
