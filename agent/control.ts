// The agent's control socket: a gRPC server (tidemark.v1.Control) on a unix
// socket, for `tidemark timemark create` and schedulers on the protected
// server. Only a unix socket: who may take TimeMarks (and run hooks as the
// agent's user) is decided by the socket file's permissions, 0600 here.
import fs from 'node:fs'
import net from 'node:net'
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import type { CreateTimeMarkRequest__Output } from '../proto/generated/tidemark/v1/CreateTimeMarkRequest'
import type { CreateTimeMarkReply } from '../proto/generated/tidemark/v1/CreateTimeMarkReply'
import { controlProto } from '../proto/load'
import type { TimeMarks } from './timemarks'

const STATUS: Record<string, grpc.status> = {
  TIMEMARK_BAD_REQUEST: grpc.status.INVALID_ARGUMENT,
  TIMEMARK_UNKNOWN_VOLUME: grpc.status.NOT_FOUND,
  TIMEMARK_UNKNOWN_GROUP: grpc.status.NOT_FOUND,
  TIMEMARK_NO_APPLIANCE: grpc.status.FAILED_PRECONDITION,
  TIMEMARK_QUIESCE_FAILED: grpc.status.ABORTED,
  TIMEMARK_REFUSED: grpc.status.FAILED_PRECONDITION,
  TIMEMARK_LOST: grpc.status.ABORTED,
  TIMEMARK_NOT_CONFIRMED: grpc.status.DEADLINE_EXCEEDED,
}

/** Is something listening on this unix socket? */
function inUse(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(file)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

export class ControlServer {
  private constructor(
    private readonly server: grpc.Server,
    readonly file: string
  ) {}

  static async start(file: string, marks: TimeMarks, log: Logger): Promise<ControlServer> {
    if (fs.existsSync(file)) {
      if (!fs.statSync(file).isSocket()) throw new TidemarkError('CONTROL_BIND', `--control ${file} exists and is not a socket`)
      if (await inUse(file)) throw new TidemarkError('CONTROL_BIND', `--control ${file} is in use by another agent`)
      fs.rmSync(file) // stale, from an agent that was killed
    }
    const server = new grpc.Server()
    server.addService(controlProto.Control.service, {
      createTimeMark: (call: grpc.ServerUnaryCall<CreateTimeMarkRequest__Output, CreateTimeMarkReply>, cb: grpc.sendUnaryData<CreateTimeMarkReply>) => {
        const r = call.request
        marks
          .create({
            volume: r.volume || undefined,
            group: r.group || undefined,
            label: r.label || undefined,
            quiesce: r.quiesce || undefined,
            thaw: r.thaw || undefined,
            hookTimeoutMs: r.hookTimeoutMs || undefined,
            allowCrashConsistent: r.allowCrashConsistent,
            noWait: r.noWait,
            waitTimeoutMs: r.waitTimeoutMs || undefined,
          })
          .then(
            (m) => cb(null, m),
            (err: Error & { code?: string }) => {
              log.warn({ volume: r.volume, group: r.group, label: r.label, code: err.code }, err.message)
              cb({ code: (err.code ? STATUS[err.code] : undefined) ?? grpc.status.INTERNAL, details: err.message })
            }
          )
      },
    })
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${file}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(new TidemarkError('CONTROL_BIND', `cannot listen on --control ${file}: ${err.message}`)) : resolve()
      )
    )
    fs.chmodSync(file, 0o600)
    log.info({ control: `unix:${file}` }, 'control socket listening')
    return new ControlServer(server, file)
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()))
    fs.rmSync(this.file, { force: true })
  }
}
