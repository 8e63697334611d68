// README claim (Command line): the agent serves NBD on `tcp:HOST:PORT` as well
// as on a unix socket, and failback writes to an `nbd://HOST:PORT/NAME`
// target. Tested with real clients over TCP: nbdinfo, qemu-io, nbdcopy, and
// `tidemark failback` through the agent's TCP listener.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, AgentProcess, differingSectors, makeImage, must, restore, sha256, startAppliance, tmpdir } from './helpers'
import { replicatedSeq, tidemarkJson } from './claims-helpers'

const MiB = 1024 * 1024

t.test('agent --nbd tcp: nbdinfo, qemu-io and nbdcopy over nbd://; failback to an nbd://HOST:PORT/NAME target', async (t) => {
  const dir = tmpdir(t)
  const size = 16 * MiB
  const img = path.join(dir, 'prod.img')
  makeImage(img, size, 17)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  // Port 0: the tap picks a free port and the agent logs it (no race for a port).
  const argv = [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', 'tcp:127.0.0.1:0', '--volume', `vol=${img}`,
    '--appliance', app.address, '--stats-interval', '0.2', '--log-level', 'debug'] // debug: a stats line every tick (replicatedSeq reads them)
  const agent = new AgentProcess(spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] }), '')
  t.teardown(() => agent.stop())
  const serving = await agent.waitForLog(/^serving$/)
  const m = /^tcp:127\.0\.0\.1:(\d+)$/.exec(String(serving.nbd))
  t.ok(m && Number(m[1]) > 0, `the agent serves on ${serving.nbd}`)
  const uri = `nbd://127.0.0.1:${m![1]}/vol`
  await app.waitForLog(/initial copy complete/, 120_000)

  const info = JSON.parse(await must('nbdinfo', ['--json', uri]))
  t.equal(info.exports[0]['export-name'], 'vol', 'nbdinfo sees the export over TCP')
  t.equal(info.exports[0]['export-size'], size, 'of the volume\'s size')
  t.equal(info.exports[0].can_multi_conn, true, 'advertising CAN_MULTI_CONN')
  t.match(await must('nbdinfo', ['--list', `nbd://127.0.0.1:${m![1]}`]), /export="vol"/, 'nbdinfo --list names it')

  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 2M 3M', '-c', 'write -z 8M 1M', '-c', 'write -P 0x3d 12345 6789', '-c', 'flush', uri])
  await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0x3c 2M 3M', '-c', 'read -P 0 8M 1M', uri])
  t.pass('qemu-io writes and reads back over nbd://')
  const copy = path.join(dir, 'copy.img')
  await must('nbdcopy', [uri, copy])
  t.equal(sha256(copy), sha256(img), 'nbdcopy over TCP reads the volume byte-exact')

  const seq = await replicatedSeq(agent, app, 'vol')
  const point = path.join(dir, 'point.img')
  await restore(app.address, 'vol', seq, point)
  t.equal(sha256(point), sha256(img), `the writes over TCP replicated (seq ${seq})`)

  // Diverge over TCP, then fail back through the same TCP listener.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 1M 1M', '-c', 'write -z 4M 64k', '-c', 'write -P 0x98 15M 4k', '-c', 'flush', uri])
  const differing = differingSectors(point, img).length
  t.ok(differing > 0, `production diverged in ${differing} sectors`)
  const r = await tidemarkJson<{ sectorsDiffering: number; bytesSent: number; flushed: boolean }>(
    ['failback', '--appliance', app.address, '--volume', 'vol', '--seq', String(seq), '--target', uri])
  t.equal(r.sectorsDiffering, differing, 'failback to nbd://HOST:PORT/NAME finds exactly the differing sectors')
  t.equal(r.bytesSent, differing * 512, 'and sends only them')
  t.equal(r.flushed, true, 'and flushes the target')
  t.equal(sha256(img), sha256(point), 'production equals the point again')

  await replicatedSeq(agent, app, 'vol')
  t.equal(await agent.stop(), 0, 'the agent drains and stops cleanly')
  const latest = path.join(dir, 'latest.img')
  await restore(app.address, 'vol', 'latest', latest)
  t.equal(sha256(latest), sha256(point), 'the failback over TCP was captured and replicated')
  fs.rmSync(latest)
})
