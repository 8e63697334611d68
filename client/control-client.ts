// A client of an agent's control socket (tidemark timemark create, tests,
// benchmarks): the agent takes TimeMarks because it runs on the protected
// server, where the hooks run.
import * as grpc from '@grpc/grpc-js'
import type { ControlClient } from '../proto/generated/tidemark/v1/Control'
import type { CreateTimeMarkReply__Output } from '../proto/generated/tidemark/v1/CreateTimeMarkReply'
import type { CreateTimeMarkRequest } from '../proto/generated/tidemark/v1/CreateTimeMarkRequest'
import { controlProto } from '../proto/load'

/** A client of an agent's control socket (unix:PATH). */
export function controlClient(control: string): ControlClient {
  return new controlProto.Control(control, grpc.credentials.createInsecure()) as unknown as ControlClient
}

export function createTimeMark(client: ControlClient, req: CreateTimeMarkRequest, deadline: number): Promise<CreateTimeMarkReply__Output> {
  return new Promise<CreateTimeMarkReply__Output>((resolve, reject) =>
    client.createTimeMark(req, { deadline }, (err, res) => (err ? reject(err) : resolve(res!)))
  )
}
