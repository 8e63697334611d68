// TimeMark benchmark: how long `timemark create` takes (the barrier alone,
// with a no-op quiesce/thaw hook pair, and until the appliance holds the
// mark), with and without a write load on the volume; and whether listing and
// restoring slow down with 10,000 marks on one volume (FalconStor stops at
// 255). The peer for the catalog figures is the same volume with 10 marks.
//
// Run: npm run bench:timemarks   (TIDEMARK_BENCH_MARKS=10000, TIDEMARK_BENCH_CREATES=300)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { controlClient, createTimeMark } from '../client/control-client'
import type { CreateTimeMarkRequest } from '../proto/generated/tidemark/v1/CreateTimeMarkRequest'
import { BIN, removeDir, resultsPath, scratchDir } from './lib/env'
import { mustRun as must, Proc, run, sleep, tidemark } from './lib/process'
import { percentile, writeResults } from './lib/report'

const MARKS = Number(process.env.TIDEMARK_BENCH_MARKS ?? 10_000)
const CREATES = Number(process.env.TIDEMARK_BENCH_CREATES ?? 300)

/** Nearest rank, p in percent. */
const pct = (xs: number[], p: number): number => percentile(xs, p / 100)

interface Setup {
  dir: string
  app: Proc
  agent: Proc
  address: string
  control: string
  sock: string
}

async function start(name: string): Promise<Setup> {
  const dir = scratchDir(`tidemark-bench-tm-${name}-`)
  const img = path.join(dir, 'v.img')
  fs.closeSync(fs.openSync(img, 'w'))
  fs.truncateSync(img, 256 * 1024 * 1024)
  const app = tidemark('appliance', ['appliance', '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--stats-interval', '0'])
  const listening = /listening on (127\.0\.0\.1:\d+)/
  await app.waitFor(() => listening.test(app.err), 'listening', 60_000)
  const address = listening.exec(app.err)![1]
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = tidemark('agent', [
    'agent', '--state', path.join(dir, 'state'), '--nbd', `unix:${sock}`, '--volume', `v=${img}`, '--appliance', address, '--control', `unix:${control}`, '--stats-interval', '0',
  ])
  for (let i = 0; ; i++) {
    const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'v', '--json'])
    if (r.code === 0 && JSON.parse(r.stdout).volumes[0]?.fullSyncDone && fs.existsSync(control)) break
    if (i > 1200) throw new Error('the initial copy did not complete')
    await sleep(100)
  }
  return { dir, app, agent, address, control, sock }
}

async function stop(s: Setup): Promise<void> {
  for (const p of [s.agent, s.app]) await p.stop()
  removeDir(s.dir)
}

interface Latency {
  scenario: string
  load: string
  n: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  barrierP99Ms: number
}

async function latency(s: Setup, scenario: string, load: string, req: CreateTimeMarkRequest): Promise<Latency> {
  const client = controlClient(`unix:${s.control}`)
  const total: number[] = []
  const barrier: number[] = []
  for (let i = 0; i < CREATES; i++) {
    const t0 = performance.now()
    const r = await createTimeMark(client, req, Date.now() + 120_000)
    total.push(performance.now() - t0)
    barrier.push(r.barrierMs)
  }
  client.close()
  return { scenario, load, n: CREATES, p50Ms: pct(total, 50), p99Ms: pct(total, 99), maxMs: Math.max(...total), barrierP99Ms: pct(barrier, 99) }
}

/** fio writing through the tap while marks are taken (4 KiB random writes at a fixed rate). */
function writeLoad(s: Setup): Proc {
  return new Proc(
    'fio',
    'fio',
    ['--name=load', '--ioengine=nbd', `--uri=nbd+unix:///v?socket=${s.sock}`, '--rw=randwrite', '--bs=4k', '--iodepth=4', '--rate=20m', '--time_based', '--runtime=600', '--size=256m', '--thread'],
    { cwd: s.dir }
  )
}

interface Catalog {
  marks: number
  createSeconds: number
  listMs: number
  resolveByLabelMs: number
  resolveByIdMs: number
  restoreMs: number
}

async function catalog(marks: number): Promise<Catalog> {
  const s = await start(`cat${marks}`)
  try {
    const client = controlClient(`unix:${s.control}`)
    const ids: number[] = []
    let next = 0
    const t0 = performance.now()
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < marks) {
          const k = next++
          ids[k] = (await createTimeMark(client, { volume: 'v', label: `m-${k}`, noWait: k !== marks - 1 }, Date.now() + 120_000)).id
        }
      })
    )
    const createSeconds = (performance.now() - t0) / 1000
    client.close()
    await sleep(500)
    const list = await must(process.execPath, [BIN, 'timemark', 'list', '--appliance', s.address, '--volume', 'v', '--json'])
    const listed = JSON.parse(list.stdout) as unknown[]
    if (listed.length !== marks) throw new Error(`listed ${listed.length} marks, took ${marks}`)
    // Resolving is the catalog lookup a restore starts with; time it alone with a restore to /dev/null-sized work.
    const mid = Math.floor(marks / 2)
    const byLabel = await must(process.execPath, [BIN, 'restore', '--appliance', s.address, '--volume', 'v', '--timemark', `m-${mid}`, '--out', path.join(s.dir, 'a.img'), '--json'])
    const byId = await must(process.execPath, [BIN, 'restore', '--appliance', s.address, '--volume', 'v', '--timemark', String(ids[mid]), '--out', path.join(s.dir, 'b.img'), '--json'])
    const bySeq = await must(process.execPath, [BIN, 'restore', '--appliance', s.address, '--volume', 'v', '--seq', String(ids[mid]), '--out', path.join(s.dir, 'c.img'), '--json'])
    return { marks, createSeconds, listMs: list.ms, resolveByLabelMs: byLabel.ms, resolveByIdMs: byId.ms, restoreMs: bySeq.ms }
  } finally {
    await stop(s)
  }
}

async function main(): Promise<void> {
  const lat: Latency[] = []
  const s = await start('latency')
  const hook = { quiesce: 'true', thaw: 'true' }
  try {
    lat.push(await latency(s, 'barrier only (--no-wait)', 'idle', { volume: 'v', noWait: true }))
    lat.push(await latency(s, 'until the appliance holds it', 'idle', { volume: 'v' }))
    lat.push(await latency(s, 'no-op quiesce + thaw hooks, until held', 'idle', { volume: 'v', ...hook }))
    const fio = writeLoad(s)
    await sleep(2000)
    lat.push(await latency(s, 'barrier only (--no-wait)', 'fio 4 KiB randwrite 20 MB/s', { volume: 'v', noWait: true }))
    lat.push(await latency(s, 'until the appliance holds it', 'fio 4 KiB randwrite 20 MB/s', { volume: 'v' }))
    lat.push(await latency(s, 'no-op quiesce + thaw hooks, until held', 'fio 4 KiB randwrite 20 MB/s', { volume: 'v', ...hook }))
    await fio.kill()
  } finally {
    await stop(s)
  }
  const few = await catalog(10)
  const many = await catalog(MARKS)

  const L: string[] = []
  L.push(`### TimeMark create latency (${CREATES} marks each, one at a time through the control socket; target p99 ≤ 100 ms without hooks)`, '')
  L.push('| scenario | load | p50 ms | p99 ms | max ms | barrier p99 ms | meets target |', '|---|---|---:|---:|---:|---:|:---:|')
  for (const x of lat) {
    L.push(`| ${x.scenario} | ${x.load} | ${x.p50Ms.toFixed(1)} | ${x.p99Ms.toFixed(1)} | ${x.maxMs.toFixed(1)} | ${x.barrierP99Ms.toFixed(2)} | ${x.scenario.includes('hooks') ? '—' : x.p99Ms <= 100 ? 'yes' : 'no'} |`)
  }
  L.push('', `### The catalog with ${many.marks} TimeMarks vs ${few.marks} on one volume (wall time of each CLI command, process start included)`, '')
  L.push(`| measure | ${few.marks} marks (peer) | ${many.marks} marks | ratio |`, '|---|---:|---:|---:|')
  const row = (what: string, a: number, b: number): string => `| ${what} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(b / a).toFixed(2)} |`
  L.push(row('timemark list --json, ms', few.listMs, many.listMs))
  L.push(row('restore --timemark LABEL (256 MiB volume), ms', few.resolveByLabelMs, many.resolveByLabelMs))
  L.push(row('restore --timemark ID, ms', few.resolveByIdMs, many.resolveByIdMs))
  L.push(row('restore --seq (no catalog lookup), ms', few.restoreMs, many.restoreMs))
  L.push(`| marks created per second (16 in flight) | ${(few.marks / few.createSeconds).toFixed(0)} | ${(many.marks / many.createSeconds).toFixed(0)} | |`)
  const md = L.join('\n')
  process.stdout.write(`${md}\n`)
  writeResults(resultsPath('timemarks'), { date: new Date().toISOString(), cpus: os.cpus().length, latency: lat, catalog: [few, many], markdown: md })
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`)
  process.exitCode = 1
})
