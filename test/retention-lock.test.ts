// The retention lock (appliance/retention-lock.ts) through real processes: a
// rule that would fold history does fold it without a lock; under the lock
// the history younger than it stays, whatever an admin's `journal compact`
// asks; the lock survives a restart without the flag and refuses to shorten.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makeImage, must, nbdUri, restore, run, sha256, startAgent, startAppliance, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024

interface Stats {
  volumes: Array<{ durableSeq: number; base: { seq: number } | null; fullSyncDone: boolean }>
}

async function stats(address: string): Promise<Stats['volumes'][0]> {
  const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'v', '--json'])
  if (r.code !== 0) throw new Error(`stats: ${r.stderr}`)
  return (JSON.parse(r.stdout) as Stats).volumes[0]
}

async function compact(address: string): Promise<void> {
  await must(process.execPath, [BIN, 'journal', 'compact', '--appliance', address, '--volume', 'v', '--json'])
}

/** Waits until the clock has moved `ms` past the volume's newest record, so a `ms`-old rule lets go of all of it. */
async function ageBy(ms: number): Promise<void> {
  const until = Date.now() + ms
  await waitFor(() => Date.now() > until, `${ms} ms to pass`, ms + 5000, 20)
}

t.test('a retention lock keeps history no rule, cap or admin may fold, and only grows', { skip: !have('qemu-io') && 'qemu-io is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const data = path.join(dir, 'data')
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 21)
  const rule = ['--retain', 'v=1s', '--compact-every', '0', '--segment-size', '1M']
  let app = await startAppliance(t, { data, extra: rule })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address] })
  await app.waitForLog(/initial copy complete/, 60_000)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 256k', '-c', 'flush', nbdUri(sock, 'v')])
  await waitFor(async () => (await stats(app.address)).durableSeq > 0, 'the write to be durable')
  t.equal(await agent.stop(), 0, 'the agent drained and stopped')
  const first = await stats(app.address)

  // Without a lock the 1 s rule folds everything older than a second.
  await ageBy(1100)
  await compact(app.address)
  const folded = await stats(app.address)
  t.ok((folded.base?.seq ?? 0) > 0, `without a lock, the rule folds history into the base image (up to seq ${folded.base?.seq} of ${first.durableSeq})`)
  await app.stop()

  // New history under a 1 h lock: the same rule and an explicit compact fold nothing of it.
  app = await startAppliance(t, { data, extra: [...rule, '--retain-lock', '1h'] })
  t.ok(app.logs().some((l) => /retention lock: no point younger than 1h is given up/.test(String(l.msg))), 'the appliance says so at start')
  t.equal(JSON.parse(fs.readFileSync(path.join(data, 'retain-lock.json'), 'utf8')).text, '1h', 'the lock is kept in the data directory')
  const again = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 1M 256k', '-c', 'flush', nbdUri(sock, 'v')])
  await waitFor(async () => (await stats(app.address)).durableSeq > first.durableSeq, 'the second write to be durable')
  t.equal(await again.stop(), 0)
  const second = await stats(app.address)
  await ageBy(1100)
  await compact(app.address)
  t.equal((await stats(app.address)).base?.seq, folded.base?.seq, 'under the lock, nothing younger than it is folded, though the rule and the admin ask')
  const out = path.join(dir, 'latest.img')
  await restore(app.address, 'v', second.durableSeq, out)
  t.equal(sha256(out), sha256(img), 'the locked history restores byte-exact')
  await app.stop()

  // It never shortens, and a start without the flag keeps it.
  const shorter = await run(process.execPath, [BIN, 'appliance', '--data', data, '--listen', '127.0.0.1:0', '--retain-lock', '30m'])
  t.equal(shorter.code, 2, 'a shorter lock is refused at start')
  t.match(shorter.stderr, /--retain-lock 30m is shorter than the lock .* holds \(1h, since .*\): a retention lock never shortens/)
  t.equal(shorter.stderr.trim().split('\n').length, 1, 'in one line')
  app = await startAppliance(t, { data, extra: rule })
  t.ok(app.logs().some((l) => /retention lock: no point younger than 1h/.test(String(l.msg))), 'without the flag, the lock the data directory holds applies')
  await compact(app.address)
  t.equal((await stats(app.address)).base?.seq, folded.base?.seq, 'and still nothing is folded')
})
