// What stats's appliance-wide counts (open streams, rejections by code) show
// to whom, through a real appliance and real certificates: an admin of every
// volume sees all of them; a reader sees only those of the volumes it may
// read (appliance/admin-service.ts stats, replication-service.ts countsFor).
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, have, makePki, run, startAppliance, tlsArgs, tmpdir } from './helpers'
import { Stream } from './lib/replicate-stream'
import { helloAs } from './lib/tls-clients'

const MiB = 1024 * 1024

function creds(pki: string, who: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(fs.readFileSync(path.join(pki, 'ca.pem')), fs.readFileSync(path.join(pki, `${who}.key`)), fs.readFileSync(path.join(pki, `${who}.pem`)))
}

t.test('a reader sees stream and rejection counts of its volumes only', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  const who = ['appliance', 'agent-a', 'agent-b', 'reader-a', 'reader-all', 'boss', 'stranger']
  await makePki(pki, who)
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: [...tlsArgs(pki, 'appliance'), '--data-port', 'off', '--allow', 'agent-a=write:vol-a', '--allow', 'agent-b=write:vol-b',
      '--allow', 'reader-a=read:vol-a', '--allow', 'reader-all=read:*', '--allow', 'boss=admin:*'],
  })
  const address = `localhost:${app.port}`
  const hello = (volume: string, generation = 'g1') => ({ hello: { protocol: PROTOCOL_VERSION, agentId: 'x', volume, generation, size: MiB, group: '', ackedSeq: 0 } })

  // One open stream per volume, held until the end.
  const open: Array<{ s: Stream; close: () => void }> = []
  for (const [agent, volume] of [['agent-a', 'vol-a'], ['agent-b', 'vol-b']]) {
    const client = new replicationProto.Replication(address, creds(pki, agent))
    const s = new Stream(client)
    s.send(hello(volume))
    await s.next('welcome')
    open.push({ s, close: () => client.close() })
  }
  // Rejections: two of vol-b (a stranger, a reader writing), one of vol-a (a new generation), one of no volume held.
  t.equal((await helloAs(address, pki, 'stranger', hello('vol-b'))).code, grpc.status.PERMISSION_DENIED)
  t.equal((await helloAs(address, pki, 'reader-a', hello('vol-b'))).code, grpc.status.PERMISSION_DENIED)
  t.equal((await helloAs(address, pki, 'agent-a', hello('vol-a', 'g2'))).code, grpc.status.FAILED_PRECONDITION)
  t.equal((await helloAs(address, pki, 'stranger', hello('made-up'))).code, grpc.status.PERMISSION_DENIED)
  // The new generation's hello replaced agent-a's stream (one writer per volume): open it again.
  await open[0].s.ended
  open[0].close()
  {
    const client = new replicationProto.Replication(address, creds(pki, 'agent-a'))
    const s = new Stream(client)
    s.send(hello('vol-a'))
    await s.next('welcome')
    open[0] = { s, close: () => client.close() }
  }

  const statsAs = async (w: string, volume?: string) => {
    const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--json', ...(volume ? ['--volume', volume] : []), ...tlsArgs(pki, w)])
    t.equal(r.code, 0, `${w}: stats answers (${r.stderr.trim()})`)
    const j = JSON.parse(r.stdout) as { appliance: { streams: number; rejected: Record<string, number> }; volumes: Array<{ name: string }> }
    return { streams: j.appliance.streams, rejected: j.appliance.rejected, volumes: j.volumes.map((v) => v.name).sort() }
  }
  t.same(await statsAs('boss'), { streams: 2, rejected: { PERMISSION_DENIED: 3, GENERATION_CHANGED: 1 }, volumes: ['vol-a', 'vol-b'] }, 'an admin of every volume sees every count')
  t.same(await statsAs('reader-a'), { streams: 1, rejected: { GENERATION_CHANGED: 1 }, volumes: ['vol-a'] }, 'a reader of vol-a sees vol-a\'s counts only')
  t.same(await statsAs('reader-a', 'vol-a'), { streams: 1, rejected: { GENERATION_CHANGED: 1 }, volumes: ['vol-a'] }, 'also when it names the volume')
  t.same(await statsAs('reader-all'), { streams: 2, rejected: { PERMISSION_DENIED: 2, GENERATION_CHANGED: 1 }, volumes: ['vol-a', 'vol-b'] },
    'a reader of every volume sees theirs, but not refusals that named no volume the appliance holds')

  for (const o of open) {
    o.s.call.end()
    await o.s.ended
    o.close()
  }
})
