// tidemark timeview through real processes: an agent and an appliance
// started as the CLI starts them, qemu-io writing through the agent's NBD
// socket, `tidemark timeview` serving points of the volume while replication
// goes on, and real NBD clients (nbdcopy, nbdinfo, qemu-io, nbdfuse + the
// kernel's ext4) reading them. Every view is compared with `tidemark restore`
// of the same point and with a copy of the protected volume taken at it.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { replicatedSeq, volumeStats } from './claims-helpers'
import {
  BIN,
  killAndWait,
  makeImage,
  mountExt4OverNbd,
  mountOverNbd,
  must,
  nbdUri,
  protectedVolume,
  restore,
  run,
  sha256,
  startAgent,
  startAppliance,
  startTimeview,
  tmpdir,
  waitFor,
  type ApplianceProcess,
  type TimeviewProcess,
} from './helpers'

const MiB = 1024 * 1024

/** `tidemark timeview` of POINT of 'vol' on the unix socket `sock`; resolves once it says what it serves. */
function serveView(t: Test, app: ApplianceProcess, sock: string, point: string[], extra: string[] = [], env?: NodeJS.ProcessEnv): Promise<TimeviewProcess> {
  return startTimeview(t, ['--appliance', app.address, '--volume', 'vol', ...point, '--nbd', `unix:${sock}`, ...extra], { env })
}

async function nbdcopy(uri: string, out: string): Promise<string> {
  await must('nbdcopy', [uri, out])
  return sha256(out)
}

t.test('TimeViews of two points at once, while replication goes on, equal their restores and the volume as it was', async (t) => {
  const dir = tmpdir(t)
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 64 * MiB, seed: 21 })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa1 1M 3M', '-c', 'write -P 0xa2 33333 4444', '-c', 'write -z 20M 2M', '-c', 'flush', uri])
  const seqA = await replicatedSeq(agent, app, 'vol')
  const asA = path.join(dir, 'at-a.img')
  fs.copyFileSync(img, asA)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xb1 2M 4M', '-c', 'discard 40M 1M', '-c', 'write -P 0xb2 60M 64k', '-c', 'flush', uri])
  const seqB = await replicatedSeq(agent, app, 'vol')
  const asB = path.join(dir, 'at-b.img')
  fs.copyFileSync(img, asB)
  t.ok(seqB > seqA, `two points: seq ${seqA} and seq ${seqB}`)
  t.not(sha256(asA), sha256(asB), 'the volume differs between the two points (the comparison can fail)')

  const sockA = path.join(dir, 'a.sock')
  const sockB = path.join(dir, 'b.sock')
  const va = await serveView(t, app, sockA, ['--seq', String(seqA)])
  const vb = await serveView(t, app, sockB, ['--seq', String(seqB)])
  t.match(va.served, { volume: 'vol', seq: seqA, size: 64 * MiB, mode: 'read-only', writable: false }, 'the first says what it serves')
  t.equal(vb.served.seq, seqB, 'the second serves the second point')

  // Replication continues: fio rewrites part of the volume the whole time.
  const before = (await volumeStats(app.address, 'vol')).durableSeq
  const fio = spawn('fio', ['--name=load', '--thread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=4',
    '--size=8M', '--offset=48M', '--time_based', '--runtime=60', '--rate=4m'], { stdio: 'ignore', cwd: dir })
  const fioDone = new Promise((r) => fio.once('exit', r))
  t.teardown(() => killAndWait(fio))
  // the views are read while replication goes on: once fio's writes are reaching the appliance
  await waitFor(async () => ((await volumeStats(app.address, 'vol')).durableSeq) > before, 'fio\'s writes reaching the appliance', 60_000, 100)
  const [shaA, shaB] = await Promise.all([nbdcopy(nbdUri(sockA, 'vol'), path.join(dir, 'view-a.img')), nbdcopy(nbdUri(sockB, 'vol'), path.join(dir, 'view-b.img'))])
  const restoredA = path.join(dir, 'restored-a.img')
  const restoredB = path.join(dir, 'restored-b.img')
  await restore(app.address, 'vol', seqA, restoredA)
  await restore(app.address, 'vol', seqB, restoredB)
  const during = (await volumeStats(app.address, 'vol')).durableSeq
  fio.kill('SIGKILL')
  await fioDone
  t.ok(during > before, `replication went on meanwhile (durable seq ${before} -> ${during})`)
  t.equal(shaA, sha256(restoredA), 'the TimeView of the first point equals restore --seq of it')
  t.equal(shaB, sha256(restoredB), 'the TimeView of the second point equals restore --seq of it')
  t.equal(shaA, sha256(asA), 'the first equals the volume as it was at that point')
  t.equal(shaB, sha256(asB), 'the second equals the volume as it was at that point')

  const info = await must('nbdinfo', ['--json', nbdUri(sockA, 'vol')])
  const exp = JSON.parse(info).exports[0]
  t.equal(exp['export-size'], 64 * MiB, 'nbdinfo: the export size is the volume size')
  t.equal(exp.is_read_only, true, 'nbdinfo: the export is read-only')
  t.match(String(exp.description), new RegExp(`TimeView of vol at seq ${seqA}`), 'nbdinfo: the description names the point')

  t.equal(await va.stop(), 0, 'the first TimeView exits 0 on SIGTERM')
  t.equal(await vb.stop(), 0, 'the second too')
  t.notOk(fs.existsSync(sockA), 'its socket is gone')
  const stats = va.err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => l.msg === 'stopped')
  t.ok(stats && stats.bytesRead >= 64 * MiB && stats.fetches > 0, 'the last log line counts the reads and fetches')
})

t.test('read-only refuses writes; --writable keeps writes in an overlay that never reaches the appliance and is discarded', async (t) => {
  const dir = tmpdir(t)
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 32 * MiB, seed: 22 })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 2M', '-c', 'flush', uri])
  const seq = await replicatedSeq(agent, app, 'vol')
  const original = path.join(dir, 'original.img')
  fs.copyFileSync(img, original)

  const roSock = path.join(dir, 'ro.sock')
  const ro = await serveView(t, app, roSock, ['--seq', String(seq)])
  const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 4k', nbdUri(roSock, 'vol')])
  t.not(w.code, 0, `a write to the read-only view fails: ${(w.stdout + w.stderr).trim()}`)
  await must('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x3c 0 2M', nbdUri(roSock, 'vol')])
  t.pass('the read-only view still reads the point')
  t.equal(await ro.stop(), 0, 'the read-only view stops')

  const journalBefore = await volumeStats(app.address, 'vol')
  const ls = async () => must(process.execPath, [BIN, 'journal', 'ls', '--appliance', app.address, '--volume', 'vol', '--json'])
  const lsBefore = await ls()
  const tmp = path.join(dir, 'tmp')
  fs.mkdirSync(tmp)
  const rwSock = path.join(dir, 'rw.sock')
  const rw = await serveView(t, app, rwSock, ['--seq', String(seq), '--writable'], [], { ...process.env, TMPDIR: tmp })
  t.equal(rw.served.mode, 'writable', 'the view says it is writable')
  const rwUri = nbdUri(rwSock, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 1M 64k', '-c', 'write -P 0x55 3000 1000', '-c', 'write -z 8M 1M',
    '-c', 'discard 16M 64k', '-c', 'write -P 0x11 31M 512', '-c', 'flush', rwUri])
  await must('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x77 1M 64k', '-c', 'read -P 0x55 3000 1000', '-c', 'read -P 0x3c 0 2048',
    '-c', 'read -P 0x3c 4000 4096', '-c', 'read -P 0 8M 1M', '-c', 'read -P 0x11 31M 512', rwUri])
  t.pass('the writes read back through the view, and the bytes around them are the point')
  // The same changes made to a copy of the point: the whole view must equal it.
  const expected = path.join(dir, 'expected.img')
  fs.copyFileSync(original, expected)
  const fd = fs.openSync(expected, 'r+')
  fs.writeSync(fd, Buffer.alloc(64 * 1024, 0x77), 0, 64 * 1024, 1 * MiB)
  fs.writeSync(fd, Buffer.alloc(1000, 0x55), 0, 1000, 3000)
  fs.writeSync(fd, Buffer.alloc(MiB), 0, MiB, 8 * MiB)
  fs.writeSync(fd, Buffer.alloc(64 * 1024), 0, 64 * 1024, 16 * MiB)
  fs.writeSync(fd, Buffer.alloc(512, 0x11), 0, 512, 31 * MiB)
  fs.closeSync(fd)
  t.equal(await nbdcopy(rwUri, path.join(dir, 'rw.img')), sha256(expected), 'the whole writable view is the point with the writes laid over it')
  t.same(fs.readdirSync(tmp), [], 'the overlay has no name in $TMPDIR')

  const journalAfter = await volumeStats(app.address, 'vol')
  for (const k of ['durableSeq', 'records', 'journalBytes', 'changedBytes', 'appBytes']) {
    t.equal(journalAfter[k], journalBefore[k], `the appliance's ${k} did not change (${journalBefore[k]})`)
  }
  t.equal(await ls(), lsBefore, 'journal ls is unchanged')
  t.equal(sha256(img), sha256(original), 'the protected volume did not change either')
  t.equal(await rw.stop(), 0, 'the writable view exits 0 on SIGTERM')
  t.same(fs.readdirSync(tmp), [], 'nothing is left in $TMPDIR')

  const again = await serveView(t, app, rwSock, ['--seq', String(seq), '--writable'])
  t.equal(await nbdcopy(nbdUri(rwSock, 'vol'), path.join(dir, 'again.img')), sha256(original), 'a new TimeView of the point shows the original bytes')
  t.equal(await again.stop(), 0, 'and stops cleanly')
})

/** nbdfuse exposing an export as DIR/fuse/disk and the kernel's ext4 on it (loop), no mkfs. */
function mountExisting(t: Test, uri: string, dir: string, readOnly: boolean): Promise<{ fsdir: string; unmount(): Promise<void> }> {
  return mountOverNbd(t, uri, dir, { readOnly })
}

t.test('ext4: a TimeView of a noted point, mounted read-only, shows the files as they were', async (t) => {
  const dir = tmpdir(t)
  const { app, agent, uri } = await protectedVolume(t, dir, { size: 64 * MiB, seed: null })
  const files: Record<string, string> = {
    'notes.txt': 'the point to come back to\n'.repeat(100),
    'big.bin': 'x'.repeat(3 * MiB),
    'gone.txt': 'this file is deleted after the point\n',
  }
  const prod = path.join(dir, 'prod')
  fs.mkdirSync(prod)
  const m1 = await mountExt4OverNbd(t, uri, prod)
  fs.mkdirSync(path.join(m1.fsdir, 'd'))
  for (const [n, c] of Object.entries(files)) fs.writeFileSync(path.join(m1.fsdir, 'd', n), c)
  await must('sync', [])
  await m1.unmount()
  const seq = await replicatedSeq(agent, app, 'vol')

  const prod2 = path.join(dir, 'prod2')
  fs.mkdirSync(prod2)
  const m2 = await mountExisting(t, uri, prod2, false)
  fs.writeFileSync(path.join(m2.fsdir, 'd', 'notes.txt'), 'changed after the point\n')
  fs.rmSync(path.join(m2.fsdir, 'd', 'gone.txt'))
  fs.writeFileSync(path.join(m2.fsdir, 'd', 'new.txt'), 'new after the point\n')
  await must('sync', [])
  await m2.unmount()
  await replicatedSeq(agent, app, 'vol')

  const vsock = path.join(dir, 'view.sock')
  const view = await serveView(t, app, vsock, ['--seq', String(seq)])
  const look = path.join(dir, 'look')
  fs.mkdirSync(look)
  const m3 = await mountExisting(t, nbdUri(vsock, 'vol'), look, true)
  t.same(fs.readdirSync(path.join(m3.fsdir, 'd')).sort(), Object.keys(files).sort(), 'the directory lists the files as they were')
  for (const [n, c] of Object.entries(files)) {
    t.ok(fs.readFileSync(path.join(m3.fsdir, 'd', n), 'utf8') === c, `${n} holds its contents from the point`)
  }
  await m3.unmount()
  t.equal(await view.stop(), 0, 'the TimeView stops cleanly after the unmount')
})

t.test('bad input: one clear line, a non-zero exit, nothing served', async (t) => {
  const dir = tmpdir(t)
  const { app, agent, uri } = await protectedVolume(t, dir, { size: 16 * MiB, seed: 23 })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 64k', '-c', 'flush', uri])
  const seq = await replicatedSeq(agent, app, 'vol')
  const sock = path.join(dir, 'bad.sock')
  const tv = (args: string[]) =>
    run(process.execPath, [BIN, 'timeview', '--appliance', app.address, ...(args.includes('--nbd') ? [] : ['--nbd', `unix:${sock}`]), ...args], { timeoutMs: 30_000 })
  const cases: Array<[string, string[], RegExp, number | null]> = [
    ['a seq in the future', ['--volume', 'vol', '--seq', String(seq + 100000)], /POINT_IN_FUTURE: seq \d+ of volume vol is not durable here yet/, 1],
    ['a time in the future', ['--volume', 'vol', '--at', '2999-01-01T00:00:00Z'], /is in the future/, 1],
    ['an unknown volume', ['--volume', 'nope', '--seq', 'latest'], /no volume named "nope"/, 1],
    ['an unknown TimeMark label', ['--volume', 'vol', '--timemark', 'no-such-label'], /has no TimeMark labelled "no-such-label"/, 1],
    ['no point', ['--volume', 'vol'], /give the point/, 2],
    ['two points', ['--volume', 'vol', '--seq', '1', '--at', '2020-01-01T00:00:00Z'], /give one point/, 2],
    ['a bad endpoint', ['--volume', 'vol', '--seq', 'latest', '--nbd', 'nowhere'], /--nbd 'nowhere' must be unix:PATH or tcp:HOST:PORT/, 2],
  ]
  for (const [what, args, re, code] of cases) {
    const r = await tv(args)
    const lines = r.stderr.trim().split('\n')
    t.equal(r.code, code, `${what}: exit ${code}`)
    t.equal(lines.length, 1, `${what}: one line`)
    t.match(lines[0], /^tidemark timeview: /, `${what}: says which command`)
    t.match(lines[0], re, `${what}: says what and why: ${lines[0]}`)
    t.equal(r.stdout, '', `${what}: nothing printed as served`)
    t.notOk(fs.existsSync(sock), `${what}: no socket was created`)
  }
  const r = await run(process.execPath, [BIN, 'timeview', '--appliance', app.address, '--volume', 'vol', '--seq', 'latest', '--nbd', `unix:${sock}`, '--writable', '--cache', 'lots'])
  t.equal(r.code, 2, 'a bad --cache size is a usage error')
})

/** The counters a TimeView logged when it stopped. */
function stoppedStats(v: TimeviewProcess): Record<string, number> {
  const l = v.err.split('\n').filter((x) => x.startsWith('{')).map((x) => JSON.parse(x)).find((x) => typeof x.msg === 'string' && x.msg.startsWith('stopped'))
  if (!l) throw new Error(`no stats line when the TimeView stopped:\n${v.err}`)
  return l
}

t.test('concurrent misses from many connections share fetches; sequential copies are read ahead; every byte equals restore', async (t) => {
  const dir = tmpdir(t)
  const size = 48 * MiB
  const { app, agent, uri } = await protectedVolume(t, dir, { size, seed: 24 })
  // Journal records over the initial copy, so a fetch assembles a chunk from both.
  await must('fio', ['--name=churn', '--thread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bsrange=512-64k', '--iodepth=8',
    `--size=${size}`, '--io_size=8M', '--randrepeat=0'], { cwd: dir })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5e 7777 100000', '-c', 'flush', uri])
  const seq = await replicatedSeq(agent, app, 'vol')
  const restored = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', seq, restored)
  const want = sha256(restored)

  // Random reads from 8 connections at once (fio, 4 KiB, iodepth 4 each), then
  // a copy, through one view whose cache holds the whole volume: a chunk two
  // readers miss together is fetched once, so nothing is fetched twice.
  const sock = path.join(dir, 'rand.sock')
  const v = await serveView(t, app, sock, ['--seq', String(seq)], ['--cache', `${size / MiB + 8}M`])
  await must('fio', ['--name=rand', '--thread', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randread', '--bs=4k', '--iodepth=4',
    '--numjobs=8', `--size=${size}`, '--io_size=4M', '--randrepeat=0', '--group_reporting'], { cwd: dir })
  t.equal(await nbdcopy(nbdUri(sock, 'vol'), path.join(dir, 'rand.img')), want, 'after concurrent random misses, the view equals restore --seq of the point')
  t.equal(await v.stop(), 0, 'the view stops')
  const rs = stoppedStats(v)
  t.ok(rs.fetches > 0 && rs.fetchErrors === 0, `it fetched (${rs.fetches} fetches, no errors)`)
  t.ok(rs.fetchBytes <= size, `no chunk was fetched twice (${rs.fetchBytes} bytes fetched for a ${size}-byte volume; ${rs.fetchWaits} waits on another's fetch, at most ${rs.fetchesInFlightMax} in flight)`)

  // A cold sequential copy over one connection: read ahead.
  const sock2 = path.join(dir, 'seq.sock')
  const s1 = await serveView(t, app, sock2, ['--seq', String(seq)])
  t.equal(sha256(await copyWith(['--connections=1'], nbdUri(sock2, 'vol'), path.join(dir, 'seq.img'))), want, 'a sequential copy (nbdcopy, one connection) equals restore')
  t.equal(await s1.stop(), 0, 'the view stops')
  const ss = stoppedStats(s1)
  t.ok(ss.readAheadBytes > 0, `the sequential stream was read ahead (${ss.readAheadBytes} bytes, ${ss.fetches} fetches for ${ss.reads} reads)`)

  // Four connections copying at once (nbdcopy's default), a small cache: read-ahead stays within it.
  const sock3 = path.join(dir, 'multi.sock')
  const s4 = await serveView(t, app, sock3, ['--seq', String(seq)], ['--cache', '8M'])
  t.equal(sha256(await copyWith(['--connections=4'], nbdUri(sock3, 'vol'), path.join(dir, 'multi.img'))), want, 'a copy over four connections through an 8 MiB cache equals restore')
  t.equal(await s4.stop(), 0, 'the view stops')
  const ms = stoppedStats(s4)
  t.ok(ms.cacheBytes <= 8 * MiB && ms.fetchErrors === 0, `the cache stayed within 8 MiB (${ms.cacheBytes} bytes), no fetch failed`)

  // The appliance hangs (SIGSTOP) while a stream is read ahead: the view
  // still stops on SIGTERM (the fetches nobody answers are failed after the
  // close grace, and the reader waiting on one gets EIO).
  t.equal(await agent.stop(), 0, 'the agent stops (nothing more to replicate)')
  const sock4 = path.join(dir, 'hang.sock')
  const h = await serveView(t, app, sock4, ['--seq', String(seq)], ['--stats-interval', '0.1'])
  const reads = (from: number, n: number) => Array.from({ length: n }, (_, i) => ['-c', `read ${from + i * 256 * 1024} 256k`]).flat()
  await must('qemu-io', ['-f', 'raw', '-r', ...reads(0, 4), nbdUri(sock4, 'vol')])
  app.proc.kill('SIGSTOP')
  t.teardown(() => {
    app.proc.kill('SIGCONT')
  })
  // A stream far past what the first reads read ahead (which a busy machine
  // may have fetched before the appliance stopped): its first read misses,
  // the hung appliance never answers the fetch, and the reader blocks.
  const reader = spawn('qemu-io', ['-f', 'raw', '-r', ...reads(16 * MiB, 120), nbdUri(sock4, 'vol')], { stdio: 'ignore' })
  const readerDone = new Promise((r) => reader.once('exit', r))
  t.teardown(() => killAndWait(reader))
  const statsLines = () => h.err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((l) => l.msg === 'stats')
  await waitFor(() => statsLines().some((l) => l.reads > 4 && l.connections === 1), 'the second reader reading', 30_000, 50)
  h.proc.kill('SIGTERM')
  await waitFor(() => /"msg":"stopped"/.test(h.err), 'the view closing with fetches hung', 60_000, 100)
  app.proc.kill('SIGCONT')  // the gRPC calls still pending end, and with them the process
  t.equal(await h.exited, 0, 'SIGTERM stopped the view while its fetches hung (exit 0)')
  await readerDone
  t.match(h.err, /from the appliance failed: the TimeView (is closing|closed before the appliance answered); the client gets EIO/, 'the reader waiting on a hung fetch got EIO')
  t.equal(stoppedStats(h).connections, 0, 'no connection is left')
})

async function copyWith(opts: string[], uri: string, out: string): Promise<string> {
  await must('nbdcopy', [...opts, uri, out])
  return out
}

t.test("with the appliance serving NBD, a TimeView reads its misses from the appliance's own export of the point, natively", async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 16 * MiB, 31)
  const appSock = path.join(dir, 'app.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--nbd', `unix:${appSock}`] })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--stats-interval', '0.2'] })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')
  await must('fio', ['--name=churn', '--thread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bsrange=512-64k', '--iodepth=8',
    '--size=16M', '--io_size=4M', '--randrepeat=0'], { cwd: dir })
  const seq = await replicatedSeq(agent, app, 'vol')
  const restored = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', seq, restored)

  const vsock = path.join(dir, 'view.sock')
  const v = await serveView(t, app, vsock, ['--seq', String(seq)], ['--writable'])
  t.match(String(v.served.source), new RegExp(`NBD export vol@seq=${seq} on ${appSock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), `the view says where it reads: ${v.served.source}`)
  await must('fio', ['--name=rand', '--thread', '--ioengine=nbd', `--uri=${nbdUri(vsock, 'vol')}`, '--rw=randread', '--bs=4k', '--iodepth=8',
    '--numjobs=2', '--size=16M', '--io_size=2M', '--randrepeat=0', '--group_reporting'], { cwd: dir })
  t.equal(await nbdcopy(nbdUri(vsock, 'vol'), path.join(dir, 'copy.img')), sha256(restored), 'what the view serves equals restore of the point')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 1M 64k', nbdUri(vsock, 'vol')])
  t.equal(await v.stop(), 0, 'the view stops')
  const s = stoppedStats(v)
  t.ok(s.fetches > 0 && s.fetchErrors === 0, `it fetched ${s.fetches} times from the export, no errors`)

  const grpc = await serveView(t, app, path.join(dir, 'g.sock'), ['--seq', String(seq)], ['--transport', 'grpc'])
  t.match(String(grpc.served.source), /^Admin\.Read over gRPC/, '--transport grpc reads with Admin.Read')
  t.equal(await nbdcopy(nbdUri(path.join(dir, 'g.sock'), 'vol'), path.join(dir, 'g.img')), sha256(restored), 'and serves the same bytes')
  t.equal(await grpc.stop(), 0, 'that view stops too')
  t.equal(await must(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'vol']).then(() => 0), 0, 'the journal is untouched')
})
