// Failback of a volume with 1 %, 10 % and 100 % of its sectors differing,
// through real processes, against a full copy as the peer.
//
//   npm run bench:failback
//
// Setup: a volume of random data (TIDEMARK_BENCH_FAILBACK_GB, 1 GiB) is
// protected by `tidemark agent` replicating to `tidemark appliance`; once the
// initial copy is complete the agent stops (draining), and the point is the
// newest seq, restored once to point.img (checked equal to the volume).
//
// Each scenario diverges a copy of point.img: random 4 KiB blocks (aligned,
// every byte changed) until the given share of sectors differs, or (100 %)
// every sector. The target is that copy served by `nbdkit file` on a unix
// socket, the same server for both contenders, and each run starts from a
// fresh copy of the diverged image (copy and `sync` not timed):
//
// tidemark  `tidemark failback --seq N --target nbd+unix:///?socket=S --json`,
//           process start to exit (it flushes the target before exiting);
// nbdcopy   the peer: `nbdcopy --flush point.img nbd+unix:///?socket=S`, the
//           whole restored image written into the target and flushed
//           (libnbd, several connections). "restore + nbdcopy" adds the time
//           of `tidemark restore --seq N` (measured once): what the peer needs
//           in total when no restored image is at hand.
//
// Every run is checked: the target's SHA-256 equals point.img's afterwards,
// and tidemark's sectors sent equals the sectors that differed.
//
// Environment: TIDEMARK_BENCH_DIR (os.tmpdir()), TIDEMARK_BENCH_OUT
// (benchmarks/results/failback.json), TIDEMARK_BENCH_FAILBACK_GB (1),
// TIDEMARK_BENCH_FAILBACK_PCTS (1,10,100), TIDEMARK_BENCH_ROUNDS (1).
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomImage, sha256File as sha256 } from './lib/data'
import { BIN, envNumber, MiB, removeDir, resultsPath, scratchDir, SECTOR } from './lib/env'
import { connectable, killAll, must, Proc, tidemark, version } from './lib/process'
import { median, writeResults } from './lib/report'

const BLOCK = 4096

const OUT = resultsPath('failback')
const SIZE = Math.round(envNumber('TIDEMARK_BENCH_FAILBACK_GB', 1) * 1024) * MiB
const PCTS = (process.env.TIDEMARK_BENCH_FAILBACK_PCTS || '1,10,100').split(',').map((s) => {
  const n = Number(s)
  if (!(n > 0 && n <= 100)) throw new Error(`TIDEMARK_BENCH_FAILBACK_PCTS: '${s}' is not a percentage`)
  return n
})
const ROUNDS = Math.floor(envNumber('TIDEMARK_BENCH_ROUNDS', 1))

// ---------------------------------------------------------------- processes

async function timed(cmd: string, args: string[]): Promise<{ seconds: number; stdout: string }> {
  const t0 = process.hrtime.bigint()
  const stdout = await must(cmd, args)
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, stdout }
}

let benchDir = ''
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    removeDir(benchDir)
    process.exit(130) // the processes still running are killed on exit (lib/process.ts)
  })
}

// ---------------------------------------------------------------- images

/** A copy of `src` with `pct` % of its sectors changed; returns how many sectors differ. */
function diverge(src: string, dst: string, pct: number, seed: number): number {
  fs.copyFileSync(src, dst)
  const fd = fs.openSync(dst, 'r+')
  try {
    if (pct >= 100) {
      // Every byte inverted: every sector differs.
      const b = Buffer.alloc(4 * MiB)
      for (let off = 0; off < SIZE; off += b.length) {
        const n = fs.readSync(fd, b, 0, b.length, off)
        for (let i = 0; i < n; i++) b[i] ^= 0xff
        fs.writeSync(fd, b, 0, n, off)
      }
      return SIZE / SECTOR
    }
    const blocks = SIZE / BLOCK
    const want = Math.round((blocks * pct) / 100)
    const rng = crypto.createHash('sha256').update(String(seed))
    let state = rng.digest()
    const chosen = new Uint8Array(blocks)
    let n = 0
    const b = Buffer.alloc(BLOCK)
    while (n < want) {
      state = crypto.createHash('sha256').update(state).digest()
      for (let i = 0; i + 4 <= state.length && n < want; i += 4) {
        const blk = state.readUInt32LE(i) % blocks
        if (chosen[blk]) continue
        chosen[blk] = 1
        n++
        fs.readSync(fd, b, 0, BLOCK, blk * BLOCK)
        for (let j = 0; j < BLOCK; j++) b[j] ^= 0x5a
        fs.writeSync(fd, b, 0, BLOCK, blk * BLOCK)
      }
    }
    return (want * BLOCK) / SECTOR
  } finally {
    fs.closeSync(fd)
  }
}

async function withNbdkit<T>(dir: string, file: string, fn: (uri: string) => Promise<T>): Promise<T> {
  const sock = path.join(dir, 'target.sock')
  fs.rmSync(sock, { force: true })
  const k = new Proc('nbdkit', 'nbdkit', ['-f', '-U', sock, 'file', file])
  try {
    await k.waitFor(async () => fs.existsSync(sock) && (await connectable(sock)), 'listening', 10_000, 50)
    return await fn(`nbd+unix:///?socket=${sock}`)
  } finally {
    await k.stop()
  }
}

// ---------------------------------------------------------------- main

interface Run {
  pct: number
  round: number
  differingSectors: number
  tidemark: { seconds: number; sectorsDiffering: number; bytesSent: number; runs: number; fetches: number; bytesFetched: number; regions: number; mbPerSecondCompared: number }
  nbdcopy: { seconds: number; bytesSent: number; mbPerSecond: number }
}

async function main(): Promise<void> {
  const dir = scratchDir('tidemark-bench-failback-')
  benchDir = dir
  try {
    const prod = path.join(dir, 'prod.img')
    process.stderr.write(`setup: ${SIZE / MiB} MiB volume of random data in ${dir}\n`)
    randomImage(prod, SIZE, 42)
    const app = tidemark('appliance', ['appliance', '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--stats-interval', '0'])
    const printed = (): string => app.out + app.err
    let port = 0
    await app.waitFor(() => {
      const m = /listening on [^\s]+:(\d+)/.exec(printed())
      if (m) port = Number(m[1])
      return port > 0
    }, 'listening', 30_000, 50)
    const address = `127.0.0.1:${port}`
    const sock = path.join(dir, 'agent.sock')
    const agent = tidemark('agent', ['agent', '--state', path.join(dir, 'state'), '--nbd', `unix:${sock}`, '--volume', `vol=${prod}`,
      '--appliance', address, '--stats-interval', '0'])
    await app.waitFor(() => /initial copy complete/.test(printed()), 'initial copy', 600_000, 50)
    if ((await agent.stop()) !== 0) throw new Error(`the agent did not stop cleanly:\n${agent.tail()}`)

    const point = path.join(dir, 'point.img')
    const rs = await timed(process.execPath, [BIN, 'restore', '--appliance', address, '--volume', 'vol', '--seq', 'latest', '--out', point, '--json'])
    const restored = JSON.parse(rs.stdout) as { seq: number }
    const seq = restored.seq
    const pointSha = sha256(point)
    if (pointSha !== sha256(prod)) throw new Error('the restored point differs from the volume')
    process.stderr.write(`point: seq ${seq}; tidemark restore took ${rs.seconds.toFixed(2)} s\n`)

    const runs: Run[] = []
    const target = path.join(dir, 'target.img')
    for (const pct of PCTS) {
      const diverged = path.join(dir, `diverged-${pct}.img`)
      const differing = diverge(point, diverged, pct, pct)
      for (let round = 0; round < ROUNDS; round++) {
        const fresh = async (): Promise<void> => {
          fs.copyFileSync(diverged, target)
          await must('sync', [])
        }
        await fresh()
        const fb = await withNbdkit(dir, target, (uri) =>
          timed(process.execPath, [BIN, 'failback', '--appliance', address, '--volume', 'vol', '--seq', String(seq), '--target', uri, '--json'])
        )
        const j = JSON.parse(fb.stdout) as { sectorsDiffering: number; bytesSent: number; runs: number; fetches: number; bytesFetched: number; regionsCompared: number }
        if (sha256(target) !== pointSha) throw new Error(`${pct} %: the target differs from the point after failback`)
        if (j.sectorsDiffering !== differing || j.bytesSent !== differing * SECTOR) {
          throw new Error(`${pct} %: failback sent ${j.bytesSent} bytes for ${j.sectorsDiffering} sectors, ${differing} differed`)
        }
        await fresh()
        const nc = await withNbdkit(dir, target, (uri) => timed('nbdcopy', ['--flush', point, uri]))
        if (sha256(target) !== pointSha) throw new Error(`${pct} %: the target differs from the point after nbdcopy`)
        const r: Run = {
          pct,
          round,
          differingSectors: differing,
          tidemark: {
            seconds: fb.seconds,
            sectorsDiffering: j.sectorsDiffering,
            bytesSent: j.bytesSent,
            runs: j.runs,
            fetches: j.fetches,
            bytesFetched: j.bytesFetched,
            regions: j.regionsCompared,
            mbPerSecondCompared: SIZE / 1e6 / fb.seconds,
          },
          nbdcopy: { seconds: nc.seconds, bytesSent: SIZE, mbPerSecond: SIZE / 1e6 / nc.seconds },
        }
        runs.push(r)
        process.stderr.write(
          `${pct} % (round ${round + 1}): failback ${fb.seconds.toFixed(2)} s, ${j.bytesSent} bytes sent in ${j.runs} writes; nbdcopy ${nc.seconds.toFixed(2)} s\n`
        )
      }
      fs.rmSync(diverged)
    }
    await app.stop()

    const rows = PCTS.map((pct) => {
      const group = runs.filter((r) => r.pct === pct)
      const fb = median(group.map((r) => r.tidemark.seconds))
      const nc = median(group.map((r) => r.nbdcopy.seconds))
      return {
        pct,
        differingSectors: group[0].differingSectors,
        failbackSeconds: fb,
        failbackMBps: SIZE / 1e6 / fb,
        bytesSent: group[0].tidemark.bytesSent,
        writes: group[0].tidemark.runs,
        bytesFetched: group[0].tidemark.bytesFetched,
        fetches: group[0].tidemark.fetches,
        nbdcopySeconds: nc,
        restorePlusNbdcopySeconds: rs.seconds + nc,
        ratioVsNbdcopy: nc / fb,
        ratioVsRestorePlusNbdcopy: (rs.seconds + nc) / fb,
      }
    })
    const lines = [
      `Failback of a ${SIZE / MiB} MiB volume (seq ${seq}) into \`nbdkit file\`; peer: \`nbdcopy --flush\` of the restored image into the same target (\`tidemark restore\`: ${rs.seconds.toFixed(2)} s).`,
      '',
      '| differing | sectors differing | failback s | MB/s compared | bytes sent (writes) | fetched from appliance (reads) | nbdcopy s (bytes sent) | restore + nbdcopy s | speed-up vs nbdcopy | vs restore + nbdcopy |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${r.pct} % | ${r.differingSectors} | ${r.failbackSeconds.toFixed(2)} | ${r.failbackMBps.toFixed(0)} | ${r.bytesSent} (${r.writes}) | ${r.bytesFetched} (${r.fetches}) | ${r.nbdcopySeconds.toFixed(2)} (${SIZE}) | ${r.restorePlusNbdcopySeconds.toFixed(2)} | ${r.ratioVsNbdcopy.toFixed(2)} × | ${r.ratioVsRestorePlusNbdcopy.toFixed(2)} × |`
      ),
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
    writeResults(OUT, {
      benchmark: 'failback',
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memoryBytes: os.totalmem(), node: process.version },
      tools: { nbdkit: version('nbdkit', ['--version']), nbdcopy: version('nbdcopy', ['--version']) },
      settings: { sizeBytes: SIZE, pcts: PCTS, rounds: ROUNDS, divergence: '4 KiB aligned blocks at random (100 %: every byte inverted)' },
      seq,
      restoreSeconds: rs.seconds,
      rows,
      runs,
    })
  } finally {
    await killAll()
    removeDir(dir)
  }
}

main().catch((err) => {
  process.stderr.write(`benchmark failed: ${(err as Error).stack ?? err}\n`)
  process.exitCode = 1
})
