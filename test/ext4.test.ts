// The kernel's own ext4 on a tidemark volume: nbdfuse exposes the volume as a
// file, mount -o loop puts ext4 on it, sqlite3 writes a database there. The
// captured records must replay to an image that e2fsck accepts and that holds
// the database.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { replayCaptureLog, scanCaptureLog } from '../agent/capture-log'
import { RecordKind } from '../native/record-batch'
import { eventually, makeImage, mountExt4OverNbd, must, nbdUri, run, sha256, startAgent, tmpdir, unmountWhenFree } from './helpers'

const MiB = 1024 * 1024

t.test('ext4 + sqlite on nbdfuse + loop mount; records replay to an fsck-clean image', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 128 * MiB, null)
  fs.copyFileSync(img, path.join(dir, 'replay.img'))
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, captureLog: path.join(dir, 'cap') })

  const { fsdir, unmount } = await mountExt4OverNbd(t, nbdUri(sock, 'vol'), dir)
  let mounted = false
  t.teardown(async () => {
    if (mounted) await unmountWhenFree(fsdir, { killUsers: true })
  })
  const db = path.join(fsdir, 'app.db')
  await must('sqlite3', [db, 'create table t(id integer primary key, v text);'])
  const inserts = ['begin;']
  for (let i = 0; i < 2000; i++) inserts.push(`insert into t(v) values('row ${i} ${'x'.repeat(100)}');`)
  inserts.push('commit;')
  await must('sqlite3', [db], { input: inserts.join('\n') })
  const before = (await scanCount(path.join(dir, 'cap', 'vol.tmcap'))).flushes
  await must('sync', [])
  // sync returns once the FLUSH is answered; its record reaches the capture log soon after
  const after = await eventually(async () => {
    const n = (await scanCount(path.join(dir, 'cap', 'vol.tmcap'))).flushes
    return n > before ? n : 0
  }, 30_000).then(async (n) => n || (await scanCount(path.join(dir, 'cap', 'vol.tmcap'))).flushes)
  t.ok(after > before, `sync arrives as NBD FLUSH (${before} -> ${after} flush records)`)

  await unmount()
  await agent.stop()

  const replay = path.join(dir, 'replay.img')
  await replayCaptureLog(path.join(dir, 'cap', 'vol.tmcap'), replay)
  t.equal(sha256(replay), sha256(img), 'replay equals the volume')
  const fsck = await run('e2fsck', ['-fn', replay])
  t.equal(fsck.code, 0, 'e2fsck -fn accepts the replayed image', { output: fsck.stdout + fsck.stderr })
  await must('mount', ['-o', 'loop,ro', replay, fsdir])
  mounted = true
  const count = await must('sqlite3', [path.join(fsdir, 'app.db'), 'select count(*) from t;'])
  t.equal(count.trim(), '2000', 'the database on the replayed image holds every row')
  await unmountWhenFree(fsdir)
  mounted = false
})

async function scanCount(file: string): Promise<{ flushes: number }> {
  let flushes = 0
  await scanCaptureLog(file, (b) => b.forEach((r) => (flushes += r.kind === RecordKind.Flush ? 1 : 0)))
  return { flushes }
}
