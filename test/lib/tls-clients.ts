// Clients that show a certificate, shared by the TLS and identity tests:
// a Replicate stream's hello over mutual TLS, and a libnbd/qemu certificates
// directory for NBD clients (nbdinfo, qemu-io, nbdcopy).
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import type { AgentMessage } from '../../proto/generated/tidemark/v1/AgentMessage'
import type { ApplianceMessage__Output } from '../../proto/generated/tidemark/v1/ApplianceMessage'
import { replicationProto } from '../../proto/load'

/** Opens a Replicate stream as `who` (its certificate in a makePki directory) and sends `hello`: welcomed, or how the stream ended. */
export function helloAs(address: string, pki: string, who: string, hello: AgentMessage): Promise<{ welcome?: boolean; code?: number; details?: string }> {
  const creds = grpc.credentials.createSsl(
    fs.readFileSync(path.join(pki, 'ca.pem')),
    fs.readFileSync(path.join(pki, `${who}.key`)),
    fs.readFileSync(path.join(pki, `${who}.pem`))
  )
  const client = new replicationProto.Replication(address, creds)
  return new Promise((resolve) => {
    const call = client.replicate()
    call.on('data', (m: ApplianceMessage__Output) => {
      if (m.body === 'welcome') {
        call.cancel()
        client.close()
        resolve({ welcome: true })
      }
    })
    call.on('error', (e: grpc.ServiceError) => {
      client.close()
      resolve({ code: e.code, details: e.details })
    })
    call.write(hello)
  })
}

/** A libnbd / qemu certificates directory (ca-cert.pem, client-cert.pem, client-key.pem) for `who`. */
export function certDir(pki: string, who: string, into: string): string {
  fs.mkdirSync(into, { recursive: true })
  fs.copyFileSync(path.join(pki, 'ca.pem'), path.join(into, 'ca-cert.pem'))
  fs.copyFileSync(path.join(pki, `${who}.pem`), path.join(into, 'client-cert.pem'))
  fs.copyFileSync(path.join(pki, `${who}.key`), path.join(into, 'client-key.pem'))
  return into
}
