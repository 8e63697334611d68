// The journal on disk: framing round trip, torn tails cut off on reopen with
// an exact durable seq, a flipped byte reported as corruption with earlier
// points still restorable, the index rebuilt when deleted (and verify()
// catching an index that disagrees), segment rollover. Real files; damage is
// done to them the way a crash or a bad disk would.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { Level } from 'level'
import { ApplianceStore, type VolumeStore } from '../appliance/store'
import {
  COMMIT_BODY_SIZE,
  FRAME_CHANGE,
  FRAME_COMMIT,
  FRAME_HEADER_SIZE,
  SEGMENT_HEADER_SIZE,
  batchFramedSize,
  decodeCommit,
  decodeSegmentHeader,
  encodeCommit,
  encodeSegmentHeader,
  sealFrame,
} from '../appliance/journal-format'
import { SegmentFile, SegmentReader } from '../appliance/segment'
import { initHash } from '../proto/hash'
import { RecordKind, SECTOR_SIZE, carriesSectorData, decodeRecordHeader, encodeRecord, recordData } from '../proto/record'
import { tmpdir } from './helpers'

const MiB = 1024 * 1024
const SIZE = 4 * MiB

function rec(seq: number, sector: number, count: number, kind: RecordKind, data?: Buffer): Buffer {
  const h = { seq, sector, count, kind, flags: 0, timeLow: 0 }
  return carriesSectorData(kind) ? encodeRecord(h, data ?? crypto.randomBytes(count * SECTOR_SIZE)) : encodeRecord(h)
}

function meta(seq: number, recordCount: number) {
  return { firstSeq: seq, lastSeq: seq, recordCount, appBytes: 4096, changedBytes: 2048, wireBytes: 1024 }
}

function sha(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex')
}

async function image(v: VolumeStore, seq: number): Promise<Buffer> {
  const out = Buffer.alloc(v.meta.size)
  for await (const e of v.extents(seq)) e.data.copy(out, e.offset)
  return out
}

/** A logger whose lines the test can read. */
function capture(): { log: pino.Logger; lines: Array<{ level: number; msg: string }> } {
  const lines: Array<{ level: number; msg: string }> = []
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) })
  return { log, lines }
}

/**
 * A volume with `n` batches (seq 1..n), each a few writes and a trim, and the
 * model image after each seq. Returns the segment-0 byte offset where each
 * batch ends (ends[s] for seq s; ends[0] = after the header).
 */
async function fill(dir: string, n: number, opts: { segmentBytes?: number } = {}) {
  const store = await ApplianceStore.open(dir, pino({ level: 'silent' }), opts)
  const { volume: v } = await store.attach({ volume: 'j', generation: 'g1', size: SIZE, group: '', agentId: 'a' })
  const model = Buffer.alloc(SIZE)
  const images: string[] = [sha(model)]
  const ends: number[] = [v.stats().journalBytes as number]
  for (let s = 1; s <= n; s++) {
    const a = rec(s, (s * 37) % 8000, 16, RecordKind.Write)
    const b = rec(s, 8100 + s, 2, RecordKind.Write)
    const c = rec(s, (s * 53) % 8000, 3, RecordKind.Trim)
    await v.append(Buffer.concat([a, b, c]), meta(s, 3))
    for (const r of [a, b, c]) {
      const h = decodeRecordHeader(r, 0)
      if (carriesSectorData(h.kind)) recordData(r, 0).copy(model, h.sector * SECTOR_SIZE)
      else model.fill(0, h.sector * SECTOR_SIZE, (h.sector + h.count) * SECTOR_SIZE)
    }
    images.push(sha(model))
    ends.push(v.stats().journalBytes as number)
  }
  await store.close()
  return { images, ends, seg: path.join(dir, 'volumes', 'j', 'segments', '00000001.tmj'), index: path.join(dir, 'volumes', 'j', 'index') }
}

t.before(() => initHash())

t.test('framing round trip: header, CHANGE, COMMIT; torn and bad frames told apart', async (t) => {
  const dir = tmpdir(t)
  const h = { segment: 7, created: 1700000000123, volume: 'vol-ü', generation: 'gen-1' }
  const hb = encodeSegmentHeader(h)
  t.equal(hb.length, SEGMENT_HEADER_SIZE)
  t.same(decodeSegmentHeader(hb), h, 'segment header round trip')
  const bad = Buffer.from(hb)
  bad[30] ^= 1
  t.match(decodeSegmentHeader(bad), /checksum/, 'a flipped header byte is caught')

  const r1 = rec(5, 100, 4, RecordKind.Write)
  const r2 = rec(5, 300, 0, RecordKind.Flush)
  const raw = Buffer.concat([r1, r2])
  const buf = Buffer.alloc(batchFramedSize(raw.length, 2))
  let at = 0
  for (const r of [r1, r2]) {
    r.copy(buf, at + FRAME_HEADER_SIZE)
    sealFrame(buf, at, FRAME_CHANGE, r.length)
    at += FRAME_HEADER_SIZE + r.length
  }
  const c = { firstSeq: 5, lastSeq: 9, recordCount: 2, appBytes: 1, changedBytes: 2, wireBytes: 3, wallMs: 1700000000999 }
  t.equal(encodeCommit(buf, at, c), buf.length, 'batchFramedSize is exact')

  const seg = await SegmentFile.create(dir, 7, h)
  t.teardown(() => seg.close())
  await seg.fh.write(buf, 0, buf.length, SEGMENT_HEADER_SIZE)
  const size = SEGMENT_HEADER_SIZE + buf.length
  t.same(await seg.readHeader(), { ...h, created: (await seg.readHeader() as typeof h).created }, 'header on disk')
  const rd = new SegmentReader(seg, size, SEGMENT_HEADER_SIZE)
  const got: Array<{ type: number; body: Buffer }> = []
  for (let o = await rd.next(); o === 'frame'; o = await rd.next()) got.push({ type: rd.type, body: Buffer.from(rd.body.subarray(rd.bodyAt, rd.bodyAt + rd.length)) })
  t.equal(got.length, 3)
  t.ok(got[0].type === FRAME_CHANGE && got[0].body.equals(r1), 'CHANGE 1 body is the record as sent')
  t.ok(got[1].type === FRAME_CHANGE && got[1].body.equals(r2), 'CHANGE 2 body is the record as sent')
  t.equal(got[2].type, FRAME_COMMIT)
  t.same(decodeCommit(got[2].body), c, 'COMMIT round trip')
  t.equal(await rd.next(), 'end', 'clean end')

  // Cut inside the COMMIT: torn. A flipped data byte: bad, and resync finds the next frame.
  const cut = new SegmentReader(seg, size - 5, SEGMENT_HEADER_SIZE)
  t.equal(await cut.next(), 'frame')
  t.equal(await cut.next(), 'frame')
  t.equal(await cut.next(), 'torn', 'a frame cut off by the end of the file is torn')
  const flipAt = SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE + 32 + 100
  const one = Buffer.alloc(1)
  await seg.fh.read(one, 0, 1, flipAt)
  one[0] ^= 0x40
  await seg.fh.write(one, 0, 1, flipAt)
  const br = new SegmentReader(seg, size, SEGMENT_HEADER_SIZE)
  t.equal(await br.next(), 'bad', 'a flipped byte fails the checksum')
  t.match(br.problem, /checksum mismatch/)
  t.equal(await br.resync(SEGMENT_HEADER_SIZE), SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE + r1.length, 'resync lands on the next frame')
  // A flipped length field: the resync has to scan for the next intact frame.
  await seg.fh.read(one, 0, 1, SEGMENT_HEADER_SIZE + 5)
  one[0] ^= 0x10
  await seg.fh.write(one, 0, 1, SEGMENT_HEADER_SIZE + 5)
  const br2 = new SegmentReader(seg, size, SEGMENT_HEADER_SIZE)
  t.equal(await br2.next(), 'torn', 'a length running past the end reads as torn; the scan then looks for intact frames after it')
  t.equal(await br2.resync(SEGMENT_HEADER_SIZE), SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE + r1.length, 'resync scans past a broken length')
  t.equal(COMMIT_BODY_SIZE, 56)
})

t.test('torn tail: a record cut mid-data is cut off on reopen (index ahead of the segments)', async (t) => {
  const dir = tmpdir(t)
  const { images, ends, seg } = await fill(dir, 6)
  // Cut batch 6 inside its first record's data.
  const cutTo = ends[5] + FRAME_HEADER_SIZE + 32 + 1000
  fs.truncateSync(seg, cutTo)
  const { log, lines } = capture()
  const store = await ApplianceStore.open(dir, log)
  t.teardown(() => store.close())
  const v = store.get('j')!
  t.equal(v.durableSeq, 5, 'durable seq is the last intact batch')
  t.equal(fs.statSync(seg).size, ends[5], 'the file ends at the last COMMIT')
  const warn = lines.find((l) => l.level === 40 && /torn tail/.test(l.msg))
  t.ok(warn, 'a warning says the tail was cut')
  t.match(warn?.msg, new RegExp(`cutting ${cutTo - ends[5]} bytes`), 'and how many bytes')
  for (const s of [5, 3, 1]) t.equal(sha(await image(v, s)), images[s], `image at seq ${s} byte-exact`)
  await t.rejects(v.extents(6).next(), { code: 'SEQ_NOT_DURABLE' }, 'the cut seq is not a point')
  t.equal((await v.verify()).ok, true, 'verify is clean after the cut')
  // The agent resends seq 6; it lands where the torn one was.
  t.equal(await v.append(rec(6, 0, 1, RecordKind.Write), meta(6, 1)), 6)
  t.equal((await v.verify()).ok, true)
})

t.test('torn tail: CHANGE records without their COMMIT, index behind the segments', async (t) => {
  const dir = tmpdir(t)
  // The index as it was after batch 4, then batches 5 and 6 written: as if the
  // process died before indexing them.
  const a = await fill(dir, 4)
  const saved = path.join(dir, 'index-at-4')
  fs.cpSync(a.index, saved, { recursive: true })
  const store1 = await ApplianceStore.open(dir, pino({ level: 'silent' }))
  const v1 = store1.get('j')!
  await v1.append(rec(5, 10, 8, RecordKind.Write), meta(5, 1))
  const end5 = v1.stats().journalBytes as number
  const img5 = sha(await image(v1, 5))
  await v1.append(Buffer.concat([rec(6, 20, 8, RecordKind.Write), rec(6, 40, 8, RecordKind.Write)]), meta(6, 2))
  await store1.close()
  const size = fs.statSync(a.seg).size
  fs.truncateSync(a.seg, size - (FRAME_HEADER_SIZE + COMMIT_BODY_SIZE)) // batch 6 loses its COMMIT only
  fs.rmSync(a.index, { recursive: true })
  fs.renameSync(saved, a.index)

  const { log, lines } = capture()
  const store = await ApplianceStore.open(dir, log)
  t.teardown(() => store.close())
  const v = store.get('j')!
  t.equal(v.durableSeq, 5, 'durable seq exact: batch 6 never committed')
  t.equal(v.stats().indexedSeq, 5, 'index caught up to batch 5 from the segments')
  t.equal(fs.statSync(a.seg).size, end5, 'file cut back to the end of batch 5')
  t.equal(v.stats().journalBytes, end5, 'journal bytes follow')
  t.ok(lines.some((l) => l.level === 40 && /torn tail: cutting \d+ bytes/.test(l.msg)), 'torn tail logged')
  t.equal(sha(await image(v, 5)), img5, 'seq 5 restores byte-exact (recovered from the segments)')
  for (const s of [4, 2]) t.equal(sha(await image(v, s)), a.images[s], `seq ${s} byte-exact`)
  t.equal((await v.verify()).ok, true, 'verify clean')
  t.equal(v.stats().batches, 5, 'batch count follows the journal')
})

t.test('a flipped byte mid-segment is corruption: reported, not truncated, earlier points restore', async (t) => {
  const dir = tmpdir(t)
  const { images, ends, seg } = await fill(dir, 8)
  const sizeBefore = fs.statSync(seg).size
  // Inside batch 4's first record's data.
  const at = ends[3] + FRAME_HEADER_SIZE + 32 + 777
  const fd = fs.openSync(seg, 'r+')
  const one = Buffer.alloc(1)
  fs.readSync(fd, one, 0, 1, at)
  one[0] ^= 0x01
  fs.writeSync(fd, one, 0, 1, at)
  fs.closeSync(fd)

  const { log, lines } = capture()
  const store = await ApplianceStore.open(dir, log)
  t.teardown(() => store.close())
  const v = store.get('j')!
  t.equal(fs.statSync(seg).size, sizeBefore, 'nothing truncated')
  t.equal(v.durableSeq, 8, 'durable seq is the last intact COMMIT')
  const res = await v.verify()
  t.equal(res.ok, false, 'verify fails')
  t.ok(res.problems.some((p) => p.includes('00000001.tmj') && p.includes(`offset ${ends[3]}`) && /checksum/.test(p)), 'the problem names segment, offset and why')
  const corrupt = v.stats().corrupt as Array<{ segment: string; offset: number; afterSeq: number }>
  t.equal(corrupt.length, 1, 'stats lists the corruption')
  t.match(corrupt[0], { segment: '00000001.tmj', offset: ends[3], afterSeq: 3 })
  t.ok(lines.some((l) => l.level === 50 && /corruption/.test(l.msg)), 'an error is logged')
  for (const s of [3, 2, 1]) t.equal(sha(await image(v, s)), images[s], `seq ${s}, before the damage, restores byte-exact`)
  await t.rejects(v.extents(4).next(), { code: 'JOURNAL_CORRUPT', message: /00000001\.tmj at offset \d+/ }, 'the damaged batch refuses')
  await t.rejects(v.extents(8).next(), { code: 'JOURNAL_CORRUPT' }, 'later points refuse')
  await t.rejects(v.read(6, 0, 512), { code: 'JOURNAL_CORRUPT' }, 'reads refuse too')
  t.ok((await v.read(3, 0, 4096)).length === 4096, 'reads before the damage work')
})

t.test('a flipped byte found by recovery when the index has to be rebuilt', async (t) => {
  const dir = tmpdir(t)
  const { images, ends, seg, index } = await fill(dir, 6)
  const fd = fs.openSync(seg, 'r+')
  fs.writeSync(fd, Buffer.from([0xee]), 0, 1, ends[2] + FRAME_HEADER_SIZE + 40) // batch 3
  fs.closeSync(fd)
  fs.rmSync(index, { recursive: true })
  const store = await ApplianceStore.open(dir, pino({ level: 'silent' }))
  t.teardown(() => store.close())
  const v = store.get('j')!
  const corrupt = v.stats().corrupt as Array<{ afterSeq: number }>
  t.equal(corrupt.length, 1, 'found while catching the index up, before any verify()')
  t.equal(corrupt[0].afterSeq, 2)
  t.equal(v.durableSeq, 6, 'later intact batches still count as durable')
  t.equal(sha(await image(v, 2)), images[2], 'seq 2 restores')
  await t.rejects(v.extents(3).next(), { code: 'JOURNAL_CORRUPT' })
})

t.test('index directory deleted: rebuilt on open from the segments, same images', async (t) => {
  const dir = tmpdir(t)
  const { images, index } = await fill(dir, 20)
  let store = await ApplianceStore.open(dir, pino({ level: 'silent' }))
  const before = store.get('j')!.stats()
  await store.close()
  fs.rmSync(index, { recursive: true })
  const { log, lines } = capture()
  store = await ApplianceStore.open(dir, log)
  t.teardown(() => store.close())
  const v = store.get('j')!
  t.ok(fs.existsSync(index), 'index directory recreated')
  t.ok(lines.some((l) => /building the index/.test(l.msg)), 'logged')
  t.equal(v.durableSeq, 20)
  for (const k of ['records', 'batches', 'appBytes', 'changedBytes', 'wireBytes', 'firstSeq', 'journalBytes']) {
    t.equal(v.stats()[k], before[k], `${k} rebuilt`)
  }
  for (const s of [20, 13, 7, 1]) t.equal(sha(await image(v, s)), images[s], `image at seq ${s}`)
  t.same((await v.show(7, 4)).map((r) => r.seq), [7, 7, 7, 8], 'show from a seq works on the rebuilt index')
  t.equal((await v.verify()).ok, true)
})

t.test('verify() notices an index that disagrees with the segments', async (t) => {
  const dir = tmpdir(t)
  const { index } = await fill(dir, 5)
  const db = new Level<Buffer, Buffer>(index, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  await db.open()
  let victim: Buffer | undefined
  for await (const k of db.keys({ gte: Buffer.from('c'), lt: Buffer.from('d'), limit: 3 })) victim = k
  await db.del(victim!)
  await db.close()
  const store = await ApplianceStore.open(dir, pino({ level: 'silent' }))
  t.teardown(() => store.close())
  const res = await store.get('j')!.verify()
  t.equal(res.ok, false)
  t.ok(res.problems.some((p) => /index disagrees/.test(p)), 'the problem says the index disagrees')
})

t.test('segments roll over at segmentBytes; a torn tail in the newest one is cut', async (t) => {
  const dir = tmpdir(t)
  const segmentBytes = 64 * 1024
  const { images } = await fill(dir, 40, { segmentBytes }) // each batch is ~10 KiB
  const { log, lines } = capture()
  let store = await ApplianceStore.open(dir, log, { segmentBytes })
  let v = store.get('j')!
  const ls = await v.journal()
  t.ok(ls.length >= 6, `${ls.length} segments`)
  t.ok(ls.every((s) => s.bytes <= segmentBytes), 'none is over the limit')
  t.same(ls.map((s) => s.segment), ls.map((_, i) => String(i + 1).padStart(8, '0') + '.tmj'), 'numbered in order')
  t.equal(ls.reduce((a, s) => a + s.records, 0), 40 * 3, 'records add up')
  for (let i = 1; i < ls.length; i++) t.equal(ls[i].firstSeq, ls[i - 1].lastSeq + 1, `segment ${i + 1} continues the seqs`)
  for (const s of [40, 21, 9]) t.equal(sha(await image(v, s)), images[s], `image at seq ${s} across segments`)
  const shown = await v.show(1, 1000)
  t.equal(shown.length, 120, 'show walks every segment')
  t.equal(new Set(shown.map((r) => r.segment)).size, ls.length)
  t.equal((await v.verify()).ok, true)
  await store.close()

  // Tear the newest segment's last batch.
  const newest = path.join(dir, 'volumes', 'j', 'segments', ls.at(-1)!.segment)
  fs.truncateSync(newest, fs.statSync(newest).size - 20)
  store = await ApplianceStore.open(dir, log, { segmentBytes })
  t.teardown(() => store.close())
  v = store.get('j')!
  t.equal(v.durableSeq, 39, 'durable seq exact after a torn tail in the newest segment')
  t.ok(lines.some((l) => /torn tail/.test(l.msg)))
  t.equal(sha(await image(v, 39)), images[39])
  t.equal((await v.verify()).ok, true)
})
