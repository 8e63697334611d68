// TimeView read performance: a remote TimeView (`tidemark timeview`, the
// client-side NBD server that fetches from the appliance with Admin.Read over
// gRPC) against `nbdkit file` on the same point restored to a file (the peer:
// what a user gets by materializing the image first), ratios in one run.
//
// Setup, all real processes: an appliance and an agent; the volume (random
// data, so nothing is skipped as zero) is copied to the appliance, then fio
// rewrites part of it through the agent so the point is journal records over
// the initial copy; the agent stops (drained) and the newest point is
// restored to a file.
//
// Cold means cold at every layer: before each cold run the page cache of the
// files involved is dropped (the restored image for nbdkit; every file in the
// appliance's data directory for a TimeView) with posix_fadvise(DONTNEED)
// (`dd iflag=nocache count=0`, after a sync): per file, so other work on the
// machine keeps its cache (`echo 3 > /proc/sys/vm/drop_caches` also works as
// root, but empties everyone's). A cold TimeView is a fresh process (empty
// chunk cache). Targets, alternated in each round:
//   nbdkit        nbdkit -r file RESTORED, cold (the peer)
//   nbdkit-warm   the same with the image in the page cache
//   tv-cold       a fresh `tidemark timeview --seq N` (64 MiB cache, the
//                 default): a first touch of a 64 KiB chunk is an Admin.Read
//   tv-cold-8     the same with fio's 32 requests over 8 connections instead
//                 of 2 (iodepth 4): how far parallel fetches go when the NBD
//                 front hands the view more requests at once
//   tv-warm       a TimeView whose cache holds the whole volume, read once
//                 sequentially before fio starts: the NBD front and the cache,
//                 no appliance on the path
// Random: fio --rw=randread --bs=4k --iodepth=16 --numjobs=2 for
// TIDEMARK_BENCH_RUNTIME s (10). Sequential: `nbdcopy URI null:` of the whole
// volume, cold, nbdkit against a fresh TimeView (read-ahead on). Medians over
// TIDEMARK_BENCH_ROUNDS (3). TIDEMARK_BENCH_SIZE (256M) sizes the volume.
// Prints markdown tables and writes benchmarks/results/timeview.json.
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BIN, MiB, parseSize, resultsPath, ROOT } from './lib/env'
import { clatUs, fio as runFio } from './lib/fio'
import { inScratch, runMain } from './lib/main'
import { must, Proc, requireTools, startAgent, startAppliance, tidemark } from './lib/process'
import { median, writeResults } from './lib/report'

const SIZE = parseSize(process.env.TIDEMARK_BENCH_SIZE || '256M')
const RUNTIME = Number(process.env.TIDEMARK_BENCH_RUNTIME || 10)
const ROUNDS = Number(process.env.TIDEMARK_BENCH_ROUNDS || 3)
const OUT = resultsPath('timeview')
const FIO = ['--rw=randread', '--bs=4k', '--iodepth=16', '--numjobs=2']
const FIO_8 = ['--rw=randread', '--bs=4k', '--iodepth=4', '--numjobs=8']

type TargetId = 'nbdkit' | 'nbdkit-warm' | 'tv-cold' | 'tv-cold-8' | 'tv-warm' | 'tv-grpc'
const TITLES: Record<TargetId, string> = {
  nbdkit: 'nbdkit file on the restored image, cold (peer)',
  'nbdkit-warm': 'nbdkit file on the restored image, page cache warm',
  'tv-cold': 'remote TimeView, cold (64 MiB cache)',
  'tv-cold-8': 'remote TimeView, cold, 8 connections × iodepth 4',
  'tv-warm': 'remote TimeView, warm (whole volume cached)',
  'tv-grpc': 'remote TimeView, cold, misses over gRPC (Admin.Read, --transport grpc)',
}

/** Drops the page cache of every regular file under `paths` (fadvise DONTNEED after a sync). */
async function evict(paths: string[]): Promise<void> {
  const files: string[] = []
  const walk = (p: string): void => {
    const st = fs.statSync(p)
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e))
    else if (st.isFile()) files.push(p)
  }
  paths.forEach(walk)
  if (files.length === 0) return
  await must('sync', files)
  for (const f of files) await must('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none'])
}

/** Pages of `file` in the page cache, per cent (fincore), to show that eviction took. */
function cachedPercent(file: string): number | null {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES,SIZE', file], { encoding: 'utf8' })
  const m = /^\s*(\d+)\s+(\d+)/.exec(r.stdout ?? '')
  return m && Number(m[2]) ? Math.round((1000 * Number(m[1])) / Number(m[2])) / 10 : null
}

interface Env {
  work: string
  app: string
  data: string
  seq: number
  restored: string
}

async function startTarget(id: TargetId, env: Env, tag: string): Promise<{ p: Proc; uri: string }> {
  // A socket per run: nbdkit may leave its socket file behind when stopped.
  const sock = path.join(env.work, `${id}-${tag}.sock`)
  let p: Proc
  let uri: string
  if (id === 'nbdkit' || id === 'nbdkit-warm') {
    if (id === 'nbdkit') await evict([env.restored])
    else await must('dd', [`if=${env.restored}`, 'of=/dev/null', 'bs=1M', 'status=none'])
    p = new Proc(id, 'nbdkit', ['-f', '--exit-with-parent', '-r', '-U', sock, 'file', env.restored])
    uri = `nbd+unix:///?socket=${sock}`
  } else {
    if (id !== 'tv-warm') await evict([env.data])
    const cache = id === 'tv-warm' ? [`--cache`, `${Math.ceil(SIZE / MiB) + 16}M`] : []
    // The appliance serves NBD on TCP (a remote site reaches it so); the view reads its misses there, or over gRPC.
    const transport = id === 'tv-grpc' ? ['--transport', 'grpc'] : ['--transport', 'nbd']
    p = tidemark(id, ['timeview', '--appliance', env.app, '--volume', 'vol', '--seq', String(env.seq), '--nbd', `unix:${sock}`, '--stats-interval', '0', ...cache, ...transport])
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
  fetchWaits?: number
  fetchesInFlightMax?: number
  readAheadBytes?: number
}

async function fio(uri: string, work: string, shape: string[]): Promise<Run> {
  const j = await runFio(['--name=tv', '--thread', '--ioengine=nbd', `--uri=${uri}`, ...shape, `--size=${SIZE}`, '--time_based', `--runtime=${RUNTIME}`,
    '--group_reporting'], work)
  const r = j.jobs[0].read
  return { iops: r.iops, mbPerSecond: r.bw_bytes / 1e6, p50Us: clatUs(r, '50.000000'), p99Us: clatUs(r, '99.000000') }
}

/** What a stopped TimeView said in its last stats line. */
function viewStats(p: Proc): Partial<Run> {
  const last = p.logs().find((l) => l.msg === 'stopped')
  if (!last) return {}
  return { cacheHitPercent: last.cacheHitPercent, fetches: last.fetches, fetchWaits: last.fetchWaits, fetchesInFlightMax: last.fetchesInFlightMax,
    readAheadBytes: last.readAheadBytes }
}

async function main(): Promise<void> {
  requireTools(['fio', 'nbdkit', 'nbdcopy', 'dd', 'fincore'], 'apt-get install fio nbdkit libnbd-bin coreutils util-linux')
  await inScratch('tidemark-bench-tv-', async (work, procs) => {
    // The protected volume: random data.
    const img = path.join(work, 'prod.img')
    const fd = fs.openSync(img, 'w')
    const buf = Buffer.alloc(MiB)
    for (let off = 0; off < SIZE; off += MiB) {
      crypto.randomFillSync(buf)
      fs.writeSync(fd, buf, 0, Math.min(MiB, SIZE - off), off)
    }
    fs.closeSync(fd)
    const data = path.join(work, 'data')
    const { app, address } = await startAppliance(procs, data, ['--nbd', 'tcp:127.0.0.1:0'])
    const sock = path.join(work, 'agent.sock')
    const agent = startAgent(procs, { state: path.join(work, 'state'), sock, img, appliance: address })
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
    const env: Env = { work, app: address, data, seq, restored }
    await evict([restored])
    console.error(`eviction check: restored image ${cachedPercent(restored)} % in the page cache after fadvise(DONTNEED)`)

    // Random reads.
    const targets: TargetId[] = ['nbdkit', 'nbdkit-warm', 'tv-cold', 'tv-cold-8', 'tv-warm', 'tv-grpc']
    const runs: Record<TargetId, Run[]> = { nbdkit: [], 'nbdkit-warm': [], 'tv-cold': [], 'tv-cold-8': [], 'tv-warm': [], 'tv-grpc': [] }
    // Sequential copies, MB/s.
    const seqRuns: Record<'nbdkit' | 'tv-cold', Array<{ mbPerSecond: number; readAheadBytes?: number; fetches?: number }>> = { nbdkit: [], 'tv-cold': [] }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? [...targets].reverse() : targets
      for (const id of order) {
        const { p, uri } = await startTarget(id, env, `r${round}`)
        procs.push(p)
        const run = await fio(uri, work, id === 'tv-cold-8' ? FIO_8 : FIO)
        await p.stop()
        if (id.startsWith('tv')) Object.assign(run, viewStats(p))
        runs[id].push(run)
        console.error(`round ${round + 1} ${id}: ${run.iops.toFixed(0)} IOPS, p50 ${run.p50Us.toFixed(0)} µs, p99 ${run.p99Us.toFixed(0)} µs` +
          (run.cacheHitPercent !== undefined ? `, cache hits ${run.cacheHitPercent} %, fetches ${run.fetches}, waits ${run.fetchWaits}, in flight ≤ ${run.fetchesInFlightMax}` : ''))
      }
      for (const id of (round % 2 ? ['tv-cold', 'nbdkit'] : ['nbdkit', 'tv-cold']) as Array<'nbdkit' | 'tv-cold'>) {
        const { p, uri } = await startTarget(id, env, `s${round}`)
        procs.push(p)
        const t0 = performance.now()
        await must('nbdcopy', [uri, 'null:'])
        const mbPerSecond = SIZE / 1e6 / ((performance.now() - t0) / 1000)
        await p.stop()
        const v = id === 'tv-cold' ? viewStats(p) : {}
        seqRuns[id].push({ mbPerSecond, readAheadBytes: v.readAheadBytes, fetches: v.fetches })
        console.error(`round ${round + 1} nbdcopy ${id}: ${mbPerSecond.toFixed(0)} MB/s` +
          (id === 'tv-cold' ? `, ${v.fetches} fetches, ${((v.readAheadBytes ?? 0) / MiB).toFixed(0)} MiB read ahead` : ''))
      }
    }
    const med = (id: TargetId, k: keyof Run): number => median(runs[id].map((x) => x[k] as number))
    const peer = med('nbdkit', 'iops')
    const warmPeer = med('nbdkit-warm', 'iops')
    const rows = targets.map((id) => ({
      target: id,
      title: TITLES[id],
      iops: med(id, 'iops'),
      mbPerSecond: med(id, 'mbPerSecond'),
      p50Us: med(id, 'p50Us'),
      p99Us: med(id, 'p99Us'),
      iopsRatio: med(id, 'iops') / peer,
      iopsRatioWarmPeer: med(id, 'iops') / warmPeer,
      cacheHitPercent: id.startsWith('tv') ? med(id, 'cacheHitPercent') : null,
      runs: runs[id],
    }))
    const seqPeer = median(seqRuns.nbdkit.map((x) => x.mbPerSecond))
    const seqTv = median(seqRuns['tv-cold'].map((x) => x.mbPerSecond))
    const lines = [
      `Random 4 KiB reads (fio nbd, iodepth 16, 2 jobs unless said, ${RUNTIME} s, median of ${ROUNDS} alternated rounds), ${SIZE / MiB} MiB volume of random data`,
      '',
      '| target | IOPS | MB/s | p50 µs | p99 µs | IOPS vs nbdkit cold | vs nbdkit warm | cache hits |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((x) => `| ${x.title} | ${x.iops.toFixed(0)} | ${x.mbPerSecond.toFixed(1)} | ${x.p50Us.toFixed(0)} | ${x.p99Us.toFixed(0)} | ${x.iopsRatio.toFixed(2)} | ${x.iopsRatioWarmPeer.toFixed(2)} | ${x.cacheHitPercent === null ? '' : `${x.cacheHitPercent} %`} |`),
      '',
      `Sequential read of the whole volume (nbdcopy URI null:), cold, median of ${ROUNDS}`,
      '',
      '| source | MB/s | vs nbdkit |',
      '|---|---:|---:|',
      `| nbdkit file on the restored image (peer) | ${seqPeer.toFixed(0)} | 1.00 |`,
      `| remote TimeView, cold, read-ahead | ${seqTv.toFixed(0)} | ${(seqTv / seqPeer).toFixed(2)} |`,
    ]
    console.log(lines.join('\n'))
    const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim()
    writeResults(OUT, { benchmark: 'timeview', commit, date: new Date().toISOString(), cpus: os.cpus().length,
      volumeBytes: SIZE, seq, fio: FIO, runtimeSeconds: RUNTIME, rounds: ROUNDS, rows,
      sequential: { nbdkitMbPerSecond: seqPeer, timeviewMbPerSecond: seqTv, ratio: seqTv / seqPeer, runs: seqRuns } })
  })
}

runMain(main)
