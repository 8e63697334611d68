// Limits per identity (appliance/identity-limits.ts) through a real
// appliance and real certificates: a writer's volume size, open streams and
// volumes created are capped, each refusal RESOURCE_EXHAUSTED with one line
// naming identity, limit and value, counted in stats and logged once; the
// volumes count survives a restart; the retired-histories cap refuses an
// accept-generation and deletes nothing.
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import { adminProto, PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, have, makePki, run, startAppliance, tlsArgs, tmpdir } from './helpers'
import { Stream } from './lib/replicate-stream'

const MiB = 1024 * 1024
const EXHAUSTED = grpc.status.RESOURCE_EXHAUSTED

function creds(pki: string, who: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(fs.readFileSync(path.join(pki, 'ca.pem')), fs.readFileSync(path.join(pki, `${who}.key`)), fs.readFileSync(path.join(pki, `${who}.pem`)))
}

/** A Replicate stream as `who`, said hello on: welcomed (and held open until closed), or how it ended. */
async function open(address: string, pki: string, who: string, volume: string, size = MiB, generation = 'g1') {
  const client = new replicationProto.Replication(address, creds(pki, who))
  const s = new Stream(client)
  s.send({ hello: { protocol: PROTOCOL_VERSION, agentId: who, volume, generation, size, group: '', ackedSeq: 0 } })
  const outcome = await Promise.race([s.next('welcome').then(() => null), s.ended])
  const close = async (): Promise<void> => {
    s.call.end()
    await s.ended
    client.close()
  }
  if (outcome) await close()
  return { welcomed: outcome === null, code: outcome?.code ?? 0, details: outcome?.details ?? '', close }
}

function stats(client: AdminClient): Promise<{ appliance: { rejected: Record<string, number>; streams: number }; volumes: Array<{ name: string }> }> {
  return new Promise((resolve, reject) => client.stats({ volume: '' }, (e, r) => (e ? reject(e) : resolve(r as never))))
}

t.test('a writer is capped in volume size, open streams and volumes created', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'boss'])
  const data = path.join(dir, 'data')
  const args = [...tlsArgs(pki, 'appliance'), '--data-port', 'off', '--allow', 'agent=write:*', '--allow', 'boss=admin:*',
    '--limit-streams', '2', '--limit-volumes', '3', '--limit-volume-size', '4M']
  let app = await startAppliance(t, { data, extra: args })
  let address = `localhost:${app.port}`
  t.same(app.logs().find((l) => l.msg === 'appliance listening')?.limits, { streams: 2, volumes: 3, volumeSize: 4 * MiB }, 'the caps in force are logged at start')

  for (let i = 0; i < 2; i++) {
    const big = await open(address, pki, 'agent', 'big', 8 * MiB)
    t.equal(big.code, EXHAUSTED, 'a volume over --limit-volume-size is RESOURCE_EXHAUSTED')
    t.equal(big.details, 'VOLUME_SIZE_LIMIT: certificate identity "agent": volume big of 8388608 bytes is over the volume size limit (--limit-volume-size 4194304 bytes)', 'one line: identity, limit, value')
  }

  const a = await open(address, pki, 'agent', 'a')
  const b = await open(address, pki, 'agent', 'b')
  t.ok(a.welcomed && b.welcomed, 'two streams, the cap')
  const c = await open(address, pki, 'agent', 'c')
  t.equal(c.code, EXHAUSTED, 'a third open stream is refused')
  t.equal(c.details, 'STREAM_LIMIT: certificate identity "agent" has 2 replication streams open, the limit (--limit-streams 2): a stream for volume c is refused')
  const again = await open(address, pki, 'agent', 'a')
  t.ok(again.welcomed, 'a reconnecting stream replaces its own volume\'s stream, refused by no cap')
  await again.close()
  const bossStream = await open(address, pki, 'boss', 'boss-vol')
  t.ok(bossStream.welcomed, 'another identity has its own streams')
  await bossStream.close()
  await b.close()
  await a.close()

  const c2 = await open(address, pki, 'agent', 'c')
  t.ok(c2.welcomed, 'with streams closed, a third volume is created')
  await c2.close()
  const d = await open(address, pki, 'agent', 'd')
  t.equal(d.code, EXHAUSTED, 'a fourth volume is refused')
  t.equal(d.details, 'VOLUME_LIMIT: certificate identity "agent" has created 3 volumes, the limit (--limit-volumes 3): volume d is not created')
  const old = await open(address, pki, 'agent', 'b')
  t.ok(old.welcomed, 'a volume it created already attaches')
  await old.close()

  const boss = new adminProto.Admin(address, creds(pki, 'boss')) as unknown as AdminClient
  const st = await stats(boss)
  t.same(
    { size: st.appliance.rejected.VOLUME_SIZE_LIMIT, streams: st.appliance.rejected.STREAM_LIMIT, volumes: st.appliance.rejected.VOLUME_LIMIT },
    { size: 2, streams: 1, volumes: 1 },
    'each refusal is counted with the appliance\'s rejections'
  )
  t.notOk(st.volumes.some((v) => v.name === 'big' || v.name === 'd'), 'nothing was created for a refused hello')
  boss.close()
  const logged = app.logs().filter((l) => l.code === 'VOLUME_SIZE_LIMIT')
  t.equal(logged.length, 1, 'logged once per identity and limit')
  t.match(String(logged[0].msg), /over the volume size limit .* \(logged once per identity and limit\)$/)
  t.equal(app.logs().filter((l) => l.level === 40 && /VOLUME_SIZE_LIMIT|volume size limit/.test(String(l.msg))).length, 1, 'and not again by the stream')

  // The creator is kept in each volume's meta.json: a restart does not reset the count.
  await app.stop()
  t.equal(JSON.parse(fs.readFileSync(path.join(data, 'volumes', 'a', 'meta.json'), 'utf8')).createdBy, 'agent', 'meta.json records the creator')
  app = await startAppliance(t, { data, extra: args })
  address = `localhost:${app.port}`
  const afterRestart = await open(address, pki, 'agent', 'd')
  t.equal(afterRestart.code, EXHAUSTED, 'after a restart the fourth volume is still refused')
  const bossD = await open(address, pki, 'boss', 'd')
  t.ok(bossD.welcomed, 'the admin creates it: its own count')
  await bossD.close()
})

t.test('past --limit-retired a new generation is refused, and no history deleted', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'boss'])
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: [...tlsArgs(pki, 'appliance'), '--data-port', 'off', '--allow', 'agent=write:vol', '--allow', 'boss=admin:*', '--limit-retired', '1'],
  })
  const address = `localhost:${app.port}`
  const accept = (): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    run(process.execPath, [BIN, 'volume', 'accept-generation', '--appliance', address, '--volume', 'vol', '--json', ...tlsArgs(pki, 'boss')])
  const first = await open(address, pki, 'agent', 'vol', MiB, 'g1')
  await first.close()
  t.equal((await open(address, pki, 'agent', 'vol', MiB, 'g2')).details.split(':')[0], 'GENERATION_CHANGED', 'a new generation waits for an admin')
  const ok = await accept()
  t.equal(ok.code, 0, `the first accept retires g1 (${ok.stderr.trim()})`)
  t.equal(JSON.parse(ok.stdout).retiredAs, 'vol.retired-1')
  const g2 = await open(address, pki, 'agent', 'vol', MiB, 'g2')
  t.ok(g2.welcomed, 'g2 replicates')
  await g2.close()
  t.equal((await open(address, pki, 'agent', 'vol', MiB, 'g3')).details.split(':')[0], 'GENERATION_CHANGED')
  const refused = await accept()
  t.equal(refused.code, 1, 'the second accept is refused')
  t.equal(
    refused.stderr,
    'tidemark volume accept-generation: RETIRED_LIMIT: certificate identity "boss": volume vol keeps 1 retired history, the limit (--limit-retired 1): a new generation would retire one more, and nothing is deleted to make room (raise the limit to accept it)\n',
    'in one line naming identity, limit and value'
  )
  // An admin's own hello would retire the history itself: the same cap.
  const bossHello = await open(address, pki, 'boss', 'vol', MiB, 'g4')
  t.equal(bossHello.code, EXHAUSTED, 'so is an admin\'s hello with a new generation')
  t.match(bossHello.details, /^RETIRED_LIMIT: certificate identity "boss": volume vol keeps 1 retired history,/)
  const boss = new adminProto.Admin(address, creds(pki, 'boss')) as unknown as AdminClient
  const st = await stats(boss)
  boss.close()
  t.same(st.volumes.map((v) => v.name).sort(), ['vol', 'vol.retired-1'], 'both histories are still there')
  t.equal(st.appliance.rejected.RETIRED_LIMIT, 2, 'both refusals are counted')
  const still = await open(address, pki, 'agent', 'vol', MiB, 'g2')
  t.ok(still.welcomed, 'the current generation goes on replicating')
  await still.close()
})
