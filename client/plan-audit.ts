// The appliance's audit trail of recovery-plan actions (appliance/audit-trail.ts),
// from the client side: recording a plan run, and reading the trail back.
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { AuditEntry__Output } from '../proto/generated/tidemark/v1/AuditEntry'
import type { ListAuditReply__Output } from '../proto/generated/tidemark/v1/ListAuditReply'
import type { ListAuditRequest } from '../proto/generated/tidemark/v1/ListAuditRequest'
import type { RecordAuditRequest } from '../proto/generated/tidemark/v1/RecordAuditRequest'
import { unary } from './admin-client'

export interface PlanRun {
  /** "plan test", "plan failover", ... */
  action: string
  plan: string
  /** the point, as the CLI names it */
  point: string
  /** "passed", "failed", ... */
  result: string
  durationMs: number
  volumes: string[]
  /** per-machine results, the measured RTO, ... (a JSON object, at most 16 KiB) */
  details: Record<string, unknown>
}

export interface AuditEntryJson extends PlanRun {
  seq: number
  time: string
  /** the caller's identity as the appliance saw it (certificate CN, uid:N), or "(unidentified)" */
  who: string
  hash: string
}

/** Records one plan action in the appliance's trail, as the caller's identity; resolves once it is on the appliance's disk. */
export async function recordAudit(admin: AdminClient, run: PlanRun): Promise<AuditEntryJson> {
  const e = await unary<RecordAuditRequest, AuditEntry__Output>(admin.recordAudit.bind(admin), {
    action: run.action,
    plan: run.plan,
    point: run.point,
    result: run.result,
    durationMs: Math.round(run.durationMs),
    volumes: run.volumes,
    detailsJson: JSON.stringify(run.details),
  })
  return auditJson(e)
}

export function auditJson(e: AuditEntry__Output): AuditEntryJson {
  let details: Record<string, unknown> = {}
  try {
    details = JSON.parse(e.detailsJson || '{}') as Record<string, unknown>
  } catch {
    details = {}
  }
  return {
    seq: Number(e.seq),
    time: e.time,
    who: e.who,
    action: e.action,
    plan: e.plan,
    point: e.point,
    result: e.result,
    durationMs: Number(e.durationMs),
    volumes: e.volumes,
    details,
    hash: e.hash,
  }
}

/** The trail (the newest `limit` entries the caller may see), and with `verify` whether its chain is intact. */
export async function listAudit(admin: AdminClient, opts: { limit?: number; verify?: boolean } = {}): Promise<{ entries: AuditEntryJson[]; verified: boolean; problem: string | null }> {
  const r = await unary<ListAuditRequest, ListAuditReply__Output>(admin.listAudit.bind(admin), { limit: opts.limit ?? 0, verify: opts.verify ?? false })
  return { entries: r.entries.map(auditJson), verified: r.verified, problem: r.problem || null }
}
