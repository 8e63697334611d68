// The tap as real NBD clients see it: qemu-io, nbdinfo, nbdcopy.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { replayCaptureLog } from '../agent/capture-log'
import { makeImage, must, nbdUri, run, sha256, startAgent, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('qemu-io writes at aligned and unaligned offsets read back through the tap and in the file', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 16 * MiB, 7)
  fs.copyFileSync(img, path.join(dir, 'initial.img'))
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, captureLog: path.join(dir, 'cap') })
  const uri = nbdUri(sock, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0xcd 4097 3000', '-c', 'write -P 0x11 1048575 2', '-c', 'write -f -P 0x22 2M 8k', '-c', 'flush', uri])
  await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 0 4097', '-c', 'read -P 0xcd 4097 3000', '-c', 'read -P 0xab 7097 1000', '-c', 'read -P 0x11 1048575 2', '-c', 'read -P 0x22 2M 8k', uri])
  const file = fs.readFileSync(img)
  t.ok(file.subarray(0, 4097).every((b) => b === 0xab), 'aligned bytes in the backing file')
  t.ok(file.subarray(4097, 7097).every((b) => b === 0xcd), 'unaligned bytes in the backing file')
  t.ok(file.subarray(1048575, 1048577).every((b) => b === 0x11), 'bytes straddling a sector boundary')
  await agent.stop()
  const stats = agent.logs().find((l) => l.msg === 'final stats')!
  t.equal(stats.writes, 4, 'four writes captured')
  t.ok((stats.flushes as number) >= 1, 'the flush arrived as NBD FLUSH')
  t.equal(stats.dirtyRegions, 0, 'a clean stop drains and acknowledges everything: the dirty map is clean')
  const replay = path.join(dir, 'initial.img')
  await replayCaptureLog(path.join(dir, 'cap', 'vol.tmcap'), replay)
  t.equal(sha256(replay), sha256(img), 'replaying the captured records reproduces the volume')
})

t.test('TRIM and WRITE_ZEROES read back as zeroes', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 8 * MiB, 3)
  fs.copyFileSync(img, path.join(dir, 'initial.img'))
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, captureLog: path.join(dir, 'cap') })
  const uri = nbdUri(sock, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'discard 1M 256k', '-c', 'write -z 3M 100000', '-c', 'write -z 5000 3000', '-c', 'write -z -u 6M 64k', '-c', 'flush', uri])
  await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0 1M 256k', '-c', 'read -P 0 3M 100000', '-c', 'read -P 0 5000 3000', '-c', 'read -P 0 6M 64k', uri])
  const file = fs.readFileSync(img)
  t.ok(file.subarray(1 * MiB, 1 * MiB + 256 * 1024).every((b) => b === 0), 'trimmed range is zero in the file')
  t.ok(file.subarray(5000, 8000).every((b) => b === 0), 'unaligned zeroed range is zero in the file')
  t.not(file[4999], 0, 'the byte before an unaligned zero range is untouched')
  await agent.stop()
  const replay = path.join(dir, 'initial.img')
  const r = await replayCaptureLog(path.join(dir, 'cap', 'vol.tmcap'), replay)
  t.ok(r.records >= 4, 'trims and zeroes are records')
  t.equal(r.appliedBytes <= 2 * 512 * 4, true, 'zeroes travel as metadata, not data (only partial edge sectors carry bytes)')
  t.equal(sha256(replay), sha256(img), 'replay reproduces the volume')
})

t.test('nbdinfo lists every volume with its size; nbdcopy copies a volume out byte-exact', async (t) => {
  const dir = tmpdir(t)
  const a = path.join(dir, 'a.img')
  const b = path.join(dir, 'b.img')
  makeImage(a, 4 * MiB, 11)
  makeImage(b, 12 * MiB, 12)
  const sock = path.join(dir, 'nbd.sock')
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { alpha: a, beta: b } })
  const list = await must('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${sock}`])
  const exports = JSON.parse(list).exports as Array<{ 'export-name': string; 'export-size': number }>
  t.same(
    exports.map((e) => [e['export-name'], e['export-size']]).sort(),
    [
      ['alpha', 4 * MiB],
      ['beta', 12 * MiB],
    ],
    'both volumes with their sizes'
  )
  const out = path.join(dir, 'copy.img')
  await must('nbdcopy', [nbdUri(sock, 'beta'), out])
  t.equal(sha256(out), sha256(b), 'nbdcopy output equals the backing file')
  const missing = await run('nbdinfo', [nbdUri(sock, 'nope')])
  t.not(missing.code, 0, 'an unknown export is refused')
})
