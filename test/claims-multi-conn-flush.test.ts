// README claim (Attaching a volume): the server advertises CAN_MULTI_CONN — a
// FLUSH on any connection syncs the volume and its dirty map, so what one
// connection wrote is made durable by another connection's FLUSH.
//
// Tested with real clients and a real process: connection A (an interactive
// qemu-io kept open) writes and never flushes; connection B (another qemu-io)
// sends FLUSH. The agent runs under strace, so B's FLUSH is seen to fdatasync
// the backing file and msync the dirty map (a kill -9 alone cannot tell synced
// from cached pages: the page cache survives a process). The replica was in
// sync and its appliance is gone, so A's write sets a clear bit and nothing
// acknowledges it. Then the agent is killed with -9 while A is still
// connected: the backing file holds A's write, the dirty map on disk names its
// region, and once the appliance returns the restarted agent resyncs it
// byte-exact.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makeImage, must, nbdUri, readDirtyMapFile, restore, ServiceProcess, sha256, startAgent, startAppliance, tmpdir } from './helpers'
import { replicatedSeq, waitFor } from './claims-helpers'

const MiB = 1024 * 1024

t.test('CAN_MULTI_CONN: a FLUSH on connection B syncs what connection A wrote', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 16 * MiB, 29)
  const sock = path.join(dir, 'nbd.sock')
  const state = path.join(dir, 'state')
  const data = path.join(dir, 'data')
  // First a replica in sync (every dirty bit cleared), then the appliance goes:
  // nothing is acknowledged from here on, so the dirty map keeps every bit A sets.
  const app = await startAppliance(t, { data })
  const port = app.port
  const first = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--stats-interval', '0.2'] })
  await app.waitForLog(/initial copy complete/, 120_000)
  await replicatedSeq(first, app, 'vol')
  t.equal(await first.stop(), 0, 'the agent drains and stops')
  t.equal(await app.stop(), 0, 'the appliance stops')
  t.equal(readDirtyMapFile(path.join(state, 'vol.dirty')).regions.size, 0, 'the dirty map is clean')

  const trace = path.join(dir, 'strace.out')
  const proc = spawn('strace', ['-f', '-qq', '-y', '-e', 'trace=fdatasync,fsync,msync', '-o', trace,
    process.execPath, BIN, 'agent', '--state', state, '--nbd', `unix:${sock}`, '--volume', `vol=${img}`,
    '--appliance', `127.0.0.1:${port}`, '--stats-interval', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const agent = new ServiceProcess(proc)
  let agentPid = 0
  t.teardown(async () => {
    // strace killed with -9 would leave its tracee running: kill the agent itself, then strace ends.
    if (agentPid && proc.exitCode === null && proc.signalCode === null) {
      try {
        process.kill(agentPid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    await agent.kill9()
  })
  const serving = await agent.waitForLog(/^serving$/)
  agentPid = serving.pid as number
  const uri = nbdUri(sock, 'vol')

  const info = JSON.parse(await must('nbdinfo', ['--json', uri]))
  t.equal(info.exports[0].can_multi_conn, true, 'nbdinfo: the export can_multi_conn')

  const lineCount = () => fs.readFileSync(trace, 'utf8').split('\n').length - 1
  const beforeA = lineCount()
  // Connection A: writes, stays open, never flushes (cache=unsafe: qemu sends no FLUSH at all).
  const a = spawn('qemu-io', ['-f', 'raw', '-t', 'unsafe', uri], { stdio: ['pipe', 'pipe', 'pipe'] })
  const aExited = new Promise((r) => a.once('exit', r))
  t.teardown(async () => {
    a.kill('SIGKILL')
    await aExited
  })
  let aOut = ''
  a.stdout.on('data', (d) => (aOut += d))
  a.stdin.write('write -P 0x77 1M 64k\n')
  await waitFor('connection A\'s write to complete', () => /wrote 65536\/65536 bytes at offset 1048576/.test(aOut), 30_000)
  const syncsOf = (from: number) => {
    const lines = fs.readFileSync(trace, 'utf8').split('\n').slice(from)
    return {
      image: lines.filter((l) => /^\d+ +(fdatasync|fsync)\(\d+<[^>]*prod\.img>\) = 0/.test(l)).length,
      dirtyMap: lines.filter((l) => /^\d+ +msync\(.*MS_SYNC\) = 0/.test(l)).length,
    }
  }
  t.same(syncsOf(beforeA), { image: 0, dirtyMap: 0 }, 'A\'s write synced nothing')
  const mark = lineCount()

  // Connection B: only a FLUSH.
  await must('qemu-io', ['-f', 'raw', '-c', 'flush', uri])
  const after = await waitFor('B\'s FLUSH to show in the trace', () => {
    const s = syncsOf(mark)
    return s.image > 0 && s.dirtyMap > 0 ? s : undefined
  }, 10_000).catch(() => syncsOf(mark))
  t.ok(after.image > 0, `B's FLUSH fdatasynced the backing file (${after.image})`)
  t.ok(after.dirtyMap > 0, `and msynced the dirty map (${after.dirtyMap})`, { trace: fs.readFileSync(trace, 'utf8') })

  // kill -9 while A is still connected.
  t.equal(a.exitCode, null, 'A is still connected')
  process.kill(agentPid, 'SIGKILL')
  await agent.exited
  await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 1M 64k', img])
  t.pass('the backing file holds A\'s write')
  t.ok(readDirtyMapFile(path.join(state, 'vol.dirty')).regions.has(16), 'the dirty map on disk names the region A wrote')

  // The appliance returns; the agent restarts on the same state and resyncs what the map names.
  const app2 = await startAppliance(t, { data, port })
  const agent2 = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', app2.address, '--stats-interval', '0.2'] })
  await replicatedSeq(agent2, app2, 'vol')
  t.equal(await agent2.stop(), 0, 'the restarted agent drains and stops')
  const out = path.join(dir, 'restored.img')
  await restore(app2.address, 'vol', 'latest', out)
  t.equal(sha256(out), sha256(img), 'the replica holds A\'s write byte-exact')
  await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 1M 64k', out])
})
