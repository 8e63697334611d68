// The agent's volume state files (agent/volume-state.ts) on a real directory:
// NAME.acked keeps its 8-byte format and old files still read; writes are
// atomic, leave no temp files, and a lowered acked seq never reaches the disk
// before the restarted copy's NAME.sync does (else a crash in between would
// resume the old copy's progress against a replica that lost it).
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import t from 'tap'
import { VolumeState } from '../agent/volume-state'
import { AtomicFileWriter } from '../native/atomic-file'
import { tmpdir } from './helpers'

const log = pino({ level: 'silent' })

function ackedOnDisk(dir: string): bigint {
  const b = fs.readFileSync(path.join(dir, 'vol.acked'))
  if (b.length !== 8) throw new Error(`vol.acked is ${b.length} bytes`)
  return b.readBigUInt64LE(0)
}

t.test('first protection makes NAME.gen and a zero NAME.acked, durable once durable() resolves', async (t) => {
  const dir = tmpdir(t)
  const s = new VolumeState(dir, 'vol', log)
  await s.durable()
  t.match(s.generation, /^[0-9a-f-]{36}$/)
  t.equal(fs.readFileSync(path.join(dir, 'vol.gen'), 'utf8'), `${s.generation}\n`)
  t.equal(ackedOnDisk(dir), 0n)
  t.equal(s.ackedSeq, 0)
  t.same(fs.readdirSync(dir).sort(), ['vol.acked', 'vol.gen'])
  const again = new VolumeState(dir, 'vol', log)
  await again.durable()
  t.equal(again.generation, s.generation, 'the generation is kept')
})

t.test('NAME.acked as older agents wrote it (8 bytes in place) reads; raises are written behind, as 8 bytes', async (t) => {
  const dir = tmpdir(t)
  fs.writeFileSync(path.join(dir, 'vol.gen'), 'g-1\n')
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(123456789n)
  fs.writeFileSync(path.join(dir, 'vol.acked'), b)
  // Leftovers of writes a crash interrupted, this agent's and older ones'.
  for (const n of ['vol.acked.tmp-99-1', 'vol.sync.tmp', 'vol.gen.tmp-7-3', 'other.acked.tmp-1-1']) fs.writeFileSync(path.join(dir, n), 'x')
  const s = new VolumeState(dir, 'vol', log)
  t.equal(s.generation, 'g-1')
  t.equal(s.ackedSeq, 123456789)
  t.same(fs.readdirSync(dir).sort(), ['other.acked.tmp-1-1', 'vol.acked', 'vol.gen'], 'only this volume\'s temp files are removed')
  for (let seq = 123456790; seq < 123457790; seq++) s.raiseAcked(seq)
  s.raiseAcked(5) // lower: ignored
  t.equal(s.ackedSeq, 123457789)
  await s.flush()
  t.equal(ackedOnDisk(dir), 123457789n)
  t.same(fs.readdirSync(dir).sort(), ['other.acked.tmp-1-1', 'vol.acked', 'vol.gen'])
})

t.test('NAME.sync: resume region of this generation only; removal', async (t) => {
  const dir = tmpdir(t)
  fs.writeFileSync(path.join(dir, 'vol.gen'), 'g-1\n')
  fs.writeFileSync(path.join(dir, 'vol.sync'), `${JSON.stringify({ generation: 'g-1', nextRegion: 40, regions: 100 })}\n`)
  const s = new VolumeState(dir, 'vol', log)
  t.equal(s.copyResumeRegion(100), 40)
  t.equal(s.copyResumeRegion(30), 30, 'never past the volume')
  await s.saveCopy({ generation: 'g-0', nextRegion: 70, regions: 100 })
  t.equal(s.copyResumeRegion(100), 0, 'another generation\'s progress is not ours')
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'vol.sync'), 'utf8')), { generation: 'g-0', nextRegion: 70, regions: 100 })
  await s.removeCopy()
  t.notOk(fs.existsSync(path.join(dir, 'vol.sync')))
  t.equal(s.copyResumeRegion(100), 0)
  fs.writeFileSync(path.join(dir, 'vol.sync'), 'not json')
  t.equal(new VolumeState(dir, 'vol', log).copyResumeRegion(100), 0, 'a damaged file starts the copy over')
})

t.test('a lowered acked seq (the copy starts over) waits until the new NAME.sync is durable', async (t) => {
  const dir = tmpdir(t)
  const s = new VolumeState(dir, 'vol', log)
  s.raiseAcked(1000)
  await s.flush()
  t.equal(ackedOnDisk(dir), 1000n)
  // NAME.sync cannot be written: a directory stands in its place.
  fs.mkdirSync(path.join(dir, 'vol.sync'))
  fs.writeFileSync(path.join(dir, 'vol.sync', 'x'), '')
  await t.rejects(s.saveCopy({ generation: s.generation, nextRegion: 0, regions: 10 }))
  s.resetAcked(0)
  s.raiseAcked(3) // acks of the new copy
  await s.flush()
  t.equal(s.ackedSeq, 3)
  t.equal(ackedOnDisk(dir), 1000n, 'held: a crash now finds the loss again at the next Hello')
  fs.rmSync(path.join(dir, 'vol.sync'), { recursive: true })
  await s.saveCopy({ generation: s.generation, nextRegion: 0, regions: 10 })
  await s.flush()
  t.equal(ackedOnDisk(dir), 3n, 'written once the copy restarts on disk too')
  s.raiseAcked(4)
  await s.flush()
  t.equal(ackedOnDisk(dir), 4n)
})

t.test('a writer with a minimum interval coalesces what is set meanwhile, and flush() does not wait for the interval', async (t) => {
  const dir = tmpdir(t)
  const file = path.join(dir, 'f')
  const errors: Error[] = []
  const w = new AtomicFileWriter(file, (e) => errors.push(e), 0o644, 60_000)
  w.set('1')
  while (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== '1') await new Promise((r) => setImmediate(r))
  for (let i = 2; i <= 50; i++) w.set(String(i))
  // The next write waits out the minute after the first; a fresh read would show any write before it.
  await new Promise((r) => setTimeout(r, 200))
  t.equal(fs.readFileSync(file, 'utf8'), '1', 'nothing is written again within the interval')
  const t0 = performance.now()
  await w.flush()
  t.ok(performance.now() - t0 < 30_000, 'flush() writes the newest value now, not after the interval')
  t.equal(fs.readFileSync(file, 'utf8'), '50', 'the newest value is on disk')
  t.same(fs.readdirSync(dir), ['f'], 'no temp file is left')

  // flush() while a write is on its way, with a newer value queued behind it: no pause after the write either.
  w.set('51')
  w.set('52')
  const t1 = performance.now()
  await w.flush()
  t.ok(performance.now() - t1 < 30_000, 'flush() during a write does not wait for the interval after it')
  t.equal(fs.readFileSync(file, 'utf8'), '52', 'and the queued value is on disk')
  t.same(errors, [])
})
