// Assessment mode (tidemark agent --assess): a known workload, written with
// qemu-io, is measured without replicating; the same workload replicated to
// an appliance sends what the assessment said it would.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { have, makeImage, must, nbdUri, protectedVolume, run, startAgent, tmpdir, BIN } from './helpers'

const MiB = 1024 * 1024
const SIZE = 64 * MiB
const needs = have('qemu-io') ? false : 'qemu-io is not installed'

/**
 * The workload: compressible patterns, the same bytes written again (nothing
 * changes), and incompressible bytes. No zeroes: a replica that holds an
 * initial copy knows zeroes it has, an empty cache does not.
 */
async function workload(uri: string, random: string): Promise<void> {
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x22 1M 1M', '-c', `write -s ${random} 16M 2M`, '-c', 'flush', uri])
}

function randomFile(dir: string): string {
  const f = path.join(dir, 'random.bin')
  fs.writeFileSync(f, crypto.randomBytes(2 * MiB))
  return f
}

interface Measured {
  appBytes: number
  changedBytes: number
  wireBytes: number
}

t.test('assess measures what replication of the same workload sends', { skip: needs }, async (t) => {
  const dir = tmpdir(t)
  const random = randomFile(dir)

  // Assessment: served and captured, replicated nowhere, stopped with SIGTERM.
  const img = path.join(dir, 'assess.img')
  makeImage(img, SIZE, null)
  const sock = path.join(dir, 'assess.sock')
  const assess = await startAgent(t, { state: path.join(dir, 'assess-state'), sock, volumes: { vol: img }, extra: ['--assess', '--json'] })
  await workload(nbdUri(sock, 'vol'), random)
  t.equal(await assess.stop(), 0, 'the assessment exits 0 on SIGTERM')
  const report = JSON.parse(assess.out) as { seconds: number; volumes: Array<Measured & { volume: string; perMinute: Record<string, unknown>; wanBytesPerSecond: Record<string, number | null>; journalBytesPerDay: number }> }
  const a = report.volumes[0]
  t.equal(a.volume, 'vol', 'the report names the volume')
  t.equal(a.appBytes, 11 * MiB, 'application bytes: everything qemu-io wrote (4 + 4 + 1 + 2 MiB)')
  t.equal(a.changedBytes, 7 * MiB, 'changed bytes: the rewrite of the same bytes changed nothing (4 + 1 + 2 MiB)')
  t.ok(a.wireBytes > 2 * MiB && a.wireBytes < 3 * MiB, `wire bytes: the random 2 MiB and the patterns compressed (${a.wireBytes})`)
  for (const k of ['1s', '10s', '60s']) t.ok(Number(a.wanBytesPerSecond[k]) > 0, `a WAN rate for an RPO of ${k}`)
  t.ok(a.wanBytesPerSecond['1s']! >= a.wanBytesPerSecond['60s']!, 'a tighter RPO needs at least as much bandwidth')
  t.ok(a.journalBytesPerDay >= Math.floor((a.changedBytes * 86400) / report.seconds), 'journal growth per day from the changed bytes')
  t.ok(fs.readdirSync(dir).every((f) => !f.endsWith('.tmcap')), 'nothing was written anywhere but the volume')

  // The same workload on the same kind of volume, replicated.
  const rdir = path.join(dir, 'replicated')
  fs.mkdirSync(rdir)
  const p = await protectedVolume(t, rdir, { size: SIZE, seed: null })
  await workload(p.uri, random)
  t.equal(await p.agent.stop(), 0, 'the replicating agent stops cleanly')
  const fin = p.agent.logs().find((l) => l.msg === 'final stats' && l.volume === 'vol') as unknown as Measured
  t.equal(fin.appBytes, a.appBytes, 'replication saw the same application bytes')
  t.equal(fin.changedBytes, a.changedBytes, 'and sent the same changed bytes')
  // LZ4 works per batch, and batches fall where the stream's timing puts them.
  t.ok(Math.abs(fin.wireBytes - a.wireBytes) <= 0.05 * a.wireBytes + 64 * 1024, `and about the same bytes on the wire (${fin.wireBytes} against ${a.wireBytes})`)
})

t.test('assess --duration prints a table and stops by itself', { skip: needs }, async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'v.img')
  makeImage(img, SIZE, null)
  const r = await run(process.execPath, [BIN, 'agent', '--assess', '--duration', '1', '--state', path.join(dir, 'st'), '--nbd', `unix:${path.join(dir, 's.sock')}`, '--volume', `v=${img}`])
  t.equal(r.code, 0, 'exits 0 after the duration')
  t.match(r.stdout, /^assessment over \d+\.\d s/, 'the report on stdout')
  t.match(r.stdout, /\| v \| 0\.00 \/ 0\.00 \/ 0\.00 \|/, 'an idle volume: nothing per minute')
  t.match(r.stdout, /WAN for RPO 1 s/, 'the WAN column')
  t.notMatch(r.stdout, /"level"/, 'the log is not on stdout')
  t.match(r.stderr, /"msg":"serving"/, 'the log is on stderr')
})

t.test('assess refuses what would replicate', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'v.img')
  makeImage(img, MiB, null)
  const base = ['agent', '--assess', '--state', path.join(dir, 'st'), '--nbd', `unix:${path.join(dir, 's.sock')}`, '--volume', `v=${img}`]
  const r = await run(process.execPath, [BIN, ...base, '--appliance', '127.0.0.1:1'])
  t.equal(r.code, 2, 'a usage error')
  t.match(r.stderr, /--assess replicates nowhere/, 'says why')
  const d = await run(process.execPath, [BIN, 'agent', '--duration', '5', '--state', path.join(dir, 'st'), '--nbd', `unix:${path.join(dir, 's.sock')}`, '--volume', `v=${img}`])
  t.equal(d.code, 2, '--duration without --assess is a usage error')
  t.match(d.stderr, /--duration needs --assess/, 'naming what it needs')
})
