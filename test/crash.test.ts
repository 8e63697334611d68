// kill -9 of the agent in the middle of fio: the persistent dirty map names
// every region where the volume and the acknowledged records disagree, and
// the restarted agent resyncs exactly those regions until the records replay
// to the volume byte-exact.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { replayCaptureLog } from '../agent/capture-log'
import { differingSectors, eventually, killAndWait, makeImage, nbdUri, readDirtyMapFile, sha256, startAgent, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('kill -9 during fio: the dirty map covers every unacknowledged change; restart converges without a reseed', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  const size = 256 * MiB
  makeImage(img, size, 9)
  fs.copyFileSync(img, path.join(dir, 'initial.img'))
  const sock = path.join(dir, 'nbd.sock')
  const state = path.join(dir, 'state')
  const cap = path.join(dir, 'cap')
  // fio churns a 32 MiB window of the 256 MiB volume, as an application's hot set would.
  const agent = await startAgent(t, { state, sock, volumes: { vol: img }, captureLog: cap })
  const fio = spawn('fio', ['--name=load', '--thread', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randwrite', '--bs=4k',
    '--iodepth=16', '--numjobs=2', '--offset=64M', '--size=32M', '--time_based', '--runtime=120'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let fioOut = ''
  fio.stdout!.on('data', (d) => (fioOut += d))
  fio.stderr!.on('data', (d) => (fioOut += d))
  t.teardown(() => killAndWait(fio))
  // Kill the agent in the middle of the load: once fio has written 8 MiB that
  // the agent captured (the capture log holds what it acknowledged), however
  // long that takes on a busy machine.
  const capFile = path.join(cap, 'vol.tmcap')
  const captured = await eventually(() => fio.exitCode !== null || (fs.existsSync(capFile) && fs.statSync(capFile).size >= 8 * MiB), 120_000)
  t.ok(captured && fio.exitCode === null, `fio was still writing when the agent was killed (${fs.existsSync(capFile) ? fs.statSync(capFile).size : 0} bytes captured)`, { fio: fioOut })
  const fioBefore = fioOut
  t.notMatch(fioBefore, /fio: pid=\d+, err=|error/i, 'fio reported no error before the crash', { fio: fioBefore })
  await agent.kill9()
  // fio's nbd engine does not always give up on a server that died: stop it
  // (--thread keeps its jobs in this one process, so SIGKILL ends them all).
  // (What it says after the crash is the crash: connection reset.)
  await killAndWait(fio)

  // What the map names right after the crash, and what the log lacks.
  const map = readDirtyMapFile(path.join(state, 'vol.dirty'))
  const partial = path.join(dir, 'partial.img')
  fs.copyFileSync(path.join(dir, 'initial.img'), partial)
  await replayCaptureLog(path.join(cap, 'vol.tmcap'), partial)
  const diff = differingSectors(partial, img)
  const written = differingSectors(path.join(dir, 'initial.img'), img)
  t.ok(written.length >= 1024, `fio changed the volume (${written.length} sectors differ from the initial image)`)
  t.ok(written.every((s) => s * 512 >= 64 * MiB && s * 512 < 96 * MiB), 'only within the 32 MiB fio was given')
  t.comment(`${diff.length} sectors differ between the volume and the acknowledged records; the map names ${map.regions.size} regions`)
  const uncovered = diff.filter((s) => !map.regions.has(Math.floor((s * 512) / map.regionSize)))
  t.same(uncovered.slice(0, 10), [], 'every differing sector lies in a region the dirty map names')
  t.ok(map.regions.size * map.regionSize <= 32 * MiB, `the map names ${map.regions.size} regions, within the 32 MiB fio touched`)

  // Restart: the dirty regions are resynced, nothing else.
  const again = await startAgent(t, { state, sock, volumes: { vol: img }, captureLog: cap })
  await again.waitForLog(/resync complete|serving/)
  await eventually(
    () => readDirtyMapFile(path.join(state, 'vol.dirty')).regions.size === 0 && again.logs().some((l) => /resync complete/.test(String(l.msg))),
    60_000
  )
  await again.stop()
  const stats = again.logs().find((l) => l.msg === 'final stats')!
  t.equal(stats.dirtyRegions, 0, 'every resynced region was acknowledged')
  t.ok((stats.resyncRecords as number) <= map.regions.size, `resent ${stats.resyncRecords} regions, at most the ${map.regions.size} the map named`)
  t.ok((stats.resyncRecords as number) * map.regionSize <= size / 8, 'at most an eighth of a full reseed')
  const full = path.join(dir, 'initial.img')
  await replayCaptureLog(path.join(cap, 'vol.tmcap'), full)
  t.equal(sha256(full), sha256(img), 'after the resync the records replay to the volume byte-exact')
})
