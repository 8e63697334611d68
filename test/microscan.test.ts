// MicroScan on hand-made record batches: what it drops, what it sends and
// how, that its cache stays within budget, and that the ChangeBatch it
// encodes natively is the one encodeBatch would make.
import crypto from 'node:crypto'
import t from 'tap'
import { uncompressSync } from 'lz4-napi'
import { MicroScan, SECTORS_PER_REGION } from '../agent/microscan'
import { RecordBatch, RecordKind, SECTOR_SIZE, type RecordCursor } from '../native/record-batch'
import { initHash, sectorFingerprints, zeroSectorFingerprint } from '../proto/hash'
import { encodeBatch, MIN_COMPRESS, SAMPLE, WORTH } from '../proto/change-batch'
import { native } from '../native'

const GiB = 1024 ** 3

interface Rec {
  seq: number
  sector: number
  count: number
  kind: RecordKind
  flags?: number
  data?: Buffer
}

function batch(recs: Rec[]): RecordBatch {
  const parts: Buffer[] = []
  for (const r of recs) {
    const h = Buffer.alloc(32)
    h.writeBigUInt64LE(BigInt(r.seq), 0)
    h.writeBigUInt64LE(BigInt(r.sector), 8)
    h.writeUInt32LE(r.count, 16)
    h[20] = r.kind
    h[21] = r.flags ?? 0
    h.writeUInt32LE(r.data?.length ?? 0, 24)
    parts.push(h)
    if (r.data) parts.push(r.data)
  }
  return new RecordBatch(Buffer.concat(parts))
}

interface Out {
  seq: number
  sector: number
  count: number
  kind: number
  flags: number
  data: Buffer
}

function records(raw: Buffer): Out[] {
  const out: Out[] = []
  new RecordBatch(raw).forEach((r: RecordCursor) =>
    out.push({ seq: r.seq, sector: r.sector, count: r.count, kind: r.kind, flags: r.flags, data: Buffer.from(r.data()) })
  )
  return out
}

/** `n` sectors, sector i filled with byte (seed + i). */
function sectors(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n * SECTOR_SIZE)
  for (let i = 0; i < n; i++) b.fill((seed + i) & 0xff, i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE)
  return b
}

t.before(() => initHash())

t.test('unchanged sectors are dropped; changed ones leave as runs with the write\'s seq, kind and flags', async (t) => {
  const ms = new MicroScan({ volumeBytes: GiB })
  const v1 = sectors(64, 1)
  const first = ms.scan(batch([{ seq: 10, sector: 100, count: 64, kind: RecordKind.Write, data: v1 }]))
  t.equal(first.records, 1, 'a first write is all misses: sent whole')
  t.equal(first.changedBytes, 64 * SECTOR_SIZE)
  t.equal(first.appBytes, 64 * SECTOR_SIZE)

  // Rewrite the same 32 KiB with sector 3 and sectors 40-41 changed.
  const v2 = Buffer.from(v1)
  v2.fill(0xee, 3 * SECTOR_SIZE, 4 * SECTOR_SIZE)
  v2.fill(0xdd, 40 * SECTOR_SIZE, 42 * SECTOR_SIZE)
  const r = ms.scan(batch([{ seq: 11, sector: 100, count: 64, kind: RecordKind.Write, flags: 1, data: v2 }]))
  const out = records(r.raw)
  t.same(
    out.map((o) => [o.seq, o.sector, o.count, o.kind, o.flags]),
    [
      [11, 103, 1, RecordKind.Write, 1],
      [11, 140, 2, RecordKind.Write, 1],
    ],
    'two records, both seq 11 with the FUA flag, covering exactly the changed sectors'
  )
  t.ok(out[0].data.equals(v2.subarray(3 * SECTOR_SIZE, 4 * SECTOR_SIZE)), 'first run carries the new sector')
  t.ok(out[1].data.equals(v2.subarray(40 * SECTOR_SIZE, 42 * SECTOR_SIZE)), 'second run carries the new sectors')
  t.equal(r.appBytes, 64 * SECTOR_SIZE, 'app bytes count the whole write')
  t.equal(r.changedBytes, 3 * SECTOR_SIZE, 'changed bytes count three sectors')
  t.equal(r.firstSeq, 11)
  t.equal(r.lastSeq, 11)

  // The same bytes again: nothing to send, but the batch still states its seqs.
  const again = ms.scan(batch([{ seq: 12, sector: 100, count: 64, kind: RecordKind.Write, data: v2 }, { seq: 13, sector: 0, count: 0, kind: RecordKind.Flush }]))
  t.same(records(again.raw).map((o) => [o.seq, o.kind]), [[13, RecordKind.Flush]], 'an unchanged rewrite is dropped; the flush always passes')
  t.equal(again.lastSeq, 13)
  t.equal(again.firstSeq, 12)
})

t.test('a miss sends: a page evicted from a small cache', async (t) => {
  // Room for 2 pages only.
  const ms = new MicroScan({ volumeBytes: GiB, cacheBytes: 2 * 1088 })
  t.equal(ms.maxPages, 2)
  const d = sectors(8, 7)
  const w = (seq: number, region: number): number =>
    ms.scan(batch([{ seq, sector: region * SECTORS_PER_REGION, count: 8, kind: RecordKind.Write, data: d }])).changedBytes
  t.equal(w(1, 0), 8 * SECTOR_SIZE, 'region 0: first write sent')
  t.equal(w(2, 0), 0, 'region 0: rewrite dropped (cached)')
  w(3, 1)
  w(4, 2) // evicts region 0, the least recently used
  t.equal(w(5, 0), 8 * SECTOR_SIZE, 'region 0 again after eviction: unknown, so sent')
  t.ok(ms.stats().evictions >= 1, 'evictions are counted')
})

t.test('the cache stays within its budget for a volume far larger than it', async (t) => {
  const budget = 1024 * 1024
  const ms = new MicroScan({ volumeBytes: 64 * 1024 * GiB, cacheBytes: budget })
  const d = sectors(8, 3)
  for (let i = 0; i < 20_000; i++) {
    const region = (i * 7919) % (64 * 1024 * 16384)
    ms.scan(batch([{ seq: i + 1, sector: region * SECTORS_PER_REGION, count: 8, kind: RecordKind.Write, data: d }]))
  }
  const s = ms.stats()
  t.ok(s.cachePages <= s.cacheMaxPages, `${s.cachePages} pages held, at most ${s.cacheMaxPages}`)
  t.ok(s.cacheBytes <= budget, `${s.cacheBytes} bytes of fingerprint state within the ${budget}-byte budget`)
  t.ok(s.evictions > 0, 'older pages were evicted')
  const small = new MicroScan({ volumeBytes: 10 * 65536, cacheBytes: 256 * 1024 * 1024 })
  t.equal(small.maxPages, 10, 'never more pages than the volume has regions')
})

t.test('trims and write-zeroes travel as metadata; zeroes written over them later are dropped', async (t) => {
  const ms = new MicroScan({ volumeBytes: GiB })
  ms.scan(batch([{ seq: 1, sector: 0, count: 16, kind: RecordKind.Write, data: sectors(16, 9) }]))
  const r = ms.scan(
    batch([
      { seq: 2, sector: 0, count: 16, kind: RecordKind.Trim },
      { seq: 3, sector: 1000, count: 4000, kind: RecordKind.Zero, flags: 1 },
    ])
  )
  const out = records(r.raw)
  t.same(out.map((o) => [o.seq, o.sector, o.count, o.kind, o.flags, o.data.length]), [
    [2, 0, 16, RecordKind.Trim, 0, 0],
    [3, 1000, 4000, RecordKind.Zero, 1, 0],
  ], 'both records are headers only')
  t.equal(r.raw.length, 64, 'two 32-byte headers, no data')
  const z = ms.scan(batch([{ seq: 4, sector: 0, count: 16, kind: RecordKind.Write, data: Buffer.alloc(16 * SECTOR_SIZE) }]))
  t.equal(z.changedBytes, 0, 'zeroes over trimmed sectors are already on the replica')
  const huge = ms.scan(batch([{ seq: 5, sector: 0, count: 2 ** 31, kind: RecordKind.Trim }]))
  t.equal(huge.raw.length, 32, 'a 1 TiB trim is one header')
})

t.test('RESYNC records compare with the replica\'s fingerprints; sectors written earlier in the batch compare with what was sent', async (t) => {
  const ms = new MicroScan({ volumeBytes: GiB })
  const zero = zeroSectorFingerprint()
  // The replica holds zeroes in region 3, except sector 7 which holds A.
  const A = Buffer.alloc(SECTOR_SIZE, 0xaa)
  const B = Buffer.alloc(SECTOR_SIZE, 0xbb)
  const fpA = new BigUint64Array(1)
  sectorFingerprints(A, fpA)
  const replicaBytes = Buffer.alloc(SECTORS_PER_REGION * 8)
  for (let i = 0; i < SECTORS_PER_REGION; i++) replicaBytes.writeBigUInt64LE(i === 7 ? fpA[0] : zero, i * 8)
  const regionData = Buffer.alloc(SECTORS_PER_REGION * SECTOR_SIZE)
  regionData.fill(0x55, 5 * SECTOR_SIZE, 6 * SECTOR_SIZE) // sector 5 differs from the replica
  A.copy(regionData, 7 * SECTOR_SIZE) // sector 7 reads A again
  const base = 3 * SECTORS_PER_REGION
  const b = batch([
    // Earlier in the batch, sector 7 was written with B: the replica's fingerprint (A) is stale for it.
    { seq: 20, sector: base + 7, count: 1, kind: RecordKind.Write, data: B },
    { seq: 21, sector: base, count: SECTORS_PER_REGION, kind: RecordKind.Resync, data: regionData },
  ])
  t.same(ms.resyncRegions(b), [3], 'the batch needs the fingerprints of region 3')
  const replica = ms.parseFingerprints([3], replicaBytes)
  const out = records(ms.scan(b, replica).raw)
  t.same(
    out.map((o) => [o.seq, o.sector - base, o.count, o.kind]),
    [
      [20, 7, 1, RecordKind.Write],
      [21, 5, 1, RecordKind.Resync],
      [21, 7, 1, RecordKind.Resync],
    ],
    'the write, then sector 5 (differs) and sector 7 (equal to the stale fingerprint, but the replica holds B by then)'
  )
  t.throws(() => ms.parseFingerprints([3], Buffer.alloc(8)), { code: 'FINGERPRINTS_MALFORMED' }, 'a short reply is refused')

  // A brand-new replica holds zeroes: the initial copy skips all-zero sectors.
  const fresh = new MicroScan({ volumeBytes: GiB })
  const zeroes = Buffer.alloc(SECTORS_PER_REGION * 8)
  for (let i = 0; i < SECTORS_PER_REGION; i++) zeroes.writeBigUInt64LE(zero, i * 8)
  const copy = batch([{ seq: 30, sector: 0, count: SECTORS_PER_REGION, kind: RecordKind.Resync, data: Buffer.alloc(SECTORS_PER_REGION * SECTOR_SIZE) }])
  const c = fresh.scan(copy, fresh.parseFingerprints([0], zeroes))
  t.equal(c.records, 0, 'an all-zero region is not sent to a new replica')
  t.equal(c.lastSeq, 30)
})

t.test('disabled: every sector is sent', async (t) => {
  const ms = new MicroScan({ volumeBytes: GiB, enabled: false })
  const d = sectors(8, 1)
  ms.scan(batch([{ seq: 1, sector: 0, count: 8, kind: RecordKind.Write, data: d }]))
  t.equal(ms.scan(batch([{ seq: 2, sector: 0, count: 8, kind: RecordKind.Write, data: d }])).changedBytes, 8 * SECTOR_SIZE)
})

t.test('encode: the scan as a ChangeBatch, with the payload rule of proto/change-batch.ts', async (t) => {
  t.same(
    native.scanEncodeLayout,
    { minCompress: MIN_COMPRESS, sample: SAMPLE, worth: WORTH, pageOverhead: 64, trimCreateLimit: 16 * SECTORS_PER_REGION },
    'the native encoder uses the same constants as encodeBatch'
  )
  const cases: Array<[string, Buffer, boolean]> = [
    ['compressible', Buffer.alloc(256 * SECTOR_SIZE, 0x41), true],
    ['random', crypto.randomBytes(512 * SECTOR_SIZE), true],
    ['compressible, compression off', Buffer.alloc(256 * SECTOR_SIZE, 0x41), false],
    ['small', Buffer.alloc(SECTOR_SIZE, 0x42), true],
  ]
  for (const [what, data, compress] of cases) {
    const b = batch([{ seq: 7, sector: 64, count: data.length / SECTOR_SIZE, kind: RecordKind.Write, flags: 1, data }])
    const raw = new MicroScan({ volumeBytes: GiB }).scan(b).raw
    const e = new MicroScan({ volumeBytes: GiB }).encode(b, null, compress)
    const ts = encodeBatch(raw, { firstSeq: 7, lastSeq: 7, recordCount: 1, appBytes: data.length, changedBytes: data.length }, compress)
    t.equal(e.msg.compression, ts.compression, `${what}: the same compression decision as encodeBatch`)
    t.ok((e.msg.checksum as Buffer).equals(ts.checksum as Buffer), `${what}: the same checksum (xxh64 of the raw records)`)
    t.equal(e.msg.rawLength, raw.length, `${what}: the raw length`)
    const payload = e.msg.payload as Buffer
    const decoded = e.msg.compression === 'COMPRESSION_LZ4' ? uncompressSync(payload) : payload
    t.ok(decoded.equals(raw), `${what}: the payload decodes (lz4-napi) to the scanned records`)
    t.same([e.msg.firstSeq, e.msg.lastSeq, e.msg.recordCount, e.msg.appBytes, e.msg.changedBytes], [7, 7, 1, data.length, data.length], `${what}: the batch's fields`)
  }
})

t.test('encodeAsync on the pool: the same batches and the same cache as encode, one scan at a time', async (t) => {
  const onThread = new MicroScan({ volumeBytes: GiB })
  const onPool = new MicroScan({ volumeBytes: GiB })
  let seed = 99
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const reused = Buffer.alloc(onPool.outputBound(256 * SECTOR_SIZE + 64))
  const small = Buffer.alloc(64)
  for (let i = 0; i < 60; i++) {
    // Overlapping writes, some repeating what was sent: the cache decides what leaves.
    const count = 1 + rnd(256)
    const data = Buffer.alloc(count * SECTOR_SIZE, rnd(3))
    const b = batch([{ seq: i + 1, sector: rnd(4096), count, kind: RecordKind.Write, data }])
    const want = onThread.encode(b, null, i % 2 === 0)
    // Every third batch into the reused payload buffer (the agent's big batches), one too small for it every fifth.
    const into = i % 3 === 0 ? reused : i % 5 === 0 ? small : undefined
    const got = await onPool.encodeAsync(b, null, i % 2 === 0, into)
    const inReused = (got.msg.payload as Buffer).buffer === reused.buffer
    if (inReused !== (into === reused)) {
      t.fail(`batch ${i}: the payload ${inReused ? 'is' : 'is not'} in the reused buffer, which was ${into === reused ? '' : 'not '}given`)
      return
    }
    if (!(got.msg.payload as Buffer).equals(want.msg.payload as Buffer) || !(got.msg.checksum as Buffer).equals(want.msg.checksum as Buffer) ||
        got.msg.compression !== want.msg.compression || got.changedBytes !== want.changedBytes || got.records !== want.records) {
      t.fail(`batch ${i}: the pool's encoding differs from the thread's`)
      return
    }
  }
  t.pass('60 batches of overlapping writes: the same payloads, checksums, compression and counts, in a reused buffer or not')
  t.same(onPool.stats(), onThread.stats(), 'and the same cache afterwards')
  const b = batch([{ seq: 100, sector: 0, count: 8, kind: RecordKind.Write, data: sectors(8, 3) }])
  const first = onPool.encodeAsync(b)
  await t.rejects(onPool.encodeAsync(b), { code: 'INTERNAL' }, 'a second scan while one runs is refused (scans follow pull order)')
  await first
  const lying = Buffer.from(batch([{ seq: 101, sector: 0, count: 2, kind: RecordKind.Write, data: sectors(2, 1) }]).buffer)
  lying.writeUInt32LE(3, 16) // 3 sectors, 1 KiB of data
  await t.rejects(onPool.encodeAsync(new RecordBatch(lying)), { code: 'MICROSCAN_BAD_BATCH', message: /holds 1024 bytes of data for 3 sectors/ }, 'a lying batch is refused on the pool in the same words')
})

t.test('a batch that is not whole records is refused, naming where', async (t) => {
  const ms = new MicroScan({ volumeBytes: GiB })
  const good = batch([{ seq: 1, sector: 0, count: 2, kind: RecordKind.Write, data: sectors(2, 1) }])
  const lying = Buffer.from(good.buffer)
  lying.writeUInt32LE(3, 16) // 3 sectors, 1 KiB of data
  t.throws(() => ms.scan(new RecordBatch(lying)), { code: 'MICROSCAN_BAD_BATCH', message: /holds 1024 bytes of data for 3 sectors/ })
})
