// A flood of TimeMarks does not shorten the history an "N marks" rule keeps
// (appliance/retention.ts, --limit-mark-rate), through real processes: an
// agent marks a point, then floods marks; a compaction under the rate cap
// keeps the point restorable byte-exact and says why in stats and the log.
// The same data directory restarted without the cap folds the point away,
// which is what the flood would have done. And records whose capture times
// claim to be weeks old are not aged out by a window rule: ages are also
// measured on the appliance's clock.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { encodeBatch } from '../proto/change-batch'
import { initHash } from '../proto/hash'
import { PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { Stream } from './lib/replicate-stream'
import { BIN, have, initialCopyDone, makeImage, must, nbdUri, restore, run, sha256, startAgent, startAppliance, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024

interface VolumeStats {
  durableSeq: number
  fullSyncDone: boolean
  base: { seq: number } | null
  retention: { rule: string | null; warning: string | null }
}

async function json<T>(...args: string[]): Promise<T> {
  const r = await run(process.execPath, [BIN, ...args, '--json'])
  if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

const stats = async (address: string): Promise<VolumeStats> => (await json<{ volumes: VolumeStats[] }>('stats', '--appliance', address, '--volume', 'v')).volumes[0]

t.test('a flood of TimeMarks cannot push out history under a marks rule', { skip: !have('qemu-io') && 'qemu-io is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const data = path.join(dir, 'data')
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 31)
  // 3 marks at most 3 an hour: the rule reaches no point younger than an hour.
  const rule = ['--retain', 'v=3marks', '--compact-every', '0', '--segment-size', '1M']
  let app = await startAppliance(t, { data, extra: [...rule, '--limit-mark-rate', '3/h'] })
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await waitFor(() => initialCopyDone(app.address, 'v'), 'the initial copy', 60_000, 100)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 256k', '-c', 'flush', nbdUri(sock, 'v')])
  const kept = await json<{ id: number }>('timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', 'before-flood')
  const expected = sha256(img)

  // The compromised agent floods marks, with writes between them (a segment's worth: compaction folds whole segments).
  for (let i = 0; i < 6; i++) {
    await must('qemu-io', ['-f', 'raw', '-c', `write -P ${0x10 + i} ${(i % 3) * MiB} 1M`, '-c', 'flush', nbdUri(sock, 'v')])
    await json('timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', `flood-${i}`)
  }
  t.equal(await agent.stop(), 0, 'the agent drained and stopped')

  await json('journal', 'compact', '--appliance', app.address, '--volume', 'v')
  const held = await stats(app.address)
  t.ok((held.base?.seq ?? 0) < kept.id, `under the rate cap the mark before the flood (seq ${kept.id}) is not folded (base ${held.base?.seq ?? 'none'})`)
  t.match(held.retention.warning, /TimeMarks came faster than --limit-mark-rate 3\/h: the 3marks rule keeps every point of the last 3600 s/, 'stats says why')
  t.equal(app.logs().filter((l) => l.code === 'MARK_RATE').length, 1, 'logged once')
  await json('journal', 'compact', '--appliance', app.address, '--volume', 'v')
  t.equal(app.logs().filter((l) => l.code === 'MARK_RATE').length, 1, 'and not again while it holds')
  const out = path.join(dir, 'mark.img')
  await restore(app.address, 'v', kept.id, out)
  t.equal(sha256(out), expected, 'the marked point restores byte-exact')
  const list = await json<Array<{ label: string }>>('timemark', 'list', '--appliance', app.address, '--volume', 'v')
  t.ok(list.some((m) => m.label === 'before-flood'), 'and is still listed')
  await app.stop()

  // Without the cap the same rule lets the flood push it out: the cap is what kept it.
  app = await startAppliance(t, { data, extra: [...rule, '--limit-mark-rate', 'off'] })
  await json('journal', 'compact', '--appliance', app.address, '--volume', 'v')
  const folded = await stats(app.address)
  t.ok((folded.base?.seq ?? 0) >= kept.id, `without the cap the flood's marks push it out (base seq ${folded.base?.seq})`)
  const gone = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--timemark', 'before-flood', '--out', path.join(dir, 'x.img')])
  t.not(gone.code, 0, 'and it no longer restores')
  fs.rmSync(path.join(dir, 'x.img'), { force: true })
})

t.test('records claiming to be weeks old are not aged out early by a window rule', async (t) => {
  await initHash()
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--retain', 'v=1h', '--compact-every', '0', '--segment-size', '1M', '--data-port', 'off'] })
  const client = new replicationProto.Replication(app.address, grpc.credentials.createInsecure())
  t.teardown(() => client.close())
  const s = new Stream(client)
  s.send({ hello: { protocol: PROTOCOL_VERSION, agentId: 'liar', volume: 'v', generation: 'g1', size: 4 * MiB, group: '', ackedSeq: 0 } })
  await s.next('welcome')
  // Each record says it was captured 20 days ago (the header's low 32 bits of capture ms).
  const forged = (Date.now() - 20 * 86_400_000) % 2 ** 32
  for (let seq = 1; seq <= 6; seq++) {
    const h = Buffer.alloc(32)
    h.writeBigUInt64LE(BigInt(seq), 0)
    h.writeBigUInt64LE(BigInt(((seq - 1) % 4) * 2048), 8)
    h.writeUInt32LE(1024, 16)
    h[20] = 1 // WRITE
    h.writeUInt32LE(512 * 1024, 24)
    h.writeUInt32LE(forged, 28)
    const raw = Buffer.concat([h, crypto.randomBytes(512 * 1024)])
    s.send({ batch: encodeBatch(raw, { firstSeq: seq, lastSeq: seq, recordCount: 1, appBytes: raw.length, changedBytes: raw.length }, false) })
    t.equal((await s.next('ack')).ack!.durableSeq, seq)
  }
  s.send({ progress: { regionsDone: 64, regionsTotal: 64, bytesPerSecond: 0 } })
  s.call.end()
  await s.ended
  await waitFor(() => initialCopyDone(app.address, 'v'), 'the initial copy to count as done')
  const at = new Date(Date.now() - 19 * 86_400_000).toISOString()
  const r = await json<{ seq: number }>('restore', '--appliance', app.address, '--volume', 'v', '--at', at, '--out', path.join(dir, 'x.img'))
  t.equal(r.seq, 6, 'the forged times are in the time index: "19 days ago" resolves to the newest point')
  await json('journal', 'compact', '--appliance', app.address, '--volume', 'v')
  t.equal((await stats(app.address)).base, null, 'yet the 1h window folds nothing the appliance committed within the hour')
})
