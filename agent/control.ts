// The agent's control socket: a gRPC server (tidemark.v1.Control) on a unix
// socket, for `tidemark timemark create` and schedulers on the protected
// server. Only a unix socket: who may take TimeMarks (and run hooks as the
// agent's user) is decided by the socket file's permissions, 0600 here.
import fs from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import type { CreateTimeMarkRequest__Output } from '../proto/generated/tidemark/v1/CreateTimeMarkRequest'
import type { CreateTimeMarkReply } from '../proto/generated/tidemark/v1/CreateTimeMarkReply'
import { controlProto } from '../proto/load'
import { clearSocketPath } from '../native/unix-socket-path'
import { unaryHandler } from '../proto/unary-handler'
import type { TimeMarks } from './timemarks'


export class ControlServer {
  private constructor(
    private readonly server: grpc.Server,
    readonly file: string
  ) {}

  static async start(file: string, marks: TimeMarks, log: Logger): Promise<ControlServer> {
    await clearSocketPath(file, 'CONTROL_BIND', `--control ${file}`, 'another agent')
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
    // Bound under umask 077 so the socket file is 0600 from the moment it
    // exists (a chmod after bind leaves a window in which anyone may connect
    // and run hooks as us). bin/tidemark.js sets 077 for the whole process;
    // this holds for an agent started another way too. grpc-js binds on the
    // event loop, so the umask is restored in the callback.
    const umask = process.umask(0o077)
    try {
      await new Promise<void>((resolve, reject) =>
        server.bindAsync(`unix:${file}`, grpc.ServerCredentials.createInsecure(), (err) =>
          err ? reject(new TidemarkError('CONTROL_BIND', `cannot listen on --control ${file}: ${err.message}`)) : resolve()
        )
      )
    } finally {
      process.umask(umask)
    }
    // 0700 as bound (a socket's mode less the umask): owner only already;
    // 0600 because nothing executes a socket.
    fs.chmodSync(file, 0o600)
    log.info({ control: `unix:${file}` }, 'control socket listening')
    return new ControlServer(server, file)
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()))
    // Ours only: not whatever another process put at the path since.
    try {
      if (fs.lstatSync(this.file).isSocket()) fs.rmSync(this.file)
    } catch {
      // already gone
    }
  }
}
