// The write path at high churn (issue 10): fio writing as fast as it can
// through the tap, with --verify, into a volume whose record ring is far
// smaller than the burst, so the tap falls behind, keeps only its dirty map
// and resyncs while the application goes on writing; and into the default
// ring faster than the link drains it, so writes wait for room instead. Whatever the rate, the
// application's reads verify, the replica converges byte-exact, and a kill -9
// of either side in the middle of a burst costs a resync, never a byte.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import t, { type Test } from 'tap'
import { BIN, killAndWait, must, protectedVolume, restore, run, sha256, startAgent, startAppliance, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024

async function changedBytes(address: string): Promise<number> {
  const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])
  if (r.code !== 0) throw new Error(`stats failed: ${r.stderr}`)
  return Number(JSON.parse(r.stdout).volumes[0].changedBytes)
}

/** The restored newest point equals the volume, and the journal verifies. */
async function converged(t: Test, address: string, img: string, dir: string, what: string): Promise<void> {
  const restored = path.join(dir, 'restored.img')
  await restore(address, 'vol', 'latest', restored)
  t.equal(sha256(restored), sha256(img), what)
  const v = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', address, '--volume', 'vol'])
  t.equal(v.code, 0, `journal verify: ${v.stdout.trim()}`)
}

/**
 * fio writing 1 MiB blocks as fast as it can for `seconds`, stopped at
 * teardown; resolves once 32 MiB of it has reached the appliance (the middle
 * of the burst, however long that takes on a busy machine).
 */
async function midBurst(t: Test, uri: string, dir: string, address: string, seconds: number): Promise<{ fio: ChildProcess; done: Promise<number | null> }> {
  const before = await changedBytes(address)
  const fio = spawn('fio', ['--name=burst', '--thread', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=4',
    '--size=120M', '--refill_buffers', '--time_based', `--runtime=${seconds}`], { stdio: 'ignore', cwd: dir })
  const done = new Promise<number | null>((r) => fio.once('exit', r))
  t.teardown(() => killAndWait(fio))
  await waitFor(async () => fio.exitCode !== null || (await changedBytes(address)) >= before + 32 * MiB, 'the burst reaching the appliance', 120_000, 100)
  return { fio, done }
}

t.test('fio unthrottled with --verify through a 1 MiB ring: the tap goes behind and resyncs, and the replica is byte-exact', async (t) => {
  const dir = tmpdir(t)
  // A 1 MiB ring: one 1 MiB write fills it, so every burst overflows it.
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 128 * MiB, seed: 21, agentExtra: ['--buffer', '1M'] })
  const out = await must('fio', [
    '--ioengine=nbd', `--uri=${uri}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--refill_buffers', '--group_reporting', '--output-format=json',
    '--name=seq', '--rw=write', '--bs=1M', '--iodepth=4', '--size=96M',
    '--name=rand', '--rw=randwrite', '--bs=4k', '--iodepth=16', '--offset=100M', '--size=16M',
  ], { cwd: dir, timeoutMs: 600_000 })
  t.equal(JSON.parse(out.slice(out.indexOf('{'))).jobs[0].error, 0, 'fio verified every block it wrote while the tap went behind')
  t.equal(await agent.stop(), 0, 'the agent drains to the appliance and stops cleanly')
  const fin = agent.logs().find((l) => l.msg === 'final stats' && l.volume === 'vol')
  t.ok(Number(fin?.behindEvents) > 0, `the tap went behind (${fin?.behindEvents} times, ${fin?.droppedRecords} records dropped) and resynced`)
  await converged(t, app.address, img, dir, 'the restored point equals the volume')
})

t.test('a burst faster than the link through the default 64 MiB ring: writes wait for room, the tap never goes behind, and the replica is byte-exact', async (t) => {
  const dir = tmpdir(t)
  // 40 MB/s on the wire and 8 MiB in flight: fio's 160 MiB cannot all be held, so the ring fills and writes wait.
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 192 * MiB, seed: 24, agentExtra: ['--throttle', '40', '--memory', '8M'] })
  const out = await must('fio', [
    '--ioengine=nbd', `--uri=${uri}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--refill_buffers', '--output-format=json',
    '--name=seq', '--rw=write', '--bs=1M', '--iodepth=4', '--size=160M',
  ], { cwd: dir, timeoutMs: 600_000 })
  t.equal(JSON.parse(out.slice(out.indexOf('{'))).jobs[0].error, 0, 'fio verified every block it wrote')
  t.equal(await agent.stop(), 0, 'the agent drains to the appliance and stops cleanly')
  const fin = agent.logs().find((l) => l.msg === 'final stats' && l.volume === 'vol')
  t.equal(Number(fin?.behindEvents), 0, 'the tap never went behind')
  t.equal(Number(fin?.droppedRecords), 0, 'no record was dropped')
  t.ok(Number(fin?.congestionWaits) > 0 && Number(fin?.congestionWaitMs) > 0,
    `writes waited for room instead (${fin?.congestionWaits} writes, ${fin?.congestionWaitMs} ms in all)`)
  await converged(t, app.address, img, dir, 'the restored point equals the volume')
})

t.test('kill -9 of the agent in the middle of an unthrottled burst: the restarted agent resyncs and the replica is byte-exact', async (t) => {
  const dir = tmpdir(t)
  const { img, app, agent, uri, agentArgs } = await protectedVolume(t, dir, { size: 128 * MiB, seed: 22 })
  const { fio } = await midBurst(t, uri, dir, app.address, 120)
  t.equal(fio.exitCode, null, 'fio was still writing when the agent was killed')
  await agent.kill9()
  await killAndWait(fio)
  const again = await startAgent(t, agentArgs)
  t.equal(await again.stop(), 0, 'the restarted agent resyncs what its dirty map names and stops cleanly')
  await converged(t, app.address, img, dir, 'byte-exact after the crash in the middle of the burst')
})

t.test('kill -9 of the appliance in the middle of an unthrottled burst: the agent reconnects and the replica converges byte-exact', async (t) => {
  const dir = tmpdir(t)
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 128 * MiB, seed: 23 })
  const { fio, done } = await midBurst(t, uri, dir, app.address, 15)
  t.equal(fio.exitCode, null, 'fio was still writing when the appliance was killed')
  await app.kill9()
  await agent.waitForLog(/replication stream to .* failed/, 60_000)
  const app2 = await startAppliance(t, { data: path.join(dir, 'data'), port: app.port })
  t.equal(await done, 0, 'fio ran to the end: the application never waited on the appliance')
  t.equal(await agent.stop(), 0, 'the agent drains to the restarted appliance and stops cleanly')
  await converged(t, app2.address, img, dir, 'byte-exact after the appliance was killed in the middle of the burst')
})
