// DESIGN contract 4: every flush point is crash-consistent. The kernel's ext4
// (nbdfuse + mount -o loop) works on a replicated volume; afterwards the
// journal is restored at randomly chosen FLUSH boundaries and each image must
// pass the ext4 check of DESIGN.md (the dm-log-writes replay-and-fsck method):
// replay the ext4 journal on a copy, then e2fsck -fn exits 0.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, makeImage, mountExt4OverNbd, must, nbdUri, restore, run, sleep, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('ext4 restored at random FLUSH boundaries is consistent at every one', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 96 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  for (let i = 0; ; i++) {
    const r = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--volume', 'vol', '--json'])
    if (r.code === 0 && JSON.parse(r.stdout).volumes[0].fullSyncDone) break
    if (i > 600) throw new Error('the initial copy did not complete')
    await sleep(100)
  }
  const { fsdir, unmount } = await mountExt4OverNbd(t, nbdUri(sock, 'vol'), dir)
  // From here on the volume holds ext4: the flush points after this mark are the ones to check.
  const mark = JSON.parse((await must(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--json'])).toString())

  // A workload with metadata churn: files created, grown, renamed, deleted, fsynced; a database.
  const db = path.join(fsdir, 'app.db')
  await must('sqlite3', [db, 'create table t(id integer primary key, v text);'])
  for (let round = 0; round < 12; round++) {
    const d = path.join(fsdir, `dir${round % 4}`)
    fs.mkdirSync(d, { recursive: true })
    for (let f = 0; f < 20; f++) {
      const file = path.join(d, `f${round}-${f}`)
      const fd = fs.openSync(file, 'w')
      fs.writeSync(fd, Buffer.alloc(4096 * (1 + ((round * 7 + f) % 13)), round + f))
      if (f % 5 === 0) fs.fsyncSync(fd)
      fs.closeSync(fd)
    }
    if (round > 2) {
      for (const f of fs.readdirSync(path.join(fsdir, `dir${(round - 2) % 4}`)).slice(0, 8)) fs.rmSync(path.join(fsdir, `dir${(round - 2) % 4}`, f))
      fs.renameSync(path.join(d, `f${round}-1`), path.join(fsdir, `moved-${round}`))
    }
    await must('sqlite3', [db], { input: `begin; ${Array.from({ length: 50 }, (_, i) => `insert into t(v) values('${round}-${i}-${'z'.repeat(100)}');`).join(' ')} commit;` })
    if (round % 3 === 0) await must('sync', [])
  }
  await must('sync', [])
  await unmount()
  t.equal(await agent.stop(), 0, 'the agent drains to the appliance and stops')

  const shown = JSON.parse(
    (await must(process.execPath, [BIN, 'journal', 'show', '--appliance', app.address, '--volume', 'vol', '--from', String(mark.seq), '--limit', '100000', '--json'])).toString()
  ) as Record<string, Array<{ seq: number; kind: string }>>
  const flushes = [...new Set(shown.vol.filter((r) => r.kind === 'flush').map((r) => r.seq))]
  t.ok(flushes.length >= 20, `the workload produced ${flushes.length} FLUSH boundaries`)
  // Random ones, plus the first and the last.
  const picks = new Set([flushes[0], flushes.at(-1)!])
  let seed = 12345
  while (picks.size < Math.min(10, flushes.length)) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    picks.add(flushes[seed % flushes.length])
  }
  for (const seq of [...picks].sort((a, b) => a - b)) {
    const out = path.join(dir, `at-${seq}.img`)
    await restore(app.address, 'vol', seq, out)
    const replay = await run('e2fsck', ['-y', '-E', 'journal_only', out])
    const check = await run('e2fsck', ['-fn', out])
    t.equal(check.code, 0, `FLUSH at seq ${seq}: e2fsck -fn accepts the image after journal replay`, { output: `${replay.stdout}${replay.stderr}${check.stdout}${check.stderr}` })
    fs.rmSync(out)
  }
})
