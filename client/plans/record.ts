// Where a finished plan run is recorded: the one place every `plan test`,
// failover, commit, rollback and failback passes through when it is
// over, whatever its result. The appliance's audit trail (appliance/audit-trail.ts)
// gets one entry, under the identity the command connected with; then the
// report goes to stdout for --json, with the entry's number in it.
//
// A run the appliance refuses to record (the caller lacks admin on the plan's
// volumes, or the appliance is gone) keeps its result: the report says why
// it was not recorded and the command prints one line about it.
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { recordAudit } from '../plan-audit'
import type { PlanRunReport } from './runner'

/** The audit trail's fields are bounded (256 bytes): a point that names many disks is cut. */
function bounded(s: string, max = 240): string {
  const b = Buffer.from(s)
  return b.length <= max ? s : `${b.subarray(0, max).toString().replace(/\uFFFD$/, '')}...`
}

export async function recordPlanRun(client: AdminClient, report: PlanRunReport, opts: { json: boolean }): Promise<void> {
  try {
    const e = await recordAudit(client, {
      action: `plan ${report.action}`,
      plan: report.plan,
      point: bounded(report.point),
      result: report.result,
      durationMs: Date.parse(report.finishedAt) - Date.parse(report.startedAt),
      volumes: [...new Set(report.machines.flatMap((m) => m.disks.map((d) => d.volume)))],
      details: {
        runId: report.runId,
        rtoSeconds: report.rtoSeconds,
        ...(report.error ? { error: report.error } : {}),
        machines: report.machines.map((m) => ({ name: m.name, boot: m.boot, bootSeconds: m.bootSeconds, check: m.check.result })),
        kept: report.kept !== undefined,
        ...(report.details ?? {}),
      },
    })
    report.audit = { seq: e.seq, who: e.who }
  } catch (err) {
    report.audit = { error: (err as Error).message.split('\n')[0] }
    process.stderr.write(`tidemark plan ${report.action}: the run was not recorded in the appliance's audit trail: ${report.audit.error}\n`)
  }
  if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`)
}
