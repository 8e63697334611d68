// The appliance's own NBD server (`appliance --nbd`), through real clients:
// every point of a volume as export VOLUME@POINT, byte-equal to `restore` of
// the same point while fio writes the volume; the newest point as it was
// when the client connected; refused points with restore's reason; an open
// connection that outlives the compaction that folds its point away.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { adminClient, unary } from '../client/admin-client'
import { NbdClient, parseNbdUri } from '../client/nbd-client'
import type { ServerInfoReply__Output } from '../proto/generated/tidemark/v1/ServerInfoReply'
import { BIN, initialCopyDone, killAndWait, makeImage, must, nbdUri, restore, run, sha256, startAgent, startAppliance, tmpdir, waitFor } from './helpers'
import { tidemarkJson, volumeStats } from './claims-helpers'

const MiB = 1024 * 1024
const SIZE = 16 * MiB

/** The whole export, read through our own client (it also gets the description). */
async function readExport(uri: string): Promise<{ data: Buffer; description: string }> {
  const c = await NbdClient.connect(parseNbdUri(uri)!)
  try {
    const parts: Buffer[] = []
    for (let off = 0; off < c.size; off += 4 * MiB) parts.push(await c.read(off, Math.min(4 * MiB, c.size - off)))
    return { data: Buffer.concat(parts), description: c.description }
  } finally {
    await c.close()
  }
}

/** Why the server refused an export, as our client reports it (the server's own text). */
async function refusal(uri: string): Promise<string> {
  try {
    const c = await NbdClient.connect(parseNbdUri(uri)!)
    await c.close()
    return 'accepted'
  } catch (err) {
    return (err as Error).message
  }
}

t.test('every point of a volume is an NBD export of the appliance', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, SIZE, 5)
  const sock = path.join(dir, 'tap.sock')
  const appSock = path.join(dir, 'app.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    // Marks made seconds apart expire at once: no mark rate floor (test/mark-flood.test.ts has it).
    extra: ['--nbd', `unix:${appSock}`, '--segment-size', '1M', '--retain', 'v=1marks', '--limit-mark-rate', 'off', '--compact-every', '0'],
  })
  t.match(app.err, /serving NBD on unix:/, 'the appliance says where it serves NBD')
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await waitFor(() => initialCopyDone(app.address, 'v'), 'the initial copy', 120_000, 100)
  const exportUri = (name: string): string => `nbd+unix:///${name}?socket=${appSock}`

  // fio writes the volume for the whole test; points are read while it runs.
  const fio = spawn('fio', [
    '--name=churn', '--ioengine=nbd', `--uri=${nbdUri(sock, 'v')}`, '--rw=randwrite', '--bs=4k', '--rate=1m',
    '--time_based', '--runtime=600', `--size=${SIZE}`, '--randrepeat=0',
  ], { stdio: 'ignore' })
  t.teardown(() => killAndWait(fio, 'SIGKILL'))
  const seqAtLeast = async (n: number): Promise<number> => waitFor(async () => {
    const s = (await volumeStats(app.address, 'v')).durableSeq
    return s > n ? s : null
  }, `durable seq past ${n}`, 60_000, 50)

  let seq = await seqAtLeast((await volumeStats(app.address, 'v')).durableSeq)
  const mark = await tidemarkJson<{ id: number }>(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', 'before'])
  seq = await seqAtLeast(Math.max(seq, mark.id))
  const atIso = new Date().toISOString()
  await seqAtLeast(seq)

  const points: Array<[string, string[]]> = [
    [`v@seq=${seq}`, ['--seq', String(seq)]],
    ['v@mark=before', ['--timemark', 'before']],
    [`v@mark=${mark.id}`, ['--timemark', String(mark.id)]],
    [`v@at=${atIso}`, ['--at', atIso]],
  ]
  for (const [name, point] of points) {
    const copy = path.join(dir, 'copy.img')
    const restored = path.join(dir, 'restored.img')
    await must('nbdcopy', [exportUri(name), copy])
    const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', ...point, '--out', restored])
    t.equal(r.code, 0, `restore ${point.join(' ')}`, { stderr: r.stderr })
    t.equal(sha256(copy), sha256(restored), `nbdcopy of ${name} equals restore ${point.join(' ')}, while fio writes`)
    fs.rmSync(copy)
    fs.rmSync(restored)
  }

  // VOLUME@latest and the bare name: the newest exact point when the client
  // connected, named in the export's description.
  for (const name of ['v@latest', 'v']) {
    const got = await readExport(exportUri(name))
    const m = /^v at seq (\d+)/.exec(got.description)
    t.ok(m, `${name}: the description names the point (${got.description})`)
    const restored = path.join(dir, 'latest.img')
    await restore(app.address, 'v', Number(m![1]), restored)
    t.ok(got.data.equals(fs.readFileSync(restored)), `${name} read whole equals restore of seq ${m![1]}`)
    fs.rmSync(restored)
  }

  const list = await must('nbdinfo', ['--list', exportUri('')])
  t.match(list, /export="v@latest"/, 'nbdinfo --list shows VOLUME@latest')
  t.match(list, new RegExp(`export-size: ${SIZE}`), 'with its size')
  t.match(list, /description: v at seq \d+/, 'and a description naming the point')

  // Refused names: the reason restore gives, in the option's error reply.
  t.match(await refusal(exportUri('nope@latest')), /has no such export .*no volume or view named "nope"/, 'an unknown volume')
  t.match(await refusal(exportUri('v@seq=abc')), /calls the request invalid .*seq=abc is not a seq/, 'a malformed seq')
  t.match(await refusal(exportUri('v@yesterday')), /unknown point "yesterday"/, 'an unknown kind of point')
  t.match(await refusal(exportUri('v@at=noon')), /at=noon is not an ISO time/, 'a malformed time')
  t.match(await refusal(exportUri('v@mark=nosuch')), /has no such export .*no TimeMark labelled "nosuch"/, 'an unknown TimeMark')
  t.match(await refusal(exportUri('v@seq=999999999999')), /refuses it by policy .*not durable here yet/, 'a point not yet durable')
  const nbdinfoRefused = await run('nbdinfo', [exportUri('v@seq=999999999999')])
  t.not(nbdinfoRefused.code, 0, 'nbdinfo is refused too')

  // A client that opened a point keeps reading it while retention folds it
  // away and deletes the segments it lives in; new clients are refused.
  const before = path.join(dir, 'before.img')
  await restore(app.address, 'v', seq, before)
  const open = await NbdClient.connect(parseNbdUri(exportUri(`v@seq=${seq}`))!)
  t.teardown(() => open.destroy())
  await tidemarkJson(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', 'after'])
  await waitFor(async () => (await volumeStats(app.address, 'v')).segments >= 3, 'a few segments', 120_000, 100)
  await tidemarkJson(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', 'last'])
  const c = await tidemarkJson<{ compaction: { baseSeq: number; segmentsDropped: number } | null }>(['journal', 'compact', '--appliance', app.address, '--volume', 'v'])
  t.ok(c.compaction && c.compaction.baseSeq > seq && c.compaction.segmentsDropped > 0, `compaction folded seq ${seq} away (base seq ${c.compaction?.baseSeq})`)
  const parts: Buffer[] = []
  for (let off = 0; off < SIZE; off += 4 * MiB) parts.push(await open.read(off, 4 * MiB))
  t.ok(Buffer.concat(parts).equals(fs.readFileSync(before)), 'the connection opened before still reads its point, byte for byte')
  await open.close()
  t.match(await refusal(exportUri(`v@seq=${seq}`)), /refuses it by policy .*seq \d+ has expired: retention folded the history/, 'a new client is refused: the point has expired')

  await killAndWait(fio, 'SIGKILL')
  const verify = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'v'])
  t.equal(verify.code, 0, 'serving points changed nothing in the journal', { out: verify.stdout })
})

t.test('--nbd is refused beyond loopback without --insecure, and a bad endpoint is a usage error', async (t) => {
  const dir = tmpdir(t)
  const r = await run(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'd'), '--listen', '127.0.0.1:0', '--nbd', 'tcp:0.0.0.0:0'])
  t.not(r.code, 0, 'refused')
  t.match(r.stderr, /refusing to serve NBD on 0\.0\.0\.0 without TLS/, 'with the reason')
  const bad = await run(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'd'), '--listen', '127.0.0.1:0', '--nbd', 'nbd.sock'])
  t.equal(bad.code, 2, 'a malformed --nbd is a usage error')
  t.match(bad.stderr, /--nbd 'nbd.sock' must be unix:PATH or tcp:HOST:PORT/)
  const app = await startAppliance(t, { data: path.join(dir, 'd2'), extra: ['--nbd', 'tcp:127.0.0.1:0'] })
  const m = /serving NBD on tcp:127\.0\.0\.1:(\d+)/.exec(app.err)
  t.ok(m && Number(m[1]) > 0, 'tcp port 0 picks a port and says which')
  const client = adminClient({ address: app.address })
  t.teardown(() => client.close())
  const info = await unary<{ volume: string }, ServerInfoReply__Output>(client.serverInfo.bind(client), { volume: '' })
  t.equal(info.nbdTcp, `127.0.0.1:${m![1]}`, 'Admin.ServerInfo names the NBD endpoint')
  t.equal(info.nbdUnix, '', 'and no unix socket')
})
