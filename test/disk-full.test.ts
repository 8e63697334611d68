// A full journal disk at the appliance, through real processes: the
// appliance's data directory lives on a small loop-mounted ext4 of the test's
// own, which a filler file takes to the last byte while fio writes through
// the agent. The contract (DESIGN 7, issue 8): the cause is named
// ("no space left on device", the path, how much was needed) and logged
// once, counted and shown by `stats` as the volume's state; nothing partial
// is acknowledged and the journal stays valid; the agent is told, goes behind
// (fio never waits) and retries with a growing backoff rather than ten times
// a second; when space returns, ingest resumes by itself and the replica
// converges byte-exact.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, makeImage, must, nbdUri, run, sha256, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

/** Fills a file system to the last byte with one file. */
function fill(file: string): void {
  const fd = fs.openSync(file, 'a')
  const chunk = Buffer.alloc(MiB)
  try {
    for (let n = MiB; n >= 512; n >>= 1) {
      try {
        for (;;) fs.writeSync(fd, chunk, 0, n)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e
      }
    }
  } finally {
    fs.closeSync(fd)
  }
}

async function stats(address: string): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])
  if (r.code !== 0) throw new Error(`stats exited ${r.code}: ${r.stderr}`)
  const j = JSON.parse(r.stdout) as { volumes: Array<Record<string, unknown>> }
  return j.volumes[0]
}

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

t.test('a full appliance disk: named, counted, the agent backs off and goes behind, ingest resumes by itself byte-exact', async (t) => {
  const dir = tmpdir(t)
  const diskImg = path.join(dir, 'appliance-disk.img')
  const mnt = path.join(dir, 'appliance-disk')
  fs.mkdirSync(mnt)
  fs.closeSync(fs.openSync(diskImg, 'w'))
  fs.truncateSync(diskImg, 256 * MiB) // room for the resync of everything fio touched once space returns
  await must('mkfs.ext4', ['-F', '-q', '-m', '0', diskImg])
  await must('mount', ['-o', 'loop', diskImg, mnt])
  let stopAll = async (): Promise<void> => {}
  t.teardown(async () => {
    await stopAll() // every process that has files on the mount is gone before it is unmounted
    await must('umount', [mnt])
  })
  const app = await startAppliance(t, { data: path.join(mnt, 'data'), extra: ['--compact-every', '0'] })
  stopAll = async () => {
    await app.stop()
  }
  const img = path.join(dir, 'vol.img')
  makeImage(img, 64 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: { vol: img },
    extra: ['--appliance', app.address, '--control', `unix:${control}`, '--buffer', '8M', '--memory', '8M'],
  })
  stopAll = async () => {
    await agent.stop()
    await app.stop()
  }
  // The initial copy of a volume of zeroes, then a first mark: replication works.
  const mark = async (label: string) =>
    run(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', label, '--wait-timeout', '10', '--json'])
  await until('a first TimeMark', async () => (await mark('first')).code === 0)

  // Take the disk to its last byte, then write through the agent.
  const filler = path.join(mnt, 'filler')
  fill(filler)
  const fio = await run('fio', ['--name=w', '--ioengine=nbd', `--uri=${nbdUri(sock, 'vol')}`, '--rw=randwrite', '--bs=64k',
    '--iodepth=8', '--size=48M', '--io_size=96M', '--randrepeat=0', '--refill_buffers', '--output-format=json'])
  t.equal(fio.code, 0, 'fio completed: the application never waited on the full appliance')
  const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))).jobs[0]
  t.equal(job.error, 0, 'fio saw no I/O error')
  t.ok(job.write.io_bytes >= 96 * MiB, `fio wrote ${job.write.io_bytes} bytes`)

  const full = await until('the appliance reports the volume out of space', async () => {
    const s = await stats(app.address)
    return s.state === 'no_space' ? s : undefined
  })
  t.match(String(full.stateReason), /no space left on device/, `stats names the cause: ${full.stateReason}`)
  t.match(String(full.stateReason), new RegExp(mnt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'and the path')
  const noSpaceLines = app.logs().filter((l) => /no space left on device/.test(String(l.msg)))
  t.equal(noSpaceLines.length, 1, 'the appliance logged it once')
  t.match(String(noSpaceLines[0]?.msg), /needs \d+ (more )?bytes/, 'saying how much was needed')
  t.ok(((full.rejected as { byCode: Record<string, number> }).byCode.NO_SPACE ?? 0) >= 1, 'refusals are counted by code')
  const replicaFull = full.replica as { ready: boolean; error: string | null }
  t.equal(replicaFull.ready, false, 'the replica image is not used while the journal is out of space')
  t.match(String(replicaFull.error), /set aside, its space left to the journal/, `and says why: ${replicaFull.error}`)

  // The agent backs off: over a few seconds of full disk, few attempts, one log line.
  const attached0 = app.logs().filter((l) => l.msg === 'agent attached').length
  const t0 = Date.now()
  await until('five seconds of full disk', async () => Date.now() - t0 > 5000)
  const attached = app.logs().filter((l) => l.msg === 'agent attached').length - attached0
  t.ok(attached <= 4, `the agent attached ${attached} times in 5 s (not ten times a second)`)
  const agentSays = agent.logs().filter((l) => /out of space/.test(String(l.msg)))
  t.equal(agentSays.length, 1, `the agent logged the appliance's lack of space once: ${agentSays[0]?.msg ?? agent.logs().filter((l) => (l.level as number) >= 40).map((l) => l.msg).join(" | ")}`)

  const verify = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'vol', '--json'])
  t.equal(verify.code, 0, `the journal is valid while the disk is full: ${verify.stdout}${verify.stderr}`)
  t.equal((await mark('while-full')).code === 0, false, 'no TimeMark while the volume cannot replicate')

  // Space returns: no restart, ingest resumes, the replica converges.
  fs.rmSync(filler)
  await until('a TimeMark held after space returned', async () => (await mark('after')).code === 0, 180_000).catch(async (e) => {
    throw new Error(`${(e as Error).message}; stats ${JSON.stringify(await stats(app.address))}; appliance log tail:\n${app.out.slice(-3000)}\nagent log tail:\n${agent.out.slice(-3000)}`)
  })
  const s = await stats(app.address)
  t.equal(s.state, 'normal', 'the volume is normal again')
  const out = path.join(dir, 'restored.img')
  const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--timemark', 'after', '--out', out, '--json'])
  t.equal(r.code, 0, `restore: ${r.stderr}`)
  t.equal(sha256(out), sha256(img), 'the replica converged byte-exact')
  fs.rmSync(out)
  const v2 = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'vol', '--json'])
  t.equal(v2.code, 0, 'journal verify is clean after the episode')
  const back = await until('the replica image in use again', async () => {
    const st = (await stats(app.address)).replica as { ready: boolean; seq: number; error: string | null }
    return st.ready ? st : undefined
  })
  t.equal(back.error, null, `the replica image is back at seq ${back.seq}`)
  t.equal(app.proc.exitCode, null, 'the appliance never restarted')
  await agent.stop()
  await app.stop()
})
