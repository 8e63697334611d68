// tidemark failback through real processes: an agent protecting a volume, an
// appliance holding its history, qemu-io writing, `tidemark failback`
// bringing the volume (or a local image) back to a noted point. Every test
// counts the differing sectors independently (a restore of the point against
// a copy of the target taken just before the failback) and ends with a
// byte-exact comparison.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import {
  BIN,
  differingSectors,
  makeImage,
  must,
  nbdUri,
  restore,
  run,
  sha256,
  sleep,
  startAgent,
  startAppliance,
  tmpdir,
  type AgentProcess,
  type ApplianceProcess,
} from './helpers'

const MiB = 1024 * 1024

function failback(app: ApplianceProcess, args: string[]) {
  return run(process.execPath, [BIN, 'failback', '--appliance', app.address, ...args])
}

async function failbackJson(app: ApplianceProcess, args: string[]): Promise<Record<string, number | boolean | string>> {
  const r = await failback(app, [...args, '--json'])
  if (r.code !== 0) throw new Error(`failback exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/**
 * The seq the appliance holds once everything the agent captured so far is
 * acknowledged: read from the agent's stats lines logged after this call.
 */
async function replicatedSeq(agent: AgentProcess, app: ApplianceProcess, volume: string): Promise<number> {
  const seen = agent.logs().length
  for (let i = 0; i < 300; i++) {
    const line = agent
      .logs()
      .slice(seen)
      .reverse()
      .find((l) => l.volume === volume && typeof l.lastSeq === 'number')
    if (line && (line.lastSeq as number) > 0 && (line.ackedSeq as number) >= (line.lastSeq as number)) {
      const seq = line.lastSeq as number
      const r = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--volume', volume, '--json'])
      const durable = JSON.parse(r.stdout).volumes[0].durableSeq as number
      if (durable >= seq) return seq
    }
    await sleep(100)
  }
  throw new Error(`the appliance did not catch up with the agent:\n${agent.out}`)
}

async function protectedVolume(t: Test, dir: string, size: number, seed: number) {
  const img = path.join(dir, 'prod.img')
  makeImage(img, size, seed)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--stats-interval', '0.2'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  return { img, app, sock, agent, uri: nbdUri(sock, 'vol') }
}

// Changed, rewritten with identical bytes, zeroed, unaligned, across a region
// boundary: only the sectors whose bytes differ may be sent.
const DIVERGE = [
  'write -P 0xcd 4M 64k',
  'write -P 0xab 1M 8k', // the same bytes the point holds there
  'write -z 2M 1M', // zeroes over the pattern
  'write -z 20M 4k', // zeroes over random data
  'write -P 0x77 12345 1000', // unaligned, inside and across sectors
  'write -P 0x78 8388607 3', // one byte each side of a sector boundary
  'write -P 0x79 655300 600', // across a 64 KiB region boundary
  'write -P 0x7a 33554000 432', // the volume's last bytes
]

t.test('failback after divergence into the protected volume, through the agent: only differing sectors are sent', async (t) => {
  const dir = tmpdir(t)
  const size = 32 * MiB
  const { img, app, agent, uri } = await protectedVolume(t, dir, size, 21)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 2M', '-c', 'write -P 0xee 10M 3M', '-c', 'flush', uri])
  const seq = await replicatedSeq(agent, app, 'vol')
  const point = path.join(dir, 'point.img')
  await restore(app.address, 'vol', seq, point)
  t.equal(sha256(point), sha256(img), `the point (seq ${seq}) is what production held`)

  await must('qemu-io', ['-f', 'raw', ...DIVERGE.flatMap((c) => ['-c', c]), '-c', 'flush', uri])
  const before = path.join(dir, 'before.img')
  fs.copyFileSync(img, before)
  const differing = differingSectors(point, before)
  t.ok(differing.length > 100, `production diverged in ${differing.length} sectors`)

  const dry = await failbackJson(app, ['--volume', 'vol', '--seq', String(seq), '--target', uri, '--dry-run'])
  t.equal(dry.sectorsDiffering, differing.length, 'a dry run counts the differing sectors')
  t.equal(dry.bytesSent, 0, 'and sends nothing')
  t.equal(sha256(img), sha256(before), 'production is unchanged by the dry run')

  const r = await failbackJson(app, ['--volume', 'vol', '--seq', String(seq), '--target', uri])
  t.equal(r.seq, seq, 'the point asked for')
  t.equal(r.regionsCompared, size / 65536, 'every 64 KiB region compared')
  t.equal(r.sectorsDiffering, differing.length, 'sectors found differing = sectors that really differed')
  t.equal(r.bytesSent, differing.length * 512, 'bytes sent = exactly the differing sectors')
  t.equal(r.flushed, true, 'the target was flushed')
  t.equal(sha256(img), sha256(point), 'production now equals the restore of the point')

  // The failback's writes went through the tap: the appliance's newest point is the old point again.
  await replicatedSeq(agent, app, 'vol')
  t.equal(await agent.stop(), 0, 'the agent drains and stops cleanly')
  const latest = path.join(dir, 'latest.img')
  await restore(app.address, 'vol', 'latest', latest)
  t.equal(sha256(latest), sha256(point), 'the failback was itself captured and replicated')

  const again = await failbackJson(app, ['--volume', 'vol', '--seq', String(seq), '--target', img])
  t.equal(again.sectorsDiffering, 0, 'a second failback finds nothing to send')
  t.equal(again.bytesSent, 0, 'and sends nothing')
})

t.test('a FILE target, --dry-run, and bad input refused before anything is written', async (t) => {
  const dir = tmpdir(t)
  const size = 16 * MiB
  const { img, app, agent, uri, sock } = await protectedVolume(t, dir, size, 33)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 3M 5M', '-c', 'flush', uri])
  const seq = await replicatedSeq(agent, app, 'vol')
  const point = path.join(dir, 'point.img')
  await restore(app.address, 'vol', seq, point)

  // A local image diverged by hand: every 7th sector of one megabyte,
  // a run across a region boundary, a run of zeroes, the last sector.
  const target = path.join(dir, 'target.img')
  fs.copyFileSync(point, target)
  const fd = fs.openSync(target, 'r+')
  for (let s = 0; s < 2048; s += 7) fs.writeSync(fd, Buffer.alloc(512, s & 0xff), 0, 512, 6 * MiB + s * 512)
  fs.writeSync(fd, Buffer.alloc(3000, 0x99), 0, 3000, 65536 - 1500)
  fs.writeSync(fd, Buffer.alloc(40000), 0, 40000, 4 * MiB + 100)
  fs.writeSync(fd, Buffer.alloc(512, 1), 0, 512, size - 512)
  fs.closeSync(fd)
  const differing = differingSectors(point, target)
  const targetSha = sha256(target)

  await t.test('--dry-run reports the count and changes nothing', async (t) => {
    const r = await failback(app, ['--volume', 'vol', '--seq', String(seq), '--target', target, '--dry-run'])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, new RegExp(`^dry run: file ${target} against vol at seq ${seq}.*: 256 regions \\(32768 sectors\\) compared, ${differing.length} sectors differ .*nothing written`))
    t.equal(sha256(target), targetSha, 'the target is unchanged')
  })

  const bad = async (t: Test, args: string[], re: RegExp, what: string, file = target, sha = targetSha): Promise<void> => {
    const r = await failback(app, args)
    t.not(r.code, 0, `${what}: non-zero exit`)
    t.match(r.stderr, re, `${what}: says why`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line (${r.stderr.trim()})`)
    t.equal(r.stdout, '', `${what}: no summary`)
    t.equal(sha256(file), sha, `${what}: the target is unchanged`)
  }

  await t.test('bad input: one clear line, non-zero exit, target unchanged', async (t) => {
    const small = path.join(dir, 'small.img')
    makeImage(small, size - 65536, 5)
    await bad(t, ['--volume', 'vol', '--seq', String(seq), '--target', small],
      new RegExp(`^tidemark failback: file ${small} is ${size - 65536} bytes but volume vol is ${size} bytes`), 'size mismatch (file)', small, sha256(small))
    // An NBD export of the wrong size (nbdkit memory), refused the same way.
    const ksock = path.join(dir, 'kit.sock')
    const kit = spawn('nbdkit', ['-f', '-U', ksock, 'memory', String(size + 512)], { stdio: 'ignore' })
    const kitExited = new Promise((r) => kit.once('exit', r))
    t.teardown(async () => {
      kit.kill('SIGKILL')
      await kitExited
    })
    for (let i = 0; !fs.existsSync(ksock); i++) {
      if (i > 200) throw new Error('nbdkit did not start')
      await sleep(20)
    }
    const r = await failback(app, ['--volume', 'vol', '--seq', String(seq), '--target', nbdUri(ksock, '')])
    t.not(r.code, 0)
    t.match(r.stderr, new RegExp(`^tidemark failback: export '' on ${ksock} is ${size + 512} bytes but volume vol is ${size} bytes`), 'size mismatch (NBD)')
    await bad(t, ['--volume', 'vol', '--seq', '999999999', '--target', target], /^tidemark failback: .*seq 999999999 of volume vol is not durable here yet/, 'a point in the future')
    await bad(t, ['--volume', 'nosuch', '--seq', 'latest', '--target', target], /^tidemark failback: .*no volume named "nosuch"/, 'an unknown volume')
    await bad(t, ['--volume', 'vol', '--seq', String(seq), '--target', nbdUri(path.join(dir, 'gone.sock'), 'vol')],
      /^tidemark failback: cannot connect to the NBD server for export 'vol' on .*gone\.sock: .*ENOENT/, 'an unreachable target')
    await bad(t, ['--volume', 'vol', '--seq', String(seq), '--target', nbdUri(sock, 'nosuch')], /^tidemark failback: export 'nosuch' on .*nbd\.sock: the NBD server has no such export \(NBD_REP_ERR_UNKNOWN\)/, 'an export the agent does not serve')
    await bad(t, ['--volume', 'vol', '--seq', String(seq), '--target', 'nbd+unix:///vol'], /^tidemark failback: --target .*names no socket/, 'an NBD URI without a socket')
    await bad(t, ['--volume', 'vol', '--seq', String(seq), '--target', 'http://host/vol'], /^tidemark failback: --target .*neither an NBD URI/, 'not an NBD URI')
    await bad(t, ['--volume', 'vol', '--seq', 'soon', '--target', target], /^tidemark failback: --seq 'soon' must be a number or latest/, 'a malformed point')
    await bad(t, ['--volume', 'vol', '--seq', String(seq), '--target', path.join(dir, 'missing.img')], /^tidemark failback: cannot open target .*missing\.img: it does not exist/, 'a missing file', target)
    t.notOk(fs.existsSync(path.join(dir, 'missing.img')), 'a missing target is not created')
  })

  await t.test('failback onto the FILE sends exactly the differing sectors', async (t) => {
    const r = await failbackJson(app, ['--volume', 'vol', '--seq', String(seq), '--target', target])
    t.equal(r.sectorsDiffering, differing.length, `${differing.length} sectors differed`)
    t.equal(r.bytesSent, differing.length * 512, 'bytes sent = exactly the differing sectors')
    t.equal(sha256(target), sha256(point), 'the image now equals the restore of the point')
  })
})
