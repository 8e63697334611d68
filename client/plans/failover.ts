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
// 4. the run's phase becomes failed-over, with the commit deadline;
// 5. the report, recorded in the recovery appliance's audit trail.
// Before 1, the run is claimed: STATE/PLAN/failover.json created (phase
// failing-over, this process its owner), refused when it exists; with
// --at-deadline rollback|commit the deadline's watcher is started
// (deadline-watcher.ts); and the run is rewritten as each process starts and
// before each tap is made, so a SIGKILL anywhere leaves a run naming
// everything to remove (an interrupted failover: plan rollback removes it).
// A failure half way tears down what it started (VMs, taps, agent, watcher,
// disks) and leaves no run. The recovery appliance is only read: the journal, the
// index and replication never see a failover (DESIGN contract 6).
import fs from 'node:fs'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { restorePoint } from '../restore'
import { bootInOrder, Interrupted, machineReport } from './boot'
import { failoverAgentArgv, startFailoverAgent, stopFailoverAgent } from './failover-agent'
import { startWatcher, watcherLog } from './deadline-watcher'
import { claimRun, interrupted, processRef, processStartTicks, readRun, RunPaths, stopProcess, writeRun, type AtDeadline, type FailoverState } from './failover-state'
import { createTap, deleteTap, tapName } from './host-network'
import { runCommand } from './netns'
import type { Plan, PlanMachine } from './plan'
import { recordPlanRun } from './record'
import type { ResolvedPlan } from './resolve'
import { newRunId, reportStart, type PlanRunReport } from './runner'
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
  /** what the deadline's watcher does at the deadline ('none': no watcher) */
  atDeadline: AtDeadline
  json: boolean
  progress: (line: string) => void
  signal?: AbortSignal
}

/** The one line refusing COMMAND because the plan has run S already. */
export function refusal(p: RunPaths, s: FailoverState, command: string): TidemarkError {
  if (s.phase === 'failing-over') {
    return interrupted(s)
      ? new TidemarkError('PLAN_INTERRUPTED', `tidemark ${command}: plan ${s.plan} has an interrupted failover (run ${s.runId}, started ${s.startedAt} by pid ${s.failover.pid}, which is gone; in ${p.dir}): plan rollback removes it`)
      : new TidemarkError('PLAN_FAILING_OVER', `tidemark ${command}: plan ${s.plan} is being failed over by pid ${s.failover.pid} (run ${s.runId}, since ${s.startedAt}, in ${p.dir})`)
  }
  return new TidemarkError(
    'PLAN_RUNNING',
    `tidemark ${command}: plan ${s.plan} is ${s.phase} already (run ${s.runId}, since ${s.failedOverAt}, in ${p.dir}): commit, roll back or fail back that run first`
  )
}

/** The refusal when the plan has a run in the state directory already. */
export function refuseRunning(p: RunPaths, command: string): void {
  const s = readRun(p)
  if (s) throw refusal(p, s, command)
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

/**
 * Taps on the failover bridges for the machines with a network: machine name -> tap ('' without one).
 * `record` is called with each tap's name before it is made (a tap made and not recorded would outlive a crash).
 */
export async function createTaps(plan: Plan, prefix: 'tf' | 'tp', runId: string, record: (tap: string) => void): Promise<Map<string, { tap: string; mac: string }>> {
  const out = new Map<string, { tap: string; mac: string }>()
  for (const [i, m] of plan.machines.entries()) {
    if (!m.network) {
      out.set(m.name, { tap: '', mac: '' })
      continue
    }
    const tap = tapName(prefix, runId, i)
    record(tap)
    await createTap(tap, plan.networks[m.network.name].failover!)
    out.set(m.name, { tap, mac: macOf(runId, i) })
  }
  return out
}

export async function runFailover(o: FailoverOptions): Promise<PlanRunReport> {
  const { plan, resolved, client } = o
  const t0 = Date.now()
  const runId = newRunId()
  const p = new RunPaths(o.stateDir, plan.name)
  const seqs = [...new Set(resolved.disks.map((d) => d.seq))]
  const report: PlanRunReport = {
    ...reportStart(plan, 'failover', runId, o.appliance, resolved, t0),
    machines: plan.machines.map((m) =>
      machineReport(
        m,
        resolved.disks.filter((d) => d.machine === m.name).map((d) => ({ volume: d.volume, seq: d.seq, image: p.disk(d.volume) }))
      )
    ),
    teardownProblems: [],
  }
  const vms = new Map<string, PlanVm>()
  const madeDir = !fs.existsSync(p.dir)
  // The run, claimed before anything is restored or started; rewritten as each process starts.
  const state: FailoverState = {
    version: 1,
    plan: plan.name,
    planFile: o.planFile,
    appliance: o.appliance,
    ...(o.applianceTls ? { applianceTls: o.applianceTls } : {}),
    runId,
    phase: 'failing-over',
    failover: processRef(process.pid),
    startedAt: report.startedAt,
    point: report.point,
    disks: resolved.disks.map((d) => ({ machine: d.machine, volume: d.volume, seq: d.seq, image: p.disk(d.volume) })),
    failedOverAt: '',
    commitDeadline: '',
    commitWithinMs: o.commitWithinMs,
    atDeadline: o.atDeadline,
    agent: null,
    vms: [],
    taps: [],
  }
  const other = claimRun(p, state)
  if (other) throw refusal(p, other, 'plan failover')
  try {
    fs.mkdirSync(p.disks, { recursive: true, mode: 0o700 })
    o.progress(`plan ${plan.name}: failover run ${runId} at ${seqs.length === 1 ? `seq ${seqs[0]}` : `seqs ${seqs.join(', ')}`} (${report.point})`)
    if (o.atDeadline !== 'none') {
      const w = startWatcher(p, o.planFile, (ref) => {
        state.watcher = ref
        writeRun(p, state)
      })
      if (!w) throw new TidemarkError('WATCHER_FAILED', `the commit deadline's watcher exited as soon as it started: ${fs.readFileSync(watcherLog(p), 'utf8').trim().split('\n').at(-1) ?? ''}`)
      o.progress(`plan ${plan.name}: watcher pid ${w.pid} will ${o.atDeadline === 'rollback' ? 'roll back' : 'commit'} at the commit deadline`)
    }
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

    const agent = await startFailoverAgent(p, failoverAgentArgv(p, plan.name, resolved.disks.map((d) => d.volume)), {
      onStart: (ref) => {
        state.agent = ref
        writeRun(p, state)
      },
    })
    state.agent = agent
    o.progress(`plan ${plan.name}: failover agent pid ${agent.pid} serving ${p.nbdSock} (replicating nowhere until plan commit)`)

    const nics = await createTaps(plan, 'tf', runId, (tap) => {
      state.taps.push(tap)
      writeRun(p, state)
    })
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
        const ticks = vm.pid === undefined ? null : processStartTicks(vm.pid)
        if (ticks !== null) {
          state.vms.push({ pid: vm.pid!, startTicks: ticks, startedAt: new Date().toISOString(), machine: m.name, console: p.console(m.name), qmp: p.qmp(m.name), log: p.qemuLog(m.name), tap: nic.tap })
          writeRun(p, state)
        }
        return vm
      },
      shell: hostShell,
      progress: o.progress,
      signal: o.signal,
    })
    report.rtoSeconds = Math.round((Date.now() - t0) / 100) / 10

    const now = new Date()
    state.phase = 'failed-over'
    state.failedOverAt = now.toISOString()
    state.commitDeadline = new Date(now.getTime() + o.commitWithinMs).toISOString()
    // (the boot order's, not the start order's: status and the reports list machines as the plan does)
    state.vms = plan.machines.map((m) => state.vms.find((v) => v.machine === m.name)!)
    writeRun(p, state)
    for (const vm of vms.values()) vm.release()
    report.result = 'passed'
    report.details = {
      state: p.file,
      phase: state.phase,
      commitDeadline: state.commitDeadline,
      atDeadline: state.atDeadline,
      ...(state.watcher ? { watcherPid: state.watcher.pid } : {}),
      agentPid: agent.pid,
      restores,
      vms: state.vms.map((v) => ({ machine: v.machine, pid: v.pid, tap: v.tap, console: v.console })),
    }
    o.progress(`plan ${plan.name}: failed over: RTO ${report.rtoSeconds} s; commit (plan commit) or roll back (plan rollback) before ${state.commitDeadline}`)
  } catch (err) {
    report.error = err instanceof Interrupted ? 'interrupted: the failover was stopped before every check was green' : (err as Error).message
    // Torn down to nothing: no VM, no tap, no agent, no watcher, no disk, no run.
    await Promise.all([...vms.values()].map((vm) => vm.kill()))
    await retireProcesses(state, report.teardownProblems)
    if (madeDir) fs.rmSync(p.dir, { recursive: true, force: true })
    else for (const f of fs.existsSync(p.dir) ? fs.readdirSync(p.dir) : []) if (!['history', 'production', 'production.json'].includes(f)) fs.rmSync(`${p.dir}/${f}`, { recursive: true, force: true })
  }
  report.finishedAt = new Date().toISOString()
  await recordPlanRun(client, report, { json: o.json })
  return report
}

/**
 * Kills a run's VMs, deletes its taps, stops its agent and its deadline
 * watcher (not when the watcher is this process: it is the one retiring the
 * run); what failed goes to `problems`. For any phase: an interrupted
 * failover's run names what it had started, and no more.
 */
export async function retireProcesses(s: FailoverState, problems: string[]): Promise<void> {
  if (s.watcher && s.watcher.pid !== process.pid) await stopProcess(s.watcher, 'SIGTERM').catch((e: Error) => problems.push(`watcher (pid ${s.watcher!.pid}): ${e.message}`))
  await Promise.all(s.vms.map((v) => stopProcess(v, 'SIGKILL').catch((e: Error) => problems.push(`VM ${v.machine} (pid ${v.pid}): ${e.message}`))))
  const taps = new Set([...(s.taps ?? []), ...s.vms.map((v) => v.tap).filter(Boolean)])
  for (const tap of taps) await deleteTap(tap).catch((e: Error) => problems.push(`tap ${tap}: ${e.message}`))
  if (s.agent) await stopFailoverAgent(s.agent).catch((e: Error) => problems.push(`agent (pid ${s.agent!.pid}): ${e.message}`))
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
