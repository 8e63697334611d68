// What `tidemark stats` and `tidemark journal ls|show` see of one volume:
// counters, seqs, points in time, the base and the retained window
// (volumeStats); the segments with their summaries (journalListing); and the
// record headers of the journal from a seq (showRecords), read through the
// index's batch locations and decoded by proto/record.ts. Nothing here
// changes the volume.
import { kindName, recordCount, recordFlags, recordKind, recordSector, recordSeq } from '../proto/record'
import type { BatchWriter } from './batch-writer'
import { FRAME_CHANGE } from './journal-format'
import { SegmentReader } from './segment'
import type { TimemarkCatalog } from './timemark-catalog'
import type { VolumeLedger } from './volume-ledger'

export interface ShownRecord {
  seq: number
  kind: string
  sector: number
  count: number
  flags: number
  segment: string
  offset: number
}

export function volumeStats(l: VolumeLedger, w: BatchWriter, catalog: TimemarkCatalog, fullSyncDone: boolean): Record<string, unknown> {
  const m = l.counters
  const base = l.base
  return {
    volume: l.meta.name,
    generation: l.meta.generation,
    size: l.meta.size,
    group: l.meta.group,
    agentId: l.meta.agentId,
    journalBytes: l.journal.bytes,
    segments: l.journal.segments.size,
    records: m.records,
    batches: m.batches,
    durableSeq: l.durableSeq,
    acceptedSeq: w.acceptedSeq,
    firstSeq: m.firstSeq,
    indexedSeq: l.index.meta?.seq ?? 0,
    appBytes: m.appBytes,
    changedBytes: m.changedBytes,
    wireBytes: m.wireBytes,
    rangeEntries: l.index.ranges.length,
    rejected: { total: Object.values(w.rejected).reduce((a, b) => a + b, 0), byCode: { ...w.rejected } },
    corrupt: l.corrupt.map((c) => ({ ...c })),
    fullSyncDone,
    timemarks: catalog.count,
    // Points in time: the newest exact point, the oldest one, and the windows where points are inexact.
    exactSeq: catalog.exactSeq,
    oldestExactSeq: catalog.oldestExactSeq,
    inexactWindows: catalog.windows.map((w) => ({ ...w })),
    base: base ? { seq: base.seq, timeMs: base.state.timeMs, throughSegment: base.state.throughSegment } : null,
    // The history kept: from the base (or the volume's creation) to now.
    retainedSince: base?.state.timeMs ? new Date(base.state.timeMs).toISOString() : l.meta.created,
    retainedWindowSeconds: Math.max(0, Math.round((Date.now() - (base?.state.timeMs || Date.parse(l.meta.created))) / 1000)),
    // normal | no_space | io_error | read_only (batch-writer.ts), why, since when, and how often each fault came
    state: w.state.state,
    stateReason: w.state.reason,
    stateSince: w.state.since ? new Date(w.state.since).toISOString() : null,
    faults: { ...w.faults },
    failed: w.state.reason,
    // Where the first point came from, on a volume Admin.SeedVolume made.
    seed: l.meta.seed ?? null,
  }
}

export function journalListing(l: VolumeLedger): Array<{ segment: string; bytes: number; records: number; firstSeq: number; lastSeq: number }> {
  return l.journal.ordered().map((s) => {
    const sum = l.summaries.get(s.number)
    return { segment: s.name, bytes: s.size, records: sum?.records ?? 0, batches: sum?.batches ?? 0, firstSeq: sum?.firstSeq ?? 0, lastSeq: sum?.lastSeq ?? 0 }
  })
}

/** Up to `limit` record headers with seq >= fromSeq, in journal order, up to the durable end. */
export async function showRecords(l: VolumeLedger, fromSeq: number, limit: number): Promise<ShownRecord[]> {
  const out: ShownRecord[] = []
  if (limit <= 0) return out
  let b = await l.index.batchAtOrAfter(Math.max(0, fromSeq))
  const end = { ...l.journal.durableEnd }
  while (b && out.length < limit) {
    const seg = l.journal.segments.get(b.segment)
    if (!seg) break
    const r = new SegmentReader(seg, b.end, b.offset, { headersOnly: true })
    for (;;) {
      const o = await r.next()
      if (o !== 'frame') break
      if (r.type !== FRAME_CHANGE) continue
      const body = r.body
      const p = r.bodyAt
      const seq = recordSeq(body, p)
      if (seq < fromSeq) continue
      out.push({
        seq,
        kind: kindName(recordKind(body, p)),
        sector: recordSector(body, p),
        count: recordCount(body, p),
        flags: recordFlags(body, p),
        segment: seg.name,
        offset: r.frameOffset,
      })
      if (out.length >= limit) break
    }
    if (b.segment === end.segment && b.end >= end.offset) break
    b = await l.index.batchAtOrAfter(b.lastSeq + 1)
  }
  return out
}
