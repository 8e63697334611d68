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
import { unaryHandler } from '../proto/unary-handler'
import type { TimeMarks } from './timemarks'

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
      // The socket file's permissions are the authorization; its clients print the message as it is.
      createTimeMark: unaryHandler<CreateTimeMarkRequest__Output, CreateTimeMarkReply>(
        'createTimeMark',
        { log, codeInDetails: false, context: (r) => ({ volume: r.volume, group: r.group, label: r.label }) },
        (call) => {
          const r = call.request
          return marks.create({
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
        }
      ),
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
