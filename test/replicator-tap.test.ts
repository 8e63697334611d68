// The tap features the replicator builds on: resyncFrom (the initial copy
// through the resync machinery) and writes split into records a batch can hold.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { Tap } from '../agent/tap'
import { RecordKind, SECTOR_SIZE, type RecordBatch } from '../native/record-batch'
import { makeImage, must, nbdUri, sha256, sleep, tmpdir } from './helpers'

const MiB = 1024 * 1024

function apply(fd: number, b: RecordBatch, seen: { resync: Set<number>; writes: Array<[number, number]> }): void {
  b.forEach((r) => {
    if (r.kind === RecordKind.Write || r.kind === RecordKind.Resync) fs.writeSync(fd, r.data(), 0, r.dataLength, r.sector * SECTOR_SIZE)
    else if (r.kind === RecordKind.Trim || r.kind === RecordKind.Zero) fs.writeSync(fd, Buffer.alloc(r.count * SECTOR_SIZE), 0, r.count * SECTOR_SIZE, r.sector * SECTOR_SIZE)
    if (r.kind === RecordKind.Resync) seen.resync.add(r.sector / 128)
    if (r.kind === RecordKind.Write) seen.writes.push([r.seq, r.count])
  })
}

t.test('resyncFrom copies every region from R on as RESYNC records; replay in seq order is exact while writes go on', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 16 * MiB, 9)
  const replica = path.join(dir, 'replica.img')
  // The replica already holds regions 0..63 (the first 4 MiB), zeroes after.
  makeImage(replica, 16 * MiB, null)
  fs.writeFileSync(replica, fs.readFileSync(img).subarray(0, 4 * MiB), { flag: 'r+' })
  const sock = path.join(dir, 'nbd.sock')
  const tap = Tap.open({ stateDir: path.join(dir, 'state'), volumes: [{ name: 'vol', path: img }], unix: sock })
  t.teardown(() => tap.close())
  const fd = fs.openSync(replica, 'r+')
  t.teardown(() => fs.closeSync(fd))
  t.equal(tap.resyncFrom('vol', 64), 192, '192 regions are marked')
  t.throws(() => tap.resyncFrom('vol', 257), { code: 'TAP_INVALID_ARGUMENT' }, 'a region past the end is refused')
  for (const end = Date.now() + 30_000; tap.stats()[0].resyncRecords === 0 && Date.now() < end; ) await sleep(10)
  t.ok(tap.stats()[0].resyncRecords > 0, 'a normal volume starts copying at once, before any pull')

  const seen = { resync: new Set<number>(), writes: [] as Array<[number, number]> }
  // The application writes while the copy runs (also into regions not copied yet).
  const writer = must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 5M 3M', '-c', 'write -P 0x62 100k 8k', '-c', 'write -P 0x63 15M 64k', '-c', 'flush', nbdUri(sock, 'vol')])
  let done = false
  writer.then(() => (done = true))
  // until the volume is normal and drained (an upper bound only: a busy machine may pause for seconds)
  for (const end = Date.now() + 120_000; Date.now() < end; ) {
    const b = tap.next('vol')
    if (!b) {
      const s = tap.stats()[0]
      if (done && s.mode === 'normal' && s.ringRecords === 0) break
      await sleep(10)
      continue
    }
    apply(fd, b, seen)
    tap.ack('vol', b.lastSeq)
  }
  await writer
  t.equal(seen.resync.size, 192, 'every region from 64 on came back as a RESYNC record')
  t.notOk([...seen.resync].some((g) => g < 64), 'no region below 64 was copied')
  t.equal(tap.stats()[0].staleRegions, 0, 'nothing is stale afterwards')
  t.equal(sha256(replica), sha256(img), 'the replica equals the volume')
  const big = seen.writes.filter(([, count]) => count === 2048)
  t.equal(big.length, 3, 'the 3 MiB write became three 1 MiB records')
  t.ok(seen.writes.every(([, count]) => count <= 2048), 'no record holds more than 1 MiB')
  const seqs = seen.writes.map(([s]) => s)
  t.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'each piece has its own seq, in order')
})
