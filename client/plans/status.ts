// `plan status`: what runs where, from the state directory alone (no
// appliance is asked): every failed-over or committed plan with its point,
// age, the time left before its commit deadline (or "rollback due" past it),
// its failover agent (alive, where it replicates, how far the reverse
// initial copy is, from the agent's log) and each VM (alive, pid); and the
// production VMs a failback started. A failover still running is "failing
// over"; one whose process is gone before it finished is "interrupted: plan
// rollback removes it".
import { reverseCopyStatus } from './failover-agent'
import { interrupted, listPlans, processAlive, readProduction, readRun, RunPaths } from './failover-state'

export interface VmStatus {
  machine: string
  pid: number
  alive: boolean
  console: string
}

export interface PlanStatus {
  plan: string
  /** the run's phase, or null when the plan has no run (only production VMs) */
  phase: 'failing-over' | 'failed-over' | 'committed' | null
  /** failing-over with its `plan failover` process gone: plan rollback removes it */
  interrupted?: boolean
  /** the `plan failover` process, while failing over */
  failoverPid?: number
  /** what happens at the deadline, and the watcher that does it (alive) */
  atDeadline?: 'none' | 'rollback' | 'commit'
  watcher?: { pid: number; alive: boolean } | null
  runId?: string
  point?: string
  failedOverAt?: string
  ageSeconds?: number
  commitDeadline?: string
  /** seconds left before the commit deadline (negative past it); null once committed */
  deadlineLeftSeconds?: number | null
  rollbackDue?: boolean
  /** null while failing over before the agent started */
  agent?: { pid: number; alive: boolean; replicatingTo: string | null; initialCopy: Record<string, string> | null } | null
  taps?: string[]
  vms: VmStatus[]
  production?: { startedAt: string; vms: VmStatus[] }
}

export function planStatuses(stateDir: string, now = Date.now()): PlanStatus[] {
  return listPlans(stateDir).map((name) => {
    const p = new RunPaths(stateDir, name)
    const s = readRun(p)
    const prod = readProduction(p)
    const out: PlanStatus = { plan: name, phase: null, vms: [] }
    if (s) {
      const left = s.phase !== 'failed-over' ? null : Math.round((Date.parse(s.commitDeadline) - now) / 1000)
      Object.assign(out, {
        phase: s.phase,
        ...(s.phase === 'failing-over' ? { interrupted: interrupted(s), failoverPid: s.failover.pid } : {}),
        runId: s.runId,
        point: s.point,
        failedOverAt: s.failedOverAt,
        ageSeconds: Math.round((now - Date.parse(s.failedOverAt || s.startedAt)) / 1000),
        commitDeadline: s.commitDeadline,
        deadlineLeftSeconds: left,
        rollbackDue: left !== null && left < 0,
        atDeadline: s.atDeadline,
        watcher: s.watcher ? { pid: s.watcher.pid, alive: processAlive(s.watcher) } : null,
        agent: s.agent
          ? {
              pid: s.agent.pid,
              alive: processAlive(s.agent),
              replicatingTo: s.reverse?.appliance ?? null,
              initialCopy: s.reverse ? reverseCopyStatus(p, s.disks.map((d) => d.volume)) : null,
            }
          : null,
        vms: s.vms.map((v) => ({ machine: v.machine, pid: v.pid, alive: processAlive(v), console: v.console })),
        taps: s.taps,
      })
    }
    if (prod) out.production = { startedAt: prod.startedAt, vms: prod.vms.map((v) => ({ machine: v.machine, pid: v.pid, alive: processAlive(v), console: v.console })) }
    return out
  })
}

function duration(s: number): string {
  const a = Math.abs(s)
  const text = a >= 3600 ? `${Math.floor(a / 3600)} h ${Math.floor((a % 3600) / 60)} min` : a >= 60 ? `${Math.floor(a / 60)} min ${a % 60} s` : `${a} s`
  return text
}

/** The statuses for a person. */
export function statusLines(all: PlanStatus[], stateDir: string): string {
  if (!all.length) return `no failed-over plans in ${stateDir}\n`
  const out: string[] = []
  for (const s of all) {
    if (s.phase === 'failing-over') {
      out.push(
        s.interrupted
          ? `plan ${s.plan}: interrupted: plan rollback removes it (run ${s.runId}, failover pid ${s.failoverPid} gone, started ${duration(s.ageSeconds!)} ago at ${s.point})`
          : `plan ${s.plan}: failing over (run ${s.runId}, pid ${s.failoverPid}, for ${duration(s.ageSeconds!)}) at ${s.point}`
      )
    } else if (s.phase) {
      const deadline = s.deadlineLeftSeconds === null ? 'committed' : s.rollbackDue ? `rollback due (the deadline passed ${duration(s.deadlineLeftSeconds!)} ago)` : `${duration(s.deadlineLeftSeconds!)} left to commit`
      out.push(`plan ${s.plan}: ${s.phase} (run ${s.runId}) ${duration(s.ageSeconds!)} ago at ${s.point}; ${deadline}`)
    }
    if (s.phase) {
      if (s.watcher && s.phase !== 'committed') out.push(`  at the deadline: ${s.atDeadline === 'commit' ? 'commit' : 'roll back'} (watcher pid ${s.watcher.pid} ${s.watcher.alive ? 'running' : 'NOT RUNNING'})`)
      const a = s.agent
      if (a) {
        const copy = a.initialCopy ? `, initial copy: ${Object.entries(a.initialCopy).map(([v, st]) => `${v} ${st}`).join(', ')}` : ''
        out.push(`  failover agent: pid ${a.pid} ${a.alive ? 'running' : 'NOT RUNNING'}, ${a.replicatingTo ? `replicating to ${a.replicatingTo}${copy}` : 'replicating nowhere (not committed)'}`)
      } else out.push('  failover agent: not started')
      for (const v of s.vms) out.push(`  VM ${v.machine}: pid ${v.pid} ${v.alive ? 'running' : 'NOT RUNNING'}, console ${v.console}`)
      if (s.phase === 'failing-over' && s.taps?.length) out.push(`  taps: ${s.taps.join(', ')}`)
    } else {
      out.push(`plan ${s.plan}: no failover run`)
    }
    if (s.production) {
      out.push(`  production VMs (started by plan failback at ${s.production.startedAt}):`)
      for (const v of s.production.vms) out.push(`    ${v.machine}: pid ${v.pid} ${v.alive ? 'running' : 'not running'}, console ${v.console}`)
    }
  }
  return `${out.join('\n')}\n`
}
