// The first protection of a 1 GiB volume while fio keeps writing to it: the
// agent copies the whole volume (skipping all-zero sectors), is killed with
// SIGKILL half way, resumes where it stopped, and the replica ends byte-exact.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, nbdUri, restore, run, sha256, sleep, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024
const SIZE = 1024 * MiB
const STRIPE = 64 * MiB

/** 1 GiB: random bytes in every other 64 MiB stripe, zeroes (a hole) in the rest. */
function makeStriped(file: string): number {
  const fd = fs.openSync(file, 'w')
  fs.ftruncateSync(fd, SIZE)
  const chunk = Buffer.alloc(MiB)
  let x = 12345
  let data = 0
  for (let off = 0; off < SIZE; off += MiB) {
    if (Math.floor(off / STRIPE) % 2 === 1) continue
    for (let i = 0; i < chunk.length; i += 4) {
      x ^= x << 13
      x ^= x >>> 17
      x ^= x << 5
      chunk.writeUInt32LE(x >>> 0, i)
    }
    fs.writeSync(fd, chunk, 0, chunk.length, off)
    data += chunk.length
  }
  fs.closeSync(fd)
  return data
}

function fio(sock: string, dir: string, seconds: number) {
  // The application's hot set: the last 64 MiB (a zero stripe when the copy starts).
  const p = spawn('fio', ['--name=app', '--thread', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randwrite', '--bs=4k',
    '--iodepth=4', '--offset=960M', '--size=64M', '--rate=8m', '--time_based', `--runtime=${seconds}`], { stdio: 'ignore', cwd: dir })
  return { proc: p, done: new Promise<number | null>((r) => p.once('exit', r)) }
}

t.test('initial copy of 1 GiB under fio, killed at half way, resumes and ends byte-exact', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  const data = makeStriped(img)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const state = path.join(dir, 'state')
  const syncFile = path.join(state, 'vol.sync')
  // Throttled so that "half way" is a moment a test can catch.
  const first = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--throttle', '40', '--stats-interval', '1'] })
  const load1 = fio(sock, dir, 60)
  t.teardown(async () => {
    load1.proc.kill('SIGKILL')
    await load1.done
  })
  // Half way: the agent's progress (regions done, logged every second) or the
  // saved position (the lowest region not yet durable, which can lag behind).
  let next = 0
  let percent = 0
  for (let i = 0; next < 8192 && percent < 50; i++) {
    if (i > 1200) throw new Error(`the copy did not reach half way in 60 s (region ${next}):\n${first.out}`)
    await sleep(50)
    try {
      next = JSON.parse(fs.readFileSync(syncFile, 'utf8')).nextRegion
    } catch {
      next = 0
    }
    percent = first.logs().filter((l) => l.msg === 'stats' && l.syncProgress).map((l) => (l.syncProgress as { percent: number }).percent).pop() ?? 0
  }
  await first.kill9()
  // fio's nbd engine does not always give up on a server that died: stop it
  // (--thread keeps its jobs in this one process, so SIGKILL ends them all).
  load1.proc.kill('SIGKILL')
  await load1.done
  // Progress (percent, MB/s, time left) is in every stats line while a copy runs.
  const progress = first.logs().filter((l) => l.msg === 'stats' && l.syncProgress)
  t.ok(progress.length > 0, `progress is logged (${JSON.stringify(progress.pop()?.syncProgress)})`)
  const saved = JSON.parse(fs.readFileSync(syncFile, 'utf8'))
  t.ok(saved.nextRegion > 0 && saved.nextRegion < 16384, `killed part way: the saved position is region ${saved.nextRegion} of 16384`)
  const s1 = JSON.parse((await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json'])).stdout).volumes[0]

  const second = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', app.address] })
  const resumed = await second.waitForLog(/initial copy: resuming/)
  t.ok((resumed.fromRegion as number) >= saved.nextRegion - 64, `resumed at region ${resumed.fromRegion}, not at zero`)
  const load2 = fio(sock, dir, 4)
  t.teardown(async () => {
    load2.proc.kill('SIGKILL')
    await load2.done
  })
  await app.waitForLog(/initial copy complete/, 180_000)
  t.equal(await load2.done, 0, 'fio ran to the end during the copy')
  t.equal(await second.stop(), 0, 'the agent stops cleanly')
  const s2 = JSON.parse((await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json'])).stdout).volumes[0]
  const secondRun = s2.changedBytes - s1.changedBytes
  t.ok(secondRun < (SIZE - (saved.nextRegion * 65536)) * 0.75 + 64 * MiB,
    `the second run sent ${(secondRun / MiB).toFixed(0)} MiB: the rest of the volume, not all of it`)
  t.ok(s2.changedBytes < data + 200 * MiB, `zero sectors were skipped: ${(s2.changedBytes / MiB).toFixed(0)} MiB sent for ${(data / MiB).toFixed(0)} MiB of data`)
  const out = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', 'latest', out)
  t.equal(sha256(out), sha256(img), 'the replica is byte-exact')
})
