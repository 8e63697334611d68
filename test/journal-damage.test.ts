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
// One limit the catalogue states rather than hides: an older segment cut
// exactly at a batch boundary reads as a clean end. The format has no segment
// trailer and seqs may skip between batches, so nothing tells the scan that
// batches are missing; they are lost without a report. A crash cannot do this
// (an older segment is fdatasynced before a newer one receives a batch), only
// a damaged disk or file system; those cases are counted and printed as such.
//
// The segments are built in memory once; each case writes a variant and scans
// it. Failures are collected per group (kind x frame x placement x segment) so
// the output stays one line per group.
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import pino from 'pino'
import t, { type Test } from 'tap'
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
 * the second scan disagrees. `only`: rewrite just that segment (the others
 * are as the previous call left them). `cutsChecked`: the cuts already made
 * and re-scanned for this layout; a cut at the same offset leaves the same
 * bytes (every damage it removes lies after it), so it is not made again.
 */
async function recover(
  dir: string,
  files: Array<{ number: number; bytes: Buffer }>,
  keep = false,
  only?: number,
  cutsChecked?: Set<number>
): Promise<Outcome | string> {
  if (only === undefined) for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f))
  for (const f of files) if (only === undefined || f.number === only) fs.writeFileSync(path.join(dir, segmentFileName(f.number)), f.bytes)
  const j = new Journal(dir, VOLUME, GENERATION, 1 << 30, silent)
  await j.open()
  try {
    const first = await scanOnce(j, files[0].number, keep)
    if (!first.torn || cutsChecked?.has(first.torn.at)) return first
    cutsChecked?.add(first.torn.at)
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
    const b = o.scanned.get(4)
    if (!b) continue
    t.equal(b.recs[ScanField.kind], kind, `${name}: the scan names its kind`)
    t.equal(b.recs[ScanField.seq], 4, `${name}: and its seq`)
    if (kind === RecordKind.Mark) t.same(b.marks.get(0), MARK_META, 'MARK: the metadata comes back')
  }
})

// ---- the catalogue ---------------------------------------------------------------------------

type Placement = 'before' | 'inside' | 'after'
type Role = 'newest' | 'older'

/** Byte ranges of a frame's fields, relative to the frame: [name, offset, width]. */
function frameFields(bytes: Buffer, f: Frame): Array<[string, number, number]> {
  const out: Array<[string, number, number]> = [
    ['frame checksum', 0, 4],
    ['frame length', 4, 4],
    ['frame type', 8, 1],
    ['frame padding', 9, 3],
  ]
  const body = FRAME_HEADER_SIZE
  if (f.type === FRAME_COMMIT) {
    const commit: Array<[string, number, number]> = [
      ['commit first seq', 0, 8],
      ['commit last seq', 8, 8],
      ['commit record count', 16, 4],
      ['commit reserved', 20, 4],
      ['commit app bytes', 24, 8],
      ['commit changed bytes', 32, 8],
      ['commit wire bytes', 40, 8],
      ['commit wall time', 48, 8],
    ]
    for (const [n, o, w] of commit) out.push([n, body + o, w])
    return out
  }
  const widths: Record<keyof typeof RecordField, number> = { seq: 8, sector: 8, count: 4, kind: 1, flags: 1, reserved: 2, dataLength: 4, time: 4 }
  for (const k of Object.keys(RecordField) as Array<keyof typeof RecordField>) out.push([`record ${k}`, body + RecordField[k], widths[k]])
  const h = decodeRecordHeader(bytes, f.at + body)
  if (h.dataLength > 0) out.push(['record data', body + RECORD_HEADER_SIZE, h.dataLength])
  return out
}

interface Case {
  what: string
  /** the segment this case damages (the others are the same for every case of a layout) */
  target: number
  /** an older segment cut at a batch boundary: undetectable by the format, expected to read clean */
  unreported?: boolean
  files: Array<{ number: number; bytes: Buffer }>
  expect: (o: Outcome) => string | null
}

/**
 * The layout for one kind, placement and segment role, and every damage to
 * the frame under test with the outcome each must have.
 */
function* cases(kind: RecordKind, frameType: number, placement: Placement, role: Role): Generator<Case> {
  // The neighbours carry no data (the WRITE and RESYNC rows damage data
  // frames themselves): truncating 512 data bytes of a neighbour at every
  // byte would only repeat one case 512 times.
  const scenario = [
    { seq: 2, records: [record(RecordKind.Zero, 2), record(RecordKind.Trim, 2)] },
    { seq: 3, records: [record(kind, 3)] },
    ...(placement === 'before' ? [] : [{ seq: 4, records: [record(RecordKind.Zero, 4)] }]),
  ]
  const segs =
    role === 'newest'
      ? [segment(1, [{ seq: 1, records: [record(RecordKind.Write, 1)] }]), segment(2, scenario)]
      : [segment(1, scenario), segment(2, [{ seq: 5, records: [record(RecordKind.Write, 5)] }])]
  const target = role === 'newest' ? segs[1] : segs[0]
  const bd = target.batches[placement === 'before' ? 0 : placement === 'inside' ? 1 : 2]
  const frame = frameType === FRAME_COMMIT ? bd.frames.at(-1)! : bd.frames.at(-2)!
  const all = segs.flatMap((s) => s.batches.map((b) => ({ seg: s, b })))
  const name = segmentFileName(target.number)
  const kindBatch = target.batches[1]
  const withOthers = (bytes: Buffer) => segs.map((s) => (s === target ? { number: s.number, bytes } : s))

  /** The kind's batch, when recovered, reads back as written. */
  const kindBatchOk = (o: Outcome): string | null => {
    const b = o.scanned.get(kindBatch.seq)
    if (!b) return null
    const h = decodeRecordHeader(kindBatch.records[0], 0)
    const got = [ScanField.seq, ScanField.sector, ScanField.count, ScanField.kind, ScanField.flags, ScanField.timeLow].map((f) => b.recs[f])
    const want = [h.seq, h.sector, h.count, h.kind, h.flags, h.timeLow]
    if (got.join() !== want.join()) return `the ${kindName(kind)} batch scanned as ${got} instead of ${want}`
    if (kind === RecordKind.Mark && !b.marks.get(0)?.equals(MARK_META)) return 'the MARK metadata did not come back'
    if (b.start !== kindBatch.start || b.end !== kindBatch.end) return `the ${kindName(kind)} batch at ${b.start}..${b.end}, written at ${kindBatch.start}..${kindBatch.end}`
    return null
  }
  const same = (o: Outcome, seqs: number[], torn: Outcome['torn']): string | null => {
    if (o.seqs.join() !== seqs.join()) return `batches ${o.seqs.join(',')} recovered, expected ${seqs.join(',')}`
    if (JSON.stringify(o.torn) !== JSON.stringify(torn)) return `torn ${JSON.stringify(o.torn)}, expected ${JSON.stringify(torn)}`
    return kindBatchOk(o)
  }
  const oneCorrupt = (o: Outcome, offsets: number[], afterSeq: number, end?: number): string | null => {
    if (o.corrupt.length !== 1) return `${o.corrupt.length} corruption reports: ${JSON.stringify(o.corrupt)}`
    const c = o.corrupt[0]
    if (c.segment !== name) return `corruption reported in ${c.segment}, not ${name}`
    if (!offsets.includes(c.offset)) return `corruption reported at offset ${c.offset}, not ${offsets.join(' or ')}`
    if (c.afterSeq !== afterSeq) return `corruption after seq ${c.afterSeq}, expected ${afterSeq}`
    if (end !== undefined && c.offset + c.bytes !== end) return `corruption range ends at ${c.offset + c.bytes}, not ${end}`
    if (c.bytes <= 0) return `corruption of ${c.bytes} bytes`
    return null
  }
  const seqsBefore = (pred: (x: { seg: Segment; b: Batch }) => boolean) => all.filter(pred).map((x) => x.b.seq)

  // Truncation at every byte of the frame: the file ends at frame.at + i.
  for (let i = 0; i < frame.len; i++) {
    const cut = frame.at + i
    const kept = target.batches.filter((b) => b.end <= cut)
    const lastEnd = kept.at(-1)?.end ?? SEGMENT_HEADER_SIZE
    const seqs = seqsBefore((x) => (x.seg === target ? x.b.end <= cut : role === 'newest' ? x.seg.number < target.number : x.seg.number > target.number))
    yield {
      what: `truncated at byte ${i}`,
      target: target.number,
      unreported: role === 'older' && cut === lastEnd,
      files: withOthers(target.bytes.subarray(0, cut)),
      expect: (o) => {
        if (role === 'newest') return same(o, seqs, cut > lastEnd ? { segment: target.number, at: lastEnd } : null) ?? (o.corrupt.length ? `corruption ${JSON.stringify(o.corrupt)}` : null)
        const s = same(o, seqs, null)
        if (s) return s
        // An older segment cut exactly at a batch boundary reads as a clean end:
        // the format has no segment trailer to tell (see the top of this file).
        if (cut === lastEnd) return o.corrupt.length ? `corruption ${JSON.stringify(o.corrupt)} at a batch boundary` : null
        return oneCorrupt(o, [frame.at, bd.start], kept.at(-1)?.seq ?? 0, cut)
      },
    }
  }

  // A flipped byte (first and last of each field).
  const prev = all[all.findIndex((x) => x.b === bd) - 1]?.b.seq ?? 0
  const last = target.batches.at(-1) === bd
  for (const [field, off, width] of frameFields(target.bytes, frame)) {
    for (const [at, mask] of width === 1 ? [[off, 0x01]] : [[off, 0x01], [off + width - 1, 0x80]]) {
      const bytes = Buffer.from(target.bytes)
      bytes[frame.at + at] ^= mask
      yield {
        what: `${field}: byte ${at} of the frame ^ 0x${mask.toString(16)}`,
        target: target.number,
        files: withOthers(bytes),
        expect: (o) => {
          if (role === 'newest' && last) {
            return same(o, seqsBefore((x) => x.seg.number < target.number || (x.seg === target && x.b.end <= bd.start)), { segment: target.number, at: bd.start }) ??
              (o.corrupt.length ? `corruption ${JSON.stringify(o.corrupt)}` : null)
          }
          return same(o, seqsBefore((x) => x.b !== bd), null) ?? oneCorrupt(o, [frame.at], prev)
        },
      }
    }
  }
}

/** A temp dir in memory when the machine has one: thousands of small files are written and scanned. */
function memTmpdir(t: Test): string {
  if (!fs.existsSync('/dev/shm')) return tmpdir(t)
  const d = fs.mkdtempSync('/dev/shm/tidemark-damage-')
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  return d
}

/**
 * Cases of one layout run on WORKERS directories at once: each case is a
 * dozen small file operations on libuv's thread pool, and on a busy machine
 * their latency, not CPU, is most of a case's time.
 */
const WORKERS = 4

t.test('damage catalogue: every kind, both frame types, truncation at every byte and a flip in every field', async (t) => {
  const dirs = Array.from({ length: WORKERS }, () => memTmpdir(t))
  const table = new Map<string, { truncations: number; flips: number }>()
  let total = 0
  let unreported = 0
  const started = Date.now()
  for (const kind of ALL_KINDS) {
    for (const frameType of [FRAME_CHANGE, FRAME_COMMIT]) {
      const row = `${kindName(kind).toUpperCase()} ${frameType === FRAME_CHANGE ? 'CHANGE' : 'COMMIT'}`
      const counts = { truncations: 0, flips: 0 }
      for (const placement of ['before', 'inside', 'after'] as const) {
        for (const role of ['newest', 'older'] as const) {
          const list = [...cases(kind, frameType, placement, role)]
          const failures: string[] = []
          const cutsChecked = new Set<number>()
          let next = 0
          const worker = async (dir: string) => {
            for (let fresh = true; next < list.length; fresh = false) {
              const c = list[next++]
              const o = await recover(dir, c.files, true, fresh ? undefined : c.target, cutsChecked)
              const why = typeof o === 'string' ? o : c.expect(o)
              if (why) failures.push(`${c.what}: ${why}`)
            }
          }
          await Promise.all(dirs.map(worker))
          for (const c of list) {
            if (c.unreported) unreported++
            if (c.what.startsWith('truncated')) counts.truncations++
            else counts.flips++
          }
          total += list.length
          t.same(failures.slice(0, 5), [], `${row} frame, damage ${placement} the ${kindName(kind)} batch, ${role} segment: ${list.length} cases` +
            (failures.length > 5 ? ` (${failures.length} failed)` : ''))
        }
      }
      table.set(row, counts)
    }
  }
  const lines = [...table].map(([row, c]) => `  ${row.padEnd(14)} ${String(c.truncations).padStart(5)} truncations ${String(c.flips).padStart(4)} flips`)
  t.comment(
    `damage catalogue: ${total} cases in ${Date.now() - started} ms (each row x before/inside/after x newest/older segment)\n${lines.join('\n')}\n` +
      `  of which ${unreported} cut an older segment at a batch boundary (undetectable by the format: read as a clean end)`
  )
  t.ok(total >= 9000, `${total} cases, at least the 9000 the loops above generate`)
})
