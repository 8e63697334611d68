// A small Linux guest for the VM tests and the VM boot benchmark, built
// offline from what the host's Debian packages installed: the kernel
// (linux-image-cloud-amd64), its virtio modules, busybox (busybox-static),
// an initramfs (cpio) and an ext4 root made with `mkfs.ext4 -d`.
//
// The guest boots directly (-kernel/-initrd) under qemu-system-x86_64 with TCG.
// Its initramfs loads the virtio modules (the cloud kernel builds them as
// modules; ext4 too on some kernels, so whatever the root needs is resolved
// through `modinfo`), mounts /dev/vda and switches to it. The root's init runs
// the workload: it reports what the disk held when it booted, then appends
// numbered lines to /data/log, each followed by `sync` and then a console
// line. Everything the guest says that a test reads starts with "tm-":
//   tm-boot role=ROLE lines=N last=LINE        the file as the guest found it
//   tm-line ROLE I                              line I is on the disk (synced)
//   tm-fail WHY                                 the guest could not start
// The kernel command line names the role (tm.role=, the text of the lines it
// writes), so two VMs booted from points of one disk write different lines.
//
// An opt-in variant (buildGuest(dir, { network: true })) adds virtio_net and,
// before the workload, brings up eth0 with the address the kernel command
// line gives (tidemark.address=A.B.C.D/N, as `plan test` passes a plan
// machine's address), serves /www with busybox httpd on port 80, and, given
// tm.peer=ADDR, pings ADDR until it answers; /www/health then exists:
//   tm-net ADDRESS                               eth0 is up with the address
//   tm-peer ADDR ok                              the peer answered a ping
// Without a peer, /www/health exists as soon as httpd runs.
//
// The build is cached under the system's temporary directory, keyed by the
// kernel version and a hash of this recipe, so a second test or a benchmark
// reuses it; a build goes to a fresh directory renamed into place, so two
// builders racing both end with a complete guest.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { have } from '../helpers'

export interface Guest {
  kernelVersion: string
  kernel: string
  initrd: string
  /** The root file system image (raw ext4). Boot a copy of it, never it. */
  rootImage: string
  rootSize: number
}

/** The modules the initramfs loads, in this order (with whatever they depend on first). */
const VIRTIO = ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk']
/** ext4 and its dependencies when they are modules; crc32c is a soft dependency modinfo does not list. */
const EXT4 = ['crc32c_generic', 'ext4']

const ROOT_SIZE = 64 * 1024 * 1024

// The initramfs's /init: modules, the root disk, switch_root. A failure says
// why on the console and powers off (with -no-reboot qemu then exits), so a
// test never waits on a guest that cannot boot.
const INITRAMFS_INIT = `#!/bin/busybox sh
B=/bin/busybox
fail() { echo "tm-fail $*"; $B sync; $B poweroff -f; }
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in $($B cat /modules.order); do
  $B insmod /lib/modules/$m || fail "insmod $m"
done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "no /dev/vda"
  $B sleep 0.1
done
$B mount -t ext4 /dev/vda /newroot || fail "mount /dev/vda"
$B umount /proc /sys
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /sbin/init
`

// The root's /sbin/init: the workload. `sync` after each line makes it
// durable before the console says so (ext4's journal commits the size
// change with the data: data=ordered).
const ROOT_INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
role=guest
for a in $(cat /proc/cmdline); do
  case $a in tm.role=*) role=\${a#tm.role=} ;; esac
done
f=/data/log
touch $f
n=$(wc -l < $f)
echo "tm-boot role=$role lines=$n last=$(tail -n 1 $f | tr ' ' _)"
i=$n
while :; do
  i=$((i + 1))
  echo "$role $i" >> $f
  sync
  echo "tm-line $role $i"
done
`

// The network variant's addition to ROOT_INIT, after /proc is mounted.
const ROOT_NETWORK = `for a in $(cat /proc/cmdline); do
  case $a in tidemark.address=*) addr=\${a#tidemark.address=} ;; tm.peer=*) peer=\${a#tm.peer=} ;; esac
done
if [ -n "$addr" ]; then
  ip link set lo up
  ip link set eth0 up
  ip addr add $addr dev eth0 || echo "tm-fail ip addr add $addr"
  echo "tm-net $addr"
  mkdir -p /www
  rm -f /www/health
  httpd -p 80 -h /www
  if [ -n "$peer" ]; then
    (until ping -c 1 -W 1 $peer > /dev/null 2>&1; do sleep 0.2; done; echo "peer $peer ok" > /www/health; echo "tm-peer $peer ok") &
  else
    echo ok > /www/health
  fi
fi
`

/** The root's /sbin/init: the workload, after the network when the variant has it. */
function rootInit(network: boolean): string {
  return network ? ROOT_INIT.replace('mount -t proc proc /proc\n', `mount -t proc proc /proc\n${ROOT_NETWORK}`) : ROOT_INIT
}

function sh(cmd: string, args: string[], opts: { input?: Buffer; cwd?: string } = {}): Buffer {
  const r = spawnSync(cmd, args, { input: opts.input, cwd: opts.cwd, maxBuffer: 256 * 1024 * 1024 })
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.toString().trim()}`)
  return r.stdout
}

function versionKey(v: string): number[] {
  return v.split(/[.-]/).map((p) => (/^\d+$/.test(p) ? Number(p) : 0))
}

/** The newest kernel with both an image in /boot and modules installed (the version is never assumed). */
export function findKernel(): { version: string; image: string } {
  const versions = fs
    .readdirSync('/boot')
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => fs.existsSync(path.join('/lib/modules', v, 'modules.dep')))
    .sort((a, b) => {
      const ka = versionKey(a)
      const kb = versionKey(b)
      for (let i = 0; i < Math.max(ka.length, kb.length); i++) if ((ka[i] ?? 0) !== (kb[i] ?? 0)) return (ka[i] ?? 0) - (kb[i] ?? 0)
      return 0
    })
  const version = versions.at(-1)
  if (!version) throw new Error('no kernel with modules found (/boot/vmlinuz-* and /lib/modules/VERSION): apt-get install linux-image-cloud-amd64')
  return { version, image: path.join('/boot', `vmlinuz-${version}`) }
}

/** Module files to load, dependencies first; built-in modules are skipped. */
export function moduleFiles(version: string, names: string[]): string[] {
  const out: string[] = []
  const seen = new Set<string>()
  const visit = (name: string): void => {
    if (seen.has(name)) return
    seen.add(name)
    const r = spawnSync('modinfo', ['-k', version, '-F', 'filename', name], { encoding: 'utf8' })
    const file = r.stdout.trim().split('\n')[0]
    if (r.status !== 0 || !file) throw new Error(`modinfo ${name} (kernel ${version}): ${r.stderr.trim() || 'not found'}`)
    if (file === '(builtin)') return
    const deps = sh('modinfo', ['-k', version, '-F', 'depends', name]).toString().trim()
    for (const d of deps ? deps.split(',') : []) visit(d.trim())
    out.push(file)
  }
  for (const n of names) visit(n)
  return out
}

/** A module's bytes, uncompressed (busybox insmod takes plain .ko only). */
function moduleBytes(file: string): Buffer {
  if (file.endsWith('.ko')) return fs.readFileSync(file)
  if (file.endsWith('.ko.xz')) return sh('xz', ['-dc', file])
  if (file.endsWith('.ko.zst')) return sh('zstd', ['-dcq', file])
  if (file.endsWith('.ko.gz')) return sh('gzip', ['-dc', file])
  throw new Error(`${file}: unknown module compression`)
}

/** Whether an ELF executable needs no dynamic loader (no PT_INTERP program header): it runs alone in an initramfs. */
function isStatic(file: string): boolean {
  const b = fs.readFileSync(file)
  if (b.subarray(0, 4).toString('latin1') !== '\x7fELF' || b[4] !== 2 || b[5] !== 1) return false // 64-bit little-endian only
  const phoff = Number(b.readBigUInt64LE(0x20))
  const phentsize = b.readUInt16LE(0x36)
  const phnum = b.readUInt16LE(0x38)
  for (let i = 0; i < phnum; i++) if (b.readUInt32LE(phoff + i * phentsize) === 3) return false
  return true
}

function findBusybox(): string {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) if (fs.existsSync(p) && isStatic(p)) return p
  throw new Error('a statically linked busybox is needed: apt-get install busybox-static')
}

/** busybox and a link for each of its applets, under DIR/bin. */
function installBusybox(busybox: string, dir: string): void {
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true })
  fs.copyFileSync(busybox, path.join(dir, 'bin', 'busybox'))
  fs.chmodSync(path.join(dir, 'bin', 'busybox'), 0o755)
  for (const applet of sh(busybox, ['--list']).toString().split('\n').filter(Boolean)) {
    if (applet !== 'busybox') fs.symlinkSync('busybox', path.join(dir, 'bin', applet))
  }
}

function build(kernel: { version: string; image: string }, busybox: string, modules: string[], into: string, init: string): void {
  // The initramfs: busybox, the modules (uncompressed) and the order to load them in.
  const ird = path.join(into, 'initramfs')
  fs.mkdirSync(path.join(ird, 'lib', 'modules'), { recursive: true })
  fs.mkdirSync(path.join(ird, 'bin'))
  fs.copyFileSync(busybox, path.join(ird, 'bin', 'busybox'))
  fs.chmodSync(path.join(ird, 'bin', 'busybox'), 0o755)
  const order: string[] = []
  for (const m of modules) {
    const name = path.basename(m).replace(/\.ko(\.(xz|zst|gz))?$/, '.ko')
    fs.writeFileSync(path.join(ird, 'lib', 'modules', name), moduleBytes(m))
    order.push(name)
  }
  fs.writeFileSync(path.join(ird, 'modules.order'), `${order.join('\n')}\n`)
  fs.writeFileSync(path.join(ird, 'init'), INITRAMFS_INIT, { mode: 0o755 })
  const files = sh('find', ['.', '-mindepth', '1'], { cwd: ird })
  fs.writeFileSync(path.join(into, 'initrd.cpio'), sh('cpio', ['--quiet', '-o', '-H', 'newc', '--owner=0:0'], { cwd: ird, input: files }))
  fs.rmSync(ird, { recursive: true })

  // The root file system.
  const rd = path.join(into, 'rootfs')
  installBusybox(busybox, rd)
  for (const d of ['sbin', 'proc', 'sys', 'dev', 'data', 'tmp']) fs.mkdirSync(path.join(rd, d))
  fs.writeFileSync(path.join(rd, 'sbin', 'init'), init, { mode: 0o755 })
  sh('mkfs.ext4', ['-q', '-F', '-L', 'tmroot', '-E', 'root_owner=0:0', '-d', rd, path.join(into, 'root.img'), `${ROOT_SIZE / 1024}k`])
  fs.rmSync(rd, { recursive: true })

  fs.copyFileSync(kernel.image, path.join(into, 'vmlinuz'))
}

/**
 * The guest: built once per kernel version and recipe, then reused from the
 * cache (`cacheDir`, by default under the system's temporary directory).
 */
export function buildGuest(cacheDir = path.join(os.tmpdir(), 'tidemark-guest'), opts: { network?: boolean } = {}): Guest {
  const kernel = findKernel()
  const busybox = findBusybox()
  const network = opts.network === true
  const modules = moduleFiles(kernel.version, [...VIRTIO, ...(network ? ['virtio_net'] : []), ...EXT4])
  const init = rootInit(network)
  // (the plain guest's recipe is what it always was, so its cache stays valid)
  const recipe = crypto
    .createHash('sha256')
    .update(JSON.stringify([INITRAMFS_INIT, init, ROOT_SIZE, modules, fs.statSync(busybox).size, fs.statSync(kernel.image).mtimeMs]))
    .digest('hex')
    .slice(0, 12)
  const dir = path.join(cacheDir, `${kernel.version}-${recipe}`)
  const guest: Guest = {
    kernelVersion: kernel.version,
    kernel: path.join(dir, 'vmlinuz'),
    initrd: path.join(dir, 'initrd.cpio'),
    rootImage: path.join(dir, 'root.img'),
    rootSize: ROOT_SIZE,
  }
  if (fs.existsSync(dir)) return guest
  fs.mkdirSync(cacheDir, { recursive: true })
  const tmp = fs.mkdtempSync(path.join(cacheDir, '.build-'))
  try {
    build(kernel, busybox, modules, tmp, init)
    fs.renameSync(tmp, dir)
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true })
    // Another builder renamed its complete guest into place first: use it.
    if ((err as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (err as NodeJS.ErrnoException).code === 'EEXIST') return guest
    throw err
  }
  return guest
}

/** How to boot a guest. */
export interface BootOptions {
  /** What qemu opens as the root disk: a file, or an NBD URI (nbd+unix:///NAME?socket=PATH). */
  disk: string
  /** The text of the workload's lines (tm.role=). */
  role: string
  /** Where the serial console goes (a file: a test can read it while the guest runs, and a hook can too). */
  console: string
  /** A QMP socket to create (unix), for stop/cont/quit. */
  qmp?: string
  memoryMiB?: number
  /** qemu's own throw-away overlay for the guest's writes (snapshot=on): boots from a read-only disk. */
  snapshot?: boolean
}

/** The qemu-system-x86_64 argument list for a guest: TCG (/dev/kvm may exist but hang guests), direct kernel boot, virtio root. */
export function qemuArgs(guest: Guest, o: BootOptions): string[] {
  const file = o.disk.startsWith('nbd') ? o.disk : o.disk.replace(/,/g, ',,')
  return [
    '-accel', 'tcg',
    '-m', String(o.memoryMiB ?? 256),
    '-smp', '1',
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot',
    '-kernel', guest.kernel,
    '-initrd', guest.initrd,
    '-append', `console=ttyS0 panic=-1 quiet tm.role=${o.role}`,
    '-chardev', `file,id=con,path=${o.console}`,
    '-serial', 'chardev:con',
    ...(o.qmp ? ['-qmp', `unix:${o.qmp},server=on,wait=off`] : []),
    '-drive', `file=${file},format=raw,if=virtio,cache=none${o.snapshot ? ',snapshot=on' : ''}`,
  ]
}

/** The line numbers a console's text reports synced ("tm-line ROLE I"), in order. */
export function syncedLines(console: string): number[] {
  return console
    .split(/\r?\n/)
    .map((l) => /^tm-line \S+ (\d+)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
}

/**
 * The workload's log in a guest disk image, as the guest would find it: on a
 * scratch copy, ext4's journal is replayed (e2fsck -E journal_only), checked
 * (e2fsck -fn) and /data/log read with debugfs. No mount, the image is untouched.
 */
export function guestLog(image: string, scratch: string): { lines: string[]; fsckClean: boolean; fsck: string } {
  const copy = path.join(scratch, `${path.basename(image)}.log-copy`)
  fs.copyFileSync(image, copy)
  try {
    spawnSync('e2fsck', ['-y', '-E', 'journal_only', copy])
    const check = spawnSync('e2fsck', ['-fn', copy], { encoding: 'utf8' })
    const text = sh('debugfs', ['-R', 'cat /data/log', copy]).toString()
    return { lines: text.split('\n').filter(Boolean), fsckClean: check.status === 0, fsck: `${check.stdout}${check.stderr}` }
  } finally {
    fs.rmSync(copy, { force: true })
  }
}

/** A running guest: its qemu process and what its console said. */
export class Vm {
  readonly proc: ChildProcess
  readonly exited: Promise<number | string | null>
  stderr = ''

  constructor(
    readonly guest: Guest,
    readonly opts: BootOptions
  ) {
    fs.writeFileSync(opts.console, '')
    this.proc = spawn('qemu-system-x86_64', qemuArgs(guest, opts), { stdio: ['ignore', 'ignore', 'pipe'] })
    this.proc.stderr!.on('data', (d) => (this.stderr = (this.stderr + d).slice(-8192)))
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve(code ?? signal))
      // qemu could not be started at all: there will be no exit event
      this.proc.on('error', (e) => {
        this.stderr += `\n${e.message}`
        resolve(e.message)
      })
    })
  }

  get alive(): boolean {
    return this.proc.pid !== undefined && this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** The console so far. */
  console(): string {
    return fs.readFileSync(this.opts.console, 'utf8')
  }

  /** Lines of the console that start with "tm-": what the guest reports. */
  reports(): string[] {
    return this.console()
      .split(/\r?\n/)
      .filter((l) => l.startsWith('tm-'))
  }

  /** The workload's line numbers as the console reported them, in order. */
  lines(): number[] {
    return syncedLines(this.console())
  }

  /** The guest's tm-boot report, once it has made it. */
  boot(): { role: string; lines: number; last: string } | null {
    for (const l of this.reports()) {
      const m = /^tm-boot role=(\S+) lines=(\d+) last=(\S*)$/.exec(l)
      if (m) return { role: m[1], lines: Number(m[2]), last: m[3].replace(/_/g, ' ') }
    }
    return null
  }

  /** Fails (with the console) if the guest reported a failure or qemu has exited. */
  check(): void {
    const bad = this.reports().find((l) => l.startsWith('tm-fail'))
    if (bad || !this.alive) {
      throw new Error(`guest ${this.opts.role}: ${bad ?? `qemu exited (${this.proc.exitCode ?? this.proc.signalCode})`}\nconsole:\n${this.console().slice(-4000)}\nqemu:\n${this.stderr}`)
    }
  }

  /** Waits until `ok` holds, failing early if the guest fails or qemu exits. */
  async until<T>(ok: () => T, what: string, timeoutMs = 180_000, pollMs = 50): Promise<NonNullable<T>> {
    const end = Date.now() + timeoutMs
    for (;;) {
      const v = ok()
      if (v) return v as NonNullable<T>
      this.check()
      if (Date.now() > end) throw new Error(`guest ${this.opts.role}: no ${what} within ${timeoutMs / 1000} s\nconsole:\n${this.console().slice(-4000)}`)
      await new Promise((r) => setTimeout(r, pollMs))
    }
  }

  /** Kills qemu and waits for it to exit. */
  async kill(): Promise<void> {
    if (this.alive) this.proc.kill('SIGKILL')
    await this.exited
  }
}

/** test/lib/qmp.js, the one QMP client (plain JavaScript: TimeMark hooks run it with `node`). */
export const QMP_JS = path.join(
  [2, 3, 4].map((up) => path.resolve(__dirname, ...Array<string>(up).fill('..'))).find((d) => fs.existsSync(path.join(d, 'package.json')))!,
  'test',
  'lib',
  'qmp.js'
)

/** A shell command running one QMP command (for a hook): `node qmp.js SOCKET COMMAND`. */
export function qmpShell(sock: string, execute: string): string {
  return [process.execPath, QMP_JS, sock, execute].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
}

/** One QMP command; its "return", or an error with QMP's description. */
export function qmp(sock: string, execute: string, args?: Record<string, unknown>): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [QMP_JS, sock, execute, ...(args ? [JSON.stringify(args)] : [])], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout!.on('data', (d) => (out += d))
    p.stderr!.on('data', (d) => (err += d))
    p.on('error', reject)
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(err.trim() || `qmp.js exited ${code}`))))
  })
}

/** What a plan test needs on the host to build a guest and boot it in a network namespace. */
export const PLAN_TOOLS = ['qemu-system-x86_64', 'ip', 'busybox', 'cpio', 'modinfo', 'mkfs.ext4', 'nbdcopy']

/**
 * A guest for a plan test (test/plan*.test.ts), or why none can run here:
 * a missing tool (PLAN_TOOLS and `tools`), not root (namespaces and tap
 * devices), or a guest that cannot be built.
 */
export function planGuestOrWhy(opts: { network?: boolean; tools?: string[] } = {}): Guest | string {
  const missing = [...PLAN_TOOLS, ...(opts.tools ?? [])].filter((c) => !have(c))
  if (missing.length) return `missing ${missing.join(', ')} (scripts/test-deps.sh installs them)`
  if (process.getuid?.() !== 0) return 'network namespaces and tap devices need root'
  try {
    return buildGuest(undefined, { network: opts.network === true })
  } catch (err) {
    return `no ${opts.network ? 'network ' : ''}guest can be built here: ${(err as Error).message}`
  }
}

/** The process runs and is not a zombie (a detached VM's parent may be gone, or may not have reaped it yet). */
export function processRuns(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/**
 * A one-machine plan ("shop", machine db) booting the guest from volume
 * `vol` at TimeMark `mark`, green when the guest's console says it booted
 * (tm-boot role=ROLE). `failover`: the machine on network app (10.77.0.2/24),
 * whose failover bridge that is; `machine` and `plan`: more YAML lines for the
 * machine and for the plan.
 */
export function guestPlanYaml(guest: Guest, o: { mark: string; role: string; timeout: number; failover?: string; machine?: string; plan?: string }): string {
  return `name: shop
point: mark=${o.mark}
machines:
  - name: db
    boot: 1
    disks: [vol]
    kernel: ${guest.kernel}
    initrd: ${guest.initrd}
    append: console=ttyS0 panic=-1 tm.role=${o.role}
${o.failover ? '    network: { name: app, address: 10.77.0.2/24 }\n' : ''}    check: { console: 'tm-boot role=${o.role} lines=\\d+', timeout: ${o.timeout} }
${o.machine ?? ''}${o.failover ? `networks:\n  app: { test: isolated, failover: ${o.failover} }\n` : ''}${o.plan ?? ''}`
}
