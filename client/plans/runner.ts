// `plan test`: an isolated test failover of a plan's real VMs.
//
// 1. a writable view of every disk at the resolved seq (copy-on-write on the
//    appliance: the journal, the index and replication never see the test);
// 2. a network namespace with a bridge per plan network and no route out;
// 3. the machines, boot group by boot group: a group starts when every
//    check of the group before it is green;
// 4. the report: per machine its boot seconds and check, the console's tail
//    when the check failed, and the plan's RTO (start to all checks green);
// 5. teardown, always, whatever happened (VMs killed and waited for, the
//    namespace deleted, the views deleted), unless --keep;
// 6. the run recorded, in one place (recordPlanRun).
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { createView, deleteView } from '../timeview-views'
import { NbdRelay } from './nbd-relay'
import { PlanNetns } from './netns'
import { bootInOrder, Interrupted, machineReport, type MachineReport } from './boot'
import { RUN_ID_CHARS, testViewName, type Plan } from './plan'
import { recordPlanRun } from './record'
import type { ResolvedPlan } from './resolve'
import { PlanVm } from './vm'

export type { MachineReport } from './boot'

/**
 * The report of one plan action: `plan test` fills the network fields;
 * failover, commit, rollback and failback say what they did in `details`
 * (and the audit trail gets the same details).
 */
export interface PlanRunReport {
  plan: string
  action: 'test' | 'failover' | 'commit' | 'rollback' | 'failback'
  runId: string
  appliance: string
  /** what the point named, per disk seq (one line for a person) */
  point: string
  startedAt: string
  finishedAt: string
  result: 'passed' | 'failed'
  /** why it failed, one line */
  error?: string
  /** seconds from the start to every check green; null when the run failed (or booted nothing) */
  rtoSeconds: number | null
  /** test: where the VMs read their disks: the appliance's NBD unix socket, or its TCP endpoint relayed */
  nbd?: string
  /** test: the run's network namespace */
  netns?: string
  networks?: Array<{ network: string; bridge: string; address?: string }>
  /** test: the namespace's routes when the machines ran: the plan's subnets on its bridges, never a way out */
  routes?: string[]
  machines: MachineReport[]
  /** what was left running (--keep) and how to remove it */
  kept?: { vms: Array<{ machine: string; pid: number; console: string }>; netns: string; views: string[]; remove: string[]; note?: string }
  /** teardown steps that failed (each also fails the run) */
  teardownProblems: string[]
  /** what an action other than test did (also recorded in the audit trail) */
  details?: Record<string, unknown>
  /** the run's entry in the appliance's audit trail, or why it has none (record.ts) */
  audit?: { seq: number; who: string } | { error: string }
}

export interface PlanTestOptions {
  client: AdminClient
  /** --appliance as given (for the report, and the --keep removal commands) */
  appliance: string
  plan: Plan
  resolved: ResolvedPlan
  keep: boolean
  json: boolean
  /** a progress line (on a terminal) */
  progress: (line: string) => void
  /** aborts the run (SIGINT): teardown still runs */
  signal?: AbortSignal
  /**
   * the command's --tls-* files and the host name of --appliance: the VMs
   * show this certificate when the appliance's NBD requires TLS, and check
   * the appliance's against that name
   */
  tls?: { cert: string; key: string; ca: string; hostname: string }
}

function quote(s: string): string {
  return /^[A-Za-z0-9_./:=@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

/** A new run's id: RUN_ID_CHARS hex digits (part of view, namespace and tap names). */
export function newRunId(): string {
  return crypto.randomBytes(RUN_ID_CHARS).toString('hex').slice(0, RUN_ID_CHARS)
}

/** What every run's report starts with: the plan, the action, where, the point, when; failed until it passes. */
export function reportStart(plan: Plan, action: PlanRunReport['action'], runId: string, appliance: string, resolved: ResolvedPlan, t0: number) {
  return {
    plan: plan.name,
    action,
    runId,
    appliance,
    point: [...new Set(resolved.disks.map((d) => d.point))].join('; '),
    startedAt: new Date(t0).toISOString(),
    finishedAt: '',
    result: 'failed' as PlanRunReport['result'],
    rtoSeconds: null,
  }
}

export async function runPlanTest(o: PlanTestOptions): Promise<PlanRunReport> {
  const { plan, resolved, client } = o
  const t0 = Date.now()
  const runId = newRunId()
  const netnsName = `tidemark-plan-${plan.name}-${runId}`
  const seqs = [...new Set(resolved.disks.map((d) => d.seq))]
  const report: PlanRunReport = {
    ...reportStart(plan, 'test', runId, o.appliance, resolved, t0),
    nbd: resolved.nbd.unix ? `unix:${resolved.nbd.unix}` : `tcp:${resolved.nbd.tcp}`,
    netns: netnsName,
    networks: [],
    routes: [],
    machines: plan.machines.map((m) =>
      machineReport(
        m,
        resolved.disks.filter((d) => d.machine === m.name).map((d) => ({ volume: d.volume, view: testViewName(plan.name, m.name, d.volume, runId), seq: d.seq }))
      )
    ),
    teardownProblems: [],
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tidemark-plan-${plan.name}-${runId}-`))
  const views: string[] = []
  const vms = new Map<string, PlanVm>()
  let netns: PlanNetns | null = null
  let relay: NbdRelay | null = null
  try {
    // The views first: what the appliance refuses is refused before anything runs.
    o.progress(`plan ${plan.name}: test run ${runId} at ${seqs.length === 1 ? `seq ${seqs[0]}` : `seqs ${seqs.join(', ')}`} (${report.point})`)
    // TLS on the appliance's NBD: qemu reads the disks with the command's own
    // certificate, from a directory in the run's (0700, removed at teardown).
    let tls: { dir: string; hostname: string } | undefined
    if (resolved.nbd.tls) {
      if (!o.tls) throw new Error("the appliance's NBD requires TLS: give plan test --tls-cert, --tls-key and --tls-ca (the VMs show that certificate)")
      tls = { dir: qemuTlsDir(path.join(dir, 'tls'), o.tls), hostname: o.tls.hostname }
      report.nbd += ' with TLS'
    }
    let socket = resolved.nbd.unix
    if (!socket) {
      const [, host, port] = /^(.*):(\d+)$/.exec(resolved.nbd.tcp)!
      relay = await NbdRelay.listen(path.join(dir, 'nbd.sock'), host.replace(/^\[|\]$/g, ''), Number(port))
      socket = relay.path
      report.nbd = `tcp:${resolved.nbd.tcp}${tls ? ' with TLS' : ''}, relayed from unix:${relay.path}`
    }
    for (const m of report.machines) {
      for (const d of m.disks) {
        if (o.signal?.aborted) throw new Interrupted('interrupted')
        await createView(client, { volume: d.volume, point: { seq: d.seq }, name: d.view!, writable: true }, 'plan test')
        views.push(d.view!)
      }
    }
    o.progress(`plan ${plan.name}: ${views.length} writable view${views.length === 1 ? '' : 's'} created`)

    netns = await PlanNetns.create(netnsName, plan)
    report.networks = netns.bridges.map((b) => ({ network: b.network, bridge: b.device, ...(b.address ? { address: b.address } : {}) }))
    report.routes = await netns.routes()
    o.progress(`plan ${plan.name}: network namespace ${netnsName} (${netns.bridges.length} bridge${netns.bridges.length === 1 ? '' : 's'}, no route out)`)

    await bootInOrder({
      plan,
      machines: report.machines,
      t0,
      start: (m, r) => {
        const files = resolved.files.get(m.name) ?? {}
        const vm = new PlanVm(
          {
            machine: m,
            disks: r.disks.map((d) => `nbd+unix:///${d.view}?socket=${socket}`),
            kernel: files.kernel,
            initrd: files.initrd,
            nic: netns!.nics.find((n) => n.machine === m.name),
            console: path.join(dir, `${m.name}.console`),
            tls,
            detached: o.keep,
          },
          netns!
        )
        vms.set(m.name, vm)
        return vm
      },
      shell: (command, timeoutMs, signal) => netns!.shell(command, timeoutMs, signal),
      progress: o.progress,
      signal: o.signal,
    })
    report.rtoSeconds = Math.round((Date.now() - t0) / 100) / 10
    report.result = 'passed'
    o.progress(`plan ${plan.name}: every check green: RTO ${report.rtoSeconds} s`)
  } catch (err) {
    report.error = err instanceof Interrupted ? 'interrupted: the run was stopped before every check was green' : (err as Error).message
  } finally {
    if (o.keep) {
      for (const vm of vms.values()) if (vm.alive) vm.release()
      void relay?.close() // a relay cannot outlive this process: VMs kept on a TCP-only appliance lose their disks
      const kept = [...vms.entries()].filter(([, vm]) => vm.alive).map(([machine, vm]) => ({ machine, pid: vm.pid!, console: vm.spec.console }))
      report.kept = {
        vms: kept,
        netns: netns ? netnsName : '',
        views,
        remove: [
          ...(kept.length ? [`kill ${kept.map((k) => k.pid).join(' ')}`] : []),
          ...(netns ? [`ip netns delete ${netnsName}`] : []),
          ...views.map((v) => `tidemark timeview delete --appliance ${quote(o.appliance)} --name ${v}`),
          `rm -r ${quote(dir)}`,
        ],
        ...(relay && kept.length
          ? { note: 'the appliance serves NBD on TCP only: the kept VMs lost their disks when plan test exited (its relay into the namespace ends with it); the views are kept' }
          : {}),
      }
    } else {
      await teardown(report, { vms, netns, views, relay, dir, client })
      if (report.teardownProblems.length) {
        report.result = 'failed'
        report.error ??= `teardown: ${report.teardownProblems[0]}`
      }
    }
    report.finishedAt = new Date().toISOString()
  }
  await recordPlanRun(o.client, report, { json: o.json })
  return report
}

/**
 * qemu's tls-creds-x509 directory (its file names) from the command's TLS
 * files: 0700, as the key inside it is the command's private key.
 */
function qemuTlsDir(into: string, tls: { cert: string; key: string; ca: string }): string {
  fs.mkdirSync(into, { mode: 0o700 })
  for (const [from, name] of [
    [tls.ca, 'ca-cert.pem'],
    [tls.cert, 'client-cert.pem'],
    [tls.key, 'client-key.pem'],
  ] as const) {
    fs.copyFileSync(from, path.join(into, name))
    fs.chmodSync(path.join(into, name), 0o600)
  }
  return into
}

/** VMs killed and waited for, then the namespace (nothing runs in it), then the views (no VM reads them), then the files. */
async function teardown(
  report: PlanRunReport,
  r: { vms: Map<string, PlanVm>; netns: PlanNetns | null; views: string[]; relay: NbdRelay | null; dir: string; client: AdminClient }
): Promise<void> {
  const problems = report.teardownProblems
  await Promise.all([...r.vms.values()].map((vm) => vm.kill()))
  if (r.netns) {
    try {
      await r.netns.delete()
    } catch (err) {
      problems.push(`network namespace ${r.netns.name}: ${(err as Error).message}`)
    }
  }
  await r.relay?.close()
  for (const v of r.views) {
    try {
      await deleteView(r.client, v, 'plan test')
    } catch (err) {
      problems.push(`view ${v}: ${(err as Error).message}`)
    }
  }
  fs.rmSync(r.dir, { recursive: true, force: true })
}
