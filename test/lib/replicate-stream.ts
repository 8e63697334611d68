// A raw Replicate stream for tests that speak the protocol themselves (bad
// input, the data channel): send messages, read what comes back by kind, and
// see how the stream ends.
import type * as grpc from '@grpc/grpc-js'
import type { AgentMessage } from '../../proto/generated/tidemark/v1/AgentMessage'
import type { ApplianceMessage__Output } from '../../proto/generated/tidemark/v1/ApplianceMessage'
import type { replicationProto } from '../../proto/load'

export class Stream {
  readonly got: ApplianceMessage__Output[] = []
  readonly ended: Promise<grpc.StatusObject>
  readonly call: grpc.ClientDuplexStream<AgentMessage, ApplianceMessage__Output>
  private waiters: Array<() => void> = []

  constructor(client: InstanceType<typeof replicationProto.Replication>) {
    this.call = client.replicate()
    this.call.on('data', (m: ApplianceMessage__Output) => {
      this.got.push(m)
      for (const w of this.waiters.splice(0)) w()
    })
    this.ended = new Promise((resolve) => {
      this.call.on('status', resolve)
      this.call.on('error', () => undefined)
    })
  }

  send(m: AgentMessage): void {
    this.call.write(m)
  }

  /** The next message of this kind (earlier ones of other kinds stay queued); throws if the stream ends first. */
  async next(body: string): Promise<ApplianceMessage__Output> {
    for (;;) {
      const i = this.got.findIndex((m) => m.body === body)
      if (i >= 0) return this.got.splice(i, 1)[0]
      await Promise.race([
        new Promise<void>((r) => this.waiters.push(r)),
        this.ended.then((st) => {
          throw new Error(`stream ended (${st.details}) while waiting for ${body}`)
        }),
      ])
    }
  }
}
