// The failover network: unlike a test, a failover runs its VMs on this host's
// own network (the network namespace the command runs in), each NIC a tap
// device enslaved to the host bridge the plan names for its network
// (`networks.N.failover`). The bridge is the operator's: it must exist
// before the failover (checked with the plan), and is never created or
// removed here; the taps are the run's, named after its id, and go with it.
import type { PlanProblem, PlanSource, Plan } from './plan'
import { runCommand } from './netns'

async function ip(args: string[]): Promise<void> {
  const r = await runCommand('ip', args)
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.output.trim() || `exited ${r.code}`}`)
}

/** Whether DEVICE exists here and is a bridge (ip -d link: its kind). */
export async function isBridge(device: string): Promise<'bridge' | 'missing' | string> {
  const r = await runCommand('ip', ['-j', '-d', 'link', 'show', 'dev', device])
  if (r.code !== 0) return 'missing'
  try {
    const kind = (JSON.parse(r.output) as Array<{ linkinfo?: { info_kind?: string } }>)[0]?.linkinfo?.info_kind
    return kind === 'bridge' ? 'bridge' : kind ?? 'not a bridge'
  } catch {
    return 'not a bridge'
  }
}

/** What stops a failover on this host's network: a machine's network without a failover bridge, or a bridge that is not here. */
export async function failoverNetworkProblems(plan: Plan, src: PlanSource): Promise<PlanProblem[]> {
  const problems: PlanProblem[] = []
  const checked = new Map<string, string>()
  for (const [i, m] of plan.machines.entries()) {
    if (!m.network) continue
    const net = plan.networks[m.network.name]
    const bridge = net?.failover
    if (!bridge) {
      problems.push({
        path: `networks.${m.network.name}`,
        message: `network ${m.network.name} (of machine ${m.name}) names no failover bridge: add failover: BRIDGE, the host bridge its machines join on a failover`,
        where: src.at(['networks', m.network.name]),
      })
      continue
    }
    if (!checked.has(bridge)) checked.set(bridge, await isBridge(bridge))
    const kind = checked.get(bridge)!
    if (kind !== 'bridge') {
      problems.push({
        path: `networks.${m.network.name}.failover`,
        message:
          kind === 'missing'
            ? `bridge ${bridge} does not exist on this host (machines[${i}] ${m.name} would join it): create it, or run where it is`
            : `${bridge} is a ${kind} device, not a bridge`,
        where: src.at(['networks', m.network.name, 'failover']),
      })
    }
  }
  return problems
}

/** A tap device enslaved to the bridge, up. On failure nothing is left. */
export async function createTap(tap: string, bridge: string): Promise<void> {
  await ip(['tuntap', 'add', 'dev', tap, 'mode', 'tap'])
  try {
    await ip(['link', 'set', tap, 'master', bridge])
    await ip(['link', 'set', tap, 'up'])
  } catch (err) {
    await deleteTap(tap).catch(() => undefined)
    throw err
  }
}

/** Deletes the tap (gone already is fine: the run is being cleaned up). */
export async function deleteTap(tap: string): Promise<void> {
  const r = await runCommand('ip', ['link', 'show', 'dev', tap])
  if (r.code !== 0) return
  await ip(['link', 'delete', tap])
}

/** The run's tap for machine number I: 15 characters at most (the kernel's limit). */
export function tapName(prefix: 'tf' | 'tp', runId: string, i: number): string {
  return `${prefix}${runId}-${i}`
}
