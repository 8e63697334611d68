// The journal's damage catalogue, in the manner of LevelDB's log_test: real
// segment files in a temp dir, read back by the real Journal scan (the one
// recovery and verify use), each damaged in one way. For every record kind
// (WRITE, TRIM, ZERO, FLUSH, RESYNC, MARK, GAP, EXACT) and both frame types
// (CHANGE, COMMIT), the damage is a truncation at every byte of the frame or a
// flipped byte in each of its fields, placed before the batch of that kind
// (in the batch just ahead of it), inside it, or after it (in the batch just
// behind it), in the newest segment and in an older one. Expected: the scan
// yields exactly the batches that are still intact; damage in the newest
// segment with no intact batch after it is a torn tail, cut back to the end of
// the last intact batch (and the cut journal then reads clean); anything else
// is corruption, reported once with its segment, its offset and the last seq
// before it, and nothing is truncated.
//
// The segments are built in memory once; each case writes a variant and scans
// it. Failures are collected per group (kind x frame x placement x segment) so
// the output stays one line per group.
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import pino from 'pino'
import t from 'tap'
import { Journal, SCAN_STRIDE, ScanField, type ScannedBatch } from '../appliance/journal'
import {
  COMMIT_BODY_SIZE,
  FRAME_CHANGE,
  FRAME_COMMIT,
  FRAME_HEADER_SIZE,
  SEGMENT_HEADER_SIZE,
  batchFramedSize,
  encodeCommit,
  encodeSegmentHeader,
  plausibleFrame,
  sealFrame,
} from '../appliance/journal-format'
import { segmentFileName } from '../appliance/segment'
import {
  MAX_MARK_DATA,
  RECORD_HEADER_SIZE,
  RecordField,
  RecordKind,
  decodeRecordHeader,
  encodeRecord,
  kindName,
} from '../proto/record'
import { encodeMarkMeta } from '../proto/timemark-meta'
import { initHash } from '../proto/hash'
import { tmpdir } from './helpers'

const VOLUME = 'dmg'
const GENERATION = 'g1'
const WALL_MS = 1795430400000
const TIME_LOW = WALL_MS % 0x100000000
const silent = pino({ level: 'silent' })

t.before(() => initHash())

// ---- building segments in memory ---------------------------------------------------------

const ALL_KINDS = [
  RecordKind.Write,
  RecordKind.Trim,
  RecordKind.Zero,
  RecordKind.Flush,
  RecordKind.Resync,
  RecordKind.Mark,
  RecordKind.Gap,
  RecordKind.Exact,
]

const MARK_META = encodeMarkMeta({ label: 'before-upgrade', consistency: 'app', wallMs: WALL_MS, group: '', note: 'quiesce 12 ms' })

/** One record of `kind` at `seq`, shaped as the appliance journals it (record-check's rules). */
function record(kind: RecordKind, seq: number): Buffer {
  const h = { seq, sector: 0, count: 0, kind, flags: 0, timeLow: TIME_LOW + seq }
  switch (kind) {
    case RecordKind.Write:
      return encodeRecord({ ...h, sector: 8 + seq, count: 1, flags: 1 }, crypto.randomBytes(512))
    case RecordKind.Resync:
      return encodeRecord({ ...h, sector: 128, count: 1 }, crypto.randomBytes(512))
    case RecordKind.Trim:
      return encodeRecord({ ...h, sector: 16, count: 4 })
    case RecordKind.Zero:
      return encodeRecord({ ...h, sector: 24, count: 2 })
    case RecordKind.Mark:
      return encodeRecord(h, MARK_META)
    default: // FLUSH, GAP, EXACT
      return encodeRecord(h)
  }
}

interface Frame {
  type: number
  /** offset in the segment */
  at: number
  /** header + body */
  len: number
  /** the record's kind (CHANGE) */
  kind?: number
}

interface Batch {
  seq: number
  records: Buffer[]
  /** offsets in the segment */
  start: number
  end: number
  frames: Frame[]
}

interface Segment {
  number: number
  bytes: Buffer
  batches: Batch[]
}

/** A segment file holding these batches (each: its seq and its records). */
function segment(number: number, batches: Array<{ seq: number; records: Buffer[] }>): Segment {
  const parts: Buffer[] = [encodeSegmentHeader({ segment: number, created: WALL_MS, volume: VOLUME, generation: GENERATION })]
  let pos = SEGMENT_HEADER_SIZE
  const out: Batch[] = []
  for (const b of batches) {
    const raw = b.records.reduce((n, r) => n + r.length, 0)
    const buf = Buffer.alloc(batchFramedSize(raw, b.records.length))
    const frames: Frame[] = []
    let at = 0
    for (const r of b.records) {
      r.copy(buf, at + FRAME_HEADER_SIZE)
      sealFrame(buf, at, FRAME_CHANGE, r.length)
      frames.push({ type: FRAME_CHANGE, at: pos + at, len: FRAME_HEADER_SIZE + r.length, kind: r[RecordField.kind] })
      at += FRAME_HEADER_SIZE + r.length
    }
    const commit = { firstSeq: b.seq, lastSeq: b.seq, recordCount: b.records.length, appBytes: 512, changedBytes: 512, wireBytes: 300, wallMs: WALL_MS + b.seq }
    frames.push({ type: FRAME_COMMIT, at: pos + at, len: FRAME_HEADER_SIZE + COMMIT_BODY_SIZE })
    encodeCommit(buf, at, commit)
    out.push({ seq: b.seq, records: b.records, start: pos, end: pos + buf.length, frames })
    parts.push(buf)
    pos += buf.length
  }
  return { number, bytes: Buffer.concat(parts), batches: out }
}

// ---- running one case ------------------------------------------------------------------------

interface Outcome {
  /** seqs of the batches the scan yielded, in order */
  seqs: number[]
  torn: { segment: number; at: number } | null
  corrupt: Array<{ segment: string; offset: number; bytes: number; afterSeq: number }>
  /** what the scan said about each yielded batch's records, for the ones the case checks */
  scanned: Map<number, ScannedBatch>
}

async function scanOnce(j: Journal, first: number, keep: boolean): Promise<Outcome> {
  const seqs: number[] = []
  const scanned = new Map<number, ScannedBatch>()
  const res = await j.scan({ segment: first, offset: SEGMENT_HEADER_SIZE }, 0, { tailMayTear: true }, (b) => {
    seqs.push(b.commit.firstSeq)
    if (keep) scanned.set(b.commit.firstSeq, { ...b, recs: b.recs.slice(0, b.count * SCAN_STRIDE) })
  })
  return {
    seqs,
    torn: res.torn && { segment: res.torn.segment, at: res.torn.at },
    corrupt: res.corrupt.map((c) => ({ segment: c.segment, offset: c.offset, bytes: c.bytes, afterSeq: c.afterSeq })),
    scanned,
  }
}

/**
 * Writes the segment files, recovers them as the volume store does (scan;
 * a torn tail is truncated) and scans again: the cut journal must read clean
 * with the same batches. Returns the first scan's outcome, or a string when
 * the second scan disagrees.
 */
async function recover(dir: string, files: Array<{ number: number; bytes: Buffer }>, keep = false): Promise<Outcome | string> {
  for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f))
  for (const f of files) fs.writeFileSync(path.join(dir, segmentFileName(f.number)), f.bytes)
  const j = new Journal(dir, VOLUME, GENERATION, 1 << 30, silent)
  await j.open()
  try {
    const first = await scanOnce(j, files[0].number, keep)
    if (!first.torn) return first
    await j.truncate(first.torn.segment, first.torn.at)
    const size = fs.statSync(path.join(dir, segmentFileName(first.torn.segment))).size
    if (size !== first.torn.at) return `cut to ${size} bytes, not ${first.torn.at}`
    const again = await scanOnce(j, files[0].number, false)
    if (again.torn) return `still torn after the cut: ${JSON.stringify(again.torn)}`
    if (again.seqs.join() !== first.seqs.join()) return `after the cut: batches ${again.seqs} instead of ${first.seqs}`
    if (JSON.stringify(again.corrupt) !== JSON.stringify(first.corrupt)) return `after the cut: corruption ${JSON.stringify(again.corrupt)}`
    return first
  } finally {
    await j.close()
  }
}

// ---- the defect: the scan could not land on a marker frame ------------------------------------

t.test('plausibleFrame: marker frames (MARK, GAP, EXACT) are plausible; malformed ones are not', async (t) => {
  for (const kind of ALL_KINDS) {
    const s = segment(1, [{ seq: 5, records: [record(kind, 5)] }])
    const f = s.batches[0].frames[0]
    t.ok(plausibleFrame(s.bytes, f.at, s.bytes.length - f.at), `a ${kindName(kind)} CHANGE frame is plausible`)
  }
  const gap = segment(1, [{ seq: 5, records: [encodeRecord({ seq: 5, sector: 0, count: 3, kind: RecordKind.Gap, flags: 0, timeLow: 1 })] }])
  t.notOk(plausibleFrame(gap.bytes, SEGMENT_HEADER_SIZE, gap.bytes.length - SEGMENT_HEADER_SIZE), 'a GAP that names sectors is not')
  const big = encodeRecord({ seq: 5, sector: 0, count: 0, kind: RecordKind.Mark, flags: 0, timeLow: 1 }, Buffer.alloc(MAX_MARK_DATA + 1, 0x20))
  const mark = segment(1, [{ seq: 5, records: [big] }])
  t.notOk(plausibleFrame(mark.bytes, SEGMENT_HEADER_SIZE, mark.bytes.length - SEGMENT_HEADER_SIZE), 'a MARK over MAX_MARK_DATA is not')
  const exact = encodeRecord({ seq: 5, sector: 0, count: 0, kind: RecordKind.Exact, flags: 0, timeLow: 1 }, Buffer.alloc(8))
  const ex = segment(1, [{ seq: 5, records: [exact] }])
  t.notOk(plausibleFrame(ex.bytes, SEGMENT_HEADER_SIZE, ex.bytes.length - SEGMENT_HEADER_SIZE), 'an EXACT with data is not')
  const nine = record(RecordKind.Flush, 5)
  nine[RecordField.kind] = 9
  const k9 = segment(1, [{ seq: 5, records: [nine] }])
  t.notOk(plausibleFrame(k9.bytes, SEGMENT_HEADER_SIZE, k9.bytes.length - SEGMENT_HEADER_SIZE), 'an unknown kind is not')
})

t.test('a batch holding only a marker, after damaged bytes at the end of the newest segment, is kept', async (t) => {
  const dir = tmpdir(t)
  for (const kind of [RecordKind.Mark, RecordKind.Gap, RecordKind.Exact]) {
    // Batch 2 is intact, batch 3's COMMIT is damaged, batch 4 holds only the marker.
    const s = segment(1, [
      { seq: 2, records: [record(RecordKind.Write, 2)] },
      { seq: 3, records: [record(RecordKind.Write, 3), record(RecordKind.Trim, 3)] },
      { seq: 4, records: [record(kind, 4)] },
    ])
    const commit = s.batches[1].frames.at(-1)!
    const bytes = Buffer.from(s.bytes)
    bytes[commit.at] ^= 0x01 // the COMMIT's checksum
    const o = await recover(dir, [{ number: 1, bytes }], true)
    if (typeof o === 'string') {
      t.fail(o)
      continue
    }
    const name = kindName(kind).toUpperCase()
    t.same(o.seqs, [2, 4], `${name}: the ${name}-only batch after the damage is recovered`)
    t.equal(o.torn, null, `${name}: nothing is cut as a torn tail`)
    t.same(o.corrupt.map((c) => ({ segment: c.segment, offset: c.offset, afterSeq: c.afterSeq })), [{ segment: '00000001.tmj', offset: commit.at, afterSeq: 2 }],
      `${name}: the damage is reported as corruption at the COMMIT it hit`)
    t.equal(fs.statSync(path.join(dir, '00000001.tmj')).size, bytes.length, `${name}: the segment is not truncated`)
    const b = o.scanned.get(4)!
    t.equal(b.recs[ScanField.kind], kind, `${name}: the scan names its kind`)
    t.equal(b.recs[ScanField.seq], 4, `${name}: and its seq`)
    if (kind === RecordKind.Mark) t.same(b.marks.get(0), MARK_META, 'MARK: the metadata comes back')
  }
})
