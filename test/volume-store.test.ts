// The appliance's volume store through real files: random change records
// applied both to the store and to an in-memory model of the disk, then
// restores at several seqs, random reads and fingerprints compared with the
// model; bad batches rejected with nothing written; pipelined appends; huge
// trims in the range key space; attach() and generations.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { ApplianceStore, type VolumeStore } from '../appliance/store'
import { initHash, sectorFingerprints } from '../proto/hash'
import { IDLE_MS } from '../appliance/replica-image'
import { tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024
const SIZE = 8 * MiB
const SECTORS = SIZE / 512
const quiet = pino({ level: 'silent' })

/** Deterministic PRNG (xorshift32). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 0x100000000
  }
}

/** One change record in the tap's layout. */
function rec(seq: number, sector: number, count: number, kind: number, data?: Buffer): Buffer {
  const dl = kind === 1 || kind === 5 ? count * 512 : 0
  const b = Buffer.alloc(32 + dl)
  b.writeBigUInt64LE(BigInt(seq), 0)
  b.writeBigUInt64LE(BigInt(sector), 8)
  b.writeUInt32LE(count, 16)
  b[20] = kind
  b.writeUInt32LE(dl, 24)
  if (dl) (data ?? crypto.randomBytes(dl)).copy(b, 32)
  return b
}

function meta(firstSeq: number, lastSeq: number, recordCount: number, appBytes = 0) {
  return { firstSeq, lastSeq, recordCount, appBytes, changedBytes: appBytes, wireBytes: appBytes }
}

/** The disk as the records say it should be. */
class Model {
  img: Buffer
  constructor(size: number) {
    this.img = Buffer.alloc(size)
  }
  apply(raw: Buffer): void {
    for (let off = 0; off < raw.length; ) {
      const sector = Number(raw.readBigUInt64LE(off + 8))
      const count = raw.readUInt32LE(off + 16)
      const kind = raw[off + 20]
      const dl = raw.readUInt32LE(off + 24)
      if (kind === 1 || kind === 5) raw.copy(this.img, sector * 512, off + 32, off + 32 + dl)
      else if (kind === 2 || kind === 3) this.img.fill(0, sector * 512, (sector + count) * 512)
      off += 32 + dl
    }
  }
}

function sha(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex')
}

/** Materialises extents(seq), checking their shape on the way. */
async function image(t: Test, v: VolumeStore, seq: number): Promise<Buffer> {
  const out = Buffer.alloc(v.meta.size)
  let last = -1
  let bad = 0
  for await (const e of v.extents(seq)) {
    if (e.offset < last || e.data.length > MiB || e.data.length === 0 || e.offset % 512 !== 0) bad++
    if (e.data.every((x) => x === 0)) bad++
    e.data.copy(out, e.offset)
    last = e.offset + e.data.length
  }
  t.equal(bad, 0, `extents at seq ${seq} are in order, at most 1 MiB, not all zero`)
  return out
}

/** A random batch: writes (some split into pieces sharing a seq), trims, zeroes, flushes, resyncs. */
function randomBatch(r: () => number, seq: number): { raw: Buffer; first: number; last: number; count: number } {
  const parts: Buffer[] = []
  const first = seq
  const n = 1 + Math.floor(r() * 6)
  for (let i = 0; i < n; i++) {
    const p = r()
    const count = 1 + Math.floor(r() * (p < 0.1 ? 600 : 40))
    const sector = Math.floor(r() * (SECTORS - count))
    if (p < 0.5) parts.push(rec(seq, sector, count, 1))
    else if (p < 0.62) {
      // MicroScan pieces: one write, disjoint sectors, one seq.
      const gap = 1 + Math.floor(r() * 8)
      parts.push(rec(seq, sector, Math.max(1, count >> 1), 1))
      if (sector + (count >> 1) + gap + 4 <= SECTORS) parts.push(rec(seq, sector + (count >> 1) + gap, 4, 1))
    } else if (p < 0.72) parts.push(rec(seq, sector, count, 2))
    else if (p < 0.82) parts.push(rec(seq, sector, count, 3))
    else if (p < 0.9) parts.push(rec(seq, 0, 0, 4))
    else parts.push(rec(seq, sector, count, 5))
    seq++
  }
  // Sometimes a batch's last seq runs past its last record (MicroScan dropped the rest).
  const last = r() < 0.2 ? seq + 2 : seq - 1
  return { raw: Buffer.concat(parts), first, last, count: parts.length }
}

t.before(() => initHash())

t.test('random records: restores at several seqs, reads and fingerprints equal the model', async (t) => {
  const dir = tmpdir(t)
  let store = await ApplianceStore.open(dir, quiet, { segmentBytes: 2 * MiB })
  let { volume: v } = await store.attach({ volume: 'vol', generation: 'g1', size: SIZE, group: '', agentId: 'a1' })
  const model = new Model(SIZE)
  const r = rng(42)
  const points = new Map<number, Buffer>() // seq -> copy of the model at that seq
  let seq = 1
  let appBytes = 0
  const pending: Array<Promise<number>> = []
  for (let b = 0; b < 300; b++) {
    const batch = randomBatch(r, seq)
    seq = batch.last + 1
    model.apply(batch.raw)
    appBytes += batch.raw.length
    // Pipelined: several appends in flight, awaited in groups.
    pending.push(v.append(batch.raw, meta(batch.first, batch.last, batch.count, batch.raw.length)))
    if (pending.length === 8) await Promise.all(pending.splice(0))
    if (b % 60 === 59) points.set(batch.last, Buffer.from(model.img))
  }
  await Promise.all(pending)
  const latest = seq - 1
  points.set(latest, Buffer.from(model.img))
  t.equal(v.durableSeq, latest, 'durable seq is the last batch seq')
  t.ok((v.stats().segments as number) > 1, 'the journal rolled over into several segments')

  for (const [s, img] of points) t.equal(sha(await image(t, v, s)), sha(img), `image at seq ${s} equals the model`)
  t.equal(sha(await image(t, v, 0)), sha(Buffer.alloc(SIZE)), 'seq 0 is an all-zero image')

  // Random reads at a point, any alignment.
  const [someSeq, someImg] = [...points][1]
  let mismatches = 0
  for (let i = 0; i < 50; i++) {
    const off = Math.floor(r() * (SIZE - 300000))
    const len = 1 + Math.floor(r() * 300000)
    if (!(await v.read(someSeq, off, len)).equals(someImg.subarray(off, off + len))) mismatches++
  }
  t.equal(mismatches, 0, 'random reads equal the model')

  // Fingerprints of every region (the last one included) equal the model's.
  const regions = Array.from({ length: SIZE / 65536 }, (_, i) => i)
  const fps = await v.fingerprints(regions)
  const want = new BigUint64Array(SECTORS)
  sectorFingerprints(model.img, want)
  t.ok(fps.equals(Buffer.from(want.buffer)), 'fingerprints equal the model')
  const two = await v.fingerprints([5, 2])
  t.ok(two.equals(Buffer.concat([Buffer.from(want.buffer, 5 * 1024, 1024), Buffer.from(want.buffer, 2 * 1024, 1024)])), 'regions in request order')
  // An older point (failback's compare) through its own map: its image's fingerprints.
  const old = new BigUint64Array(SECTORS)
  sectorFingerprints(someImg, old)
  t.ok((await v.fingerprintsAt(someSeq, regions)).equals(Buffer.from(old.buffer)), `fingerprints at seq ${someSeq} equal that point's model`)
  await t.rejects(v.fingerprintsAt(someSeq, [SIZE / 65536]), { code: 'REGION_OUT_OF_RANGE' })

  const st = v.stats()
  t.equal(st.appBytes, appBytes, 'app bytes counted')
  t.equal(st.batches, 300, 'batches counted')
  t.equal((await v.verify()).ok, true, 'verify finds nothing wrong')

  // Reopen: the same images.
  await store.close()
  store = await ApplianceStore.open(dir, quiet, { segmentBytes: 2 * MiB })
  v = store.get('vol')!
  t.equal(v.durableSeq, latest, 'durable seq survives a reopen')
  t.equal(v.stats().appBytes, appBytes, 'counters survive a reopen')
  t.equal(sha(await image(t, v, latest)), sha(model.img), 'latest image equals the model after reopen')
  await store.close()
})

t.test('direct journal writes: the zero padding a crash leaves after the last batch is cut on reopen, said as padding; nothing is lost', async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet)
  const { volume: v } = await store.attach({ volume: 'vol', generation: 'g1', size: SIZE, group: '', agentId: 'a1' })
  const model = new Model(SIZE)
  const r = rng(9)
  let seq = 1
  for (let b = 0; b < 20; b++) {
    const batch = randomBatch(r, seq)
    seq = batch.last + 1
    model.apply(batch.raw)
    await v.append(batch.raw, meta(batch.first, batch.last, batch.count, batch.raw.length))
  }
  // What a crash leaves: the files as they are while the volume is written (no close to cut the padding).
  const copy = path.join(tmpdir(t), 'copy')
  fs.cpSync(dir, copy, { recursive: true })
  await store.close()
  const segs = path.join(copy, 'volumes', 'vol', 'segments')
  const newest = fs.readdirSync(segs).filter((n) => n.endsWith('.tmj')).sort().at(-1)!
  const size = fs.statSync(path.join(segs, newest)).size
  t.equal(size % 4096, 0, `the newest segment ends on a block boundary while it is written (${size} bytes)`)

  const lines: Array<{ level: number; msg: string }> = []
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as { level: number; msg: string }) })
  const again = await ApplianceStore.open(copy, log)
  t.teardown(() => again.close())
  const v2 = again.get('vol')!
  t.equal(v2.durableSeq, seq - 1, 'every batch is there')
  t.equal(sha(await image(t, v2, seq - 1)), sha(model.img), 'the image equals the model')
  t.ok(lines.some((l) => /bytes of zero padding off/.test(l.msg) && l.level === 30), 'the padding is cut, said as padding (info)')
  t.notOk(lines.some((l) => /torn tail/.test(l.msg)), 'not as a torn tail')
  t.ok(fs.statSync(path.join(segs, newest)).size < size, 'the file is cut back to the journal')
  t.equal((await v2.verify()).ok, true, 'verify finds nothing wrong')
})

t.test('fingerprints reflect appends called just before, and a short last region', async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet)
  t.teardown(() => store.close())
  const size = 65536 + 4096 // the last region is 8 sectors
  const { volume: v } = await store.attach({ volume: 'short', generation: 'g', size, group: '', agentId: 'a' })
  const data = crypto.randomBytes(4096)
  void v.append(rec(1, 128, 8, 1, data), meta(1, 1, 1)) // not awaited
  const fp = await v.fingerprints([1])
  const want = new BigUint64Array(8)
  sectorFingerprints(data, want)
  t.equal(fp.length, 64, 'eight sectors in the short region')
  t.ok(fp.equals(Buffer.from(want.buffer)), 'the append called before is reflected')
  // The live map moves with every append: a second write over half the region shows at once.
  const half = crypto.randomBytes(2048)
  void v.append(rec(2, 132, 4, 1, half), meta(2, 2, 1))
  const fp2 = await v.fingerprints([1])
  sectorFingerprints(Buffer.concat([data.subarray(0, 2048), half]), want)
  t.ok(fp2.equals(Buffer.from(want.buffer)), 'a later append is reflected too')
  await t.rejects(v.fingerprints([2]), { code: 'REGION_OUT_OF_RANGE' })
})

t.test('bad batches are rejected with their code, nothing written, counted', async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet)
  t.teardown(() => store.close())
  const { volume: v } = await store.attach({ volume: 'bad', generation: 'g', size: SIZE, group: '', agentId: 'a' })
  await v.append(rec(10, 0, 8, 1), meta(10, 10, 1))
  const before = { seq: v.durableSeq, bytes: v.stats().journalBytes }
  const goodImg = sha(await image(t, v, 10))

  const trunc = rec(11, 0, 8, 1)
  const badDataLen = rec(11, 0, 2, 1)
  badDataLen.writeUInt32LE(1000, 24)
  const trimWithData = rec(11, 0, 2, 1)
  trimWithData[20] = 2
  const reserved = rec(11, 0, 1, 2)
  reserved.writeUInt16LE(7, 22)
  const cases: Array<[string, string, Buffer, ReturnType<typeof meta>]> = [
    ['first seq not above the last accepted', 'SEQ_OUT_OF_ORDER', rec(10, 0, 1, 1), meta(10, 10, 1)],
    ['record seq below the batch', 'SEQ_OUT_OF_ORDER', rec(11, 0, 1, 1), meta(12, 13, 1)],
    ['record seq past the batch', 'SEQ_OUT_OF_ORDER', rec(14, 0, 1, 1), meta(12, 13, 1)],
    ['seqs going back', 'SEQ_OUT_OF_ORDER', Buffer.concat([rec(13, 0, 1, 1), rec(12, 1, 1, 1)]), meta(12, 13, 2)],
    ['last seq below first', 'SEQ_OUT_OF_ORDER', rec(12, 0, 1, 1), meta(12, 11, 1)],
    ['write past the end', 'RECORD_OUT_OF_RANGE', rec(11, SECTORS - 1, 2, 1), meta(11, 11, 1)],
    ['trim past the end', 'RECORD_OUT_OF_RANGE', rec(11, SECTORS, 1, 2), meta(11, 11, 1)],
    ['unknown kind', 'RECORD_MALFORMED', (() => { const b = rec(11, 0, 1, 2); b[20] = 9; return b })(), meta(11, 11, 1)],
    ['data length != count*512', 'RECORD_MALFORMED', badDataLen.subarray(0, 32 + 1000), meta(11, 11, 1)],
    ['TRIM with data', 'RECORD_MALFORMED', trimWithData, meta(11, 11, 1)],
    ['FLUSH with data', 'RECORD_MALFORMED', (() => { const b = rec(11, 0, 1, 1); b[20] = 4; return b })(), meta(11, 11, 1)],
    ['truncated record data', 'RECORD_MALFORMED', trunc.subarray(0, trunc.length - 1), meta(11, 11, 1)],
    ['truncated record header', 'RECORD_MALFORMED', Buffer.concat([rec(11, 0, 1, 2), Buffer.alloc(10)]), meta(11, 11, 2)],
    ['record count says more', 'RECORD_MALFORMED', rec(11, 0, 1, 2), meta(11, 11, 2)],
    ['record count says fewer', 'RECORD_MALFORMED', Buffer.concat([rec(11, 0, 1, 2), rec(11, 5, 1, 2)]), meta(11, 11, 1)],
    ['nonzero reserved field', 'RECORD_MALFORMED', reserved, meta(11, 11, 1)],
  ]
  const counts: Record<string, number> = {}
  for (const [what, code, raw, m] of cases) {
    await t.rejects(v.append(raw, m), { name: 'TidemarkError', code }, what)
    counts[code] = (counts[code] ?? 0) + 1
  }
  t.equal(v.durableSeq, before.seq, 'durable seq unchanged')
  t.equal(v.stats().journalBytes, before.bytes, 'journal bytes unchanged')
  t.same((v.stats().rejected as { byCode: Record<string, number> }).byCode, counts, 'each rejection counted by code')
  t.equal(sha(await image(t, v, 10)), goodImg, 'image unchanged')
  // The volume still takes good batches, and equal consecutive seqs are fine.
  t.equal(await v.append(Buffer.concat([rec(11, 0, 1, 1), rec(11, 4, 1, 1)]), meta(11, 11, 2)), 11, 'a good batch after the bad ones')
  // A message that says what and where.
  await t.rejects(v.append(rec(12, SECTORS, 1, 1), meta(12, 12, 1)), { message: /volume bad.*seq 12.*past the end of the volume/ }, 'the error names volume, seq and why')
})

t.test('a refused batch voids the pipelined batches called after it: nothing lands behind the gap', async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet)
  t.teardown(() => store.close())
  const { volume: v } = await store.attach({ volume: 'gap', generation: 'g', size: SIZE, group: '', agentId: 'a' })
  await v.append(rec(10, 0, 8, 1), meta(10, 10, 1))
  // Checked on the pool at once, placed in call order: 12..12 is checked against 11..11's declared seqs
  // and would pass, but 11..11 is refused, so 12..12 must not land after the hole.
  const bad = v.append(rec(11, SECTORS, 1, 1), meta(11, 11, 1))
  const next = v.append(rec(12, 8, 8, 1), meta(12, 12, 1))
  const after = v.append(rec(13, 16, 8, 1), meta(13, 13, 1))
  await t.rejects(bad, { code: 'RECORD_OUT_OF_RANGE' }, 'the bad batch is refused for what it is')
  await t.rejects(next, { code: 'SEQ_OUT_OF_ORDER', message: /seqs 12\.\.12: follows a batch that was refused/ }, 'the next one is void')
  await t.rejects(after, { code: 'SEQ_OUT_OF_ORDER', message: /follows a batch that was refused/ }, 'and the one after it')
  t.equal(v.durableSeq, 10, 'nothing after the refused batch was journaled')
  t.same((v.stats().rejected as { byCode: Record<string, number> }).byCode, { RECORD_OUT_OF_RANGE: 1 }, 'only the refusal itself is counted')
  // The stream that follows resends from the durable seq: checked against what landed, not what was declared.
  t.equal(await v.append(rec(11, 8, 8, 1), meta(11, 11, 1)), 11, 'the resent batch is taken')
})

t.test('pipelined appends on several volumes resolve in order and share fsyncs', async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet)
  t.teardown(() => store.close())
  const vols = await Promise.all(
    [0, 1, 2, 3].map(async (i) => (await store.attach({ volume: `p${i}`, generation: 'g', size: SIZE, group: '', agentId: 'a' })).volume)
  )
  const roundsBefore = store.commits.rounds
  const order: string[] = []
  const all: Array<Promise<number>> = []
  for (let s = 1; s <= 50; s++) {
    for (const [i, v] of vols.entries()) {
      all.push(
        v.append(rec(s, s * 8, 8, 1), meta(s, s, 1)).then((d) => {
          order.push(`${i}:${d}`)
          return d
        })
      )
    }
  }
  const seqs = await Promise.all(all)
  t.same(seqs, Array.from({ length: 200 }, (_, k) => Math.floor(k / 4) + 1), 'each append resolves with its durable seq')
  for (const i of [0, 1, 2, 3]) {
    const mine = order.filter((o) => o.startsWith(`${i}:`)).map((o) => Number(o.split(':')[1]))
    t.same(mine, [...mine].sort((a, b) => a - b), `volume ${i} resolves in call order`)
  }
  for (const v of vols) t.equal(v.durableSeq, 50)
  const rounds = store.commits.rounds - roundsBefore
  t.ok(rounds < 200 / 4, `200 batches took ${rounds} group-commit rounds`)
  // markFullSyncDone waits for the appends before it.
  const v = vols[0]
  const p = v.append(rec(51, 0, 1, 1), meta(51, 51, 1))
  await v.markFullSyncDone()
  t.equal(v.durableSeq, 51, 'markFullSyncDone waited for the append called before it')
  await p
})

t.test('a trim spanning more than 256 chunks is one range key, merged by seq on reads', async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet)
  t.teardown(() => store.close())
  const size = 64 * MiB
  const { volume: v } = await store.attach({ volume: 'big', generation: 'g', size, group: '', agentId: 'a' })
  const model = new Model(size)
  const batches = [
    Buffer.concat([rec(1, 0, 2048, 1), rec(1, 100000, 16, 1)]), // 1 MiB at 0, 8 KiB at 48.8 MiB
    rec(2, 1024, (size - 1024 * 512) / 512 - 100, 2), // trim almost everything
    rec(3, 70000, 64, 1), // a write inside the trimmed range, newer than the trim
    rec(4, 131000, 72, 3), // a small zero
  ]
  for (const [i, raw] of batches.entries()) {
    const n = i === 0 ? 2 : 1
    await v.append(raw, meta(i + 1, i + 1, n))
  }
  t.equal(v.stats().rangeEntries, 1, 'the big trim went to the range key space')
  const images: Buffer[] = [Buffer.alloc(size)]
  for (const raw of batches) {
    model.apply(raw)
    images.push(Buffer.from(model.img))
  }
  for (let s = 1; s <= 4; s++) t.equal(sha(await image(t, v, s)), sha(images[s]), `image at seq ${s}`)
  t.ok((await v.read(4, 1024 * 512 - 512, 4096)).equals(images[4].subarray(1024 * 512 - 512, 1024 * 512 + 3584)), 'read across the trim edge')
  t.ok((await v.read(1, 100000 * 512, 8192)).equals(images[1].subarray(100000 * 512, 100000 * 512 + 8192)), 'read before the trim')
  t.ok((await v.read(2, 100000 * 512, 8192)).equals(Buffer.alloc(8192)), 'read after the trim is zero')
  t.equal((await v.verify()).ok, true, 'verify counts range keys too')
  // Only the 1 MiB write (16 chunks), the small write, the inner write and the zero have chunk keys.
  let chunkKeys = 0
  for await (const _ of v.index.entryIterator('c')) chunkKeys++
  t.equal(chunkKeys, 16 + 1 + 1 + 2, 'no chunk key per trimmed chunk')
})

t.test('attach: same generation, new volume, new generation or size (refused until accepted, then the old one kept beside)', async (t) => {
  const dir = tmpdir(t)
  let store = await ApplianceStore.open(dir, quiet)
  const hello = { volume: 'db', generation: 'gen1', size: SIZE, group: 'grp', agentId: 'agent-1' }
  const a = await store.attach(hello)
  t.equal(a.fullSync, true, 'a new volume needs a full sync')
  t.equal(a.volume.durableSeq, 0)
  t.same({ ...a.volume.meta, created: '' }, { name: 'db', generation: 'gen1', size: SIZE, group: 'grp', agentId: 'agent-1', created: '' })
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'volumes', 'db', 'meta.json'), 'utf8'))
  t.equal(m.generation, 'gen1', 'meta.json written')
  await a.volume.append(rec(1, 0, 8, 1), meta(1, 1, 1))
  const b = await store.attach(hello)
  t.equal(b.volume, a.volume, 'same generation: the same volume')
  t.equal(b.fullSync, true, 'full sync still needed until marked done')
  await b.volume.markFullSyncDone()
  t.equal((await store.attach(hello)).fullSync, false, 'full sync done')
  await store.close()
  store = await ApplianceStore.open(dir, quiet)
  const c = await store.attach(hello)
  t.equal(c.fullSync, false, 'full-sync-done survives a reopen')
  t.equal(c.volume.durableSeq, 1, 'durable seq survives a reopen')

  // A new generation from a hello that may not accept it: refused, the history untouched.
  await t.rejects(store.attach({ ...hello, generation: 'gen2' }), { code: 'GENERATION_CHANGED', message: /tidemark volume accept-generation --volume db/ })
  t.equal(store.get('db'), c.volume, 'the refused hello leaves the volume as it was')
  t.same(store.pendingGeneration('db')?.generation, 'gen2', 'and waits for an admin')
  await t.rejects(store.acceptGeneration('db', 'gen3'), { code: 'NO_PENDING_GENERATION' })
  const accepted = await store.acceptGeneration('db', 'gen2')
  t.equal(accepted.retiredAs, 'db.retired-1', 'accepting retires the history beside the volume')
  await t.rejects(store.attach({ ...hello, generation: 'gen9' }), { code: 'GENERATION_CHANGED' }, 'only the accepted generation starts the new history')
  const d = await store.attach({ ...hello, generation: 'gen2' })
  t.equal(d.fullSync, true, 'a new generation needs a full sync')
  t.equal(d.volume.durableSeq, 0, 'and starts an empty journal')
  const old = store.get('db.retired-1')!
  t.ok(old.retired, 'the old history is served read-only under its new name')
  t.equal(old.meta.generation, 'gen1')
  t.equal(old.durableSeq, 1, 'with all of its history')
  t.ok(fs.existsSync(path.join(dir, 'volumes', 'db.retired-1', 'segments', '00000001.tmj')), 'and its journal')
  await t.rejects(store.attach({ ...hello, volume: 'db.retired-1', generation: 'gen1' }), { code: 'VOLUME_RETIRED' }, 'no agent writes a retired history')
  t.equal(store.get('db'), d.volume)

  // A hello that may accept (an admin's, or any without roles) retires the history itself.
  const e = await store.attach({ ...hello, generation: 'gen2', size: SIZE * 2 }, { accept: true })
  t.equal(e.fullSync, true, 'a different size is a new volume too')
  t.equal(e.volume.meta.size, SIZE * 2)
  t.ok(store.get('db.retired-2')?.retired, 'the second history is kept beside the first')
  await store.close()
  store = await ApplianceStore.open(dir, quiet)
  t.equal(store.get('db.retired-1')?.durableSeq, 1, 'retired histories are served again after a reopen')
  t.equal(store.get('db')?.meta.size, SIZE * 2)

  const [x, y] = await Promise.all([store.attach({ ...hello, volume: 'twin' }), store.attach({ ...hello, volume: 'twin' })])
  t.equal(x.volume, y.volume, 'concurrent hellos for one new name create it once')
  await t.rejects(store.attach({ ...hello, volume: '../evil' }), { code: 'BAD_VOLUME_NAME' })
  await t.rejects(store.attach({ ...hello, volume: 'ok', size: 1000 }), { code: 'BAD_VOLUME_SIZE' })
  t.same(store.volumes().map((v) => v.name).sort(), ['db', 'db.retired-1', 'db.retired-2', 'twin'])
  await store.close()
})

t.test('replica image: mapped reads of every point equal the model while it is behind, caught up, rebuilt after a compaction and reopened', async (t) => {
  const dir = tmpdir(t)
  let store = await ApplianceStore.open(dir, quiet, { segmentBytes: 2 * MiB })
  let { volume: v } = await store.attach({ volume: 'vol', generation: 'g1', size: SIZE, group: '', agentId: 'a1' })
  const model = new Model(SIZE)
  const r = rng(7)
  const points = new Map<number, Buffer>()
  let seq = 1
  const write = async (batches: number): Promise<void> => {
    for (let b = 0; b < batches; b++) {
      const batch = randomBatch(r, seq)
      seq = batch.last + 1
      model.apply(batch.raw)
      await v.append(batch.raw, meta(batch.first, batch.last, batch.count, batch.raw.length))
      if (b % 40 === 39) points.set(batch.last, Buffer.from(model.img))
    }
    points.set(seq - 1, Buffer.from(model.img))
  }
  // Whole-volume mapped reads of every point, and random ranges of the newest.
  const check = async (what: string): Promise<void> => {
    let bad = 0
    for (const [s, img] of points) if (v.durableSeq >= s && (s >= (v.base?.seq ?? 0)) && !(await v.readMapped(s, 0, SIZE)).equals(img)) bad++
    for (let i = 0; i < 40; i++) {
      const off = Math.floor(r() * (SIZE - 200000))
      const len = 1 + Math.floor(r() * 200000)
      if (!(await v.readMapped(seq - 1, off, len)).equals(model.img.subarray(off, off + len))) bad++
    }
    t.equal(bad, 0, `${what}: every point reads as the model`)
  }

  await write(120)
  await v.replicaSettled()
  let st = v.replicaStatus()!
  t.ok(st.ready && st.seq === seq - 1 && st.rounds >= 1, `the image caught up with seq ${seq - 1} (${st.rounds} rounds)`)
  const read0 = st.bytesRead
  await check('caught up')
  st = v.replicaStatus()!
  t.ok(st.bytesRead - read0 >= SIZE / 4, `reads took ${st.bytesRead - read0} bytes from the image`)

  // Written past the image: old points and the newest read right from what the image still holds.
  await write(120)
  await check('image behind')
  const copied = st.bytesCopied
  await v.replicaSettled()
  st = v.replicaStatus()!
  t.equal(st.seq, seq - 1, 'caught up again')
  t.ok(st.bytesCopied - copied < SIZE, `a delta round copied ${st.bytesCopied - copied} bytes, not the volume`)
  await check('caught up again')

  // A compaction makes a new base: the image is set aside, then rebuilt in a full round.
  const foldable = v.foldableSegments()
  t.ok(foldable.length > 0, 'segments to fold')
  t.ok(await v.compact(foldable[0].lastSeq), 'compacted')
  t.equal(v.replicaStatus()!.ready, false, 'not read from after a compaction')
  await check('after compaction')
  await v.replicaSettled()
  t.equal(v.replicaStatus()!.ready, true, 'usable after a round')
  await check('after compaction, caught up')

  // Reopen: the image picks up from replica.json with a delta round.
  await write(40)
  await v.replicaSettled()
  await store.close()
  store = await ApplianceStore.open(dir, quiet, { segmentBytes: 2 * MiB })
  v = store.get('vol')!
  await v.replicaSettled()
  st = v.replicaStatus()!
  t.ok(st.ready && st.seq === seq - 1, 'usable after a reopen')
  t.equal(st.bytesCopied, 0, 'nothing copied again after a clean reopen')
  await check('reopened')

  // Without replica images the files go and reads are the same.
  await store.close()
  store = await ApplianceStore.open(dir, quiet, { segmentBytes: 2 * MiB, replicaImages: false })
  v = store.get('vol')!
  t.equal(v.replicaStatus(), null, 'no replica image')
  t.notOk(fs.existsSync(path.join(v.dir, 'replica.img')), 'its file is removed')
  await check('without a replica image')
  await store.close()
})

t.test("replica rounds give way to every volume's appends: a quiet volume's round waits while another volume is written, then catches up", async (t) => {
  const dir = tmpdir(t)
  const store = await ApplianceStore.open(dir, quiet, { segmentBytes: 64 * MiB })
  t.teardown(() => store.close())
  const hello = { generation: 'g1', size: 64 * MiB, group: '', agentId: 'a1' }
  const { volume: a } = await store.attach({ ...hello, volume: 'a' })
  const { volume: b } = await store.attach({ ...hello, volume: 'b' })
  await Promise.all([a.replicaSettled(), b.replicaSettled()])
  // 32 MiB for a's next round to copy.
  let seqA = 1
  for (let i = 0; i < 32; i++, seqA++) {
    const r = rec(seqA, i * 2048, 2048, 1)
    await a.append(r, meta(seqA, seqA, 1, r.length))
  }
  const before = a.replicaStatus()!
  // b written without a pause for three of a's quiet periods: a's round does not run to its end
  // (it does not start, or it is stopped by b's next batch).
  let seqB = 1
  for (const end = Date.now() + 3 * IDLE_MS; Date.now() < end; seqB++) {
    const r = rec(seqB, (seqB % 512) * 128, 128, 1)
    await b.append(r, meta(seqB, seqB, 1, r.length))
  }
  const during = a.replicaStatus()!
  t.equal(during.rounds, before.rounds, `no round of a finished while b was written (${seqB - 1} batches to b, ${during.roundsStopped} of a's rounds stopped)`)
  t.not(during.seq, seqA - 1, "a's image does not hold its newest point yet")
  // b quiet: a's round runs and catches up.
  await waitFor(async () => a.replicaStatus()!.seq === seqA - 1, "a's round once the store is quiet", 60_000, 50)
  t.ok(a.replicaStatus()!.ready, "a's image is usable")
})
