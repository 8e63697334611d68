// `plan failover`: the real thing, for when production is gone.
//
// 1. every disk restored at its resolved seq into STATE/PLAN/disks/VOL.img
//    (the restore path: on the appliance's own host the appliance copies the
//    point file to file, at disk speed);
// 2. a failover agent serving those files as NBD exports named after the
//    volumes (failover-agent.ts): every write the recovered VMs make is
//    captured by its tap, replicated nowhere until `plan commit`;
// 3. the machines in boot groups with their checks (boot.ts, as plan test),
//    detached, on this host's network: each NIC a tap on the plan network's
//    failover bridge; each disk an NBD blockdev that reconnects (commit
//    restarts the agent under it), each VM with a QMP socket (failback
//    pauses it);
// 4. the run written to STATE/PLAN/failover.json (failover-state.ts), with
//    the commit deadline;
// 5. the report, recorded in the recovery appliance's audit trail.
// A failure half way tears down what it started (VMs, taps, agent, disks)
// and leaves no run. The recovery appliance is only read: the journal, the
// index and replication never see a failover (DESIGN contract 6).
import crypto from 'node:crypto'
import fs from 'node:fs'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { restorePoint } from '../restore'
import { bootInOrder, Interrupted, machineReport } from './boot'
import { failoverAgentArgv, startFailoverAgent, stopFailoverAgent } from './failover-agent'
import { processRef, readRun, RunPaths, writeRun, type FailoverState, type ProcessRef, type RunVm } from './failover-state'
import { createTap, deleteTap, tapName } from './host-network'
import { runCommand } from './netns'
import { RUN_ID_CHARS, type Plan, type PlanMachine } from './plan'
import { recordPlanRun } from './record'
import type { ResolvedPlan } from './resolve'
import type { PlanRunReport } from './runner'
import { PlanVm } from './vm'
import { TidemarkError } from '../../proto/errors'

/** Seconds qemu holds a disk's I/O while the failover agent restarts (commit), before it fails it. */
export const RECONNECT_DELAY_S = 60

export interface FailoverOptions {
  client: AdminClient
  /** --appliance as given (state, report) */
  appliance: string
  /** the host the appliance's wildcard NBD address is on (restore) */
  applianceHost: string
  applianceTls?: { cert: string; key: string; ca: string }
  plan: Plan
  planFile: string
  resolved: ResolvedPlan
  stateDir: string
  commitWithinMs: number
  json: boolean
  progress: (line: string) => void
  signal?: AbortSignal
}

/** The refusal when the plan has a run in the state directory already. */
export function refuseRunning(p: RunPaths, command: string): void {
  const s = readRun(p)
  if (s) {
    throw new TidemarkError(
      'PLAN_RUNNING',
      `tidemark ${command}: plan ${s.plan} is ${s.phase} already (run ${s.runId}, since ${s.failedOverAt}, in ${p.dir}): commit, roll back or fail back that run first`
    )
  }
}

/** A MAC address unique to the run and machine (locally administered, unicast): VMs of two runs share a real bridge. */
function macOf(runId: string, i: number): string {
  return `52:54:${runId.slice(0, 2)}:${runId.slice(2, 4)}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`
}

/** Starts one machine detached on the host network, its disks the given NBD exports. */
export function startHostVm(m: PlanMachine, o: { disks: string[]; files: { kernel?: string; initrd?: string }; tap: string; mac: string; console: string; qmp: string; log: string }): PlanVm {
  return new PlanVm(
    {
      machine: m,
      disks: o.disks,
      kernel: o.files.kernel,
      initrd: o.files.initrd,
      nic: m.network ? { machine: m.name, network: m.network.name, tap: o.tap, mac: o.mac } : undefined,
      console: o.console,
      detached: true,
      qmp: o.qmp,
      reconnectDelay: RECONNECT_DELAY_S,
      log: o.log,
    },
    null
  )
}

/** Command checks run on this host's network, where the failover bridge is. */
export function hostShell(command: string, timeoutMs: number, signal?: AbortSignal) {
  return runCommand('sh', ['-c', command], timeoutMs, signal)
}

/** Taps on the failover bridges for the machines with a network: machine name -> tap ('' without one). */
export async function createTaps(plan: Plan, prefix: 'tf' | 'tp', runId: string, made: string[]): Promise<Map<string, { tap: string; mac: string }>> {
  const out = new Map<string, { tap: string; mac: string }>()
  for (const [i, m] of plan.machines.entries()) {
    if (!m.network) {
      out.set(m.name, { tap: '', mac: '' })
      continue
    }
    const tap = tapName(prefix, runId, i)
    await createTap(tap, plan.networks[m.network.name].failover!)
    made.push(tap)
    out.set(m.name, { tap, mac: macOf(runId, i) })
  }
  return out
}

export async function runFailover(o: FailoverOptions): Promise<PlanRunReport> {
  const { plan, resolved, client } = o
  const t0 = Date.now()
  const runId = crypto.randomBytes(RUN_ID_CHARS).toString('hex').slice(0, RUN_ID_CHARS)
  const p = new RunPaths(o.stateDir, plan.name)
  const seqs = [...new Set(resolved.disks.map((d) => d.seq))]
  const report: PlanRunReport = {
    plan: plan.name,
    action: 'failover',
    runId,
    appliance: o.appliance,
    point: [...new Set(resolved.disks.map((d) => d.point))].join('; '),
    startedAt: new Date(t0).toISOString(),
    finishedAt: '',
    result: 'failed',
    rtoSeconds: null,
    machines: plan.machines.map((m) =>
      machineReport(
        m,
        resolved.disks.filter((d) => d.machine === m.name).map((d) => ({ volume: d.volume, seq: d.seq, image: p.disk(d.volume) }))
      )
    ),
    teardownProblems: [],
  }
  const vms = new Map<string, PlanVm>()
  const taps: string[] = []
  let agent: (ProcessRef & { argv: string[] }) | null = null
  let madeDir = false
  refuseRunning(p, 'plan failover')
  try {
    fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 })
    madeDir = !fs.existsSync(p.history) && !fs.existsSync(p.production)
    fs.mkdirSync(p.disks, { recursive: true, mode: 0o700 })
    o.progress(`plan ${plan.name}: failover run ${runId} at ${seqs.length === 1 ? `seq ${seqs[0]}` : `seqs ${seqs.join(', ')}`} (${report.point})`)
    const restores: Array<{ volume: string; bytes: number; transport: string; serverCopy: boolean; seconds: number }> = []
    for (const d of resolved.disks) {
      if (o.signal?.aborted) throw new Interrupted('interrupted')
      const t = Date.now()
      const r = await restorePoint(client, {
        volume: d.volume,
        seq: d.seq,
        out: p.disk(d.volume),
        command: 'plan failover',
        applianceHost: o.applianceHost,
        tls: o.applianceTls,
        signal: o.signal,
      })
      restores.push({ volume: d.volume, bytes: r.size, transport: r.transport, serverCopy: r.serverCopy, seconds: Math.round((Date.now() - t) / 100) / 10 })
      o.progress(`plan ${plan.name}: ${d.volume} restored at seq ${d.seq} into ${p.disk(d.volume)} (${r.size} bytes, ${r.serverCopy ? 'copied by the appliance' : `over ${r.transport}`})`)
    }

    agent = await startFailoverAgent(p, failoverAgentArgv(p, plan.name, resolved.disks.map((d) => d.volume)))
    o.progress(`plan ${plan.name}: failover agent pid ${agent.pid} serving ${p.nbdSock} (replicating nowhere until plan commit)`)

    const nics = await createTaps(plan, 'tf', runId, taps)
    await bootInOrder({
      plan,
      machines: report.machines,
      t0,
      start: (m, r) => {
        const nic = nics.get(m.name)!
        const vm = startHostVm(m, {
          disks: r.disks.map((d) => `nbd+unix:///${d.volume}?socket=${p.nbdSock}`),
          files: resolved.files.get(m.name) ?? {},
          tap: nic.tap,
          mac: nic.mac,
          console: p.console(m.name),
          qmp: p.qmp(m.name),
          log: p.qemuLog(m.name),
        })
        vms.set(m.name, vm)
        return vm
      },
      shell: hostShell,
      progress: o.progress,
      signal: o.signal,
    })
    report.rtoSeconds = Math.round((Date.now() - t0) / 100) / 10

    const now = new Date()
    const state: FailoverState = {
      version: 1,
      plan: plan.name,
      planFile: o.planFile,
      appliance: o.appliance,
      ...(o.applianceTls ? { applianceTls: o.applianceTls } : {}),
      runId,
      phase: 'failed-over',
      point: report.point,
      disks: resolved.disks.map((d) => ({ machine: d.machine, volume: d.volume, seq: d.seq, image: p.disk(d.volume) })),
      failedOverAt: now.toISOString(),
      commitDeadline: new Date(now.getTime() + o.commitWithinMs).toISOString(),
      agent,
      vms: plan.machines.map((m): RunVm => {
        const vm = vms.get(m.name)!
        return {
          ...processRef(vm.pid!),
          machine: m.name,
          console: p.console(m.name),
          qmp: p.qmp(m.name),
          log: p.qemuLog(m.name),
          tap: nics.get(m.name)!.tap,
        }
      }),
    }
    writeRun(p, state)
    for (const vm of vms.values()) vm.release()
    report.result = 'passed'
    report.details = { state: p.file, phase: state.phase, commitDeadline: state.commitDeadline, agentPid: agent.pid, restores, vms: state.vms.map((v) => ({ machine: v.machine, pid: v.pid, tap: v.tap, console: v.console })) }
    o.progress(`plan ${plan.name}: failed over: RTO ${report.rtoSeconds} s; commit (plan commit) or roll back (plan rollback) before ${state.commitDeadline}`)
  } catch (err) {
    report.error = err instanceof Interrupted ? 'interrupted: the failover was stopped before every check was green' : (err as Error).message
    // Torn down to nothing: no VM, no tap, no agent, no disk, no run.
    await Promise.all([...vms.values()].map((vm) => vm.kill()))
    for (const tap of taps) await deleteTap(tap).catch((e: Error) => report.teardownProblems.push(`tap ${tap}: ${e.message}`))
    if (agent) await stopFailoverAgent(agent).catch((e: Error) => report.teardownProblems.push(`agent ${agent!.pid}: ${e.message}`))
    if (madeDir) fs.rmSync(p.dir, { recursive: true, force: true })
    else for (const f of fs.existsSync(p.dir) ? fs.readdirSync(p.dir) : []) if (!['history', 'production', 'production.json'].includes(f)) fs.rmSync(`${p.dir}/${f}`, { recursive: true, force: true })
  }
  report.finishedAt = new Date().toISOString()
  await recordPlanRun(client, report, { json: o.json })
  return report
}

/** The report of an action on a run (commit, rollback, failback): its plan, point and machines as the run holds them. */
export function runActionReport(s: FailoverState, plan: Plan, action: PlanRunReport['action']): PlanRunReport {
  return {
    plan: s.plan,
    action,
    runId: s.runId,
    appliance: s.appliance,
    point: s.point,
    startedAt: new Date().toISOString(),
    finishedAt: '',
    result: 'failed',
    rtoSeconds: null,
    machines: plan.machines.map((m) => {
      const r = machineReport(m, s.disks.filter((d) => d.machine === m.name).map((d) => ({ volume: d.volume, seq: d.seq, image: d.image })))
      r.pid = s.vms.find((v) => v.machine === m.name)?.pid ?? null
      return r
    }),
    teardownProblems: [],
  }
}
