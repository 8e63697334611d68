// `plan status`: what runs where, from the state directory alone (no
// appliance is asked): every failed-over or committed plan with its point,
// age, the time left before its commit deadline (or "rollback due" past it),
// its failover agent (alive, where it replicates, how far the reverse
// initial copy is, from the agent's log) and each VM (alive, pid); and the
// production VMs a failback started.
import { reverseCopyStatus } from './failover-agent'
import { listPlans, processAlive, readProduction, readRun, RunPaths } from './failover-state'

export interface VmStatus {
  machine: string
  pid: number
  alive: boolean
  console: string
}

export interface PlanStatus {
  plan: string
  /** the run's phase, or null when the plan has no run (only production VMs) */
  phase: 'failed-over' | 'committed' | null
  runId?: string
  point?: string
  failedOverAt?: string
  ageSeconds?: number
  commitDeadline?: string
  /** seconds left before the commit deadline (negative past it); null once committed */
  deadlineLeftSeconds?: number | null
  rollbackDue?: boolean
  agent?: { pid: number; alive: boolean; replicatingTo: string | null; initialCopy: Record<string, string> | null }
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
      const left = s.phase === 'committed' ? null : Math.round((Date.parse(s.commitDeadline) - now) / 1000)
      Object.assign(out, {
        phase: s.phase,
        runId: s.runId,
        point: s.point,
        failedOverAt: s.failedOverAt,
        ageSeconds: Math.round((now - Date.parse(s.failedOverAt)) / 1000),
        commitDeadline: s.commitDeadline,
        deadlineLeftSeconds: left,
        rollbackDue: left !== null && left < 0,
        agent: {
          pid: s.agent.pid,
          alive: processAlive(s.agent),
          replicatingTo: s.reverse?.appliance ?? null,
          initialCopy: s.reverse ? reverseCopyStatus(p, s.disks.map((d) => d.volume)) : null,
        },
        vms: s.vms.map((v) => ({ machine: v.machine, pid: v.pid, alive: processAlive(v), console: v.console })),
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
    if (s.phase) {
      const deadline = s.deadlineLeftSeconds === null ? 'committed' : s.rollbackDue ? `rollback due (the deadline passed ${duration(s.deadlineLeftSeconds!)} ago)` : `${duration(s.deadlineLeftSeconds!)} left to commit`
      out.push(`plan ${s.plan}: ${s.phase} (run ${s.runId}) ${duration(s.ageSeconds!)} ago at ${s.point}; ${deadline}`)
      const a = s.agent!
      const copy = a.initialCopy ? `, initial copy: ${Object.entries(a.initialCopy).map(([v, st]) => `${v} ${st}`).join(', ')}` : ''
      out.push(`  failover agent: pid ${a.pid} ${a.alive ? 'running' : 'NOT RUNNING'}, ${a.replicatingTo ? `replicating to ${a.replicatingTo}${copy}` : 'replicating nowhere (not committed)'}`)
      for (const v of s.vms) out.push(`  VM ${v.machine}: pid ${v.pid} ${v.alive ? 'running' : 'NOT RUNNING'}, console ${v.console}`)
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
