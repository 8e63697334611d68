// A consumer that stops draining pushes the tap behind: fio keeps going (the
// write path never waits on the consumer), held data is dropped, the dirty
// map keeps the regions. When the consumer drains again, the stale regions are
// resynced and the records replay to the volume byte-exact.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { RecordKind, SECTOR_SIZE } from '../native/record-batch'
import { Tap } from '../agent/tap'
import { makeImage, must, nbdUri, sha256, sleep, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('a stalled consumer makes the tap fall behind without stalling fio; draining resyncs byte-exact', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 64 * MiB, 21)
  const replay = path.join(dir, 'replay.img')
  fs.copyFileSync(img, replay)
  const sock = path.join(dir, 'nbd.sock')
  const tap = Tap.open({ stateDir: path.join(dir, 'state'), volumes: [{ name: 'vol', path: img }], unix: sock, bufferBytes: 1 * MiB })
  t.teardown(() => tap.close())

  // Nobody pulls: 32 MiB of writes against a 1 MiB buffer.
  const out = await must('fio', ['--name=fill', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randwrite', '--bs=4k',
    '--iodepth=16', '--numjobs=2', '--size=16M', '--offset_increment=32M', '--output-format=json'])
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0]
  t.equal(job.error, 0, 'fio completed without errors while nobody drained')
  let s = tap.stats()[0]
  t.equal(s.mode, 'behind', 'the volume is behind')
  t.ok(s.droppedRecords > 0, `held records were dropped (${s.droppedRecords})`)
  t.ok(s.ringUsed <= s.ringCapacity, 'the buffer never grew past its size')
  t.ok(s.staleRegions > 0, `${s.staleRegions} regions are stale`)
  t.ok(tap.dirtyRegions('vol').length > 0, 'the dirty map names them')

  // Drain: apply every record to the replay image, ack, until resync completes.
  const fd = fs.openSync(replay, 'r+')
  t.teardown(() => fs.closeSync(fd))
  let resync = 0
  // until the volume is normal and drained (an upper bound only: a busy machine may pause for seconds)
  for (const end = Date.now() + 120_000; Date.now() < end; ) {
    const b = tap.next('vol')
    if (!b) {
      s = tap.stats()[0]
      if (s.mode === 'normal' && s.ringRecords === 0) break
      await sleep(10)
      continue
    }
    b.forEach((r) => {
      if (r.kind === RecordKind.Write || r.kind === RecordKind.Resync) fs.writeSync(fd, r.data(), 0, r.dataLength, r.sector * SECTOR_SIZE)
      else if (r.kind === RecordKind.Trim || r.kind === RecordKind.Zero) fs.writeSync(fd, Buffer.alloc(r.count * SECTOR_SIZE), 0, r.count * SECTOR_SIZE, r.sector * SECTOR_SIZE)
      if (r.kind === RecordKind.Resync) resync++
    })
    tap.ack('vol', b.lastSeq)
  }
  s = tap.stats()[0]
  t.equal(s.mode, 'normal', 'the volume is normal again after the resync')
  t.ok(resync > 0, `${resync} regions came back as RESYNC records`)
  t.equal(s.dirtyRegions, 0, 'acknowledged resync clears the dirty map')
  t.same(tap.dirtyRegions('vol'), [], 'no dirty ranges remain')
  t.equal(sha256(replay), sha256(img), 'the drained records replay to the volume byte-exact')
})

t.test('mark() is a barrier: every acknowledged write is at or below it, every later one above', async (t) => {
  const dir = tmpdir(t)
  const a = path.join(dir, 'a.img')
  const b = path.join(dir, 'b.img')
  const c = path.join(dir, 'c.img')
  for (const f of [a, b, c]) makeImage(f, 4 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const tap = Tap.open({
    stateDir: path.join(dir, 'state'),
    unix: sock,
    volumes: [
      { name: 'data', path: a, group: 'db' },
      { name: 'log', path: b, group: 'db' },
      { name: 'solo', path: c },
    ],
  })
  t.teardown(() => tap.close())
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', nbdUri(sock, 'data')])
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 2 0 4k', nbdUri(sock, 'log')])
  const m = tap.markGroup('db')
  t.equal(tap.mark('data'), m, 'volumes of a group share one barrier')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 3 4k 4k', nbdUri(sock, 'log')])
  const before = [tap.next('data')!, tap.next('log')!]
  const seqs: number[] = []
  before.forEach((batch) => batch.forEach((r) => r.kind === RecordKind.Write && seqs.push(r.seq)))
  t.same(seqs.filter((x) => x <= m).length, 2, 'the two acknowledged writes are at or below the mark')
  t.same(seqs.filter((x) => x > m).length, 1, 'the later write is above it')
  t.equal(tap.mark('solo'), 0, 'a volume outside the group has its own seq space (no writes yet)')
  t.throws(() => tap.mark('nope'), { code: 'TAP_UNKNOWN_VOLUME' }, 'unknown volume is a clear error')
  t.throws(() => tap.markGroup('nope'), { code: 'TAP_UNKNOWN_GROUP' })
})
