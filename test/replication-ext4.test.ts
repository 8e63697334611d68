// The kernel's ext4 on a replicated volume: nbdfuse exposes the volume as a
// file, mount -o loop puts ext4 on it, sqlite3 writes a database there. The
// image restored from the appliance equals the volume, passes e2fsck, and
// holds every row.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { makeImage, must, nbdUri, restore, run, sha256, sleep, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('ext4 + sqlite on a replicated volume: the restored image is byte-exact, fsck-clean, and holds the database', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 128 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const mnt = path.join(dir, 'fuse')
  const fsdir = path.join(dir, 'fs')
  fs.mkdirSync(mnt)
  fs.mkdirSync(fsdir)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address] })

  const fuse = spawn('nbdfuse', [path.join(mnt, 'disk'), nbdUri(sock, 'vol')], { stdio: 'ignore' })
  const fuseExited = new Promise((r) => fuse.once('exit', r))
  let fuseUp = true
  t.teardown(async () => {
    if (fuseUp) await run('fusermount3', ['-u', mnt])
    fuse.kill()
  })
  for (let i = 0; !fs.existsSync(path.join(mnt, 'disk')); i++) {
    if (i > 200) throw new Error('nbdfuse did not expose the volume')
    await sleep(50)
  }
  await must('mkfs.ext4', ['-F', '-q', path.join(mnt, 'disk')])
  await must('mount', ['-o', 'loop', path.join(mnt, 'disk'), fsdir])
  let mounted = true
  t.teardown(async () => {
    if (mounted) await run('umount', [fsdir])
  })
  const db = path.join(fsdir, 'app.db')
  await must('sqlite3', [db, 'create table t(id integer primary key, v text);'])
  for (let txn = 0; txn < 20; txn++) {
    const inserts = ['begin;']
    for (let i = 0; i < 200; i++) inserts.push(`insert into t(v) values('txn ${txn} row ${i} ${'y'.repeat(200)}');`)
    inserts.push('commit;')
    await must('sqlite3', [db], { input: inserts.join('\n') })
  }
  await must('sync', [])
  await must('umount', [fsdir])
  mounted = false
  await must('fusermount3', ['-u', mnt])
  fuseUp = false
  await fuseExited
  t.equal(await agent.stop(), 0, 'the agent drains to the appliance and stops')

  const out = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', 'latest', out)
  t.equal(sha256(out), sha256(img), 'the restored image equals the volume')
  const fsck = await run('e2fsck', ['-fn', out])
  t.equal(fsck.code, 0, 'e2fsck -fn accepts the restored image', { output: fsck.stdout + fsck.stderr })
  await must('mount', ['-o', 'loop,ro', out, fsdir])
  mounted = true
  const count = await must('sqlite3', [path.join(fsdir, 'app.db'), 'select count(*) from t;'])
  t.equal(count.trim(), '4000', 'the database on the restored image holds every row')
  const check = await must('sqlite3', [path.join(fsdir, 'app.db'), 'pragma integrity_check;'])
  t.equal(check.trim(), 'ok', 'sqlite integrity_check is ok')
  await must('umount', [fsdir])
  mounted = false
})
