// Booting a plan's machines in order, the part `plan test`, `plan failover`
// and `plan failback` (production coming back) share: boot group by boot
// group, a group starting when every check of the group before it is green;
// one machine of a group failing ends its siblings' waits at once (the run
// has failed, say so now). Where a VM runs (a test namespace, the failover
// network, production) and where a command check runs are the caller's: it
// passes how to start a machine and how to run a command.
import type { CommandResult } from './netns'
import { bootGroups, type Plan, type PlanMachine } from './plan'
import type { PlanVm } from './vm'

export interface MachineReport {
  name: string
  boot: number
  /** view: the appliance view a test boots from; image: the disk file a failover restored */
  disks: Array<{ volume: string; seq: number; view?: string; image?: string }>
  /** qemu's pid while it ran */
  pid: number | null
  /** seconds from the run's start to qemu's start; null when it was not started */
  startedAtSeconds: number | null
  /** seconds from starting qemu to its check green; null when it did not get there */
  bootSeconds: number | null
  /** seconds from the run's start to its check green; null when it did not get there */
  greenAtSeconds: number | null
  /** stopped: its check was cut short because another machine of its boot group failed */
  check: { kind: 'console' | 'command' | 'none'; spec: string; timeoutSeconds: number; result: 'green' | 'failed' | 'stopped' | 'not run'; detail: string }
  /** the last lines of the serial console, when the check failed */
  consoleTail?: string
}

/** A machine's report before it runs. */
export function machineReport(m: PlanMachine, disks: MachineReport['disks']): MachineReport {
  return {
    name: m.name,
    boot: m.boot,
    disks,
    pid: null,
    startedAtSeconds: null,
    greenAtSeconds: null,
    bootSeconds: null,
    check: {
      kind: m.check ? (m.check.console !== undefined ? 'console' : 'command') : 'none',
      spec: m.check?.console ?? m.check?.command ?? '',
      timeoutSeconds: m.check?.timeout ?? 0,
      result: 'not run',
      detail: '',
    },
  }
}

export class Interrupted extends Error {}

const POLL_MS = 250

/** Waits for `ms` or the abort, whichever comes first (a check's retry pause, not a synchronization). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/** Runs a check's command where the machines are reachable (a test namespace, or this host's network). */
export type Shell = (command: string, timeoutMs: number, signal?: AbortSignal) => Promise<CommandResult>

/** Waits for a machine's check; resolves with the detail of its green, throws an Error with why it failed. */
export async function waitForCheck(vm: PlanVm, m: PlanMachine, shell: Shell, signal?: AbortSignal): Promise<string> {
  const c = m.check
  const deadline = Date.now() + (c?.timeout ?? 0) * 1000
  const dead = (): Error => new Error(`qemu ${vm.alive ? 'is running' : 'exited'} before the check was green${vm.qemuSaid() ? `: ${vm.qemuSaid().split('\n').at(-1)}` : ''}`)
  if (!c) {
    if (!vm.alive) throw dead()
    return 'no check: the VM started'
  }
  if (c.console !== undefined) {
    const re = new RegExp(c.console, 'm')
    for (;;) {
      const found = re.exec(vm.console())
      if (found) return `console matched: ${found[0].slice(0, 200)}`
      if (signal?.aborted) throw new Interrupted('interrupted')
      if (!vm.alive) throw dead()
      if (Date.now() >= deadline) throw new Error(`the console did not match /${c.console}/ within ${c.timeout} s`)
      await pause(POLL_MS, signal)
    }
  }
  let last = ''
  for (;;) {
    const left = deadline - Date.now()
    const r = await shell(c.command!, Math.max(left, 1000), signal)
    if (r.code === 0) return `command exited 0${r.output.trim() ? `: ${r.output.trim().split('\n').at(-1)!.slice(0, 200)}` : ''}`
    last = `exit ${r.code ?? 'killed at the timeout'}${r.output.trim() ? `: ${r.output.trim().split('\n').at(-1)!.slice(0, 200)}` : ''}`
    if (signal?.aborted) throw new Interrupted('interrupted')
    if (!vm.alive) throw dead()
    if (Date.now() >= deadline) throw new Error(`the command did not exit 0 within ${c.timeout} s (last: ${last})`)
    await pause(Math.min(1000, Math.max(0, deadline - Date.now())), signal)
  }
}

export interface BootOptions {
  plan: Plan
  /** the machines' reports, filled in as they boot */
  machines: MachineReport[]
  /** the run's start (report times are from here) */
  t0: number
  /** starts a machine's VM (its report knows its disks) */
  start(m: PlanMachine, r: MachineReport): PlanVm
  shell: Shell
  progress(line: string): void
  signal?: AbortSignal
}

/** Boots every group in order; throws (Interrupted, or an Error naming the group's failed checks) when one fails. */
export async function bootInOrder(o: BootOptions): Promise<void> {
  const { plan } = o
  for (const group of bootGroups(plan)) {
    if (o.signal?.aborted) throw new Interrupted('interrupted')
    o.progress(`plan ${plan.name}: boot group ${group.boot}: ${group.machines.map((m) => m.name).join(', ')}`)
    const sibling = new AbortController()
    const signal = o.signal ? AbortSignal.any([o.signal, sibling.signal]) : sibling.signal
    const waits = group.machines.map(async (m) => {
      const r = o.machines.find((x) => x.name === m.name)!
      const vm = o.start(m, r)
      r.pid = vm.pid ?? null
      r.startedAtSeconds = Math.round((vm.startedAt - o.t0) / 100) / 10
      try {
        r.check.detail = await waitForCheck(vm, m, o.shell, signal)
        r.check.result = 'green'
        const now = Date.now()
        r.bootSeconds = Math.round((now - vm.startedAt) / 100) / 10
        r.greenAtSeconds = Math.round((now - o.t0) / 100) / 10
        o.progress(`plan ${plan.name}: ${m.name}: green after ${r.bootSeconds} s (${r.check.detail})`)
      } catch (err) {
        if (err instanceof Interrupted && !o.signal?.aborted) {
          r.check.result = 'stopped'
          r.check.detail = 'stopped: another machine of this boot group failed'
          throw err
        }
        r.check.result = 'failed'
        r.check.detail = err instanceof Interrupted ? 'interrupted' : (err as Error).message
        r.consoleTail = vm.consoleTail()
        o.progress(`plan ${plan.name}: ${m.name}: ${r.check.detail}`)
        sibling.abort()
        throw err
      }
    })
    const results = await Promise.allSettled(waits)
    if (results.some((x) => x.status === 'rejected')) {
      if (o.signal?.aborted) throw new Interrupted('interrupted')
      const names = o.machines.filter((x) => x.boot === group.boot && x.check.result === 'failed').map((x) => x.name)
      throw new Error(`boot group ${group.boot}: the check of ${names.join(', ')} failed`)
    }
  }
}
