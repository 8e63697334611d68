// The point-in-time flags shared by restore, timeview and failback:
// exactly one of --timemark ID|LABEL, --at ISO-TIME, --seq N|latest.
import type { PointInTime } from '../proto/generated/tidemark/v1/PointInTime'
import type { ResolveReply__Output } from '../proto/generated/tidemark/v1/ResolveReply'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import { clientError, unary } from './admin-client'
import { usage, type Parsed } from './args'

export const POINT_FLAGS = { timemark: { value: true }, at: { value: true }, seq: { value: true } }

export const POINT_HELP = `  --timemark ID|LABEL  a TimeMark, by id (its seq) or by its label (tidemark timemark list)
  --at ISO-TIME        the newest point whose change was recorded at or before this time
                       (2026-11-23T14:05:00Z; without a zone, the local time)
  --seq N|latest       every change up to and including seq N, or the newest exact point`

export function parsePoint(a: Parsed, command: string): PointInTime {
  const given = (['timemark', 'at', 'seq'] as const).filter((k) => a.has(k))
  if (given.length === 0) throw usage(command, 'give the point: --timemark ID|LABEL, --at ISO-TIME or --seq N|latest')
  if (given.length > 1) throw usage(command, `give one point, not ${given.map((k) => `--${k}`).join(' and ')}`)
  const v = a.get(given[0])![0]
  if (given[0] === 'seq') {
    if (v === 'latest') return { latest: true }
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw usage(command, `--seq '${v}' must be a number or latest`)
    return { seq: Number(v) }
  }
  if (given[0] === 'timemark') {
    if (!v) throw usage(command, '--timemark needs an id or a label')
    return { timemark: v }
  }
  // A date alone (2026-11-23) is midnight UTC to Date.parse; insist on a time.
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(v) ? Date.parse(v) : NaN
  if (!Number.isFinite(ms) || ms < 0) throw usage(command, `--at '${v}' is not an ISO time like 2026-11-23T14:05:00Z`)
  return { atMs: ms }
}

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
