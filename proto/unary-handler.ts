// One wrapper for every unary gRPC handler (the appliance's Admin service,
// the agent's Control socket): it runs the authorization hook, then the
// handler; it answers exactly once, with the reply or with the status the
// error maps to (proto/status.ts), and logs a refusal once, with the method
// and what the request named. Handlers just return or throw.
import type * as grpc from '@grpc/grpc-js'
import { statusOf, toStatus } from './status'

/** What the wrapper logs through (a pino Logger is one). */
export interface RefusalLog {
  warn(obj: Record<string, unknown>, msg: string): void
  error(obj: Record<string, unknown>, msg: string): void
}

export interface UnaryOptions<Req> {
  log: RefusalLog
  /** Runs before the handler; throws to refuse the call (PERMISSION_DENIED, ...). */
  authorize?: (call: grpc.ServerUnaryCall<Req, unknown>) => void | Promise<void>
  /** Fields of the request worth a log line (the volume, the seq). */
  context?: (req: Req) => Record<string, unknown>
  /** See ToStatusOptions.codeInDetails. */
  codeInDetails?: boolean
}

export function unaryHandler<Req, Res>(
  method: string,
  opts: UnaryOptions<Req>,
  handler: (call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const run = async (): Promise<Res> => {
      await opts.authorize?.(call as grpc.ServerUnaryCall<Req, unknown>)
      return handler(call)
    }
    run().then(
      (reply) => {
        callback(null, reply)
        return
      },
      (err: unknown) => {
        const status = toStatus(err, { codeInDetails: opts.codeInDetails })
        const code = (err as { code?: unknown })?.code
        const fields = { method, ...opts.context?.(call.request), code, err: (err as Error)?.message ?? String(err) }
        // An error without a known code is a fault here, not a refusal of the caller's request.
        if (status.code === statusOf(undefined)) opts.log.error(fields, `${method} failed: ${fields.err}`)
        // A refusal its checker logged already (once per caller and method: access-policy.ts) is not logged again.
        else if ((err as { logged?: unknown })?.logged !== true) opts.log.warn(fields, `${method} refused: ${fields.err}`)
        callback(status)
        return
      }
    )
  }
}
