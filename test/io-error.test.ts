// An I/O error under the appliance's journal, through real processes. The
// appliance's data directory is a kernel ext4 (mounted with errors=continue)
// on nbdfuse over nbdkit's error filter, which fails every write to the disk
// with EIO while a trigger file exists. Buffered writes still succeed; the
// fdatasync that must make a batch durable fails. After a failed fsync the
// kernel may have dropped the dirty pages, so no later fsync proves anything:
// the volume becomes read-only, named and shown by stats, and stays so when the
// disk heals, until an operator acts (here: stop the appliance, check the file
// system, start it again). Nothing unacknowledged is trusted, the agent keeps
// its dirty map, and the replica then converges byte-exact.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, killAndWait, makeImage, must, nbdUri, run, sha256, startAgent, startAppliance, tmpdir, unmountFuse, unmountWhenFree, waitFor } from './helpers'

const MiB = 1024 * 1024

async function volumeStats(address: string): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])
  if (r.code !== 0) throw new Error(`stats exited ${r.code}: ${r.stderr}`)
  return (JSON.parse(r.stdout) as { volumes: Array<Record<string, unknown>> }).volumes[0]
}

// Buffered journal writes land in the page cache and the fdatasync fails;
// direct ones (O_DIRECT, the default) fail at the write, and the recovery
// that cuts the journal back fails its own fdatasync on the broken disk.
// Either way the volume is read-only, says why, and converges after a restart.
const MODES = [
  { io: 'buffered', cause: /fsync of the journal failed/ },
  { io: 'direct', cause: /recovering from "I\/O error writing .*" failed: .*fdatasync/ },
] as const

for (const { io, cause } of MODES) t.test(`${io} journal writes: a failed write or fsync makes the volume read-only until an operator acts; then the replica converges`, async (t) => {
  const dir = tmpdir(t)
  const disk = path.join(dir, 'disk.img')
  fs.closeSync(fs.openSync(disk, 'w'))
  fs.truncateSync(disk, 256 * MiB)
  const trigger = path.join(dir, 'fail-writes')
  const nbdSock = path.join(dir, 'disk.sock')
  const nbdkit = spawn('nbdkit', ['-f', '-U', nbdSock, '--filter=error', 'file', disk, 'error-pwrite=EIO', 'error-pwrite-rate=100%', `error-pwrite-file=${trigger}`], { stdio: 'ignore' })
  const fuseDir = path.join(dir, 'fuse')
  const data = path.join(dir, 'data')
  fs.mkdirSync(fuseDir)
  fs.mkdirSync(data)
  await waitFor(() => fs.existsSync(nbdSock) || nbdkit.exitCode !== null, 'nbdkit listening', 10_000)
  const fuse = spawn('nbdfuse', [path.join(fuseDir, 'disk'), nbdUri(nbdSock, '')], { stdio: 'ignore' })
  await waitFor(() => fs.existsSync(path.join(fuseDir, 'disk')) || fuse.exitCode !== null, 'nbdfuse exposing the disk', 10_000)
  await must('mkfs.ext4', ['-F', '-q', path.join(fuseDir, 'disk')])
  const mount = () => must('mount', ['-o', 'loop,errors=continue', path.join(fuseDir, 'disk'), data])
  await mount()
  let mounted = true
  let stopAll = async (): Promise<void> => {}
  t.teardown(async () => {
    fs.rmSync(trigger, { force: true })
    await stopAll() // every process with files on the mount is gone first
    if (mounted) await unmountWhenFree(data, { killUsers: true })
    try {
      await unmountFuse(fuseDir, { lazyAtLast: true })
    } finally {
      await killAndWait(fuse, 'SIGTERM')
    }
    await killAndWait(nbdkit, 'SIGTERM')
  })

  let app = await startAppliance(t, { data: path.join(data, 'appliance'), extra: ['--compact-every', '0', '--journal-io', io] })
  const img = path.join(dir, 'vol.img')
  makeImage(img, 32 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: { vol: img },
    extra: ['--appliance', app.address, '--control', `unix:${control}`],
  })
  stopAll = async () => {
    await agent.stop()
    await app.stop()
  }
  const mark = async (label: string) =>
    run(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', label, '--wait-timeout', '10', '--json'])
  await waitFor(async () => (await mark('first')).code === 0, 'a first TimeMark', 120_000, 200)

  // The disk fails every write; the next batch's fsync fails.
  fs.writeFileSync(trigger, '')
  const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 4M', nbdUri(sock, 'vol')])
  t.equal(w.code, 0, 'the application write completes: it never waits on the appliance')
  const ro = await waitFor(async () => {
    const s = await volumeStats(app.address)
    return s.state === 'read_only' ? s : null
  }, 'the volume read-only', 60_000, 200)
  t.match(String(ro.stateReason), cause, `stats names the cause: ${ro.stateReason}`)
  t.match(String(ro.stateReason), /until an operator restarts the appliance/, 'and what it takes')
  const lines = app.logs().filter((l) => cause.test(String(l.msg)))
  t.equal(lines.length, 1, 'the appliance logged it once')

  // The disk heals; the volume stays read-only (a failed fsync proves later ones nothing).
  fs.rmSync(trigger)
  const w2 = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 8M 1M', nbdUri(sock, 'vol')])
  t.equal(w2.code, 0, 'the application keeps writing')
  t.not((await mark('while-read-only')).code, 0, 'no TimeMark while the volume cannot replicate')
  const still = await volumeStats(app.address)
  t.equal(still.state, 'read_only', 'still read-only after the disk healed, until an operator acts')
  t.ok(((still.rejected as { byCode: Record<string, number> }).byCode.JOURNAL_READ_ONLY ?? 0) >= 1, 'refusals are counted by code')

  // The operator: stop the appliance, check the file system, start it again.
  t.equal(await app.stop(), 0, 'the appliance stops cleanly while read-only')
  await unmountWhenFree(data)
  mounted = false
  const fsck = await run('e2fsck', ['-fy', path.join(fuseDir, 'disk')])
  t.ok(fsck.code === 0 || fsck.code === 1, `e2fsck repaired or found nothing (exit ${fsck.code})`)
  await mount()
  mounted = true
  app = await startAppliance(t, { data: path.join(data, 'appliance'), port: app.port, extra: ['--compact-every', '0', '--journal-io', io] })
  stopAll = async () => {
    await agent.stop()
    await app.stop()
  }
  await waitFor(async () => (await mark('after')).code === 0, 'a TimeMark held after the restart', 120_000, 200)
  t.equal((await volumeStats(app.address)).state, 'normal', 'the restarted volume is normal')
  const out = path.join(dir, 'restored.img')
  const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--timemark', 'after', '--out', out, '--json'])
  t.equal(r.code, 0, `restore: ${r.stderr}`)
  t.equal(sha256(out), sha256(img), 'the replica converged byte-exact')
  const v = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'vol', '--json'])
  t.equal(v.code, 0, `journal verify is clean: ${v.stdout}${v.stderr}`)
})
