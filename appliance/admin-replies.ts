// The Admin service's typed replies, built from what the stores report:
// VolumeStore.stats()/journal()/show()/verify(), Retention.info()/run() and
// the replication streams. Nullable values become unset optional fields.
// The CLI turns these back into the JSON it always printed (cli/inspect-json.ts).
import type { AgentStream } from '../proto/generated/tidemark/v1/AgentStream'
import type { Compaction } from '../proto/generated/tidemark/v1/Compaction'
import type { CompactReply } from '../proto/generated/tidemark/v1/CompactReply'
import type { RecordInfo } from '../proto/generated/tidemark/v1/RecordInfo'
import type { RetentionStatus } from '../proto/generated/tidemark/v1/RetentionStatus'
import type { SegmentInfo } from '../proto/generated/tidemark/v1/SegmentInfo'
import type { VerifyResult } from '../proto/generated/tidemark/v1/VerifyResult'
import type { VolumeStats } from '../proto/generated/tidemark/v1/VolumeStats'
import type { StreamInfo } from './replication-service'
import type { RetentionPlan } from './retention'
import type { CompactResult } from './volume-store'
import type { ReplicaStatus } from './replica-image'

/** VolumeStore.stats(), as it reports it. */
interface StoreStats {
  volume: string
  generation: string
  size: number
  group: string
  agentId: string
  journalBytes: number
  segments: number
  records: number
  batches: number
  durableSeq: number
  acceptedSeq: number
  firstSeq: number
  indexedSeq: number
  appBytes: number
  changedBytes: number
  wireBytes: number
  rangeEntries: number
  rejected: { total: number; byCode: Record<string, number> }
  corrupt: Array<{ segment: string; offset: number; bytes: number; afterSeq: number; message: string }>
  fullSyncDone: boolean
  timemarks: number
  exactSeq: number
  oldestExactSeq: number
  inexactWindows: Array<{ start: number; end: number }>
  base: { seq: number; timeMs: number; throughSegment: number } | null
  retainedSince: string
  retainedWindowSeconds: number
  failed: string | null
  state: string
  stateReason: string | null
  stateSince: string | null
  faults: Record<string, number>
  replica: ReplicaStatus | null
  seed: { source: string; seq: number; seededAt: string; dataBytes: number } | null
}

/** Retention.info(). */
interface RetentionInfo {
  rule: string | null
  warning: string | null
  lastCompaction: CompactResult | null
  error: string | null
  pressure: string | null
}

const opt = <T>(v: T | null | undefined): T | undefined => v ?? undefined

export function compactionReply(c: CompactResult | null): Compaction | null {
  if (!c) return null
  return {
    volume: c.volume,
    baseSeq: c.baseSeq,
    baseTime: opt(c.baseTime),
    segmentsDropped: c.segmentsDropped,
    journalBytesBefore: c.journalBytesBefore,
    journalBytesAfter: c.journalBytesAfter,
    expiredTimeMarks: c.expiredTimeMarks,
    indexKeysDeleted: c.indexKeysDeleted,
    ms: c.ms,
  }
}

export function volumeStatsReply(
  name: string,
  stats: Record<string, unknown>,
  retention: Record<string, unknown> | null,
  agent: StreamInfo | null
): VolumeStats {
  const s = stats as unknown as StoreStats
  const r = retention as unknown as RetentionInfo | null
  const status: RetentionStatus | null = r
    ? { rule: opt(r.rule), warning: opt(r.warning), lastCompaction: compactionReply(r.lastCompaction), error: opt(r.error), pressure: opt(r.pressure) }
    : null
  const stream: AgentStream | null = agent ? { ...agent } : null
  return {
    name,
    volume: s.volume,
    generation: s.generation,
    size: s.size,
    group: s.group,
    agentId: s.agentId,
    journalBytes: s.journalBytes,
    segments: s.segments,
    records: s.records,
    batches: s.batches,
    durableSeq: s.durableSeq,
    acceptedSeq: s.acceptedSeq,
    firstSeq: s.firstSeq,
    indexedSeq: s.indexedSeq,
    appBytes: s.appBytes,
    changedBytes: s.changedBytes,
    wireBytes: s.wireBytes,
    rangeEntries: s.rangeEntries,
    rejected: { total: s.rejected.total, byCode: { ...s.rejected.byCode } },
    corrupt: s.corrupt.map((c) => ({ ...c })),
    fullSyncDone: s.fullSyncDone,
    timemarks: s.timemarks,
    exactSeq: s.exactSeq,
    oldestExactSeq: s.oldestExactSeq,
    inexactWindows: s.inexactWindows.map((w) => ({ ...w })),
    base: s.base ? { ...s.base } : null,
    retainedSince: s.retainedSince,
    retainedWindowSeconds: s.retainedWindowSeconds,
    failed: opt(s.failed),
    state: s.state,
    stateReason: opt(s.stateReason),
    stateSince: opt(s.stateSince),
    faults: { ...s.faults },
    replica: s.replica ? { ...s.replica, error: opt(s.replica.error) } : null,
    seed: s.seed ? { ...s.seed } : null,
    retention: status,
    agent: stream,
  }
}

export function compactReply(volume: string, r: { rule: string | null; plan: RetentionPlan; result: CompactResult | null }): CompactReply {
  return { volume, rule: opt(r.rule), upTo: r.plan.upTo, warning: opt(r.plan.shrinking), compaction: compactionReply(r.result) }
}

export type { RecordInfo, SegmentInfo, VerifyResult }
