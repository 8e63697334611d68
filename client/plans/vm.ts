// One plan machine as a qemu-system-x86_64 process inside the run's network
// namespace: its disks over NBD from the appliance's views (virtio, the first
// disk the boot disk), its NIC on a tap of its network's bridge, its serial
// console captured to a file the checks read.
//
// An appliance with TLS requires NBD STARTTLS with a client certificate:
// qemu then gets a tls-creds-x509 object over a directory holding the
// certificate (ca-cert.pem, client-cert.pem, client-key.pem, qemu's names)
// and each drive names it; the drives are spelt as options (a URI has no
// place for tls-creds). A unix socket has no host name to check the
// appliance's certificate against, so the drive names the one the command
// reached the appliance by (its --appliance HOST, which gRPC's TLS checked
// the same certificate against).
//
// TCG unless the machine says `accel: kvm` or `auto`: /dev/kvm exists on the
// machines this was built on but hangs guests, and a proof that proves
// nothing because its VM hung is worse than a slow one.
//
// `nsenter --net` (PlanNetns.exec) execs qemu in place, so the child's pid
// is qemu's: killing it kills the VM, and its exit is the VM's.
//
// A failover's VMs (no namespace: the host's network, a tap on the plan's
// failover bridge) outlive the command that starts them: their disks are
// -blockdev nbd nodes with reconnect-delay, so a restart of the failover
// agent under them (plan commit) stalls their I/O for a moment instead of
// failing it; a QMP socket lets plan failback pause them; qemu's stderr goes
// to a file, since nobody reads a pipe once the command has exited.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import { parseNbdUri } from '../nbd-client'
import type { PlanNetns, PlanNic } from './netns'
import type { PlanMachine } from './plan'

export interface VmSpec {
  machine: PlanMachine
  /** NBD URIs of the machine's disks, in the plan's order (nbd+unix:///VIEW?socket=PATH) */
  disks: string[]
  kernel?: string
  initrd?: string
  nic?: PlanNic
  console: string
  /** the disks are read over NBD with TLS: a qemu tls-creds-x509 directory (its client certificate) and the appliance's host name */
  tls?: { dir: string; hostname: string }
  /** survives this process (plan test --keep, failover) */
  detached: boolean
  /** a QMP socket to create (unix:PATH, server) */
  qmp?: string
  /** seconds qemu keeps a disk's I/O waiting for its NBD server to come back; unset: -drive as given */
  reconnectDelay?: number
  /** qemu's stderr goes to this file (else a pipe read while this process runs) */
  log?: string
}

/** A disk's NBD URI as -blockdev options that reconnect (qemu's nbd driver: server.*, export, reconnect-delay). */
function blockdev(uri: string, id: string, delay: number): string {
  const a = parseNbdUri(uri)
  if (!a) throw new Error(`${uri} is not an NBD URI`)
  const esc = (v: string): string => v.replace(/,/g, ',,')
  const server = 'unix' in a ? `server.type=unix,server.path=${esc(a.unix)}` : `server.type=inet,server.host=${esc(a.host)},server.port=${a.port}`
  return `driver=nbd,node-name=${id},${server},export=${esc(a.export)},reconnect-delay=${delay}`
}

/** qemu's command line for the machine. */
export function qemuArgs(s: VmSpec): string[] {
  const m = s.machine
  const accel = m.accel === 'auto' ? ['-accel', 'kvm', '-accel', 'tcg'] : ['-accel', m.accel]
  const args = [...accel, '-m', String(m.memory), '-smp', String(m.cpus), '-name', m.name]
  // No default devices, no display; a guest that resets exits (a reboot loop would look like a slow boot).
  args.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot')
  if (s.kernel) {
    args.push('-kernel', s.kernel)
    if (s.initrd) args.push('-initrd', s.initrd)
    // The address is the plan's, for guests that configure themselves from the command line.
    const address = m.network ? ` tidemark.address=${m.network.address}` : ''
    args.push('-append', `${m.append ?? 'console=ttyS0'}${address}`)
  }
  args.push('-chardev', `file,id=con,path=${s.console}`, '-serial', 'chardev:con')
  if (s.tls) args.push('-object', `tls-creds-x509,id=tls0,endpoint=client,dir=${optionValue(s.tls.dir)}`)
  if (s.qmp) args.push('-qmp', `unix:${s.qmp},server=on,wait=off`)
  for (const [i, uri] of s.disks.entries()) {
    // Reconnecting disks (failover: the local failover agent's exports) take no TLS.
    if (s.reconnectDelay !== undefined) args.push('-blockdev', blockdev(uri, `disk${i}`, s.reconnectDelay))
    else args.push('-drive', `${s.tls ? tlsDrive(uri, s.tls.hostname) : `file=${uri}`},format=raw,if=none,id=disk${i},cache=none`)
    args.push('-device', `virtio-blk-pci,drive=disk${i}${i === 0 && !s.kernel ? ',bootindex=1' : ''}`)
  }
  if (s.nic) {
    args.push('-netdev', `tap,id=net0,ifname=${s.nic.tap},script=no,downscript=no`)
    args.push('-device', `virtio-net-pci,netdev=net0,mac=${s.nic.mac}`)
  }
  return args
}

/** A value inside a qemu option list (a comma is doubled). */
function optionValue(v: string): string {
  return v.replace(/,/g, ',,')
}

/** An NBD URI as the nbd driver's options, with the run's TLS credentials. */
function tlsDrive(uri: string, hostname: string): string {
  const u = parseNbdUri(uri)
  if (!u || !('unix' in u)) throw new Error(`${uri}: a plan VM's TLS disk must be an nbd+unix:// URI`)
  return `file.driver=nbd,file.server.type=unix,file.server.path=${optionValue(u.unix)},file.export=${optionValue(u.export)},file.tls-creds=tls0,file.tls-hostname=${optionValue(hostname)}`
}

export class PlanVm {
  readonly proc: ChildProcess
  readonly exited: Promise<string>
  readonly startedAt = Date.now()
  private stderr = ''

  /** netns: where qemu runs (null: this process's network namespace) */
  constructor(
    readonly spec: VmSpec,
    netns: PlanNetns | null
  ) {
    fs.writeFileSync(spec.console, '')
    const [cmd, args] = netns ? netns.exec(['qemu-system-x86_64', ...qemuArgs(spec)]) : ['qemu-system-x86_64', qemuArgs(spec)]
    const log = spec.log ? fs.openSync(spec.log, 'w') : null
    try {
      this.proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', log ?? 'pipe'], detached: spec.detached })
    } finally {
      if (log !== null) fs.closeSync(log)
    }
    this.proc.stderr?.on('data', (d) => (this.stderr = (this.stderr + d).slice(-4096)))
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited ${code}`))
      this.proc.on('error', (e) => resolve(`could not start: ${e.message}`))
    })
  }

  get pid(): number | undefined {
    return this.proc.pid
  }

  get alive(): boolean {
    return this.proc.pid !== undefined && this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** What qemu said on stderr (why it exited, when it did). */
  qemuSaid(): string {
    if (this.spec.log) {
      try {
        return fs.readFileSync(this.spec.log, 'utf8').slice(-4096).trim()
      } catch {
        return ''
      }
    }
    return this.stderr.trim()
  }

  console(): string {
    try {
      return fs.readFileSync(this.spec.console, 'utf8')
    } catch {
      return ''
    }
  }

  /** The last lines of the console (for a report of a failed check). */
  consoleTail(lines = 20): string {
    return this.console().replace(/\r/g, '').split('\n').slice(-lines - 1).join('\n').trimEnd()
  }

  /** Lets this process exit while the VM runs on (--keep). */
  release(): void {
    this.proc.stderr?.destroy()
    this.proc.unref()
  }

  /** Kills qemu and waits for it to exit. */
  async kill(): Promise<void> {
    if (this.alive) this.proc.kill('SIGKILL')
    await this.exited
  }
}
