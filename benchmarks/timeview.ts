// TimeView read performance: fio (nbd engine) random 4 KiB reads through
// `tidemark timeview` versus `nbdkit file` on the same point restored to a
// file (the peer: what a user gets by materializing the image first).
//
// Setup, all real processes: an appliance and an agent; the volume (random
// data, so nothing is skipped as zero) is copied to the appliance, then fio
// rewrites part of it through the agent so the point is journal records over
// the initial copy; the agent stops (drained) and the newest point is
// restored to a file. Targets, alternated in each round:
//   nbdkit        nbdkit -r file RESTORED (page cache warm after the restore)
//   tv-cold       a fresh `tidemark timeview --seq N` (64 MiB cache, the
//                 default): every first touch of a 64 KiB chunk is an
//                 Admin.Read round trip to the appliance
//   tv-warm       a TimeView whose cache holds the whole volume, read once
//                 sequentially before fio starts: the NBD front and the cache,
//                 no appliance on the path
// Each fio run: --rw=randread --bs=4k --iodepth=16 --numjobs=2 for
// TIDEMARK_BENCH_RUNTIME s (10). Medians over TIDEMARK_BENCH_ROUNDS (3).
// TIDEMARK_BENCH_SIZE (256M) sizes the volume. Prints a markdown table and
// writes benchmarks/results/timeview.json.
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BIN, MiB, parseSize, removeDir, resultsPath, ROOT, scratchDir } from './lib/env'
import { clatUs, fio as runFio } from './lib/fio'
import { must, Proc, requireTools, tidemark } from './lib/process'
import { median, writeResults } from './lib/report'

const SIZE = parseSize(process.env.TIDEMARK_BENCH_SIZE || '256M')
const RUNTIME = Number(process.env.TIDEMARK_BENCH_RUNTIME || 10)
const ROUNDS = Number(process.env.TIDEMARK_BENCH_ROUNDS || 3)
const OUT = resultsPath('timeview')
const FIO = ['--rw=randread', '--bs=4k', '--iodepth=16', '--numjobs=2']

type TargetId = 'nbdkit' | 'tv-cold' | 'tv-warm'
const TITLES: Record<TargetId, string> = {
  nbdkit: 'nbdkit file on the restored image (peer)',
  'tv-cold': 'TimeView, cold (64 MiB cache)',
  'tv-warm': 'TimeView, warm (whole volume cached)',
}

async function startTarget(id: TargetId, work: string, app: string, seq: number, restored: string, round: number): Promise<{ p: Proc; uri: string }> {
  // A socket per run: nbdkit may leave its socket file behind when stopped.
  const sock = path.join(work, `${id}-${round}.sock`)
  let p: Proc
  let uri: string
  if (id === 'nbdkit') {
    p = new Proc('nbdkit', 'nbdkit', ['-f', '--exit-with-parent', '-r', '-U', sock, 'file', restored])
    uri = `nbd+unix:///?socket=${sock}`
  } else {
    const cache = id === 'tv-warm' ? [`--cache`, `${Math.ceil(SIZE / MiB) + 16}M`] : []
    p = tidemark(id, ['timeview', '--appliance', app, '--volume', 'vol', '--seq', String(seq), '--nbd', `unix:${sock}`, '--stats-interval', '0', ...cache])
    uri = `nbd+unix:///vol?socket=${sock}`
  }
  await p.listening(sock, 30_000)
  if (id === 'tv-warm') await must('nbdcopy', [uri, 'null:'])  // every chunk fetched once, now cached
  return { p, uri }
}

interface Run {
  iops: number
  mbPerSecond: number
  p50Us: number
  p99Us: number
  cacheHitPercent?: number
  fetches?: number
}

async function fio(uri: string, work: string): Promise<Run> {
  const j = await runFio(['--name=tv', '--thread', '--ioengine=nbd', `--uri=${uri}`, ...FIO, `--size=${SIZE}`, '--time_based', `--runtime=${RUNTIME}`,
    '--group_reporting'], work)
  const r = j.jobs[0].read
  return { iops: r.iops, mbPerSecond: r.bw_bytes / 1e6, p50Us: clatUs(r, '50.000000'), p99Us: clatUs(r, '99.000000') }
}

async function main(): Promise<void> {
  requireTools(['fio', 'nbdkit', 'nbdcopy'], 'apt-get install fio nbdkit libnbd-bin')
  const work = scratchDir('tidemark-bench-tv-')
  const procs: Proc[] = []
  try {
    // The protected volume: random data.
    const img = path.join(work, 'prod.img')
    const fd = fs.openSync(img, 'w')
    const buf = Buffer.alloc(MiB)
    for (let off = 0; off < SIZE; off += MiB) {
      crypto.randomFillSync(buf)
      fs.writeSync(fd, buf, 0, Math.min(MiB, SIZE - off), off)
    }
    fs.closeSync(fd)
    const app = tidemark('appliance', ['appliance', '--data', path.join(work, 'data'), '--listen', '127.0.0.1:0', '--stats-interval', '0'])
    procs.push(app)
    await app.waitFor(() => /listening on [^\s]+:(\d+)/.test(app.err), 'appliance listening', 30_000)
    const address = `127.0.0.1:${/listening on [^\s]+:(\d+)/.exec(app.err)![1]}`
    const sock = path.join(work, 'agent.sock')
    const agent = tidemark('agent', ['agent', '--state', path.join(work, 'state'), '--nbd', `unix:${sock}`, '--volume', `vol=${img}`, '--appliance', address, '--stats-interval', '0'])
    procs.push(agent)
    await app.waitFor(() => /initial copy complete/.test(app.out), 'initial copy')
    // Journal records over the copy: 32 MiB of 4-64 KiB random rewrites.
    await must('fio', ['--name=churn', '--thread', '--ioengine=nbd', `--uri=nbd+unix:///vol?socket=${sock}`, '--rw=randwrite', '--bsrange=4k-64k',
      '--iodepth=8', `--size=${SIZE}`, '--io_size=32M', '--randrepeat=0'], { cwd: work })
    await agent.stop()
    const restored = path.join(work, 'restored.img')
    const r = JSON.parse(await must(process.execPath, [BIN, 'restore', '--appliance', address, '--volume', 'vol', '--seq', 'latest', '--out', restored, '--json']))
    const seq = r.seq as number
    const stats = JSON.parse(await must(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json'])).volumes[0]
    console.error(`volume: ${SIZE / MiB} MiB, point seq ${seq}, journal ${stats.records} records, ${(stats.journalBytes / MiB).toFixed(0)} MiB`)

    const targets: TargetId[] = ['nbdkit', 'tv-cold', 'tv-warm']
    const runs: Record<TargetId, Run[]> = { nbdkit: [], 'tv-cold': [], 'tv-warm': [] }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? [...targets].reverse() : targets
      for (const id of order) {
        const { p, uri } = await startTarget(id, work, address, seq, restored, round)
        procs.push(p)
        const run = await fio(uri, work)
        await p.stop()
        if (id !== 'nbdkit') {
          const last = p.err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => l.msg === 'stopped')
          run.cacheHitPercent = last?.cacheHitPercent
          run.fetches = last?.fetches
        }
        runs[id].push(run)
        console.error(`round ${round + 1} ${id}: ${run.iops.toFixed(0)} IOPS, p50 ${run.p50Us.toFixed(0)} µs, p99 ${run.p99Us.toFixed(0)} µs` +
          (run.cacheHitPercent !== undefined ? `, cache hits ${run.cacheHitPercent} %` : ''))
      }
    }
    const med = (id: TargetId, k: keyof Run): number => median(runs[id].map((x) => x[k] as number))
    const peer = med('nbdkit', 'iops')
    const rows = targets.map((id) => ({
      target: id,
      title: TITLES[id],
      iops: med(id, 'iops'),
      mbPerSecond: med(id, 'mbPerSecond'),
      p50Us: med(id, 'p50Us'),
      p99Us: med(id, 'p99Us'),
      iopsRatio: med(id, 'iops') / peer,
      cacheHitPercent: id === 'nbdkit' ? null : med(id, 'cacheHitPercent'),
      runs: runs[id],
    }))
    const lines = [
      `TimeView random 4 KiB reads (fio nbd, iodepth 16, 2 jobs, ${RUNTIME} s, median of ${ROUNDS} alternated rounds), ${SIZE / MiB} MiB volume of random data`,
      '',
      '| target | IOPS | MB/s | p50 µs | p99 µs | IOPS vs nbdkit | cache hits |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows.map((x) => `| ${x.title} | ${x.iops.toFixed(0)} | ${x.mbPerSecond.toFixed(1)} | ${x.p50Us.toFixed(0)} | ${x.p99Us.toFixed(0)} | ${x.iopsRatio.toFixed(2)} | ${x.cacheHitPercent === null ? '' : `${x.cacheHitPercent} %`} |`),
    ]
    console.log(lines.join('\n'))
    const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim()
    writeResults(OUT, { benchmark: 'timeview', commit, date: new Date().toISOString(), cpus: os.cpus().length,
      volumeBytes: SIZE, seq, fio: FIO, runtimeSeconds: RUNTIME, rounds: ROUNDS, rows })
  } finally {
    for (const p of procs) await p.stop().catch(() => undefined)
    removeDir(work)
  }
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
