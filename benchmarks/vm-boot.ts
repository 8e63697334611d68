// Instant recovery of a VM: how long a guest takes from qemu's start to its
// first workload line when it boots from a view of a point, against the same
// point's image restored to a local file (the peer: what a user gets by
// materializing the image first, not counting the restore).
//
// Setup, all real processes: an appliance and an agent; the guest's disk
// (test/lib/guest.ts: the host's kernel, an initramfs with the virtio modules,
// an ext4 root with busybox) is written through the tap; production boots from
// the tap and writes and syncs lines for a while, so the point is journal
// records over the initial copy; a TimeMark is taken with the VM paused over
// QMP (quiesce stop, thaw cont); production stops and the mark is restored
// to a file. Targets, alternated in each round, each booting a fresh VM:
//   file      qemu on a fresh copy of the restored image (the copy is not timed)
//   view      a writable view the appliance serves on its --nbd socket, made by
//             `tidemark timeview create --writable` (timed: the create, apart)
//   export    the appliance's own NBD export of the mark (`--nbd`, read-only
//             `vol@mark=L`) with qemu's throw-away overlay (snapshot=on)
//   timeview  a fresh `tidemark timeview --timemark L --writable` (client-side,
//             cold cache: every first touch is an Admin.Read round trip)
// Every VM is qemu TCG, 1 vCPU, the root disk on virtio with cache=none. Time
// is from spawning qemu to the console's first "tm-line" (the guest's first
// synced write); "tm-boot" (the root mounted, the workload starting) is
// reported too. Medians over TIDEMARK_BENCH_ROUNDS (5). Prints a markdown
// table and writes benchmarks/results/vm-boot.json. Target: the appliance's
// view ≤ 1.2× file.
import fs from 'node:fs'
import path from 'node:path'
import { buildGuest, qmp, qmpShell, Vm, type Guest } from '../test/lib/guest'
import { BIN, envNumber, MiB, resultsPath } from './lib/env'
import { inScratch, runMain } from './lib/main'
import { must, requireTools, startAgent, startAppliance, tidemark, version } from './lib/process'
import { f0, f1, f2, machineInfo, median, table, writeResults } from './lib/report'

const ROUNDS = envNumber('TIDEMARK_BENCH_ROUNDS', 5)
const LINES = envNumber('TIDEMARK_BENCH_LINES', 200)
const OUT = resultsPath('vm-boot')

type TargetId = 'file' | 'view' | 'export' | 'timeview'
const TITLES: Record<TargetId, string> = {
  file: 'local file, the mark restored (peer)',
  view: 'writable appliance view of the mark (`timeview create`)',
  export: 'appliance export `vol@mark=L` (qemu snapshot=on)',
  timeview: 'writable `tidemark timeview` of the mark, cold',
}

interface Boot {
  /** qemu spawned to the guest's tm-boot line (root mounted). */
  bootMs: number
  /** qemu spawned to the first tm-line (first synced write). */
  firstLineMs: number
  /** the view's start to its listening (not in firstLineMs). */
  serveMs?: number
  /** what the guest had read from its disk by its first line (qemu's block stats) */
  readOps: number
  readBytes: number
  writeOps: number
  flushOps: number
}

/** Boots a VM on `disk`, times it to its first synced line, kills it. */
async function timeBoot(guest: Guest, disk: string, work: string, name: string, snapshot = false): Promise<Boot> {
  const t0 = performance.now()
  const qmpSock = path.join(work, `${name}.qmp`)
  const vm = new Vm(guest, { disk, role: name, console: path.join(work, `${name}.console`), qmp: qmpSock, snapshot })
  try {
    let bootMs = 0
    await vm.until(() => {
      if (!bootMs && vm.boot()) bootMs = performance.now() - t0
      return vm.lines().length > 0
    }, 'first line', 300_000, 10)
    const firstLineMs = performance.now() - t0
    // How much of the boot was the disk: the root device's reads so far.
    const [{ stats }] = (await qmp(qmpSock, 'query-blockstats')) as Array<{ stats: Record<'rd_operations' | 'rd_bytes' | 'wr_operations' | 'flush_operations', number> }>
    return { bootMs: bootMs || firstLineMs, firstLineMs, readOps: stats.rd_operations, readBytes: stats.rd_bytes, writeOps: stats.wr_operations, flushOps: stats.flush_operations }
  } finally {
    await vm.kill()
  }
}

async function main(): Promise<void> {
  requireTools(['qemu-system-x86_64', 'nbdcopy', 'mkfs.ext4', 'cpio', 'modinfo'], 'bash scripts/test-deps.sh')
  const guest = buildGuest()
  await inScratch('tidemark-bench-vm-', async (work, procs) => {
    const img = path.join(work, 'prod.img')
    fs.writeFileSync(img, '')
    fs.truncateSync(img, guest.rootSize)
    const exports = path.join(work, 'appliance-nbd.sock')
    const { app, address } = await startAppliance(procs, path.join(work, 'data'), ['--nbd', `unix:${exports}`])
    const sock = path.join(work, 'agent.sock')
    const control = path.join(work, 'control.sock')
    const agent = startAgent(procs, { state: path.join(work, 'state'), sock, img, appliance: address, extra: ['--control', `unix:${control}`] })
    await app.waitFor(() => /initial copy complete/.test(app.out), 'initial copy')
    const tap = `nbd+unix:///vol?socket=${sock}`
    await must('nbdcopy', [guest.rootImage, tap])

    // Production writes history, then the mark is taken with it paused.
    const prod = new Vm(guest, { disk: tap, role: 'prod', console: path.join(work, 'prod.console'), qmp: path.join(work, 'prod.qmp') })
    let mark: { seq: number }
    try {
      await prod.until(() => prod.lines().length >= LINES, `${LINES} lines`, 600_000)
      mark = JSON.parse(await must(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'boot',
        '--quiesce', qmpShell(prod.opts.qmp!, 'stop'), '--thaw', qmpShell(prod.opts.qmp!, 'cont'), '--json']))
    } finally {
      await prod.kill()
    }
    await agent.stop()
    const restored = path.join(work, 'restored.img')
    await must(process.execPath, [BIN, 'restore', '--appliance', address, '--volume', 'vol', '--timemark', 'boot', '--out', restored])
    const stats = JSON.parse(await must(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])).volumes[0]
    console.error(`guest: kernel ${guest.kernelVersion}, ${guest.rootSize / 1048576} MiB root; mark at seq ${mark.seq}, journal ${stats.records} records`)

    const targets: TargetId[] = ['file', 'view', 'export', 'timeview']
    const runs: Record<TargetId, Boot[]> = { file: [], view: [], export: [], timeview: [] }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? [...targets].reverse() : targets
      for (const id of order) {
        let b: Boot
        if (id === 'file') {
          const disk = path.join(work, `file-${round}.img`)
          fs.copyFileSync(restored, disk)
          b = await timeBoot(guest, disk, work, `file-${round}`)
          fs.rmSync(disk)
        } else if (id === 'view') {
          const name = `boot-${round}`
          const s0 = performance.now()
          await must(process.execPath, [BIN, 'timeview', 'create', '--appliance', address, '--volume', 'vol', '--timemark', 'boot', '--writable', '--name', name])
          const serveMs = performance.now() - s0
          try {
            b = { ...(await timeBoot(guest, `nbd+unix:///${name}?socket=${exports}`, work, name)), serveMs }
          } finally {
            await must(process.execPath, [BIN, 'timeview', 'delete', '--appliance', address, '--name', name])
          }
        } else if (id === 'export') {
          b = await timeBoot(guest, `nbd+unix:///vol@mark=boot?socket=${exports}`, work, `export-${round}`, true)
        } else {
          const vsock = path.join(work, `tv-${round}.sock`)
          const s0 = performance.now()
          const tv = tidemark('timeview', ['timeview', '--appliance', address, '--volume', 'vol', '--timemark', 'boot', '--writable', '--nbd', `unix:${vsock}`,
            '--stats-interval', '0'])
          procs.push(tv)
          await tv.listening(vsock, 60_000)
          const serveMs = performance.now() - s0
          try {
            b = { ...(await timeBoot(guest, `nbd+unix:///vol?socket=${vsock}`, work, `tv-${round}`)), serveMs }
          } finally {
            await tv.stop()
          }
        }
        runs[id].push(b)
        console.error(`round ${round + 1} ${id}: first line ${f0(b.firstLineMs)} ms (booted ${f0(b.bootMs)} ms${b.serveMs !== undefined ? `, view served after ${f0(b.serveMs)} ms` : ''}` +
          `, ${b.readOps} reads, ${f1(b.readBytes / MiB)} MiB, ${b.writeOps} writes, ${b.flushOps} flushes)`)
      }
    }

    const med = (id: TargetId, k: keyof Boot): number => median(runs[id].map((x) => x[k] as number))
    const peer = med('file', 'firstLineMs')
    const rows = targets.map((id) => ({
      target: id,
      title: TITLES[id],
      firstLineMs: med(id, 'firstLineMs'),
      bootMs: med(id, 'bootMs'),
      serveMs: id === 'timeview' || id === 'view' ? med(id, 'serveMs') : null,
      timeRatio: med(id, 'firstLineMs') / peer,
      readOps: med(id, 'readOps'),
      readMiB: med(id, 'readBytes') / MiB,
      writeOps: med(id, 'writeOps'),
      flushOps: med(id, 'flushOps'),
      runs: runs[id],
    }))
    const lines = [
      `VM boot to its first synced workload line (qemu TCG, 1 vCPU, virtio cache=none, kernel ${guest.kernelVersion}), median of ${ROUNDS} alternated rounds`,
      '',
      ...table(
        ['boot disk', 'first line ms', 'root mounted ms', 'view start ms', 'reads', 'MiB read', 'writes', 'flushes', 'time vs file'],
        rows.map((x) => [x.title, f0(x.firstLineMs), f0(x.bootMs), x.serveMs === null ? '' : f0(x.serveMs), f0(x.readOps), f1(x.readMiB), f0(x.writeOps), f0(x.flushOps), f2(x.timeRatio)]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']
      ),
    ]
    console.log(lines.join('\n'))
    writeResults(OUT, {
      benchmark: 'vm-boot',
      machine: machineInfo(work, { qemu: version('qemu-system-x86_64', ['--version']) }),
      kernel: guest.kernelVersion,
      rootBytes: guest.rootSize,
      markSeq: mark.seq,
      journalRecords: stats.records,
      rounds: ROUNDS,
      target: 'view firstLineMs <= 1.2 x file',
      rows,
    })
  })
}

runMain(main)
