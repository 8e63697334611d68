// The change-record format has two owners, one per language: native/src/record.h
// and proto/record.ts. The addon exports what it compiled (offsetof on
// RecordHeader, the kinds, the limits); this test holds the TypeScript side to
// it field by field, then decodes and re-encodes records a real tap produced
// (a write, a FUA write, write-zeroes, a trim, a flush, a TimeMark, and a copy
// with its GAP, RESYNC and EXACT) and expects the same bytes back.
import path from 'node:path'
import t from 'tap'
import { native } from '../native/index'
import { Tap } from '../agent/tap'
import {
  MAX_MARK_DATA,
  RECORD_FLAG_FUA,
  RECORD_FLAG_RESYNC,
  RECORD_HEADER_SIZE,
  REGION_SIZE,
  RecordField,
  RecordKind,
  SECTOR_SIZE,
  carriesSectorData,
  decodeRecordHeader,
  encodeRecord,
  encodeRecordHeader,
  expectedDataLength,
  fullTimeMs,
  isMarker,
  kindName,
  recordByteLength,
  recordData,
  recordReserved,
} from '../proto/record'
import { encodeMarkMeta } from '../proto/timemark-meta'
import { makeImage, must, nbdUri, tmpdir } from './helpers'

const FIELD_WIDTH: Record<keyof typeof RecordField, number> = {
  seq: 8,
  sector: 8,
  count: 4,
  kind: 1,
  flags: 1,
  reserved: 2,
  dataLength: 4,
  time: 4,
}

t.test('proto/record.ts and native/src/record.h agree field by field', async (t) => {
  const n = native.recordLayout
  t.equal(RECORD_HEADER_SIZE, n.headerSize, `header size ${n.headerSize}`)
  t.equal(native.recordHeaderSize, n.headerSize, 'the addon reports one header size')
  const names = Object.keys(RecordField) as Array<keyof typeof RecordField>
  t.same(names.sort(), Object.keys(n.fields).sort(), 'the same fields')
  let end = 0
  for (const f of names.sort((a, b) => RecordField[a] - RecordField[b])) {
    t.equal(RecordField[f], n.fields[f], `${f} at byte ${n.fields[f]}`)
    t.equal(FIELD_WIDTH[f], n.fieldSizes[f], `${f} is ${n.fieldSizes[f]} bytes wide`)
    t.equal(RecordField[f], end, `${f} follows the previous field without a hole`)
    end = RecordField[f] + FIELD_WIDTH[f]
  }
  t.equal(end, RECORD_HEADER_SIZE, 'the fields fill the header')
  const kinds = Object.entries(n.kinds)
  t.equal(kinds.length, 8, 'eight native kinds')
  for (const [name, value] of kinds) {
    t.equal(kindName(value), name, `kind ${value} is ${name} on both sides`)
    const key = (name[0].toUpperCase() + name.slice(1)) as keyof typeof RecordKind
    t.equal(RecordKind[key], value, `RecordKind.${key} = ${value}`)
  }
  t.equal(RECORD_FLAG_FUA, n.flags.fua, 'the FUA flag')
  t.equal(RECORD_FLAG_RESYNC, n.flags.resync, 'the resync-of-a-hole flag')
  t.equal(MAX_MARK_DATA, n.maxMarkData, 'the MARK metadata limit')
  t.equal(SECTOR_SIZE, n.sectorSize, 'the sector size')
  t.equal(REGION_SIZE, n.regionSize, 'the region size')
  t.equal(REGION_SIZE, native.regionSize, 'the region size the tap uses')
})

t.test('records a real tap produced decode and re-encode to the same bytes', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  const size = 4 * 1024 * 1024
  makeImage(img, size, 3)
  const sock = path.join(dir, 'nbd.sock')
  const tap = Tap.open({ stateDir: path.join(dir, 'state'), volumes: [{ name: 'vol', path: img }], unix: sock })
  t.teardown(() => tap.close())

  const before = Date.now()
  // writeback: qemu-io sets FUA on every write only in its default writethrough mode
  await must('qemu-io', [
    '-f', 'raw', '-t', 'writeback',
    '-c', 'write -P 0x5a 4k 8k',
    '-c', 'write -f -P 0x6b 1M 512',
    '-c', 'write -z 2M 64k',
    '-c', 'discard 3M 128k',
    '-c', 'flush',
    nbdUri(sock, 'vol'),
  ])
  const meta = encodeMarkMeta({ label: 'format-test', consistency: 'crash', wallMs: Date.now(), group: '', note: 'record-format' })
  const markSeq = tap.timemark(['vol'], meta)
  t.equal(tap.resyncFrom('vol', 60), 4, 'the last four regions are copied again (GAP, RESYNC, EXACT)')

  // Pull until the EXACT that ends the copy: an empty pull arms the tap's
  // "records are available" event, which wait() resolves on.
  const records: Buffer[] = []
  const seen = new Set<number>()
  const deadline = Date.now() + 60_000
  while (!seen.has(RecordKind.Exact) && Date.now() < deadline) {
    const b = tap.next('vol')
    if (!b) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([tap.wait('vol'), new Promise((r) => (timer = setTimeout(r, deadline - Date.now())))])
      clearTimeout(timer)
      continue
    }
    b.forEach((r) => {
      records.push(Buffer.from(r.buf.subarray(r.offset, r.offset + r.byteLength)))
      seen.add(r.kind)
    })
    tap.ack('vol', b.lastSeq)
  }
  const after = Date.now()
  for (let k = RecordKind.Write; k <= RecordKind.Exact; k++) t.ok(seen.has(k), `the tap produced a ${kindName(k)} record`)

  let prevSeq = 0
  for (const rec of records) {
    const h = decodeRecordHeader(rec, 0)
    const what = `${kindName(h.kind)} seq ${h.seq}`
    if (h.seq < prevSeq) t.fail(`${what}: seqs go back`)
    prevSeq = h.seq
    t.equal(recordByteLength(rec, 0), rec.length, `${what}: header and data are the whole record`)
    t.equal(recordReserved(rec, 0), 0, `${what}: reserved is 0`)
    const expected = expectedDataLength(h.kind, h.count)
    if (expected >= 0) t.equal(h.dataLength, expected, `${what}: ${h.dataLength} data bytes, as its kind says`)
    if (isMarker(h.kind)) t.equal(h.count, 0, `${what}: a marker names no sectors`)
    const ms = fullTimeMs(h.timeLow, after)
    t.ok(ms >= before - 1000 && ms <= after + 1000, `${what}: stamped at capture (${ms - before} ms into the test)`)

    const header = Buffer.alloc(RECORD_HEADER_SIZE, 0xee)
    encodeRecordHeader(header, 0, h)
    t.same(header, rec.subarray(0, RECORD_HEADER_SIZE), `${what}: the header re-encodes to the tap's bytes`)
    const whole = encodeRecord(h, h.dataLength ? Buffer.from(recordData(rec, 0)) : undefined)
    t.same(whole, rec, `${what}: the whole record re-encodes to the tap's bytes`)
  }
  const headers = records.map((r) => decodeRecordHeader(r, 0))
  const write = headers.find((h) => h.kind === RecordKind.Write && h.sector === 8)
  t.same(write && { count: write.count, dataLength: write.dataLength, flags: write.flags }, { count: 16, dataLength: 8192, flags: 0 }, 'the 8 KiB write at 4 KiB: sector 8, 16 sectors, no FUA')
  const fua = headers.find((h) => h.kind === RecordKind.Write && h.sector === 2048)
  t.same(fua && { count: fua.count, flags: fua.flags }, { count: 1, flags: RECORD_FLAG_FUA }, 'the write -f at 1 MiB: one sector, FUA')
  const markRec = records.find((r) => decodeRecordHeader(r, 0).kind === RecordKind.Mark)!
  t.equal(decodeRecordHeader(markRec, 0).seq, markSeq, 'the MARK has the seq timemark() returned')
  t.same(recordData(markRec, 0), meta, 'the MARK carries the metadata verbatim')
  const resync = headers.filter((h) => h.kind === RecordKind.Resync)
  t.ok(resync.length > 0 && resync.every((h) => carriesSectorData(h.kind) && h.sector >= 60 * (REGION_SIZE / SECTOR_SIZE)), 'RESYNC records carry regions 60..63')
  t.comment(`${records.length} records from the tap, kinds ${[...seen].sort().map(kindName).join(', ')}`)
})
