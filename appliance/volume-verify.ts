// `tidemark journal verify` for one volume: re-reads every segment up to the
// durable end, checking every frame's checksum and every batch's grammar,
// and compares the index with what the segments say it must hold (counts
// and an order-independent digest of every 'c' and 'r' entry). The index is
// read through ChunkIndex.snapshotEntries, taken before the scan, so both
// sides describe one moment: entries of later batches have higher seqs and
// are left out, and entries a concurrent compaction purges still show.
// Corruption found here is also remembered for reads and stats.
import { h64 } from '../proto/hash'
import { IndexBatch } from './chunk-index'
import { SCAN_STRIDE } from './journal'
import { SEGMENT_HEADER_SIZE } from './journal-format'
import type { VolumeLedger } from './volume-ledger'
import { SCAN_COUNT, SCAN_FRAME, SCAN_KIND, SCAN_SECTOR, SCAN_SEQ } from './volume-recovery'

export interface VerifyResult {
  ok: boolean
  records: number
  bytes: number
  problems: string[]
}

/** Call with every append settled (the facade awaits the writer first). */
export async function verifyVolume(l: VolumeLedger, opts: { quiet?: boolean } = {}): Promise<VerifyResult> {
  const j = l.journal
  const until = { ...j.durableEnd }
  const seqLimit = l.durableSeq
  const floor = l.base?.seq ?? 0
  const snapshot = l.index.snapshotEntries()
  const problems: string[] = []
  let records = 0
  let bytes = 0
  const expected = new Digest()
  const first = j.ordered()[0]
  try {
    const res = await j.scan({ segment: first.number, offset: SEGMENT_HEADER_SIZE }, 0, { until, tailMayTear: false }, (b) => {
      records += b.count
      for (let i = 0; i < b.count; i++) {
        const k = i * SCAN_STRIDE
        const r = b.recs
        // Folded into the base: a compaction between its commit and its segment
        // deletion leaves these records in the segments, never in the index.
        if (r[k + SCAN_SEQ] <= floor) continue
        IndexBatch.entries(r[k + SCAN_SEQ], r[k + SCAN_SECTOR], r[k + SCAN_COUNT], r[k + SCAN_KIND], b.segment, r[k + SCAN_FRAME], (key, value) =>
          expected.add(key, value)
        )
      }
    })
    for (const s of j.ordered()) if (s.number <= until.segment) bytes += s.number === until.segment ? until.offset : s.size
    for (const c of res.corrupt) problems.push(`corruption in ${c.segment} at offset ${c.offset} (${c.bytes} bytes, after seq ${c.afterSeq}): ${c.message}`)
    if (res.end.segment !== until.segment || res.end.offset !== until.offset) {
      problems.push(`the last intact COMMIT ends at ${res.end.segment}:${res.end.offset}, the durable end is ${until.segment}:${until.offset}`)
    }
    // A journal empty above its base (a seeded volume before its agent's first batch) ends at the base.
    const lastSeq = Math.max(res.lastSeq, floor)
    if (lastSeq !== seqLimit) problems.push(`the segments end at seq ${lastSeq}, the durable seq is ${seqLimit}`)
    await l.mergeCorrupt(res.corrupt)
    const found = new Digest()
    await snapshot.forEach((k, v, seq) => {
      // Entries at or below the base are folded history a purge has not reached yet.
      if (seq <= seqLimit && seq > floor) found.add(k, v)
    })
    if (found.count !== expected.count || found.sum !== expected.sum || found.xor !== expected.xor) {
      problems.push(`index disagrees with the segments: ${found.count} entries, the segments call for ${expected.count}`)
    }
  } finally {
    await snapshot.close()
  }
  if (problems.length && !opts.quiet) l.log.error({ problems: problems.length }, `verify found problems: ${problems[0]}`)
  return { ok: problems.length === 0, records, bytes, problems }
}

/** Order-independent digest of a set of index entries: count, sum and xor of xxh64(key || value). */
class Digest {
  count = 0
  sum = 0n
  xor = 0n
  private readonly scratch = Buffer.allocUnsafe(64)
  add(k: Buffer, v: Buffer): void {
    k.copy(this.scratch, 0)
    v.copy(this.scratch, k.length)
    const h = h64(this.scratch.subarray(0, k.length + v.length))
    this.count++
    this.sum = (this.sum + h) & 0xffffffffffffffffn
    this.xor ^= h
  }
}
