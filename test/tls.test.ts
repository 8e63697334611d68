// Mutual TLS at the appliance: certificates made with openssl, a real
// appliance process, real gRPC clients. An agent may write only the volumes
// its certificate identity is allowed; anything else is PERMISSION_DENIED and
// logged; a certificate from another CA does not get a connection at all.
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, makePki, run, startAppliance, tmpdir } from './helpers'
import { helloAs } from './lib/tls-clients'

function hello(volume: string) {
  return { hello: { protocol: PROTOCOL_VERSION, agentId: 'whoever-i-say', volume, generation: 'g1', size: 1 << 20, group: '', ackedSeq: 0 } }
}

/** Opens a stream as `who` and says hello for `volume`: the first reply, or how it ended. */
function attempt(address: string, pki: string, who: string, volume: string) {
  return helloAs(address, pki, who, hello(volume))
}

t.test('mutual TLS: identities map to volumes; others are refused', async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  fs.mkdirSync(pki)
  await makePki(pki, ['appliance', 'agent-a', 'agent-b'])
  const rogue = path.join(dir, 'rogue')
  fs.mkdirSync(rogue)
  await makePki(rogue, ['agent-a'], 'ca')
  // the rogue agent-a presents a certificate from another CA, but trusts ours
  fs.copyFileSync(path.join(pki, 'ca.pem'), path.join(rogue, 'trust.pem'))

  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: ['--tls-cert', path.join(pki, 'appliance.pem'), '--tls-key', path.join(pki, 'appliance.key'),
      '--tls-ca', path.join(pki, 'ca.pem'), '--allow', 'agent-a=vol-a,db-*', '--allow', 'agent-a=read:vol-a,read:db-*'],
  })

  t.same(await attempt(app.address, pki, 'agent-a', 'vol-a'), { welcome: true }, 'agent-a may write vol-a')
  t.same(await attempt(app.address, pki, 'agent-a', 'db-log'), { welcome: true }, 'agent-a may write db-* volumes')
  const denied = await attempt(app.address, pki, 'agent-a', 'vol-b')
  t.equal(denied.code, grpc.status.PERMISSION_DENIED, 'agent-a may not write vol-b')
  t.match(denied.details, /certificate identity "agent-a" may not write volume vol-b \(Replicate needs role write\)/)
  const other = await attempt(app.address, pki, 'agent-b', 'vol-a')
  t.equal(other.code, grpc.status.PERMISSION_DENIED, 'agent-b is not in the allow-list')

  // A certificate from another CA never gets a stream.
  const creds = grpc.credentials.createSsl(
    fs.readFileSync(path.join(rogue, 'trust.pem')),
    fs.readFileSync(path.join(rogue, 'agent-a.key')),
    fs.readFileSync(path.join(rogue, 'agent-a.pem'))
  )
  const client = new replicationProto.Replication(app.address, creds)
  const r = await new Promise<grpc.ServiceError>((resolve) => {
    const call = client.replicate({ deadline: Date.now() + 10_000 })
    call.on('data', () => undefined)
    call.on('error', resolve)
    call.write(hello('vol-a'))
  })
  client.close()
  t.equal(r.code, grpc.status.UNAVAILABLE, `a certificate from another CA gets no connection (${r.details})`)

  // Without a client certificate the CLI gets nothing either.
  const plain = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json'])
  t.not(plain.code, 0, 'a client without TLS is refused')
  const withCert = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json',
    '--tls-cert', path.join(pki, 'agent-a.pem'), '--tls-key', path.join(pki, 'agent-a.key'), '--tls-ca', path.join(pki, 'ca.pem')])
  t.equal(withCert.code, 0, `stats over mutual TLS (${withCert.stderr.trim()})`)
  t.same(JSON.parse(withCert.stdout).volumes.map((v: { name: string }) => v.name).sort(), ['db-log', 'vol-a'], 'only the allowed volumes were created')

  // Points in time need the read role on the volume: agent-b has none.
  const asB = ['--tls-cert', path.join(pki, 'agent-b.pem'), '--tls-key', path.join(pki, 'agent-b.key'), '--tls-ca', path.join(pki, 'ca.pem')]
  for (const args of [
    ['restore', '--volume', 'vol-a', '--seq', 'latest', '--out', path.join(dir, 'x.img')],
    ['restore', '--volume', 'vol-a', '--timemark', 'nightly', '--out', path.join(dir, 'x.img')],
    ['timemark', 'list', '--volume', 'vol-a'],
  ]) {
    const r = await run(process.execPath, [BIN, ...args, '--appliance', app.address, ...asB])
    t.not(r.code, 0, `agent-b: ${args.slice(0, 2).join(' ')} of vol-a is refused`)
    t.match(r.stderr, /certificate identity "agent-b" may not read volume vol-a/, 'with the reason, in one line')
    t.equal(r.stderr.trim().split('\n').length, 1)
  }
  t.notOk(fs.existsSync(path.join(dir, 'x.img')), 'nothing was restored')

  // Logged once per identity and operation (access-policy.ts), however often it is tried.
  const denials = app.logs().filter((l) => l.code === 'PERMISSION_DENIED' && l.operation)
  t.same(denials.map((l) => `${l.identity} ${l.operation}`).sort(), ['agent-a Replicate', 'agent-b ListTimeMarks', 'agent-b Replicate', 'agent-b Resolve'], 'each denial is logged, once per identity and operation')
})
