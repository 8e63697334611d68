// Replication through real processes: `tidemark agent --appliance` and
// `tidemark appliance` started as the CLI starts them, real NBD clients
// writing, `tidemark restore` bringing the image back. Every test ends with
// a byte-exact comparison against the protected volume.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import {
  BIN,
  killAndWait,
  makeImage,
  must,
  nbdUri,
  readDirtyMapFile,
  restore,
  run,
  sha256,
  sleep,
  startAgent,
  startAppliance,
  tmpdir,
  waitFor,
  type ApplianceProcess,
} from './helpers'

const MiB = 1024 * 1024

async function volumeStats(app: ApplianceProcess, volume: string): Promise<Record<string, number | boolean | string>> {
  const r = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--volume', volume, '--json'])
  if (r.code !== 0) throw new Error(`stats failed: ${r.stderr}`)
  return JSON.parse(r.stdout).volumes[0]
}

async function restoredEquals(t: Test, app: ApplianceProcess, volume: string, img: string, dir: string, what: string): Promise<void> {
  const out = path.join(dir, `${volume}.restored`)
  await restore(app.address, volume, 'latest', out)
  t.equal(sha256(out), sha256(img), what)
  fs.rmSync(out)
}

t.test('fio with verify and a mixed tail, replicated: restore --seq latest is byte-exact', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 64 * MiB, 3)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address] })
  const uri = nbdUri(sock, 'vol')
  const out = await must('fio', [
    '--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    '--numjobs=4', '--size=8M', '--offset_increment=16M', '--verify=crc32c', '--do_verify=1',
    '--verify_fatal=1', '--group_reporting', '--output-format=json',
  ], { cwd: dir })
  t.equal(JSON.parse(out.slice(out.indexOf('{'))).jobs[0].error, 0, 'fio verification passed while replicating')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 12345 77777', '-c', 'discard 8M 1M', '-c', 'write -z 20M 3M',
    '-c', 'write -f -P 0x33 40M 4k', '-c', 'write -z 33000 1000', '-c', 'flush', uri])
  await app.waitForLog(/initial copy complete/)
  t.equal(await agent.stop(), 0, 'the agent stops cleanly after draining to the appliance')
  await restoredEquals(t, app, 'vol', img, dir, 'the restored image equals the protected volume')
  const s = await volumeStats(app, 'vol')
  t.equal(s.fullSyncDone, true, 'the initial copy is complete')
  t.ok((s.wireBytes as number) > 0 && (s.wireBytes as number) < (s.changedBytes as number) + 64 * MiB, `wire bytes counted (${s.wireBytes})`)
  const v = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'vol'])
  t.equal(v.code, 0, `journal verify: ${v.stdout.trim()}`)
})

t.test('kill -9 of the agent mid-stream: converges byte-exact, resending only what the dirty map names', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  const size = 128 * MiB
  makeImage(img, size, 11)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const state = path.join(dir, 'state')
  const args = { state, sock, volumes: { vol: img }, extra: ['--appliance', app.address] }
  const agent = await startAgent(t, args)
  await app.waitForLog(/initial copy complete/, 120_000)
  const copied = await volumeStats(app, 'vol')
  const fio = spawn('fio', ['--name=load', '--thread', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randwrite', '--bs=4k',
    '--iodepth=16', '--numjobs=2', '--offset=32M', '--size=8M', '--time_based', '--runtime=120'], { stdio: 'ignore', cwd: dir })
  t.teardown(() => killAndWait(fio))
  // Mid-stream: once fio's writes are reaching the appliance, however long that takes.
  await waitFor(async () => fio.exitCode !== null || ((await volumeStats(app, 'vol')).changedBytes as number) >= (copied.changedBytes as number) + 2 * MiB,
    'fio\'s writes reaching the appliance', 120_000, 100)
  t.equal(fio.exitCode, null, 'fio was still writing when the agent was killed')
  await agent.kill9()
  // fio's nbd engine does not always give up on a server that died: stop it
  // (--thread keeps its jobs in this one process, so SIGKILL ends them all).
  await killAndWait(fio)
  const map = readDirtyMapFile(path.join(state, 'vol.dirty'))
  const before = await volumeStats(app, 'vol')
  t.ok(map.regions.size > 0, `the dirty map names ${map.regions.size} regions after the crash`)

  const again = await startAgent(t, args)
  t.equal(await again.stop(), 0, 'the restarted agent resyncs and stops cleanly')
  const after = await volumeStats(app, 'vol')
  const resent = (after.changedBytes as number) - (before.changedBytes as number)
  t.ok(resent <= map.regions.size * map.regionSize, `resent ${resent} bytes, within the ${map.regions.size} dirty regions`)
  t.ok(resent < size / 8, 'far from a full reseed')
  await restoredEquals(t, app, 'vol', img, dir, 'byte-exact after the crash and resync')
})

t.test('kill -9 of the appliance mid-stream: the agent reconnects, the replica converges', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 64 * MiB, 5)
  const data = path.join(dir, 'data')
  const app = await startAppliance(t, { data })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address] })
  await app.waitForLog(/initial copy complete/, 120_000)
  const copied = await volumeStats(app, 'vol')
  const fio = spawn('fio', ['--name=load', '--thread', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randwrite', '--bs=16k',
    '--iodepth=8', '--numjobs=1', '--size=32M', '--time_based', '--runtime=10', '--output-format=json'], { stdio: ['ignore', 'pipe', 'ignore'], cwd: dir })
  let fioOut = ''
  fio.stdout!.on('data', (d) => (fioOut += d))
  const fioDone = new Promise<number | null>((r) => fio.once('exit', r))
  t.teardown(() => killAndWait(fio))
  // Mid-stream: once fio's writes are reaching the appliance.
  await waitFor(async () => fio.exitCode !== null || ((await volumeStats(app, 'vol')).changedBytes as number) >= (copied.changedBytes as number) + 2 * MiB,
    'fio\'s writes reaching the appliance', 120_000, 100)
  t.equal(fio.exitCode, null, 'fio was still writing when the appliance was killed')
  await app.kill9()
  // Away until the agent has noticed and fio has written since: the application did not wait.
  await agent.waitForLog(/replication stream to .* failed/, 60_000)
  const noticed = Date.now()
  await waitFor(() => fio.exitCode !== null || fs.statSync(img).mtimeMs > noticed, 'a write while the appliance is away', 60_000, 20)
  const app2 = await startAppliance(t, { data, port: app.port })
  t.equal(await fioDone, 0, 'fio ran to the end: the application never waited on the appliance')
  t.ok(JSON.parse(fioOut.slice(fioOut.indexOf('{'))).jobs[0].write.total_ios > 0, 'fio kept writing')
  t.equal(await agent.stop(), 0, 'the agent drains to the restarted appliance and stops cleanly')
  await restoredEquals(t, app2, 'vol', img, dir, 'byte-exact after the appliance was killed')
  const v = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app2.address])
  t.equal(v.code, 0, `journal verify after recovery: ${v.stdout.trim()}`)
})

t.test('a cut link: the tap goes behind; on return the checksum resync sends only differing sectors', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 64 * MiB, 7)
  const data = path.join(dir, 'data')
  const app = await startAppliance(t, { data })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock, volumes: { vol: img },
    extra: ['--appliance', app.address, '--buffer', '1M', '--memory', '1M'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')
  // 8 MiB written and replicated; after the cut the same bytes are written
  // again (dirty, but not different), and 1 MiB really changes.
  const before = await volumeStats(app, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xaa 16M 8M', '-c', 'flush', uri])
  for (let i = 0; ; i++) {
    const s = await volumeStats(app, 'vol')
    if ((s.changedBytes as number) - (before.changedBytes as number) >= 8 * MiB) break
    if (i > 200) throw new Error('the 8 MiB write did not reach the appliance')
    await sleep(100)
  }
  const mid = await volumeStats(app, 'vol')
  await app.stop()
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xaa 16M 8M', '-c', 'write -P 0xcd 40M 1M', '-c', 'flush', uri])
  const behind = await agent.waitForLog(/is behind/, 30_000)
  t.ok(behind, 'the tap fell behind while the appliance was away')

  const app2 = await startAppliance(t, { data, port: app.port })
  t.equal(await agent.stop(), 0, 'the agent resyncs and stops cleanly')
  const after = await volumeStats(app2, 'vol')
  const sent = (after.changedBytes as number) - (mid.changedBytes as number)
  t.ok(sent >= 1 * MiB, `the changed megabyte was sent (${sent} bytes)`)
  t.ok(sent <= 1 * MiB + 256 * 1024, `little beyond it: unchanged sectors stayed home (${sent} bytes)`)
  await restoredEquals(t, app2, 'vol', img, dir, 'byte-exact after the link came back')
})

t.test('8 volumes from 4 agents into one appliance, all byte-exact', async (t) => {
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agents = []
  const imgs: Record<string, string> = {}
  for (let a = 0; a < 4; a++) {
    const vols: Record<string, string> = {}
    for (let v = 0; v < 2; v++) {
      const name = `a${a}v${v}`
      const img = path.join(dir, `${name}.img`)
      makeImage(img, 16 * MiB, a * 2 + v + 1)
      vols[name] = img
      imgs[name] = img
    }
    const sock = path.join(dir, `a${a}.sock`)
    agents.push({
      sock,
      vols,
      proc: await startAgent(t, { state: path.join(dir, `state${a}`), sock, volumes: vols, extra: ['--appliance', app.address, '--agent-id', `agent-${a}`] }),
    })
  }
  await Promise.all(
    agents.flatMap((a) =>
      Object.keys(a.vols).map((name, i) =>
        must('qemu-io', ['-f', 'raw', '-c', `write -P 0x${(0x10 + i).toString(16)} ${i}M 3M`, '-c', 'write -z 9M 1M', '-c', 'flush', nbdUri(a.sock, name)])
      )
    )
  )
  for (const a of agents) t.equal(await a.proc.stop(), 0, 'agent stops cleanly')
  for (const [name, img] of Object.entries(imgs)) await restoredEquals(t, app, name, img, dir, `${name} byte-exact`)
})
