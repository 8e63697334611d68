// The appliance's batch ingest (appliance/record-check.ts over
// native/src/batch_ingest.h): the frames it writes are the bytes
// journal-format.ts's TypeScript encoder writes, for every record kind, raw,
// checksummed or LZ4; and every bad batch is refused with the code and the
// words the TypeScript checks used before the work moved to native code (the
// messages below were produced by that code, case for case; an LZ4 block that
// cannot be decompressed now names the cause in LZ4's own terms).
import t from 'tap'
import { native } from '../native/index'
import { encodeBatch } from '../proto/change-batch'
import { initHash } from '../proto/hash'
import { RECORD_HEADER_SIZE, RecordKind, changesSectors, recordCount, recordKind, recordSector, recordSeq } from '../proto/record'
import { COMMIT_BODY_SIZE, FRAME_CHANGE, FRAME_COMMIT, FRAME_HEADER_SIZE, encodeBatchFrames } from '../appliance/journal-format'
import { CheckedField, STRIDE, checkAndFrame, checkAndFrameAsync, type BatchDecl } from '../appliance/record-check'
import { LAST_ACCEPTED, SIZE_SECTORS, VOLUME, badBatches, everyKind, goodMark, rec, write } from './lib/bad-batches'

const WALL_MS = 1795430400123
const ctx = { volume: VOLUME, lastAcceptedSeq: LAST_ACCEPTED, sizeSectors: SIZE_SECTORS, wallMs: WALL_MS }

/** The records of a raw payload, split. */
function split(raw: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let off = 0; off < raw.length; ) {
    const len = RECORD_HEADER_SIZE + raw.readUInt32LE(off + 24)
    out.push(raw.subarray(off, off + len))
    off += len
  }
  return out
}

/** What the native ingest must produce for a good batch: TypeScript's frames, and each record's fields. */
function expected(raw: Buffer, d: BatchDecl): { framed: Buffer; recs: number[] } {
  const records = split(raw)
  const framed = encodeBatchFrames(records, { ...d, wallMs: WALL_MS })
  const recs: number[] = []
  let at = 0
  for (const r of records) {
    const kind = recordKind(r, 0)
    recs.push(recordSeq(r, 0), recordSector(r, 0), changesSectors(kind) ? recordCount(r, 0) : 0, kind, at)
    at += FRAME_HEADER_SIZE + r.length
  }
  return { framed, recs }
}

t.before(() => initHash())

t.test('the native frame layout is journal-format.ts\'s', async (t) => {
  const l = native.journalFrameLayout
  t.equal(l.frameHeaderSize, FRAME_HEADER_SIZE)
  t.equal(l.commitBodySize, COMMIT_BODY_SIZE)
  t.equal(l.frameChange, FRAME_CHANGE)
  t.equal(l.frameCommit, FRAME_COMMIT)
  t.equal(l.checkedStride, STRIDE)
  t.same(l.checkedFields, CheckedField, 'the checked record fields, in order')
})

t.test('every kind, raw, checksummed and LZ4: the frames TypeScript writes, byte for byte', async (t) => {
  const { payload, decl } = everyKind()
  const want = expected(payload, decl)
  const plain = checkAndFrame(payload, decl, ctx)
  t.ok(plain.framed.equals(want.framed), 'raw records: the same frames')
  t.same([...plain.recs], want.recs, 'raw records: seq, sector, sectors changed, kind, frame offset')
  const none = encodeBatch(payload, decl, false)
  const checked = checkAndFrame(none.payload as Buffer, decl, ctx, { compression: 'COMPRESSION_NONE', rawLength: payload.length, checksum: none.checksum as Buffer })
  t.ok(checked.framed.equals(want.framed), 'checksummed payload: the same frames')
  // Compressible: the records padded with zero-filled writes.
  const padded = Buffer.concat([payload, write(17, 600, 8).fill(0, 32), rec(17, 700, 16, 1, Buffer.alloc(8192))])
  const pd = { ...decl, recordCount: decl.recordCount + 2 }
  const lz4 = encodeBatch(padded, pd)
  t.equal(lz4.compression, 'COMPRESSION_LZ4', 'the padded batch travels compressed')
  const fromLz4 = checkAndFrame(lz4.payload as Buffer, pd, ctx, { compression: 'COMPRESSION_LZ4', rawLength: padded.length, checksum: lz4.checksum as Buffer })
  const wantLz4 = expected(padded, pd)
  t.ok(fromLz4.framed.equals(wantLz4.framed), 'LZ4 payload: the same frames as its raw records')
  t.same([...fromLz4.recs], wantLz4.recs)
  // The LZ4 scratch is reused: a smaller batch after a larger one is whole.
  const again = checkAndFrame(none.payload as Buffer, decl, ctx, { compression: 'COMPRESSION_NONE', rawLength: payload.length, checksum: none.checksum as Buffer })
  t.ok(again.framed.equals(want.framed), 'a raw batch after an LZ4 one')
  const marks = [...plain.recs].filter((_, i) => i % STRIDE === CheckedField.kind && plain.recs[i] === RecordKind.Mark)
  t.equal(marks.length, 1, 'the MARK is listed with the others')
})

t.test('random batches: the frames TypeScript writes', async (t) => {
  let s = 12345
  const rnd = (n: number): number => {
    s = (s * 1103515245 + 12345) & 0x7fffffff
    return s % n
  }
  for (let b = 0; b < 40; b++) {
    const records: Buffer[] = []
    let seq = 11
    const n = 1 + rnd(40)
    for (let i = 0; i < n; i++) {
      seq += rnd(3)
      const kind = [1, 1, 1, 2, 3, 4, 5, 6, 7, 8][rnd(10)]
      const count = 1 + rnd(64)
      const sector = rnd(SIZE_SECTORS - count)
      if (kind === 1) records.push(write(seq, sector, count))
      else if (kind === 5) records.push(rec(seq, sector, count, 5, Buffer.alloc(count * 512, rnd(256))))
      else if (kind === 2 || kind === 3) records.push(rec(seq, sector, count, kind))
      else if (kind === 6) records.push(goodMark(seq, `m${b}-${i}`))
      else records.push(rec(seq, 0, 0, kind))
    }
    const raw = Buffer.concat(records)
    const d = { firstSeq: 11, lastSeq: seq, recordCount: n, appBytes: raw.length, changedBytes: rnd(1e6), wireBytes: rnd(1e6) }
    const want = expected(raw, d)
    const enc = encodeBatch(raw, d, b % 2 === 0)
    const encoding = {
      compression: enc.compression as 'COMPRESSION_NONE' | 'COMPRESSION_LZ4',
      rawLength: raw.length,
      checksum: enc.checksum as Buffer,
    }
    // Odd batches on the pool, into a reused buffer of the framed size, as the appliance's writer checks them.
    const got = b % 2 ? await checkAndFrameAsync(enc.payload as Buffer, d, ctx, encoding, Buffer.alloc(want.framed.length)) : checkAndFrame(enc.payload as Buffer, d, ctx, encoding)
    if (!got.framed.equals(want.framed) || got.recs.length !== want.recs.length || got.recs.some((v, i) => v !== want.recs[i])) {
      t.fail(`batch ${b} (${n} records, ${enc.compression}) differs from TypeScript's frames`)
      return
    }
  }
  t.pass('40 batches of random records, raw and LZ4, framed as TypeScript frames them (half on the pool)')
})

// name, code, message (the TypeScript checks' words; LZ4's own failures: a pattern)
const REFUSED: Array<[string, string, string | RegExp]> = [
  ['first seq not above the last accepted', 'SEQ_OUT_OF_ORDER', 'volume v, batch seqs 10..10: first seq 10 is not above the last accepted seq 10'],
  ['last seq below first', 'SEQ_OUT_OF_ORDER', 'volume v, batch seqs 12..11: last seq 11 is below first seq 12'],
  ['record count does not fit the payload', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record count 2 does not fit 32 payload bytes'],
  ['truncated record header', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: truncated record header at payload byte 32 (10 bytes left)'],
  ['seq beyond 2^53', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record at payload byte 0 has a seq or sector beyond 2^53'],
  ['seqs going back', 'SEQ_OUT_OF_ORDER', 'volume v, batch seqs 12..13: record 1 (seq 12, payload byte 32): seq goes back from 13'],
  ['record seq below the batch', 'SEQ_OUT_OF_ORDER', 'volume v, batch seqs 12..13: record 0 (seq 11, payload byte 0): seq goes back from 12'],
  ['record seq past the batch', 'SEQ_OUT_OF_ORDER', "volume v, batch seqs 12..13: record 0 (seq 14, payload byte 0): seq is past the batch's last seq 13"],
  ['unknown kind', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): unknown kind 9'],
  ['kind 0', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): unknown kind 0'],
  ['nonzero reserved field', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): reserved header field is not zero'],
  ['a GAP names sectors', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): a GAP marker names sectors'],
  ['an EXACT at a sector', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): a EXACT marker names sectors'],
  ['an EXACT with data', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): a EXACT marker carries 4 data bytes'],
  ['MARK metadata over the limit', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): MARK metadata of 5000 bytes is over 4096 or runs past the payload'],
  ['MARK metadata past the payload', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): MARK metadata of 7 bytes is over 4096 or runs past the payload'],
  ['MARK metadata not JSON', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): MARK metadata is not JSON'],
  ['MARK metadata of another version', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): MARK metadata has version 2, not 1'],
  ['WRITE data length is not count*512', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): 2 sectors need 1024 data bytes, record has 1000'],
  ['ZERO with data', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): ZERO record carries 512 data bytes'],
  ['FLUSH with data', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): FLUSH record carries 3 data bytes'],
  ['truncated record data', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): data runs past the end of the 4127-byte payload'],
  ['write past the end', 'RECORD_OUT_OF_RANGE', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): sectors 2047..2048 are past the end of the volume (2048 sectors)'],
  ['trim at a sector far past the end', 'RECORD_OUT_OF_RANGE', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): sectors 4503599627370496..4503603922337790 are past the end of the volume (2048 sectors)'],
  ['resync past the end', 'RECORD_OUT_OF_RANGE', 'volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): sectors 2048..2048 are past the end of the volume (2048 sectors)'],
  ['more records than declared', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: payload holds more than the 1 records the batch declares'],
  ['more records than declared, the extra one a bad MARK', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: record 1 (seq 11, payload byte 32): MARK metadata is not JSON'],
  ['more records than declared, the extra one a good MARK', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: payload holds more than the 1 records the batch declares'],
  ['fewer records than declared', 'RECORD_MALFORMED', 'volume v, batch seqs 11..11: payload holds 1 records, the batch declares 2'],
  ['a bad MARK before a record past the end', 'RECORD_MALFORMED', 'volume v, batch seqs 11..13: record 1 (seq 12, payload byte 141): MARK metadata is not a JSON object'],
  ['a good MARK before an unknown kind', 'RECORD_MALFORMED', 'volume v, batch seqs 11..12: record 1 (seq 12, payload byte 141): unknown kind 9'],
  ['a flipped byte', 'BATCH_CHECKSUM', 'batch checksum mismatch (seqs 11..17): computed 5191a2dc47bbf86d, batch says 23e40b86908a0b7c'],
  ['a payload shorter than its raw length', 'BATCH_CORRUPT', 'batch payload is 100 bytes, the batch says 10157'],
  ['a cut LZ4 block', 'BATCH_CORRUPT', /^LZ4 payload cannot be decompressed: /],
  ['an LZ4 block longer than it announces', 'BATCH_CORRUPT', /^LZ4 payload cannot be decompressed: /],
]

t.test('bad batches: refused with the code and the words they always had', async (t) => {
  const cases = badBatches()
  t.equal(cases.length, REFUSED.length, 'a message for every case')
  for (const c of cases) {
    const want = REFUSED.find(([name]) => name === c.name)
    if (!want) {
      t.fail(`no message for ${c.name}`)
      continue
    }
    let err: { code?: string; message?: string } | null = null
    try {
      checkAndFrame(c.payload, c.decl, ctx, c.encoding)
    } catch (e) {
      err = e as { code?: string; message?: string }
    }
    t.equal(err?.code, want[1], `${c.name}: ${want[1]}`)
    if (typeof want[2] === 'string') t.equal(err?.message, want[2], `${c.name}: the same words`)
    else t.match(err?.message, want[2], `${c.name}: says why (${err?.message})`)
    // The pool's check (the appliance's write path) refuses it in the same words.
    const onPool = await checkAndFrameAsync(c.payload, c.decl, ctx, c.encoding).then(() => null, (e: { code?: string; message?: string }) => e)
    t.same([onPool?.code, onPool?.message], [err?.code, err?.message], `${c.name}: the same on the pool`)
  }
})

t.test('the declaration as JavaScript numbers', async (t) => {
  const r = write(11, 0, 1)
  t.throws(() => checkAndFrame(r, { firstSeq: 2 ** 53 + 2, lastSeq: 2 ** 53 + 2, recordCount: 1, appBytes: 0, changedBytes: 0, wireBytes: 0 }, ctx), {
    code: 'SEQ_OUT_OF_ORDER',
    message: `volume v, batch seqs ${2 ** 53 + 2}..${2 ** 53 + 2}: seqs must be positive integers`,
  })
  t.throws(() => checkAndFrame(r, { firstSeq: 11, lastSeq: 11, recordCount: 0.5, appBytes: 0, changedBytes: 0, wireBytes: 0 }, ctx), {
    code: 'RECORD_MALFORMED',
    message: 'volume v, batch seqs 11..11: record count 0.5 does not fit 544 payload bytes',
  })
  const empty = checkAndFrame(Buffer.alloc(0), { firstSeq: 11, lastSeq: 11, recordCount: 0, appBytes: 0, changedBytes: 0, wireBytes: 0 }, ctx)
  t.ok(empty.framed.equals(encodeBatchFrames([], { firstSeq: 11, lastSeq: 11, recordCount: 0, appBytes: 0, changedBytes: 0, wireBytes: 0, wallMs: WALL_MS })), 'an empty batch is a lone COMMIT')
})
