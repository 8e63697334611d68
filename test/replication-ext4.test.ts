// The kernel's ext4 on a replicated volume: nbdfuse exposes the volume as a
// file, mount -o loop puts ext4 on it, sqlite3 writes a database there. The
// image restored from the appliance equals the volume, passes e2fsck, and
// holds every row.
import path from 'node:path'
import t from 'tap'
import { makeImage, mountExt4OverNbd, must, nbdUri, restore, run, sha256, startAgent, startAppliance, tmpdir, unmountWhenFree } from './helpers'

const MiB = 1024 * 1024

t.test('ext4 + sqlite on a replicated volume: the restored image is byte-exact, fsck-clean, and holds the database', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 128 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address] })

  const { fsdir, unmount } = await mountExt4OverNbd(t, nbdUri(sock, 'vol'), dir)
  let mounted = false
  t.teardown(async () => {
    if (mounted) await unmountWhenFree(fsdir, { killUsers: true })
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
  await unmount()
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
  await unmountWhenFree(fsdir)
  mounted = false
})
