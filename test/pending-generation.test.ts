// A pending generation (appliance/pending-generation.ts) survives an
// appliance killed with SIGKILL: a writer's hello announces a new
// generation and is refused, the appliance dies, and after the restart an
// admin accepts it without the agent having said it again; the old history
// is retired beside the new one, and the agent's hello then starts it.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makePki, run, startAppliance, tlsArgs, tmpdir } from './helpers'
import { helloAs } from './lib/tls-clients'
import { PROTOCOL_VERSION } from '../proto/load'

const MiB = 1024 * 1024

t.test('a pending generation survives SIGKILL, and an admin accepts it after the restart', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'boss'])
  const data = path.join(dir, 'data')
  const args = [...tlsArgs(pki, 'appliance'), '--data-port', 'off', '--allow', 'agent=write:vol', '--allow', 'boss=admin:*']
  let app = await startAppliance(t, { data, extra: args })
  const hello = (generation: string, size = MiB) =>
    helloAs(`localhost:${app.port}`, pki, 'agent', { hello: { protocol: PROTOCOL_VERSION, agentId: 'db01', volume: 'vol', generation, size, group: '', ackedSeq: 0 } })
  const accept = (extra: string[] = []) =>
    run(process.execPath, [BIN, 'volume', 'accept-generation', '--appliance', `localhost:${app.port}`, '--volume', 'vol', '--json', ...extra, ...tlsArgs(pki, 'boss')])

  t.ok((await hello('g1')).welcome, 'g1 starts the history')
  const refused = await hello('g2', 2 * MiB)
  t.match(refused.details, /^GENERATION_CHANGED: volume vol: the agent announces generation g2 \(size 2097152\)/, 'g2 waits for an admin')
  const file = path.join(data, 'volumes', 'vol', 'pending-generation.json')
  t.same(JSON.parse(fs.readFileSync(file, 'utf8')), { generation: 'g2', size: 2 * MiB, agentId: 'db01', at: JSON.parse(fs.readFileSync(file, 'utf8')).at }, 'kept in the volume\'s directory')
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'readable by the appliance only')

  await app.kill9()
  app = await startAppliance(t, { data, extra: args })
  t.ok(app.logs().some((l) => l.msg === 'volume opened' && l.pendingGeneration === 'g2'), 'the restarted appliance knows what is pending')
  const wrong = await accept(['--generation', 'g3'])
  t.match(wrong.stderr, /NO_PENDING_GENERATION: volume vol: the agent announced generation g2, not g3/, 'only the generation announced is accepted')
  const ok = await accept()
  t.equal(ok.code, 0, `accepted after the restart, with no hello since (${ok.stderr.trim()})`)
  t.same(
    (({ retiredAs, generation, size, oldGeneration }) => ({ retiredAs, generation, size, oldGeneration }))(JSON.parse(ok.stdout)),
    { retiredAs: 'vol.retired-1', generation: 'g2', size: 2 * MiB, oldGeneration: 'g1' },
    'g1 is retired beside g2'
  )
  t.notOk(fs.existsSync(file), 'nothing is pending any more')
  t.notOk(fs.existsSync(path.join(data, 'volumes', 'vol.retired-1', 'pending-generation.json')), 'nor in the retired history')
  t.ok((await hello('g2', 2 * MiB)).welcome, 'the agent\'s hello starts the accepted generation')
  const again = await accept()
  t.match(again.stderr, /NO_PENDING_GENERATION: volume vol: no agent has announced a new generation or size/, 'and it cannot be accepted twice')

  // A restart after the accept keeps it accepted: the new history and the retired one are both there.
  await app.kill9()
  app = await startAppliance(t, { data, extra: args })
  t.ok((await hello('g2', 2 * MiB)).welcome, 'g2 goes on after another SIGKILL')
  const st = await run(process.execPath, [BIN, 'stats', '--appliance', `localhost:${app.port}`, '--json', ...tlsArgs(pki, 'boss')])
  t.same(JSON.parse(st.stdout).volumes.map((v: { name: string }) => v.name).sort(), ['vol', 'vol.retired-1'], 'both histories are there')
})
