// Batches that must be refused, one per rule of appliance/record-check.ts,
// and a good batch with every record kind: what test/record-check.test.ts
// feeds the appliance's native ingest. Volume "v" of 2048 sectors; the last
// accepted seq is 10.
import { encodeBatch } from '../../proto/change-batch'
import { encodeMarkMeta } from '../../proto/timemark-meta'

export const VOLUME = 'v'
export const SIZE_SECTORS = 2048
export const LAST_ACCEPTED = 10

export interface Decl {
  firstSeq: number
  lastSeq: number
  recordCount: number
  appBytes: number
  changedBytes: number
  wireBytes: number
}

export interface Encoding {
  compression: 'COMPRESSION_NONE' | 'COMPRESSION_LZ4'
  rawLength: number
  checksum: Buffer
}

export interface BatchCase {
  name: string
  payload: Buffer
  decl: Decl
  /** how the payload travels; none: raw records */
  encoding?: Encoding
}

/** One record in the tap's layout; data (if any) follows the header and sets its data length. */
export function rec(seq: number, sector: number, count: number, kind: number, data?: Buffer): Buffer {
  const h = Buffer.alloc(32)
  h.writeBigUInt64LE(BigInt(seq), 0)
  h.writeBigUInt64LE(BigInt(sector), 8)
  h.writeUInt32LE(count, 16)
  h[20] = kind
  h.writeUInt32LE(data?.length ?? 0, 24)
  h.writeUInt32LE(0x12345678, 28) // a capture time: copied into the journal as it is
  return data ? Buffer.concat([h, data]) : h
}

/** A WRITE of `count` sectors of a recognisable pattern. */
export function write(seq: number, sector: number, count: number): Buffer {
  const data = Buffer.alloc(count * 512)
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + seq + sector) & 0xff
  return rec(seq, sector, count, 1, data)
}

export function mark(seq: number, meta: Buffer | string): Buffer {
  return rec(seq, 0, 0, 6, Buffer.isBuffer(meta) ? meta : Buffer.from(meta))
}

export function goodMark(seq: number, label = 'before-upgrade'): Buffer {
  return mark(seq, encodeMarkMeta({ label, consistency: 'app', wallMs: 1795430400000, group: '', note: 'quiesce 12 ms' }))
}

export function decl(firstSeq: number, lastSeq: number, recordCount: number): Decl {
  return { firstSeq, lastSeq, recordCount, appBytes: 4096, changedBytes: 2048, wireBytes: 1000 }
}

/** Every kind, a FUA flag, a capture time, equal consecutive seqs: seqs 11..17. */
export function everyKind(): { payload: Buffer; decl: Decl } {
  const fua = write(11, 100, 8)
  fua[21] = 1
  const records = [
    write(11, 0, 8),
    fua,
    rec(12, 16, 4, 2),
    rec(12, 40, 64, 3),
    rec(13, 0, 0, 4),
    rec(14, 0, 0, 7),
    rec(15, 512, 2, 5, Buffer.alloc(1024, 0xab)),
    rec(15, 0, 0, 8),
    goodMark(16),
    write(17, SIZE_SECTORS - 1, 1),
  ]
  return { payload: Buffer.concat(records), decl: decl(11, 17, records.length) }
}

function raw(name: string, records: Buffer[], d: Decl): BatchCase {
  return { name, payload: Buffer.concat(records), decl: d }
}

export function badBatches(): BatchCase[] {
  const withReserved = rec(11, 0, 1, 2)
  withReserved.writeUInt16LE(7, 22)
  const unsafeSeq = rec(11, 0, 1, 2)
  unsafeSeq.writeUInt32LE(0x200000, 4)
  const badDataLength = write(11, 0, 2)
  badDataLength.writeUInt32LE(1000, 24)
  const truncated = write(11, 0, 8)
  const cases: BatchCase[] = [
    raw('first seq not above the last accepted', [rec(10, 0, 1, 2)], decl(10, 10, 1)),
    raw('last seq below first', [rec(12, 0, 1, 2)], decl(12, 11, 1)),
    raw('record count does not fit the payload', [rec(11, 0, 1, 2)], decl(11, 11, 2)),
    raw('truncated record header', [rec(11, 0, 1, 2), Buffer.alloc(10)], decl(11, 11, 1)),
    raw('seq beyond 2^53', [unsafeSeq], decl(11, 11, 1)),
    raw('seqs going back', [rec(13, 0, 1, 2), rec(12, 1, 1, 2)], decl(12, 13, 2)),
    raw('record seq below the batch', [rec(11, 0, 1, 2)], decl(12, 13, 1)),
    raw('record seq past the batch', [rec(14, 0, 1, 2)], decl(12, 13, 1)),
    raw('unknown kind', [rec(11, 0, 1, 9)], decl(11, 11, 1)),
    raw('kind 0', [rec(11, 0, 1, 0)], decl(11, 11, 1)),
    raw('nonzero reserved field', [withReserved], decl(11, 11, 1)),
    raw('a GAP names sectors', [rec(11, 0, 1, 7)], decl(11, 11, 1)),
    raw('an EXACT at a sector', [rec(11, 5, 0, 8)], decl(11, 11, 1)),
    raw('an EXACT with data', [rec(11, 0, 0, 8, Buffer.alloc(4))], decl(11, 11, 1)),
    raw('MARK metadata over the limit', [mark(11, Buffer.alloc(5000, 0x20))], decl(11, 11, 1)),
    raw('MARK metadata past the payload', [mark(11, '{"v":1}').subarray(0, 35)], decl(11, 11, 1)),
    raw('MARK metadata not JSON', [mark(11, 'nope')], decl(11, 11, 1)),
    raw('MARK metadata of another version', [mark(11, '{"v":2}')], decl(11, 11, 1)),
    raw('WRITE data length is not count*512', [badDataLength.subarray(0, 32 + 1000)], decl(11, 11, 1)),
    raw('ZERO with data', [rec(11, 0, 2, 3, Buffer.alloc(512))], decl(11, 11, 1)),
    raw('FLUSH with data', [rec(11, 0, 0, 4, Buffer.alloc(3))], decl(11, 11, 1)),
    raw('truncated record data', [truncated.subarray(0, truncated.length - 1)], decl(11, 11, 1)),
    raw('write past the end', [write(11, SIZE_SECTORS - 1, 2)], decl(11, 11, 1)),
    raw('trim at a sector far past the end', [rec(11, 2 ** 52, 0xffffffff, 2)], decl(11, 11, 1)),
    raw('resync past the end', [rec(11, SIZE_SECTORS, 1, 5, Buffer.alloc(512))], decl(11, 11, 1)),
    raw('more records than declared', [rec(11, 0, 1, 2), rec(11, 5, 1, 2)], decl(11, 11, 1)),
    raw('more records than declared, the extra one a bad MARK', [rec(11, 0, 1, 2), mark(11, 'nope')], decl(11, 11, 1)),
    raw('more records than declared, the extra one a good MARK', [rec(11, 0, 1, 2), goodMark(11)], decl(11, 11, 1)),
    raw('fewer records than declared', [write(11, 0, 1)], decl(11, 11, 2)),
    raw('a bad MARK before a record past the end', [goodMark(11), mark(12, '[]'), write(13, SIZE_SECTORS, 1)], decl(11, 13, 3)),
    raw('a good MARK before an unknown kind', [goodMark(11), rec(12, 0, 1, 9)], decl(11, 12, 2)),
  ]
  // The payload's own problems.
  const good = everyKind()
  const plain = encodeBatch(good.payload, good.decl, false)
  const flipped = Buffer.from(plain.payload as Buffer)
  flipped[40] ^= 0xff
  cases.push({ name: 'a flipped byte', payload: flipped, decl: good.decl, encoding: encoding(plain) })
  cases.push({ name: 'a payload shorter than its raw length', payload: good.payload.subarray(0, 100), decl: good.decl, encoding: encoding(plain) })
  const lz4 = encodeBatch(Buffer.concat([good.payload, Buffer.alloc(8192)]), good.decl)
  if (lz4.compression !== 'COMPRESSION_LZ4') throw new Error('the padded batch should compress')
  const cut = (lz4.payload as Buffer).subarray(0, (lz4.payload as Buffer).length - 20)
  cases.push({ name: 'a cut LZ4 block', payload: cut, decl: good.decl, encoding: encoding(lz4) })
  const lying = Buffer.from(lz4.payload as Buffer)
  lying.writeUInt32LE(Number(lz4.rawLength) - 1, 0)
  cases.push({ name: 'an LZ4 block longer than it announces', payload: lying, decl: good.decl, encoding: { ...encoding(lz4), rawLength: Number(lz4.rawLength) - 1 } })
  return cases
}

function encoding(b: ReturnType<typeof encodeBatch>): Encoding {
  return { compression: b.compression as Encoding['compression'], rawLength: Number(b.rawLength), checksum: Buffer.from(b.checksum as Buffer) }
}
