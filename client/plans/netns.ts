// The isolated network of a test run: one network namespace per run, a bridge
// in it per plan network, a tap per machine NIC on its network's bridge. The
// namespace gets no veth and no route out, so nothing a test VM sends can
// reach the host's networks or production (RecoverTrac's test mode: users
// are never redirected to the test machines). The namespace itself holds an
// address on each bridge (the subnet's highest free host address), so a
// plan's `command` checks, run inside it, reach the machines.
//
// Device names are short (the kernel allows 15 characters) and only mean
// something inside the namespace, so two runs never collide on them.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { ipString, parseCidr, type Plan } from './plan'

/** Where `ip netns add` binds a namespace (iproute2's NETNS_RUN_DIR). */
export const NETNS_DIR = '/run/netns'

export interface CommandResult {
  code: number | null
  output: string
}

/** Runs a command to completion; output is stdout and stderr together, the last 64 KiB. */
export function runCommand(cmd: string, args: string[], timeoutMs = 60_000, signal?: AbortSignal): Promise<CommandResult> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const take = (d: Buffer): void => {
      output = (output + d.toString()).slice(-65536)
    }
    p.stdout.on('data', take)
    p.stderr.on('data', take)
    const kill = (): void => void p.kill('SIGKILL')
    const timer = setTimeout(kill, timeoutMs)
    signal?.addEventListener('abort', kill, { once: true })
    const done = (r: CommandResult): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', kill)
      resolve(r)
    }
    p.on('error', (err) => done({ code: null, output: err.message }))
    p.on('close', (code) => done({ code, output }))
  })
}

async function ip(args: string[]): Promise<void> {
  const r = await runCommand('ip', args)
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.output.trim() || `exited ${r.code}`}`)
}

export interface PlanBridge {
  network: string
  /** the bridge's device name inside the namespace */
  device: string
  /** the namespace's own address on it (A.B.C.D/PREFIX), when machines have addresses there */
  address?: string
}

/** Where each machine's NIC goes: its tap device and MAC address. */
export interface PlanNic {
  machine: string
  network: string
  tap: string
  mac: string
}

export class PlanNetns {
  private constructor(
    readonly name: string,
    readonly bridges: PlanBridge[],
    readonly nics: PlanNic[]
  ) {}

  /**
   * Creates the namespace, its bridges and taps. On failure whatever was made
   * is deleted before the error is thrown.
   */
  static async create(name: string, plan: Plan): Promise<PlanNetns> {
    const bridges: PlanBridge[] = Object.keys(plan.networks).map((network, i) => ({ network, device: `tmbr${i}` }))
    for (const b of bridges) {
      const taken = new Set<number>()
      let subnet: { ip: number; prefix: number } | undefined
      for (const m of plan.machines) {
        if (m.network?.name !== b.network) continue
        const a = parseCidr(m.network.address)!
        taken.add(a.ip)
        subnet = a
      }
      if (!subnet) continue
      const size = 2 ** (32 - subnet.prefix)
      const net = (subnet.ip & ~(size - 1)) >>> 0
      for (let host = net + size - 2; host > net; host--) {
        if (!taken.has(host)) {
          b.address = `${ipString(host)}/${subnet.prefix}`
          break
        }
      }
    }
    const nics: PlanNic[] = []
    for (const [i, m] of plan.machines.entries()) {
      if (!m.network) continue
      // locally administered, unicast; unique within the run
      const mac = `52:54:00:7d:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`
      nics.push({ machine: m.name, network: m.network.name, tap: `tmtap${i}`, mac })
    }
    await ip(['netns', 'add', name])
    const ns = new PlanNetns(name, bridges, nics)
    try {
      await ip(['-n', name, 'link', 'set', 'lo', 'up'])
      for (const b of bridges) {
        await ip(['-n', name, 'link', 'add', b.device, 'type', 'bridge'])
        await ip(['-n', name, 'link', 'set', b.device, 'up'])
        if (b.address) await ip(['-n', name, 'addr', 'add', b.address, 'dev', b.device])
      }
      for (const n of nics) {
        const bridge = bridges.find((b) => b.network === n.network)!
        await ip(['-n', name, 'tuntap', 'add', 'dev', n.tap, 'mode', 'tap'])
        await ip(['-n', name, 'link', 'set', n.tap, 'master', bridge.device])
        await ip(['-n', name, 'link', 'set', n.tap, 'up'])
      }
    } catch (err) {
      await ns.delete().catch(() => undefined)
      throw err
    }
    return ns
  }

  /**
   * The command line that runs ARGS inside the namespace: its network only.
   * Not `ip netns exec`, which also gives the command a mount namespace of
   * its own, a copy of the host's mount table: where the host's mounts are
   * private (containers), every file system mounted when a test VM started
   * then stays busy on the host until the VM ends (an operator's umount
   * succeeds, but the device under it, a loop device or a FUSE mount, cannot
   * be released). nsenter joins the network namespace and execs ARGS in
   * place, so the child's pid is still the command's.
   */
  exec(args: string[]): [string, string[]] {
    return ['nsenter', [`--net=${path.join(NETNS_DIR, this.name)}`, '--', ...args]]
  }

  /** Runs a shell command inside the namespace (a plan's command check). */
  shell(command: string, timeoutMs: number, signal?: AbortSignal): Promise<CommandResult> {
    const [cmd, args] = this.exec(['sh', '-c', command])
    return runCommand(cmd, args, timeoutMs, signal)
  }

  /** The namespace's routes (for a report, and for tests that there is none out). */
  async routes(): Promise<string[]> {
    const r = await runCommand('ip', ['-n', this.name, 'route', 'show'])
    return r.output.split('\n').filter(Boolean)
  }

  /** Deletes the namespace; its bridges and taps go with it (its processes must be gone first). */
  async delete(): Promise<void> {
    await ip(['netns', 'delete', this.name])
  }
}

/** Whether a namespace of that name exists. */
export async function netnsExists(name: string): Promise<boolean> {
  const r = await runCommand('ip', ['netns', 'list'])
  return r.output.split('\n').some((l) => l.split(' ')[0] === name)
}
