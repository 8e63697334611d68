// The Admin service's typed replies and the one error-code -> status map:
// what `tidemark stats|journal --json` prints, after a trip through the
// wire encoding, is exactly the JSON the appliance used to send as a string
// (every field set, and every nullable one unset); and a TidemarkError comes
// back from a status with its own code.
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { compactReply, volumeStatsReply } from '../appliance/admin-replies'
import type { StreamInfo } from '../appliance/replication-service'
import { compactJson, journalJson, statsJson } from '../client/inspect-json'
import { TidemarkError } from '../proto/errors'
import type { CompactReply__Output } from '../proto/generated/tidemark/v1/CompactReply'
import type { JournalReply__Output } from '../proto/generated/tidemark/v1/JournalReply'
import type { StatsReply__Output } from '../proto/generated/tidemark/v1/StatsReply'
import { adminProto } from '../proto/load'
import { fromStatus, statusOf, toStatus } from '../proto/status'

const service = adminProto.Admin.service as unknown as Record<
  string,
  { responseSerialize: (v: unknown) => Buffer; responseDeserialize: (b: Buffer) => unknown }
>
/** A reply as the client receives it: encoded by the server's serializer, decoded by the client's. */
function wire<T>(method: string, reply: unknown): T {
  const m = service[method]
  return m.responseDeserialize(m.responseSerialize(reply)) as T
}

const compaction = {
  volume: 'db',
  baseSeq: 4000,
  baseTime: '2026-12-01T10:00:00.000Z',
  segmentsDropped: 3,
  journalBytesBefore: 900_000_000,
  journalBytesAfter: 300_000_000,
  expiredTimeMarks: 2,
  indexKeysDeleted: 7777,
  ms: 412,
}

// VolumeStore.stats() as it reports it, in its key order.
function storeStats(full: boolean): Record<string, unknown> {
  return {
    volume: 'db',
    generation: 'c91500ba-38ba-41cd-bff6-c26f06df6133',
    size: 17_179_869_184,
    group: full ? 'erp' : '',
    agentId: 'vm1',
    journalBytes: 2_099_500,
    segments: 4,
    records: 34,
    batches: 5,
    durableSeq: 2 ** 40 + 3,
    acceptedSeq: 2 ** 40 + 3,
    firstSeq: 1,
    indexedSeq: 2 ** 40,
    appBytes: 0,
    changedBytes: 2_097_152,
    wireBytes: 2_098_240,
    rangeEntries: 12,
    rejected: full ? { total: 3, byCode: { SEQ_OUT_OF_ORDER: 1, BATCH_CHECKSUM: 2 } } : { total: 0, byCode: {} },
    corrupt: full ? [{ segment: '00000003.seg', offset: 4096, bytes: 512, afterSeq: 77, message: 'frame checksum mismatch' }] : [],
    fullSyncDone: full,
    timemarks: full ? 9 : 0,
    exactSeq: 258,
    oldestExactSeq: 100,
    inexactWindows: full ? [{ start: 0, end: 100 }, { start: 200, end: 0 }] : [],
    base: full ? { seq: 4000, timeMs: 1_764_583_200_000, throughSegment: 2 } : null,
    retainedSince: '2026-12-02T05:20:09.099Z',
    retainedWindowSeconds: 86_400,
    state: full ? 'no_space' : 'normal',
    stateReason: full ? 'no space left on device: /data/volumes/db/segments/00000004.tmj needs 1048620 more bytes (at offset 2048)' : null,
    stateSince: full ? '2026-12-02T05:30:00.000Z' : null,
    faults: full ? { no_space: 2, io_error: 1 } : {},
    failed: full ? 'no space left on device: /data/volumes/db/segments/00000004.tmj needs 1048620 more bytes (at offset 2048)' : null,
    replica: full ? { seq: 2 ** 40, ready: true, rounds: 12, bytesCopied: 3_221_225_472, bytesRead: 17_179_869_184, error: 'replica image of db: copying into the replica image: No space left on device', roundsStopped: 3 } : null,
    seed: full ? { source: 'nbd+unix:///db?socket=/run/prod/nbd.sock', seq: 1, seededAt: '2026-12-02T04:30:00.000Z', dataBytes: 1_073_741_824 } : null,
  }
}

const retention = (full: boolean): Record<string, unknown> =>
  full
    ? { rule: '7d,20G', warning: 'the 20G cap gives up history the 7d window would keep', lastCompaction: compaction, error: 'retention failed once', pressure: 'under disk pressure at 2026-12-02T05:30:01.000Z: history up to seq 4000 folded' }
    : { rule: null, warning: null, lastCompaction: null, error: null, pressure: null }

const agent: StreamInfo = { volume: 'db', agentId: 'vm1', identity: 'agent-a', peer: 'ipv4:127.0.0.1:50000', since: '2026-12-02T05:00:00.000Z', batches: 12, lastAckMs: 1_764_651_600_123 }

t.test('stats --json prints what the appliance used to send as JSON', async (t) => {
  for (const full of [true, false]) {
    const appliance = { id: 'app-1', startedAt: '2026-12-02T04:00:00.000Z', streams: full ? 1 : 0, rejected: full ? { PERMISSION_DENIED: 4 } : {} }
    const stats = storeStats(full)
    const ret = retention(full)
    // What admin-service.ts built and JSON.stringify'd before the replies were typed.
    const { replica, seed, ...rest } = stats
    const before = { appliance, volumes: [{ name: 'db', ...rest, retention: ret, agent: full ? agent : null, replica, seed }] }
    const reply = { appliance: { ...appliance }, volumes: [volumeStatsReply('db', stats, ret, full ? agent : null)] }
    t.equal(JSON.stringify(statsJson(wire<StatsReply__Output>('Stats', reply))), JSON.stringify(before), full ? 'every field set' : 'nullable fields unset')
  }
  const noRetention = { appliance: { id: 'a', startedAt: 'x', streams: 0, rejected: {} }, volumes: [volumeStatsReply('db', storeStats(false), null, null)] }
  t.equal(statsJson(wire<StatsReply__Output>('Stats', noRetention)).volumes[0].retention, null, 'an appliance without retention: null')
})

t.test('journal ls|show|verify --json print the JSON they used to', async (t) => {
  const segments = [{ segment: '00000001.seg', bytes: 1024, records: 3, batches: 1, firstSeq: 1, lastSeq: 3 }]
  const records = [{ seq: 5, kind: 'mark', sector: 0, count: 0, flags: 1, segment: '00000001.seg', offset: 64 }]
  const verify = { ok: false, records: 34, bytes: 2099500, problems: ['corruption in 00000001.seg at offset 64 (512 bytes, after seq 4): bad'] }
  const cases: Array<['LS' | 'SHOW' | 'VERIFY', unknown[] | object, string]> = [
    ['LS', segments, 'segments'],
    ['SHOW', records, 'records'],
    ['VERIFY', verify, 'verify'],
  ]
  for (const [action, value, field] of cases) {
    // Volume names that look like numbers sort first in a JS object, as they did before.
    const reply = { volumes: [{ volume: 'b', [field]: value }, { volume: '7', [field]: value }] }
    const before: Record<string, unknown> = {}
    before.b = value
    before['7'] = value
    t.equal(JSON.stringify(journalJson(wire<JournalReply__Output>('Journal', reply), action)), JSON.stringify(before), action)
  }
})

t.test('journal compact --json prints the JSON it used to', async (t) => {
  const runs = [
    { rule: '2marks', plan: { upTo: 4000, shrinking: 'cap' }, result: compaction },
    { rule: '2marks', plan: { upTo: 0, shrinking: null }, result: null },
    { rule: null, plan: { upTo: 0, shrinking: null }, result: null },
  ]
  for (const r of runs) {
    const before = { volume: 'db', rule: r.rule, upTo: r.plan.upTo, warning: r.plan.shrinking, compaction: r.result }
    t.equal(JSON.stringify(compactJson(wire<CompactReply__Output>('Compact', compactReply('db', r)))), JSON.stringify(before))
  }
})

t.test('one status map: a code goes out as its status and comes back as itself', async (t) => {
  const cases: Array<[string, grpc.status]> = [
    ['UNKNOWN_VOLUME', grpc.status.NOT_FOUND],
    ['POINT_INEXACT', grpc.status.FAILED_PRECONDITION],
    ['PERMISSION_DENIED', grpc.status.PERMISSION_DENIED],
    ['BATCH_CHECKSUM', grpc.status.DATA_LOSS],
    ['BATCH_TOO_LARGE', grpc.status.RESOURCE_EXHAUSTED],
    ['TIMEMARK_NOT_CONFIRMED', grpc.status.DEADLINE_EXCEEDED],
    ['TIMEMARK_LOST', grpc.status.ABORTED],
  ]
  for (const [code, status] of cases) {
    const s = toStatus(new TidemarkError(code, 'why'))
    t.same(s, { code: status, details: `${code}: why` }, `${code} goes out as ${grpc.status[status]}`)
    const back = fromStatus({ ...s, message: 'x', metadata: new grpc.Metadata() }, 'tidemark x: ')
    t.same([back.code, back.message], [code, `tidemark x: ${code}: why`], `${code} comes back`)
  }
  t.equal(statusOf('SOMETHING_NEW'), grpc.status.INTERNAL, 'codes not in the map are INTERNAL')
  t.same(toStatus(new Error('boom')), { code: grpc.status.INTERNAL, details: 'boom' }, 'an error without a code')
  t.same(toStatus(new TidemarkError('TIMEMARK_REFUSED', 'behind'), { codeInDetails: false }), { code: grpc.status.FAILED_PRECONDITION, details: 'behind' })
  const plain = fromStatus({ code: grpc.status.FAILED_PRECONDITION, details: 'behind', message: '', metadata: new grpc.Metadata() })
  t.equal(plain.code, 'FAILED_PRECONDITION', 'without a code in the details, the status names it')
  const lying = fromStatus({ code: grpc.status.UNAVAILABLE, details: 'UNKNOWN_VOLUME: x', message: '', metadata: new grpc.Metadata() })
  t.equal(lying.code, 'UNAVAILABLE', 'a code the status does not carry is not taken from the details')
})
