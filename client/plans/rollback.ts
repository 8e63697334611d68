// `plan rollback`: discard a failover that was not committed. The recovery
// VMs are killed and waited for, their taps deleted, the failover agent
// stopped, the recovered disks and the run removed (its final report kept
// in STATE/PLAN/history/). The recovery appliance was only read from and
// the agent replicated nowhere, so everything is as before the failover.
//
// A committed run is not rolled back: its volumes replicate to the reverse
// appliance and production comes back with plan failback.
import { TidemarkError } from '../../proto/errors'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { runOf } from './commit'
import { runActionReport } from './failover'
import { stopFailoverAgent } from './failover-agent'
import { finishRun, stopProcess, type FailoverState, type RunPaths } from './failover-state'
import { deleteTap } from './host-network'
import type { Plan } from './plan'
import { recordPlanRun } from './record'
import type { PlanRunReport } from './runner'

export function checkRollback(p: RunPaths): FailoverState {
  const s = runOf(p, 'plan rollback', 'roll back')
  if (s.phase === 'committed') {
    throw new TidemarkError(
      'COMMITTED',
      `tidemark plan rollback: plan ${s.plan} was committed at ${s.reverse?.committedAt}: its volumes replicate to ${s.reverse?.appliance}; bring production back with plan failback`
    )
  }
  return s
}

/** Kills the run's VMs, deletes their taps, stops its agent; what failed goes to `problems`. */
export async function retireRun(s: FailoverState, problems: string[]): Promise<void> {
  await Promise.all(s.vms.map((v) => stopProcess(v, 'SIGKILL').catch((e: Error) => problems.push(`VM ${v.machine} (pid ${v.pid}): ${e.message}`))))
  for (const v of s.vms) if (v.tap) await deleteTap(v.tap).catch((e: Error) => problems.push(`tap ${v.tap}: ${e.message}`))
  await stopFailoverAgent(s.agent).catch((e: Error) => problems.push(`agent (pid ${s.agent.pid}): ${e.message}`))
}

export async function runRollback(o: { client: AdminClient; plan: Plan; paths: RunPaths; json: boolean; progress: (line: string) => void }): Promise<PlanRunReport> {
  const s = checkRollback(o.paths)
  const report = runActionReport(s, o.plan, 'rollback')
  try {
    await retireRun(s, report.teardownProblems)
    o.progress(`plan ${s.plan}: ${s.vms.length} VM${s.vms.length === 1 ? '' : 's'} and the failover agent stopped`)
    report.result = report.teardownProblems.length ? 'failed' : 'passed'
    if (report.teardownProblems.length) report.error = `teardown: ${report.teardownProblems[0]}`
    report.finishedAt = new Date().toISOString()
    report.details = { failedOverAt: s.failedOverAt, vms: s.vms.map((v) => ({ machine: v.machine, pid: v.pid })), agentPid: s.agent.pid }
    if (!report.teardownProblems.length) report.details.history = finishRun(o.paths, report)
  } catch (err) {
    report.error = (err as Error).message
    report.finishedAt = new Date().toISOString()
  }
  await recordPlanRun(o.client, report, { json: o.json })
  return report
}
