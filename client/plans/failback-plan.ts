// `plan failback`: bring production back after a committed failover.
//
// 1. every recovery VM paused (QMP stop: its disk requests drained and
//    flushed), then a final TimeMark of the plan's group through the
//    failover agent's control socket, waited for until durable on the
//    reverse appliance: the point production comes back to;
// 2. each disk made equal to the reverse appliance's volume at that mark
//    with the failback pipeline (client/failback.ts): fingerprints of the
//    production disk against the mark's, only differing sectors written.
//    The target is the production agent's NBD export of the volume (the
//    plan's machines[].production.nbd), so every sector written is captured
//    by the production agent and replicated to the recovery appliance:
//    forward protection goes on without a reseed; with the production
//    agent's control socket (production.control) the point written is marked
//    there, a TimeMark `failback-RUNID` on the recovery appliance;
// 3. the recovery VMs killed, their taps deleted, the failover agent
//    stopped, the recovered disks and the run removed (its report kept in
//    history/);
// 4. the production VMs started, detached, from the production agent's
//    exports, on the failover network, in boot order with their checks;
//    their processes in STATE/PLAN/production.json for plan status.
// A failure before production is written resumes the recovery VMs and
// leaves the run committed; a failure while writing does too, and running
// plan failback again finishes the job (it writes only what still differs).
import fs from 'node:fs'
import path from 'node:path'
import { TidemarkError } from '../../proto/errors'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { controlClient, createTimeMark } from '../control-client'
import { applianceSource, failback } from '../failback'
import { initHash } from '../../proto/hash'
import { openTarget } from '../failback-target'
import { bootInOrder, machineReport } from './boot'
import { runOf } from './commit'
import { createTaps, hostShell, runActionReport, startHostVm } from './failover'
import { finishRun, interrupted, processAlive, processRef, writeProduction, type FailoverState, type RunPaths, type RunVm } from './failover-state'
import { deleteTap } from './host-network'
import type { Plan, PlanMachine } from './plan'
import { qmpCommand } from './qmp'
import { recordPlanRun } from './record'
import { retireRun } from './rollback'
import type { PlanRunReport } from './runner'
import type { PlanVm } from './vm'

/** The production agent's export of a volume: nbd+unix:///VOL?socket=PATH or nbd://HOST:PORT/VOL. */
export function productionUri(m: PlanMachine, volume: string): string {
  const nbd = m.production!.nbd
  return nbd.startsWith('unix:') ? `nbd+unix:///${encodeURIComponent(volume)}?socket=${nbd.slice(5)}` : `nbd://${nbd.slice(4)}/${encodeURIComponent(volume)}`
}

/** Refusals of plan failback, before anything changes. */
export function checkFailback(p: RunPaths, plan: Plan): FailoverState {
  const s = runOf(p, 'plan failback', 'fail back (plan failover, then plan commit)')
  if (s.phase === 'failing-over') {
    throw interrupted(s)
      ? new TidemarkError('PLAN_INTERRUPTED', `tidemark plan failback: plan ${s.plan}'s failover (run ${s.runId}, pid ${s.failover.pid}) was interrupted before it finished: nothing to fail back from; plan rollback removes it`)
      : new TidemarkError('PLAN_FAILING_OVER', `tidemark plan failback: plan ${s.plan} is still being failed over by pid ${s.failover.pid} (run ${s.runId}): fail back from a committed failover`)
  }
  if (s.phase !== 'committed') {
    throw new TidemarkError(
      'NOT_COMMITTED',
      `tidemark plan failback: plan ${s.plan} is failed-over, not committed: nothing replicates its recovered volumes yet; commit it first (plan commit), or roll it back (plan rollback)`
    )
  }
  const missing = plan.machines.map((m, i) => [m, i] as const).filter(([m]) => !m.production)
  if (missing.length) {
    throw new TidemarkError(
      'NO_PRODUCTION',
      `tidemark plan failback: ${missing.map(([m, i]) => `machines[${i}] (${m.name})`).join(', ')} name${missing.length === 1 ? 's' : ''} no production: { nbd: unix:PATH | tcp:HOST:PORT }: the production agent's endpoint to write back to`
    )
  }
  return s
}

export interface PlanFailbackOptions {
  /** the recovery appliance: the audit trail */
  client: AdminClient
  /** the reverse appliance: the final mark is read there */
  reverse: AdminClient
  plan: Plan
  /** kernel and initrd of each machine, absolute */
  files: Map<string, { kernel?: string; initrd?: string }>
  paths: RunPaths
  json: boolean
  progress: (line: string) => void
}

export async function runPlanFailback(o: PlanFailbackOptions): Promise<PlanRunReport> {
  const { plan } = o
  const p = o.paths
  const s = checkFailback(p, plan)
  const report = runActionReport(s, plan, 'failback')
  const t0 = Date.now()
  const paused: RunVm[] = []
  let wrote = false
  let retired = false
  const disks: Array<Record<string, unknown>> = []
  const details: Record<string, unknown> = { reverse: s.reverse?.appliance, disks }
  report.details = details
  const production = new Map<string, PlanVm>()
  const taps: string[] = []
  try {
    await initHash()
    for (const v of s.vms) {
      if (!processAlive(v)) continue
      await qmpCommand(v.qmp, 'stop')
      paused.push(v)
    }
    o.progress(`plan ${plan.name}: ${paused.length} recovery VM${paused.length === 1 ? '' : 's'} paused`)
    const control = controlClient(`unix:${p.controlSock}`)
    let mark
    try {
      mark = await createTimeMark(control, { group: plan.name, label: `failback-${s.runId}-${Date.now().toString(36)}`, waitTimeoutMs: 600_000 }, Date.now() + 660_000)
    } catch (err) {
      throw new Error(`the final TimeMark through ${p.controlSock}: ${(err as Error).message}`)
    } finally {
      control.close()
    }
    if (!mark.durable) throw new Error(`the final TimeMark ${mark.id} (seq ${mark.seq}) is not durable on ${s.reverse?.appliance} yet (is the reverse initial copy done?)`)
    details.mark = { id: mark.id, seq: mark.seq, label: mark.label }
    report.point = `TimeMark ${mark.id} '${mark.label}' (seq ${mark.seq}) on ${s.reverse?.appliance}`
    o.progress(`plan ${plan.name}: final TimeMark ${mark.id} (seq ${mark.seq}) durable on ${s.reverse?.appliance}`)

    for (const d of s.disks) {
      const m = plan.machines.find((x) => x.name === d.machine)!
      const uri = productionUri(m, d.volume)
      const t = Date.now()
      const size = fs.statSync(d.image).size
      const target = await openTarget({ kind: 'nbd', uri }, { write: true })
      try {
        if (target.size !== size) throw new TidemarkError('SIZE_MISMATCH', `${target.what} is ${target.size} bytes but volume ${d.volume} is ${size}: refusing to write a volume onto a disk of another size`)
        wrote = true
        const r = await failback(applianceSource(o.reverse, d.volume, mark.seq, 'plan failback'), target, size)
        await target.flush()
        disks.push({
          machine: d.machine,
          volume: d.volume,
          target: uri,
          seq: mark.seq,
          sectorsCompared: r.sectors,
          sectorsDiffering: r.sectorsDiffering,
          sectorsWritten: r.bytesSent / 512,
          bytesSent: r.bytesSent,
          seconds: Math.round((Date.now() - t) / 100) / 10,
        })
        o.progress(`plan ${plan.name}: ${d.volume}: ${r.sectors} sectors compared, ${r.bytesSent / 512} written to ${target.what}`)
      } finally {
        await target.close()
      }
    }

    // Where the production agents' control sockets are known, the point production was written to is
    // marked there (a TimeMark on the recovery appliance): forward protection resumes from a named point.
    const label = `failback-${s.runId}`
    for (const d of disks) {
      const m = plan.machines.find((x) => x.name === d.machine)!
      if (!m.production?.control) continue
      const c = controlClient(m.production.control)
      try {
        const pm = await createTimeMark(c, { volume: d.volume as string, label, waitTimeoutMs: 600_000 }, Date.now() + 660_000)
        d.productionMark = { id: pm.id, seq: pm.seq, label: pm.label, durable: pm.durable }
      } catch (err) {
        throw new Error(`the TimeMark of ${d.volume as string} through the production agent's ${m.production.control}: ${(err as Error).message}`)
      } finally {
        c.close()
      }
    }

    // Production holds the mark: retire the recovery site's run.
    await retireRun(s, report.teardownProblems)
    retired = true
    paused.length = 0
    o.progress(`plan ${plan.name}: recovery VMs and the failover agent stopped`)

    const t1 = Date.now()
    const dir = p.productionDir()
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    const nics = await createTaps(plan, 'tp', s.runId, (tap) => taps.push(tap))
    report.machines = plan.machines.map((m) => machineReport(m, s.disks.filter((d) => d.machine === m.name).map((d) => ({ volume: d.volume, seq: mark.seq }))))
    await bootInOrder({
      plan,
      machines: report.machines,
      t0: t1,
      start: (m, r) => {
        const nic = nics.get(m.name)!
        const vm = startHostVm(m, {
          disks: r.disks.map((d) => productionUri(m, d.volume)),
          files: o.files.get(m.name) ?? {},
          tap: nic.tap,
          mac: nic.mac,
          console: path.join(dir, `${m.name}.console`),
          qmp: path.join(dir, `${m.name}.qmp`),
          log: path.join(dir, `${m.name}.qemu.log`),
        })
        production.set(m.name, vm)
        return vm
      },
      shell: hostShell,
      progress: o.progress,
    })
    report.rtoSeconds = Math.round((Date.now() - t1) / 100) / 10
    const vms: RunVm[] = plan.machines.map((m) => {
      const vm = production.get(m.name)!
      return { ...processRef(vm.pid!), machine: m.name, console: vm.spec.console, qmp: vm.spec.qmp!, log: vm.spec.log!, tap: nics.get(m.name)!.tap }
    })
    writeProduction(p, { plan: plan.name, startedAt: new Date(t1).toISOString(), vms })
    for (const vm of production.values()) vm.release()
    details.production = vms.map((v) => ({ machine: v.machine, pid: v.pid, console: v.console, tap: v.tap }))
    report.result = report.teardownProblems.length ? 'failed' : 'passed'
    if (report.teardownProblems.length) report.error = `teardown: ${report.teardownProblems[0]}`
    o.progress(`plan ${plan.name}: production is back (${Math.round((Date.now() - t0) / 100) / 10} s)`)
  } catch (err) {
    report.error = (err as Error).message
    if (wrote && !production.size) report.error += ' (production may have been written in part: run plan failback again to finish, it writes only what still differs)'
    // The recovery site serves on: resume what was paused.
    for (const v of paused) await qmpCommand(v.qmp, 'cont').catch((e: Error) => report.teardownProblems.push(`resume ${v.machine}: ${e.message}`))
    await Promise.all([...production.values()].map((vm) => vm.kill()))
    for (const tap of taps) await deleteTap(tap).catch(() => undefined)
  }
  report.finishedAt = new Date().toISOString()
  // Once the recovery site is retired the run is over, whatever production's boot did.
  if (retired) details.history = finishRun(p, report)
  await recordPlanRun(o.client, report, { json: o.json })
  return report
}
