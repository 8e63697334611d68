// `plan rollback`: discard a failover that was not committed. The recovery
// VMs are killed and waited for, their taps deleted, the failover agent
// stopped, the recovered disks and the run removed (its final report kept
// in STATE/PLAN/history/). The recovery appliance was only read from and
// the agent replicated nowhere, so everything is as before the failover.
//
// An interrupted failover (phase failing-over, its `plan failover` process
// gone: SIGKILL, a crash) is rolled back the same way: its run names every
// process and tap it had started, and no more. A failover still running is
// refused (stop it: it tears down what it started).
//
// A committed run is not rolled back: its volumes replicate to the reverse
// appliance and production comes back with plan failback.
//
// `atDeadline`: the rollback is the deadline watcher's (--at-deadline
// rollback); the audit entry says so.
import { TidemarkError } from '../../proto/errors'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { runOf } from './commit'
import { retireProcesses, runActionReport } from './failover'
import { finishRun, interrupted, type FailoverState, type RunPaths } from './failover-state'
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
  if (s.phase === 'failing-over' && !interrupted(s)) {
    throw new TidemarkError('PLAN_FAILING_OVER', `tidemark plan rollback: plan ${s.plan} is being failed over by pid ${s.failover.pid} (run ${s.runId}): stop it (kill -TERM ${s.failover.pid}: it tears down what it started), or roll back once it is done`)
  }
  return s
}

/** Kills the run's VMs, deletes their taps, stops its agent and watcher; what failed goes to `problems`. */
export async function retireRun(s: FailoverState, problems: string[]): Promise<void> {
  await retireProcesses(s, problems)
}

export async function runRollback(o: { client: AdminClient; plan: Plan; paths: RunPaths; json: boolean; progress: (line: string) => void; atDeadline?: boolean }): Promise<PlanRunReport> {
  const s = checkRollback(o.paths)
  const report = runActionReport(s, o.plan, 'rollback')
  const wasInterrupted = s.phase === 'failing-over'
  try {
    await retireRun(s, report.teardownProblems)
    o.progress(`plan ${s.plan}: ${s.vms.length} VM${s.vms.length === 1 ? '' : 's'}${s.agent ? ' and the failover agent' : ''} stopped${wasInterrupted ? ' (an interrupted failover)' : ''}`)
    report.result = report.teardownProblems.length ? 'failed' : 'passed'
    if (report.teardownProblems.length) report.error = `teardown: ${report.teardownProblems[0]}`
    report.finishedAt = new Date().toISOString()
    report.details = {
      ...(o.atDeadline ? { trigger: `at the deadline (${s.commitDeadline}): plan failover --at-deadline rollback; by the watcher, pid ${process.pid}` } : {}),
      ...(wasInterrupted ? { interrupted: `the failover (pid ${s.failover.pid}) was gone before it finished` } : {}),
      failedOverAt: s.failedOverAt,
      vms: s.vms.map((v) => ({ machine: v.machine, pid: v.pid })),
      taps: s.taps,
      agentPid: s.agent?.pid ?? null,
    }
    if (!report.teardownProblems.length) report.details.history = finishRun(o.paths, report)
  } catch (err) {
    report.error = (err as Error).message
    report.finishedAt = new Date().toISOString()
  }
  await recordPlanRun(o.client, report, { json: o.json })
  return report
}
