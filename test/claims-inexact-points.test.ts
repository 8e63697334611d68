// README claims, "Exact points only": where the agent lost changes and resent
// regions instead, the appliance refuses points between the GAP and the EXACT
// marker with the reason and the nearest exact points (through `restore`,
// `timeview` and `failback`), and TimeMarks are refused while a volume is
// behind. The window is made for real: the appliance goes away, the agent
// (tiny --buffer and --memory) falls behind while qemu-io writes, the
// appliance comes back and the agent resyncs.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { makeImage, must, nbdUri, restore, sha256, startAgent, startAppliance, tmpdir } from './helpers'
import { oneLine, replicatedSeq, tidemark, volumeStats, waitFor, type InexactWindow } from './claims-helpers'

const MiB = 1024 * 1024

t.test('a GAP/EXACT window: TimeMarks refused while behind; restore, timeview and failback refuse points inside it', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 32 * MiB, 41)
  const data = path.join(dir, 'data')
  const app = await startAppliance(t, { data })
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock, volumes: { vol: img },
    extra: ['--appliance', app.address, '--buffer', '1M', '--memory', '1M', '--control', `unix:${control}`, '--stats-interval', '0.2'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 1M 2M', '-c', 'flush', uri])
  const exactBefore = await replicatedSeq(agent, app, 'vol')
  const before = path.join(dir, 'before.img')
  fs.copyFileSync(img, before)
  const ok = await tidemark(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'in-sync'])
  t.equal(ok.code, 0, `a TimeMark is taken while the volume is in sync: ${ok.stderr.trim()}`)

  // The link goes: the agent cannot send, its 1 MiB buffer overflows, the tap goes behind.
  await app.stop()
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 4M 8M', '-c', 'write -P 0x33 20M 1M', '-c', 'flush', uri])
  await agent.waitForLog(/is behind/, 60_000)

  const refused = await tidemark(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'while-behind'])
  t.not(refused.code, 0, 'timemark create fails while the volume is behind')
  t.equal(oneLine(refused.stderr).length, 1, `one line: ${refused.stderr.trim()}`)
  t.match(refused.stderr, /^tidemark timemark: .*behind/, 'it says the volume is behind')
  t.equal(refused.stdout, '', 'no mark is printed')

  // The link returns: the stale regions are resent between a GAP and an EXACT marker.
  const app2 = await startAppliance(t, { data, port: app.port })
  const window = await waitFor<InexactWindow>('the resync to close an inexact window', async () => {
    const s = await volumeStats(app2.address, 'vol')
    const w = s.inexactWindows.find((x) => x.start >= exactBefore && x.end > 0)
    return w && s.exactSeq >= w.end ? w : undefined
  })
  await replicatedSeq(agent, app2, 'vol')
  t.ok(window.end - window.start >= 2, `the window ${window.start}..${window.end} holds seqs (resent regions)`)
  const inside = window.start + 1
  const list = await tidemark(['timemark', 'list', '--appliance', app2.address, '--volume', 'vol', '--json'])
  t.same(JSON.parse(list.stdout).map((m: { label: string }) => m.label), ['in-sync'], 'the refused mark was never recorded')

  const reason = new RegExp(`seq ${inside} lies in ${window.start + 1}\\.\\.${window.end - 1}, where the agent resent regions .* the nearest exact points are ${window.start} and ${window.end}`)

  await t.test('restore refuses it and writes nothing', async (t) => {
    const out = path.join(dir, 'inside.img')
    const r = await tidemark(['restore', '--appliance', app2.address, '--volume', 'vol', '--seq', String(inside), '--out', out])
    t.equal(r.code, 1, 'exit 1')
    t.equal(oneLine(r.stderr).length, 1, `one line: ${r.stderr.trim()}`)
    t.match(r.stderr, /^tidemark restore: /, 'says which command')
    t.match(r.stderr, reason, 'names the reason and the nearest exact points')
    t.notOk(fs.existsSync(out), 'no image is written')
    t.notOk(fs.existsSync(`${out}.partial`), 'no partial image is left')
  })

  await t.test('timeview refuses it and serves nothing', async (t) => {
    const tvSock = path.join(dir, 'tv.sock')
    const r = await tidemark(['timeview', '--appliance', app2.address, '--volume', 'vol', '--seq', String(inside), '--nbd', `unix:${tvSock}`])
    t.equal(r.code, 1, 'exit 1')
    t.equal(oneLine(r.stderr).length, 1, `one line: ${r.stderr.trim()}`)
    t.match(r.stderr, /^tidemark timeview: /, 'says which command')
    t.match(r.stderr, reason, 'names the reason and the nearest exact points')
    t.equal(r.stdout, '', 'nothing is announced as served')
    t.notOk(fs.existsSync(tvSock), 'no socket was created')
  })

  await t.test('failback refuses it and writes nothing, to a file or to the live volume', async (t) => {
    const target = path.join(dir, 'target.img')
    fs.copyFileSync(before, target)
    const targetSha = sha256(target)
    const prodSha = sha256(img)
    for (const [what, dest] of [['a file', target], ['the agent\'s export', uri]] as const) {
      const r = await tidemark(['failback', '--appliance', app2.address, '--volume', 'vol', '--seq', String(inside), '--target', dest])
      t.equal(r.code, 1, `${what}: exit 1`)
      t.equal(oneLine(r.stderr).length, 1, `${what}: one line: ${r.stderr.trim()}`)
      t.match(r.stderr, /^tidemark failback: /, `${what}: says which command`)
      t.match(r.stderr, reason, `${what}: names the reason and the nearest exact points`)
      t.equal(r.stdout, '', `${what}: no summary`)
    }
    t.equal(sha256(target), targetSha, 'the file is unchanged')
    t.equal(sha256(img), prodSha, 'the production volume is unchanged')
  })

  await t.test('the nearest exact points restore byte-exact', async (t) => {
    const atStart = path.join(dir, 'start.img')
    await restore(app2.address, 'vol', window.start, atStart)
    t.equal(sha256(atStart), sha256(before), `seq ${window.start} is the image before the link went`)
    const atEnd = path.join(dir, 'end.img')
    await restore(app2.address, 'vol', window.end, atEnd)
    t.equal(sha256(atEnd), sha256(img), `seq ${window.end} is the volume once the resync completed`)
  })

  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('an agent restarted with stale regions (kill -9): the resync is a GAP/EXACT window, refused inside, exact at its ends', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 16 * MiB, 43)
  const data = path.join(dir, 'data')
  const state = path.join(dir, 'state')
  const sock = path.join(dir, 'nbd.sock')
  const app = await startAppliance(t, { data })
  const extra = ['--appliance', app.address, '--stats-interval', '0.2']
  const agent = await startAgent(t, { state, sock, volumes: { vol: img }, extra })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 0 1M', '-c', 'flush', uri])
  const exactBefore = await replicatedSeq(agent, app, 'vol')
  const before = path.join(dir, 'before.img')
  fs.copyFileSync(img, before)

  // The appliance goes; writes are captured but never acknowledged; the agent dies.
  await app.stop()
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 2M 512k', '-c', 'write -P 0x66 9M 64k', '-c', 'flush', uri])
  await agent.kill9()

  const app2 = await startAppliance(t, { data, port: app.port })
  const agent2 = await startAgent(t, { state, sock, volumes: { vol: img }, extra })
  const window = await waitFor<InexactWindow>('the restart resync to close an inexact window', async () => {
    const s = await volumeStats(app2.address, 'vol')
    const w = s.inexactWindows.find((x) => x.start >= exactBefore && x.end > 0)
    return w && s.exactSeq >= w.end ? w : undefined
  })
  await replicatedSeq(agent2, app2, 'vol')
  t.equal(window.start, exactBefore, `the window opens at the last point the appliance held (${exactBefore})`)
  t.ok(window.end - window.start >= 2, `the window ${window.start}..${window.end} holds the resent regions`)

  const out = path.join(dir, 'inside.img')
  const r = await tidemark(['restore', '--appliance', app2.address, '--volume', 'vol', '--seq', String(window.end - 1), '--out', out])
  t.equal(r.code, 1, 'a point inside is refused: exit 1')
  t.equal(oneLine(r.stderr).length, 1, `one line: ${r.stderr.trim()}`)
  t.match(r.stderr, new RegExp(`^tidemark restore: .*the nearest exact points are ${window.start} and ${window.end}`), 'naming the nearest exact points')
  t.notOk(fs.existsSync(out), 'no image is written')

  const atStart = path.join(dir, 'start.img')
  await restore(app2.address, 'vol', window.start, atStart)
  t.equal(sha256(atStart), sha256(before), `seq ${window.start} restores the image before the appliance went`)
  const atEnd = path.join(dir, 'end.img')
  await restore(app2.address, 'vol', window.end, atEnd)
  t.equal(sha256(atEnd), sha256(img), `seq ${window.end} restores the volume as the resync left it`)
  t.equal(await agent2.stop(), 0, 'the agent stops cleanly')
})
