// What `tidemark stats|journal ... --json` prints, from the Admin service's
// typed replies: the same keys, in the same order, with null where a field is
// unset, as scripts have always parsed it (it was the appliance's JSON string
// before the replies were typed).
import type { AgentStream__Output } from '../proto/generated/tidemark/v1/AgentStream'
import type { Compaction__Output } from '../proto/generated/tidemark/v1/Compaction'
import type { CompactReply__Output } from '../proto/generated/tidemark/v1/CompactReply'
import type { JournalReply__Output } from '../proto/generated/tidemark/v1/JournalReply'
import type { RetentionStatus__Output } from '../proto/generated/tidemark/v1/RetentionStatus'
import type { StatsReply__Output } from '../proto/generated/tidemark/v1/StatsReply'
import type { VolumeStats__Output } from '../proto/generated/tidemark/v1/VolumeStats'

const orNull = <T>(v: T | undefined): T | null => v ?? null

function compactionJson(c: Compaction__Output | null): Record<string, unknown> | null {
  if (!c) return null
  return {
    volume: c.volume,
    baseSeq: c.baseSeq,
    baseTime: orNull(c.baseTime),
    segmentsDropped: c.segmentsDropped,
    journalBytesBefore: c.journalBytesBefore,
    journalBytesAfter: c.journalBytesAfter,
    expiredTimeMarks: c.expiredTimeMarks,
    indexKeysDeleted: c.indexKeysDeleted,
    ms: c.ms,
  }
}

function retentionJson(r: RetentionStatus__Output | null): Record<string, unknown> | null {
  if (!r) return null
  return { rule: orNull(r.rule), warning: orNull(r.warning), lastCompaction: compactionJson(r.lastCompaction), error: orNull(r.error), pressure: orNull(r.pressure) }
}

function agentJson(a: AgentStream__Output | null): Record<string, unknown> | null {
  if (!a) return null
  return { volume: a.volume, agentId: a.agentId, identity: a.identity, peer: a.peer, since: a.since, batches: a.batches, lastAckMs: a.lastAckMs }
}

export function volumeStatsJson(v: VolumeStats__Output): Record<string, unknown> {
  return {
    name: v.name,
    volume: v.volume,
    generation: v.generation,
    size: v.size,
    group: v.group,
    agentId: v.agentId,
    journalBytes: v.journalBytes,
    segments: v.segments,
    records: v.records,
    batches: v.batches,
    durableSeq: v.durableSeq,
    acceptedSeq: v.acceptedSeq,
    firstSeq: v.firstSeq,
    indexedSeq: v.indexedSeq,
    appBytes: v.appBytes,
    changedBytes: v.changedBytes,
    wireBytes: v.wireBytes,
    rangeEntries: v.rangeEntries,
    rejected: { total: v.rejected?.total ?? 0, byCode: { ...v.rejected?.byCode } },
    corrupt: v.corrupt.map((c) => ({ segment: c.segment, offset: c.offset, bytes: c.bytes, afterSeq: c.afterSeq, message: c.message })),
    fullSyncDone: v.fullSyncDone,
    timemarks: v.timemarks,
    exactSeq: v.exactSeq,
    oldestExactSeq: v.oldestExactSeq,
    inexactWindows: v.inexactWindows.map((w) => ({ start: w.start, end: w.end })),
    base: v.base ? { seq: v.base.seq, timeMs: v.base.timeMs, throughSegment: v.base.throughSegment } : null,
    retainedSince: v.retainedSince,
    retainedWindowSeconds: v.retainedWindowSeconds,
    state: v.state,
    stateReason: orNull(v.stateReason),
    stateSince: orNull(v.stateSince),
    faults: { ...v.faults },
    failed: orNull(v.failed),
    retention: retentionJson(v.retention),
    agent: agentJson(v.agent),
    replica: v.replica
      ? { seq: v.replica.seq, ready: v.replica.ready, rounds: v.replica.rounds, bytesCopied: v.replica.bytesCopied, bytesRead: v.replica.bytesRead, error: orNull(v.replica.error), roundsStopped: v.replica.roundsStopped }
      : null,
    seed: v.seed ? { source: v.seed.source, seq: v.seed.seq, seededAt: v.seed.seededAt, dataBytes: v.seed.dataBytes } : null,
  }
}

export function statsJson(s: StatsReply__Output): { appliance: Record<string, unknown>; volumes: Array<Record<string, unknown>> } {
  const a = s.appliance
  return {
    appliance: { id: a?.id ?? '', startedAt: a?.startedAt ?? '', streams: a?.streams ?? 0, rejected: { ...a?.rejected } },
    volumes: s.volumes.map(volumeStatsJson),
  }
}

/** Per volume: ls's segments, show's records or verify's result, whichever the reply carries. */
export function journalJson(r: JournalReply__Output, action: 'LS' | 'SHOW' | 'VERIFY'): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const v of r.volumes) {
    if (action === 'VERIFY') {
      const x = v.verify
      out[v.volume] = { ok: x?.ok ?? false, records: x?.records ?? 0, bytes: x?.bytes ?? 0, problems: x?.problems ?? [] }
    } else if (action === 'SHOW') {
      out[v.volume] = v.records.map((x) => ({ seq: x.seq, kind: x.kind, sector: x.sector, count: x.count, flags: x.flags, segment: x.segment, offset: x.offset }))
    } else {
      out[v.volume] = v.segments.map((x) => ({
        segment: x.segment,
        bytes: x.bytes,
        records: x.records,
        batches: x.batches,
        firstSeq: x.firstSeq,
        lastSeq: x.lastSeq,
      }))
    }
  }
  return out
}

export function compactJson(r: CompactReply__Output): Record<string, unknown> {
  return { volume: r.volume, rule: orNull(r.rule), upTo: r.upTo, warning: orNull(r.warning), compaction: compactionJson(r.compaction) }
}
