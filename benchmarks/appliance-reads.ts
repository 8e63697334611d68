// Reads of a point served by the appliance itself (`appliance --nbd`,
// VOLUME@seq=N: point maps and preads, no gRPC), against `nbdkit file` on the
// same point materialized to a file, in one run.
//
// Setup, all real processes: an appliance with --nbd and an agent; a volume
// of random data is copied to the appliance (the initial copy), then fio
// writes RANDOM_WRITES random 4 KiB blocks through the agent, so the point is
// a fill plus scattered journal records (the baseline: 1 GiB and
// 65,536 writes). The agent stops (drained), the point is restored to a file
// for the peer. Measured, alternating the targets in each round:
//   random cold   fio randread 4 KiB, iodepth 16, 2 jobs, after dropping the
//                 page cache (echo 3 > /proc/sys/vm/drop_caches: journal
//                 segments, map and restored image all cold)
//   random warm   the same with the data in the page cache (read once first)
//   sequential    nbdcopy EXPORT null: (cold cache), MB/s
// The export's first open also builds the point's map: its time is reported
// (map build), from the appliance's stats.
//
// TIDEMARK_BENCH_SIZE (1G), TIDEMARK_BENCH_WRITES (65536), _RUNTIME (10 s),
// _ROUNDS (3). Prints a markdown table, writes benchmarks/results/appliance-reads.json.
import fs from 'node:fs'
import path from 'node:path'
import { BIN, MiB, envNumber, parseSize, resultsPath } from './lib/env'
import { randomImage } from './lib/data'
import { clatUs, fio as runFio } from './lib/fio'
import { inScratch, runMain } from './lib/main'
import { must, Proc, requireTools, startAgent, startAppliance } from './lib/process'
import { f0, f2, machineInfo, median, table, writeResults } from './lib/report'

const SIZE = parseSize(process.env.TIDEMARK_BENCH_SIZE || '1G')
const RANDOM_WRITES = envNumber('TIDEMARK_BENCH_WRITES', 65536)
const RUNTIME = envNumber('TIDEMARK_BENCH_RUNTIME', 10)
const ROUNDS = envNumber('TIDEMARK_BENCH_ROUNDS', 3)
const FIO = ['--rw=randread', '--bs=4k', '--iodepth=16', '--numjobs=2']

function dropCaches(): void {
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
}

async function randomReads(uri: string, work: string): Promise<{ iops: number; p50Us: number; p99Us: number }> {
  const j = await runFio(['--name=r', '--thread', '--ioengine=nbd', `--uri=${uri}`, ...FIO, `--size=${SIZE}`, '--time_based', `--runtime=${RUNTIME}`, '--group_reporting'], work)
  const r = j.jobs[0].read
  return { iops: r.iops, p50Us: clatUs(r, '50.000000'), p99Us: clatUs(r, '99.000000') }
}

async function sequential(uri: string): Promise<number> {
  const t0 = performance.now()
  await must('nbdcopy', ['--request-size=1048576', uri, 'null:'])
  return SIZE / 1e6 / ((performance.now() - t0) / 1000)
}

async function main(): Promise<void> {
  requireTools(['fio', 'nbdkit', 'nbdcopy'], 'apt-get install fio nbdkit libnbd-bin')
  await inScratch('tidemark-bench-areads-', async (work, procs) => {
    const img = path.join(work, 'prod.img')
    randomImage(img, SIZE, 11)
    const appSock = path.join(work, 'app.sock')
    const { app, address } = await startAppliance(procs, path.join(work, 'data'), ['--nbd', `unix:${appSock}`])
    const sock = path.join(work, 'agent.sock')
    const agent = startAgent(procs, { state: path.join(work, 'state'), sock, img, appliance: address })
    await app.waitFor(() => /initial copy complete/.test(app.out), 'initial copy', 600_000)
    await must('fio', ['--name=churn', '--thread', '--ioengine=nbd', `--uri=nbd+unix:///vol?socket=${sock}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      `--size=${SIZE}`, `--io_size=${RANDOM_WRITES * 4096}`, '--randrepeat=0', '--norandommap'], { cwd: work, timeoutMs: 1_800_000 })
    await agent.stop()
    const restored = path.join(work, 'restored.img')
    const r = JSON.parse(await must(process.execPath, [BIN, 'restore', '--appliance', address, '--volume', 'vol', '--seq', 'latest', '--out', restored, '--json']))
    const seq = r.seq as number
    const stats = JSON.parse(await must(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])).volumes[0]
    console.error(`volume ${SIZE / MiB} MiB, point seq ${seq}, journal ${stats.records} records, ${(stats.journalBytes / MiB).toFixed(0)} MiB`)

    const exportUri = `nbd+unix:///vol@seq=${seq}?socket=${appSock}`
    // The first open builds the point's map.
    dropCaches()
    const t0 = performance.now()
    await must('nbdinfo', [exportUri])
    const firstOpenMs = performance.now() - t0
    console.error(`first open of vol@seq=${seq} (builds its map, cold cache): ${firstOpenMs.toFixed(0)} ms`)

    type Id = 'nbdkit' | 'appliance'
    const res: Record<Id, { cold: number[]; coldP99: number[]; warm: number[]; seq: number[] }> = {
      nbdkit: { cold: [], coldP99: [], warm: [], seq: [] },
      appliance: { cold: [], coldP99: [], warm: [], seq: [] },
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const id of (round % 2 ? ['appliance', 'nbdkit'] : ['nbdkit', 'appliance']) as Id[]) {
        let p: Proc | null = null
        let uri = exportUri
        if (id === 'nbdkit') {
          const s = path.join(work, `nbdkit-${round}.sock`)
          p = new Proc('nbdkit', 'nbdkit', ['-f', '--exit-with-parent', '-r', '-U', s, 'file', restored])
          procs.push(p)
          await p.listening(s, 30_000)
          uri = `nbd+unix:///?socket=${s}`
        }
        dropCaches()
        const cold = await randomReads(uri, work)
        dropCaches()
        const mbs = await sequential(uri)
        const warm = await randomReads(uri, work) // the sequential pass left it all cached
        res[id].cold.push(cold.iops)
        res[id].coldP99.push(cold.p99Us)
        res[id].seq.push(mbs)
        res[id].warm.push(warm.iops)
        console.error(`round ${round + 1} ${id}: cold ${cold.iops.toFixed(0)} IOPS (p99 ${cold.p99Us.toFixed(0)} µs), sequential ${mbs.toFixed(0)} MB/s, warm ${warm.iops.toFixed(0)} IOPS`)
        if (p) await p.stop()
      }
    }
    const m = (id: Id, k: 'cold' | 'coldP99' | 'warm' | 'seq'): number => median(res[id][k])
    const rows = [
      ['cold 4 KiB random reads (iodepth 16, 2 jobs), IOPS', m('nbdkit', 'cold'), m('appliance', 'cold'), '≥ 0.5×'],
      ['warm 4 KiB random reads, IOPS', m('nbdkit', 'warm'), m('appliance', 'warm'), '≥ 1.0×'],
      ['sequential read (nbdcopy, cold), MB/s', m('nbdkit', 'seq'), m('appliance', 'seq'), '≥ 0.9×'],
    ] as const
    const lines = [
      `Reads of a point served by the appliance (vol@seq=${seq}: ${SIZE / MiB} MiB, fill + ${RANDOM_WRITES} random 4 KiB writes, ${stats.records} journal records) vs nbdkit file on the restored image; median of ${ROUNDS} alternated rounds`,
      '',
      ...table(['what', 'nbdkit file', 'appliance export', 'ratio', 'target'], rows.map(([w, peer, ours, target]) => [w, f0(peer), f0(ours), `${f2(ours / peer)}×`, target]), ['l', 'r', 'r', 'r', 'l']),
      '',
      `cold p99: nbdkit ${f0(m('nbdkit', 'coldP99'))} µs, appliance ${f0(m('appliance', 'coldP99'))} µs; first open (map build, cold): ${f0(firstOpenMs)} ms`,
    ]
    console.log(lines.join('\n'))
    writeResults(resultsPath('appliance-reads'), {
      benchmark: 'appliance-reads',
      machine: machineInfo(work),
      volumeBytes: SIZE,
      randomWrites: RANDOM_WRITES,
      records: stats.records,
      seq,
      fio: FIO,
      runtimeSeconds: RUNTIME,
      rounds: ROUNDS,
      firstOpenMs,
      rows: rows.map(([what, peer, ours, target]) => ({ what, peer, ours, ratio: ours / peer, target })),
      runs: res,
    })
  })
}

runMain(main)
