// README claim (TimeMarks): the appliance journals each MARK with its batch
// and catalogs it in LevelDB, "so the catalog is rebuilt with the index from
// the segments". Tested through real processes: marks taken through the
// agent's control socket, the appliance stopped, the volume's index directory
// deleted, the appliance started again: `timemark list` is what it was, and a
// restore by label is byte-exact.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { makeImage, must, nbdUri, sha256, startAgent, startAppliance, tmpdir } from './helpers'
import { replicatedSeq, tidemark, tidemarkJson, volumeStats } from './claims-helpers'

const MiB = 1024 * 1024

interface Listed {
  id: number
  label: string
  consistency: string
  pinned: boolean
  [k: string]: unknown
}

t.test('the TimeMark catalog is rebuilt from the segments when the index is deleted', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 16 * MiB, 7)
  const data = path.join(dir, 'data')
  const app = await startAppliance(t, { data })
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock, volumes: { vol: img },
    extra: ['--appliance', app.address, '--control', `unix:${control}`, '--stats-interval', '0.2'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')

  // Three marks with writes between them; the image the volume held at each, noted.
  const labels = ['first', 'second', 'third']
  const held: Record<string, string> = {}
  for (const [i, label] of labels.entries()) {
    await must('qemu-io', ['-f', 'raw', '-c', `write -P 0x${(0x41 + i).toString(16)} ${i * 3}M 2M`, '-c', `write -z ${10 + i}M 64k`, '-c', 'flush', uri])
    const m = await tidemarkJson<{ durable: boolean }>(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', label])
    t.ok(m.durable, `${label}: held by the appliance when create returns`)
    held[label] = path.join(dir, `${label}.held`)
    fs.copyFileSync(img, held[label])
  }
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 1M', '-c', 'flush', uri])
  await replicatedSeq(agent, app, 'vol')
  t.equal(await agent.stop(), 0, 'the agent drains and stops')
  const pin = await tidemark(['timemark', 'pin', '--appliance', app.address, '--volume', 'vol', '--timemark', 'second'])
  t.equal(pin.code, 0, `a mark is pinned: ${pin.stderr.trim()}`)

  const before = await tidemarkJson<Listed[]>(['timemark', 'list', '--appliance', app.address, '--volume', 'vol'])
  t.same(before.map((m) => m.label), labels, 'three marks before')
  t.same(before.map((m) => m.pinned), [false, true, false], 'the second is pinned')
  const statsBefore = await volumeStats(app.address, 'vol')

  t.equal(await app.stop(), 0, 'the appliance stops')
  const index = path.join(data, 'volumes', 'vol', 'index')
  t.ok(fs.existsSync(index), `the index is at ${index}`)
  fs.rmSync(index, { recursive: true })

  const app2 = await startAppliance(t, { data, port: app.port })
  const after = await tidemarkJson<Listed[]>(['timemark', 'list', '--appliance', app2.address, '--volume', 'vol'])
  t.same(after, before, '`timemark list` after the rebuild equals the list before')
  const statsAfter = await volumeStats(app2.address, 'vol')
  t.equal(statsAfter.timemarks, statsBefore.timemarks, 'stats counts the same marks')
  t.equal(statsAfter.durableSeq, statsBefore.durableSeq, 'the same durable seq')
  t.ok(fs.existsSync(index), 'the index was rebuilt')

  for (const label of labels) {
    const out = path.join(dir, `${label}.restored`)
    const r = await tidemarkJson<{ seq: number }>(['restore', '--appliance', app2.address, '--volume', 'vol', '--timemark', label, '--out', out])
    t.equal(r.seq, before.find((m) => m.label === label)!.id, `${label}: restored at its seq`)
    t.equal(sha256(out), sha256(held[label]), `${label}: restore by label is byte-exact`)
  }
  t.equal(await app2.stop(), 0, 'the appliance stops cleanly')
})
