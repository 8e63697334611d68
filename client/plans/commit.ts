// `plan commit`: keep a failover. The failover agent is restarted with the
// plan's reverse appliance (reverse protection: the recovered volumes, and
// every write the recovery VMs make from here on, replicate there; the first
// time, a copy) and a control socket (TimeMarks, which plan failback
// takes). Before that, the reverse appliance seeds each volume from the old
// production disk where it can (reverse-seed.ts): the copy then sends only
// the sectors that differ from it, and a whole copy only where there is no
// production disk to seed from. The VMs run on through the restart: their
// disks reconnect (qemu's reconnect-delay) and see a pause. The run's phase becomes
// `committed` and the deadline no longer applies.
//
// Refused, changing nothing: with no run, when committed already, past the
// deadline (roll back, and fail over again if the point still is the one),
// or when the plan names no reverse appliance.
import { TidemarkError } from '../../proto/errors'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { failoverAgentArgv, reverseCopyStatus, startFailoverAgent, stopFailoverAgent, type ReverseTarget } from './failover-agent'
import { interrupted, processAlive, readRun, stopProcess, writeRun, type FailoverState, type RunPaths } from './failover-state'
import { runActionReport } from './failover'
import type { Plan } from './plan'
import { recordPlanRun } from './record'
import type { PlanRunReport } from './runner'
import { pause } from './boot'
import { adminClient } from '../admin-client'
import { reverseSent, seedReverse, type SeedOutcome } from './reverse-seed'

/** The run a commit, rollback or failback acts on, or the one line saying why there is none. */
export function runOf(p: RunPaths, command: string, what: string): FailoverState {
  const s = readRun(p)
  if (!s) throw new TidemarkError('NO_RUN', `tidemark ${command}: plan ${p.plan} has no failover in ${p.stateDir} (no ${p.file}): nothing to ${what}`)
  return s
}

/** The plan's reverse appliance as the agent takes it, or the refusal. */
export function reverseOf(plan: Plan, command: string): ReverseTarget {
  const r = plan.reverse
  if (!r) throw new TidemarkError('NO_REVERSE', `tidemark ${command}: plan ${plan.name} names no reverse appliance (reverse: { appliance: HOST:PORT }): the recovered volumes replicate there once committed`)
  return { appliance: r.appliance, ...(r.tlsCert ? { tls: { cert: r.tlsCert, key: r.tlsKey!, ca: r.tlsCa! } } : {}) }
}

/**
 * Refusals of plan commit: everything that can refuse is checked before anything changes.
 * `atDeadline`: the deadline watcher's commit (--at-deadline commit), made at the deadline and not refused for it.
 */
export function checkCommit(p: RunPaths, plan: Plan, now = Date.now(), atDeadline = false): { state: FailoverState; reverse: ReverseTarget } {
  const s = runOf(p, 'plan commit', 'commit (plan failover first)')
  if (s.phase === 'committed') throw new TidemarkError('COMMITTED', `tidemark plan commit: plan ${s.plan} was committed already at ${s.reverse?.committedAt} (replicating to ${s.reverse?.appliance})`)
  if (s.phase === 'failing-over') {
    throw interrupted(s)
      ? new TidemarkError('PLAN_INTERRUPTED', `tidemark plan commit: plan ${s.plan}'s failover (run ${s.runId}, pid ${s.failover.pid}) was interrupted before it finished: there is nothing whole to keep; plan rollback removes it`)
      : new TidemarkError('PLAN_FAILING_OVER', `tidemark plan commit: plan ${s.plan} is still being failed over by pid ${s.failover.pid} (run ${s.runId}): commit once it has failed over`)
  }
  const deadline = Date.parse(s.commitDeadline)
  if (now > deadline && !atDeadline) {
    throw new TidemarkError(
      'COMMIT_DEADLINE',
      `tidemark plan commit: the commit deadline of plan ${s.plan} passed at ${s.commitDeadline} (${Math.round((now - deadline) / 60000)} min ago): roll back (plan rollback), then fail over again`
    )
  }
  return { state: s, reverse: reverseOf(plan, 'plan commit') }
}

export interface CommitOptions {
  client: AdminClient
  plan: Plan
  paths: RunPaths
  /** wait for the reverse appliance's initial copy of every volume */
  wait: boolean
  json: boolean
  progress: (line: string) => void
  /** the deadline watcher's commit (--at-deadline commit): not refused for the deadline, and the audit entry says so */
  atDeadline?: boolean
}

export async function runCommit(o: CommitOptions): Promise<PlanRunReport> {
  const p = o.paths
  const { state: s, reverse } = checkCommit(p, o.plan, Date.now(), o.atDeadline)
  const report = runActionReport(s, o.plan, 'commit')
  const t0 = Date.now()
  const volumes = s.disks.map((d) => d.volume)
  // Recorded as it starts: a commit killed half way leaves the run naming the agent that runs.
  const onStart = (ref: FailoverState['agent']): void => {
    s.agent = ref
    writeRun(p, s)
  }
  const b = adminClient({ address: reverse.appliance, tls: reverse.tls })
  let seeds: SeedOutcome[] = []
  try {
    // A manual commit ends the deadline's watcher first: it must not act on the run this commit changes.
    if (s.watcher && s.watcher.pid !== process.pid) {
      o.progress(`plan ${s.plan}: stopping the commit deadline's watcher (pid ${s.watcher.pid})`)
      await stopProcess(s.watcher, 'SIGTERM')
    }
    // While the VMs run on undisturbed: a seed reads the whole production disk.
    seeds = await seedReverse(b, reverse.appliance, o.plan, s, p, o.progress)
    const seeded = Object.fromEntries(seeds.filter((x) => x.seeded).map((x) => [x.volume, x.generation!]))
    const old = s.agent!
    o.progress(`plan ${s.plan}: restarting the failover agent (pid ${old.pid}) to replicate to ${reverse.appliance}`)
    await stopFailoverAgent(old)
    try {
      s.agent = await startFailoverAgent(p, failoverAgentArgv(p, s.plan, volumes, reverse, seeded), { onStart })
    } catch (err) {
      // The VMs need their disks: the agent as it was, then the error.
      s.agent = await startFailoverAgent(p, failoverAgentArgv(p, s.plan, volumes), { onStart })
      writeRun(p, s)
      throw err
    }
    s.phase = 'committed'
    delete s.watcher
    s.reverse = { appliance: reverse.appliance, committedAt: new Date().toISOString() }
    writeRun(p, s)
    o.progress(`plan ${s.plan}: committed: agent pid ${s.agent.pid} replicating to ${reverse.appliance}`)
    if (o.wait) {
      for (;;) {
        const st = reverseCopyStatus(p, volumes)
        if (Object.values(st).every((v) => v === 'complete')) break
        if (!processAlive(s.agent)) throw new Error(`the failover agent (pid ${s.agent.pid}) exited before the initial copy to ${reverse.appliance} was complete`)
        await pause(250)
      }
      o.progress(`plan ${s.plan}: ${reverse.appliance} holds the initial copy of ${volumes.join(', ')}`)
    }
    const vms = s.vms.map((v) => ({ machine: v.machine, pid: v.pid, alive: processAlive(v) }))
    const dead = vms.filter((v) => !v.alive)
    if (dead.length) throw new Error(`the VM of ${dead.map((v) => `${v.machine} (pid ${v.pid})`).join(', ')} is not running`)
    // What the copy sent to B per volume (with --wait: the whole copy, and what the VMs wrote meanwhile).
    const sent = await reverseSent(b, volumes)
    const reverseSeed = seeds.map((x) => ({ ...x, sectorsSent: sent[x.volume]?.sectors ?? null, wireBytes: sent[x.volume]?.wireBytes ?? null }))
    for (const x of reverseSeed) {
      o.progress(
        `plan ${s.plan}: volume ${x.volume}: ${x.seeded ? `seeded on ${reverse.appliance} from ${x.source}` : `not seeded (${x.why}): copied whole`}; ${x.sectorsSent ?? '?'} sectors sent ${o.wait ? '' : 'so far'}`.trimEnd()
      )
    }
    report.result = 'passed'
    report.details = {
      ...(o.atDeadline ? { trigger: `at the deadline (${s.commitDeadline}): plan failover --at-deadline commit; by the watcher, pid ${process.pid}` } : {}),
      reverse: reverse.appliance,
      agentPid: s.agent.pid,
      initialCopy: reverseCopyStatus(p, volumes),
      reverseSeed,
      vms,
      seconds: Math.round((Date.now() - t0) / 100) / 10,
    }
  } catch (err) {
    report.error = (err as Error).message
    if (seeds.length) report.details = { reverse: reverse.appliance, reverseSeed: seeds }
  } finally {
    b.close()
  }
  report.finishedAt = new Date().toISOString()
  await recordPlanRun(o.client, report, { json: o.json })
  return report
}
