// Load with verification from fio's nbd engine, several jobs and connections
// at once; then a mixed workload whose captured records replay byte-exact.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { replayCaptureLog } from '../agent/capture-log'
import { makeImage, must, nbdUri, sha256, startAgent, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('fio randwrite with crc32c verify over 4 connections, then replay is byte-exact', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 64 * MiB, 5)
  fs.copyFileSync(img, path.join(dir, 'replay.img'))
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, captureLog: path.join(dir, 'cap') })
  const uri = nbdUri(sock, 'vol')
  const out = await must('fio', [
    '--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    '--numjobs=4', '--size=16M', '--offset_increment=16M', '--verify=crc32c', '--do_verify=1',
    '--verify_fatal=1', '--group_reporting', '--output-format=json',
  ], { cwd: dir })
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0]
  t.equal(job.error, 0, 'fio reports no error (verification passed)')
  t.ok(job.write.total_ios >= 16384, `fio wrote ${job.write.total_ios} blocks`)
  // A mixed tail: unaligned writes, trims, zeroes, a FUA write.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 12345 77777', '-c', 'discard 8M 1M', '-c', 'write -z 20M 3M',
    '-c', 'write -f -P 0x33 40M 4k', '-c', 'write -z 33000 1000', '-c', 'flush', uri])
  await agent.stop()
  const stats = agent.logs().find((l) => l.msg === 'final stats')!
  t.equal(stats.droppedRecords, 0, 'nothing was dropped with a draining consumer')
  t.ok((stats.connections as number) === 0, 'all connections closed')
  await replayCaptureLog(path.join(dir, 'cap', 'vol.tmcap'), path.join(dir, 'replay.img'))
  t.equal(sha256(path.join(dir, 'replay.img')), sha256(img), 'replay of the captured records equals the backing file')
})
