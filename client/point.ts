// Points in time: reading the forms a user gives (a seq, latest, an ISO
// time, a TimeMark id or label), asking the appliance which seq a point names
// (it refuses points that cannot be restored exactly), and describing it.
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { PointInTime } from '../proto/generated/tidemark/v1/PointInTime'
import type { ResolveReply__Output } from '../proto/generated/tidemark/v1/ResolveReply'
import { clientError, unary } from './admin-client'

/** "N" or "latest" as a point; null when it is neither. */
export function seqPoint(v: string): PointInTime | null {
  if (v === 'latest') return { latest: true }
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) return null
  return { seq: Number(v) }
}

export { isoTimeMs } from '../proto/export-name'

/** Asks the appliance which seq the point names (and refuses points that cannot be restored). */
export async function resolvePoint(client: AdminClient, volume: string, point: PointInTime, command: string): Promise<ResolveReply__Output> {
  try {
    return await unary<{ volume: string; point: PointInTime }, ResolveReply__Output>(client.resolve.bind(client), { volume, point })
  } catch (err) {
    throw clientError(command, err)
  }
}

/** "seq 1234", "TimeMark 1234 'nightly' (app)", "seq 1234 (recorded at ...)" */
export function describePoint(r: ResolveReply__Output): string {
  if (r.timemark) {
    const t = r.timemark
    return `TimeMark ${t.id}${t.label ? ` '${t.label}'` : ''} (${t.consistency}, ${new Date(t.wallTimeMs).toISOString()})`
  }
  return r.timeMs ? `seq ${r.seq} (recorded ${new Date(r.timeMs).toISOString()})` : `seq ${r.seq}`
}
