// Named recovery views (tidemark timeview create|list|delete) through real
// processes: an agent replicating a volume to an appliance started with
// --nbd, the CLI creating views of points, and real NBD clients (fio with
// crc32c verify, qemu-io, nbdcopy, nbdinfo, nbdfuse + the kernel's ext4)
// writing and reading them on the appliance's own NBD server. A view must
// show its point (restore of the same point is the reference), keep its
// writes to itself (restore never changes), survive a kill -9 of the
// appliance up to the last FLUSH, hold its seq against retention, and be
// gone, with its overlay, once deleted.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import {
  makeImage,
  makePki,
  mountOverNbd,
  must,
  nbdUri,
  restore,
  run,
  sha256,
  startAgent,
  startAppliance,
  tlsArgs,
  tmpdir,
  waitFor,
  type AgentProcess,
  type ApplianceProcess,
} from './helpers'
import pino from 'pino'
import { checkViewName, ViewRegistry } from '../appliance/view-registry'
import { replicatedSeq, tidemark, tidemarkJson } from './claims-helpers'
import { NbdClient, parseNbdUri } from '../client/nbd-client'

const MiB = 1024 * 1024
const SIZE = 64 * MiB

interface View {
  name: string
  volume: string
  seq: number
  writable: boolean
  point: string
  overlayBytes: number
  uris: string[]
  volumeSize: number
}

interface Site {
  dir: string
  data: string
  nbdSock: string
  app: ApplianceProcess
  agent: AgentProcess
  prodSock: string
}

function startApp(t: Test, data: string, nbdSock: string, port = 0): Promise<ApplianceProcess> {
  // Retention only when asked (journal compact): the test decides when history goes.
  return startAppliance(t, { data, port, extra: ['--nbd', `unix:${nbdSock}`, '--segment-size', '1M', '--retain', 'vol=1s', '--compact-every', '0'] })
}

async function site(t: Test, opts: { ext4Files?: Record<string, string> } = {}): Promise<Site> {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, SIZE, 7)
  if (opts.ext4Files) {
    // The production volume holds ext4 with these files (made offline, mkfs.ext4 -d).
    const src = path.join(dir, 'ext4-src')
    fs.mkdirSync(src)
    for (const [name, text] of Object.entries(opts.ext4Files)) fs.writeFileSync(path.join(src, name), text)
    await must('mkfs.ext4', ['-F', '-q', '-d', src, img])
  }
  const data = path.join(dir, 'data')
  const nbdSock = path.join(dir, 'appliance-nbd.sock')
  const app = await startApp(t, data, nbdSock)
  const prodSock = path.join(dir, 'prod.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock: prodSock, volumes: { vol: img }, extra: ['--appliance', app.address, '--stats-interval', '0.2'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  return { dir, data, nbdSock, app, agent, prodSock }
}

/** Writes `pattern` at `offset` through the agent and waits until the appliance holds it: the seq. */
async function writeProd(s: Site, offset: number, length: number, pattern: number): Promise<number> {
  await must('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, '-c', 'flush', nbdUri(s.prodSock, 'vol')])
  return replicatedSeq(s.agent, s.app, 'vol')
}

t.test('the registry: DATA/views across restarts, leftovers, names', async (t) => {
  const data = tmpdir(t)
  const log = pino({ level: 'silent' })
  const served = { dropped: [] as string[], dropView(name: string) { this.dropped.push(name) } }
  let r = await ViewRegistry.open(data, log)
  r.attach(served)
  const rec = { volume: 'vol', seq: 42, writable: true, createdAt: new Date().toISOString(), volumeSize: 1 << 20, point: 'seq 42' }
  await r.create({ ...rec, name: 'a' })
  await r.create({ ...rec, name: 'b', seq: 7, writable: false })
  await t.rejects(r.create({ ...rec, name: 'a' }), { code: 'VIEW_EXISTS' }, 'a name is taken once')
  t.same(r.seqsOf('vol'), [7, 42], "retention holds both views' seqs")
  t.same(r.get('a')?.overlay, { data: path.join(data, 'views', 'a', 'overlay.data'), map: path.join(data, 'views', 'a', 'overlay.map') },
    "a writable view's overlay lives in its directory")
  t.equal(r.get('b')?.overlay, undefined, 'a read-only view has none')
  // What a crash can leave: a directory whose view.json never landed (or was already removed).
  fs.mkdirSync(path.join(data, 'views', 'half'))
  fs.writeFileSync(path.join(data, 'views', 'half', 'overlay.data'), 'x')
  fs.mkdirSync(path.join(data, 'views', 'bad'))
  fs.writeFileSync(path.join(data, 'views', 'bad', 'view.json'), '{not json')
  r = await ViewRegistry.open(data, log)
  r.attach(served)
  t.same(r.list().map((v) => v.name), ['a', 'b'], 'reopened: the views are back')
  t.notOk(fs.existsSync(path.join(data, 'views', 'half')), 'an interrupted create is cleaned up')
  t.ok(fs.existsSync(path.join(data, 'views', 'bad', 'view.json')), 'an unreadable view is kept on disk, not served')
  await t.rejects(r.create({ ...rec, name: 'bad' }), { code: 'VIEW_EXISTS' }, 'and its name is not reused over it')
  await r.delete('a')
  t.same(served.dropped, ['a'], 'delete asks the NBD server to drop the view first')
  t.notOk(fs.existsSync(path.join(data, 'views', 'a')), 'then removes its directory')
  await t.rejects(r.delete('a'), { code: 'UNKNOWN_VIEW' })
  t.throws(() => checkViewName('x@y', () => false), { code: 'VIEW_BAD_NAME' })
  t.throws(() => checkViewName('..', () => false), { code: 'VIEW_BAD_NAME' })
  t.throws(() => checkViewName('vol', (n) => n === 'vol'), { code: 'VIEW_BAD_NAME' })
  t.doesNotThrow(() => checkViewName('dr-test_1.2', () => false))
})

t.test('views: create, write with fio, survive kill -9, hold retention, delete', async (t) => {
  const s = await site(t)
  const seq1 = await writeProd(s, 0, 4 * MiB, 0x11)
  const ref1 = path.join(s.dir, 'ref1.img')
  await restore(s.app.address, 'vol', seq1, ref1)
  const hash1 = sha256(ref1)
  // History after the view's point, so retention has something to fold.
  await writeProd(s, 8 * MiB, 4 * MiB, 0x22)

  await t.test('bad names and points are refused with one line', async (t) => {
    const base = ['timeview', 'create', '--appliance', s.app.address, '--volume', 'vol', '--seq', String(seq1)]
    let r = await tidemark([...base, '--name', 'a@b'])
    t.equal(r.code, 2, "a name with '@' is a usage error")
    t.match(r.stderr, /may not contain '@'/)
    r = await tidemark([...base, '--name', 'x'.repeat(65)])
    t.equal(r.code, 2, 'a 65-character name is a usage error')
    r = await tidemark([...base, '--name', 'vol'])
    t.equal(r.code, 1, "a volume's name is refused by the appliance")
    t.match(r.stderr, /is a volume's name/)
    t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
    r = await tidemark([...base.slice(0, -2), '--seq', '999999999', '--name', 'future'])
    const restoreRefusal = await tidemark(['restore', '--appliance', s.app.address, '--volume', 'vol', '--seq', '999999999', '--out', path.join(s.dir, 'never.img')])
    t.equal(r.code, 1, 'a point restore refuses is refused')
    t.equal(r.stderr.replace('timeview create', 'X'), restoreRefusal.stderr.replace('restore', 'X'), 'with the reason restore gives')
    r = await tidemark([...base.slice(0, 5), 'nosuch', '--seq', '1', '--name', 'v1'])
    t.equal(r.code, 1, 'an unknown volume is refused')
    t.match(r.stderr, /no volume named "nosuch"/)
    r = await tidemark(['timeview', 'delete', '--appliance', s.app.address, '--name', 'nosuch'])
    t.equal(r.code, 1, 'deleting an unknown view is refused')
    t.match(r.stderr, /no view named "nosuch"/)
    r = await tidemark(['timeview', 'create', '--help'])
    t.equal(r.code, 0, 'create --help')
    t.match(r.stdout, /--writable/)
  })

  const ro = await tidemarkJson<View>(['timeview', 'create', '--appliance', s.app.address, '--volume', 'vol', '--seq', String(seq1), '--name', 'ro1'])
  t.equal(ro.seq, seq1, 'a read-only view pinned to the seq')
  t.equal(ro.writable, false)
  const dup = await tidemark(['timeview', 'create', '--appliance', s.app.address, '--volume', 'vol', '--seq', 'latest', '--name', 'ro1'])
  t.equal(dup.code, 1, 'a second view of the same name is refused')
  t.match(dup.stderr, /exists already/)

  const dr = await tidemarkJson<View>(['timeview', 'create', '--appliance', s.app.address, '--volume', 'vol', '--seq', String(seq1), '--name', 'dr1', '--writable'])
  t.equal(dr.writable, true, 'a writable view')
  const drUri = nbdUri(s.nbdSock, 'dr1')
  t.ok(dr.uris.includes(drUri), `its URI is given (${dr.uris.join(' ')})`)

  await t.test('the view shows its point, and a read-only view refuses writes', async (t) => {
    const copy = path.join(s.dir, 'dr1-before.img')
    await must('nbdcopy', [drUri, copy])
    t.equal(sha256(copy), hash1, 'nbdcopy of the writable view equals restore of its point')
    const roCopy = path.join(s.dir, 'ro1.img')
    await must('nbdcopy', [nbdUri(s.nbdSock, 'ro1'), roCopy])
    t.equal(sha256(roCopy), hash1, 'so does the read-only view')
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 4k', nbdUri(s.nbdSock, 'ro1')])
    t.not(w.code === 0 && !/error|denied|read-only/i.test(w.stdout + w.stderr), true, 'a write to the read-only view fails')
  })

  await t.test('fio writes the view with crc32c verify; restore never changes', async (t) => {
    const out = await must('fio', [
      '--name=dr', '--ioengine=nbd', `--uri=${drUri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--numjobs=2',
      '--size=8M', '--offset_increment=16M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0',
      '--group_reporting', '--output-format=json',
    ])
    const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0]
    t.equal(job.error, 0, 'fio wrote and verified every block')
    const again = path.join(s.dir, 'ref1-again.img')
    await restore(s.app.address, 'vol', seq1, again)
    t.equal(sha256(again), hash1, 'restore of the point is unchanged after writing to the view')
    const listed = await tidemarkJson<View[]>(['timeview', 'list', '--appliance', s.app.address])
    const me = listed.find((v) => v.name === 'dr1')
    t.ok(me && me.overlayBytes >= 8 * MiB, `list shows the overlay (${me?.overlayBytes} bytes)`)
    t.same(listed.map((v) => v.name), ['dr1', 'ro1'], 'and both views, by name')
  })

  await t.test('retention keeps a view\'s seq', async (t) => {
    const c = await tidemarkJson<{ upTo: number; compaction: { baseSeq: number } | null }>(['journal', 'compact', '--appliance', s.app.address, '--volume', 'vol'])
    t.ok(c.compaction && c.compaction.baseSeq <= seq1, `history up to the view's seq at most was folded (${JSON.stringify(c)})`)
    const held = path.join(s.dir, 'held.img')
    await restore(s.app.address, 'vol', seq1, held)
    t.equal(sha256(held), hash1, 'the view\'s point still restores after compaction')
    const roCopy = path.join(s.dir, 'ro1-after-compaction.img')
    await must('nbdcopy', [nbdUri(s.nbdSock, 'ro1'), roCopy])
    t.equal(sha256(roCopy), hash1, 'and the view still shows it')
  })

  // The last flushed write before the kill, and one the client never flushed.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 32M 1M', '-c', 'flush', drUri])
  const shadow = path.join(s.dir, 'dr1-flushed.img')
  await must('nbdcopy', [drUri, shadow])

  const outer = t
  await t.test('views and their flushed writes survive kill -9 of the appliance', async (t) => {
    const port = s.app.port
    await s.app.kill9()
    s.app = await startApp(outer, s.data, s.nbdSock, port)
    const listed = await tidemarkJson<View[]>(['timeview', 'list', '--appliance', s.app.address])
    t.same(listed.map((v) => [v.name, v.seq, v.writable]), [['dr1', seq1, true], ['ro1', seq1, false]], 'both views are listed again, at their seq')
    const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 32M 1M', drUri])
    t.equal(r.code, 0, 'the flushed write reads back with qemu-io')
    t.notMatch(r.stdout, /Pattern verification failed/)
    const after = path.join(s.dir, 'dr1-after.img')
    await must('nbdcopy', [drUri, after])
    t.equal(sha256(after), sha256(shadow), 'nbdcopy of the view equals what it held at the last FLUSH (fio\'s writes included)')
  })

  await t.test('delete closes the view and drops its overlay', async (t) => {
    // A client still connected when the view is deleted is cut off, not left writing into a deleted overlay.
    const open = await NbdClient.connect(parseNbdUri(drUri)!)
    t.teardown(() => open.destroy())
    t.equal((await open.read(0, 4096)).length, 4096, 'a client reads the view')
    const del = await tidemarkJson<View>(['timeview', 'delete', '--appliance', s.app.address, '--name', 'dr1'])
    t.equal(del.name, 'dr1', 'deleted')
    await t.rejects(open.read(0, 4096), 'the client connected before the delete is cut off')
    t.notOk(fs.existsSync(path.join(s.data, 'views', 'dr1')), 'its directory and overlay are gone')
    const info = await run('nbdinfo', [drUri])
    t.not(info.code, 0, 'connecting to it fails')
    t.match(info.stderr, /dr1/, `with the reason: ${info.stderr.trim()}`)
    const listed = await tidemarkJson<View[]>(['timeview', 'list', '--appliance', s.app.address])
    t.same(listed.map((v) => v.name), ['ro1'], 'list shows the read-only view only')
    await tidemarkJson<View>(['timeview', 'delete', '--appliance', s.app.address, '--name', 'ro1'])
    const c = await tidemarkJson<{ compaction: { baseSeq: number } | null }>(['journal', 'compact', '--appliance', s.app.address, '--volume', 'vol'])
    t.ok(c.compaction && c.compaction.baseSeq > seq1, `with the views gone, compaction folds past their seq (${JSON.stringify(c)})`)
    const gone = await tidemark(['restore', '--appliance', s.app.address, '--volume', 'vol', '--seq', String(seq1), '--out', path.join(s.dir, 'gone.img')])
    t.equal(gone.code, 1, 'and the point no view holds any more has expired')
    const again = path.join(s.dir, 'latest.img')
    await restore(s.app.address, 'vol', 'latest', again)
    t.ok(fs.statSync(again).size === SIZE, 'while the newest point restores')
  })
})

t.test('ext4 on a writable view mounts: the files of the point are there, new ones stay in the view', async (t) => {
  const s = await site(t, { ext4Files: { 'prod.txt': 'written in production\n' } })
  const seq = await replicatedSeq(s.agent, s.app, 'vol')
  const ref = path.join(s.dir, 'ref.img')
  await restore(s.app.address, 'vol', seq, ref)
  await tidemarkJson<View>(['timeview', 'create', '--appliance', s.app.address, '--volume', 'vol', '--seq', String(seq), '--name', 'fs1', '--writable'])
  const uri = nbdUri(s.nbdSock, 'fs1')
  // The server refreshes its listing now and then (ApplianceNbdServer): wait for the view to appear.
  const listing = async () => (await run('nbdinfo', ['--list', `nbd+unix:///?socket=${s.nbdSock}`])).stdout
  const list = await waitFor(async () => ((await listing()).includes('"fs1"') ? listing() : undefined), 'the view in the NBD listing', 30_000, 200)
    .catch(() => listing())
  t.match(list, /export="fs1"/, 'nbdinfo --list shows the view')
  t.match(list, /tidemark view fs1: volume vol at seq \d+, writable/, 'described with its point')
  const m = await mountOverNbd(t, uri, path.join(s.dir, 'm1'))
  t.equal(fs.readFileSync(path.join(m.fsdir, 'prod.txt'), 'utf8'), 'written in production\n', "the kernel's ext4 mounts the view and reads the point's file")
  fs.writeFileSync(path.join(m.fsdir, 'hello.txt'), 'a DR test wrote this\n')
  await must('sync', [])
  await m.unmount()
  const copy = path.join(s.dir, 'fs1.img')
  await must('nbdcopy', [uri, copy])
  const fsck = await run('e2fsck', ['-fn', copy])
  t.equal(fsck.code, 0, `e2fsck of the view is clean: ${fsck.stdout.trim().split('\n').at(-1)}`)
  const cat = await run('debugfs', ['-R', 'cat /hello.txt', copy])
  t.equal(cat.stdout, 'a DR test wrote this\n', 'the new file is in the view')
  const again = path.join(s.dir, 'ref-again.img')
  await restore(s.app.address, 'vol', seq, again)
  t.equal(sha256(again), sha256(ref), 'restore of the point is unchanged')
  const inRestore = await run('debugfs', ['-R', 'ls /', again])
  t.notMatch(inRestore.stdout, /hello\.txt/, 'the new file is not in it')
  await tidemarkJson<View>(['timeview', 'delete', '--appliance', s.app.address, '--name', 'fs1'])
  t.notOk(fs.existsSync(path.join(s.data, 'views', 'fs1')), 'deleted with its overlay')
})

t.test('with mutual TLS, a caller sees, makes and deletes only views of the volumes it may read', async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent-a'])
  const data = path.join(dir, 'data')
  // Views of two volumes, recorded before the appliance starts (it loads them).
  const reg = await ViewRegistry.open(data, pino({ level: 'silent' }))
  const rec = { seq: 5, writable: false, createdAt: new Date().toISOString(), volumeSize: 1 << 20, point: 'seq 5' }
  await reg.create({ ...rec, name: 'view-a', volume: 'vol-a' })
  await reg.create({ ...rec, name: 'view-b', volume: 'vol-b' })
  const tls = (who: string) => tlsArgs(pki, who)
  const app = await startAppliance(t, { data, extra: [...tls('appliance'), '--allow', 'agent-a=read:vol-a', '--nbd', `unix:${path.join(dir, 'nbd.sock')}`] })
  const asA = ['--appliance', app.address, ...tls('agent-a')]
  const listed = await tidemarkJson<View[]>(['timeview', 'list', ...asA])
  t.same(listed.map((v) => v.name), ['view-a'], "agent-a lists only vol-a's view")
  let r = await tidemark(['timeview', 'delete', ...asA, '--name', 'view-b'])
  t.equal(r.code, 1, "agent-a may not delete vol-b's view")
  t.match(r.stderr, /PERMISSION_DENIED/)
  r = await tidemark(['timeview', 'create', ...asA, '--volume', 'vol-b', '--seq', 'latest', '--name', 'mine'])
  t.equal(r.code, 1, 'nor make a view of vol-b')
  t.match(r.stderr, /PERMISSION_DENIED/)
  await tidemarkJson<View>(['timeview', 'delete', ...asA, '--name', 'view-a'])
  t.notOk(fs.existsSync(path.join(data, 'views', 'view-a')), "it deletes vol-a's view")
  t.ok(fs.existsSync(path.join(data, 'views', 'view-b')), "and vol-b's view stays")
  t.match(listed[0].uris, [/^nbds\+unix:\/\/\/view-a\?socket=/], 'its URI says NBD over TLS')
})
