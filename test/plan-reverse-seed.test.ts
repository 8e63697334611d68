// Reverse protection without a full copy: after a failover, plan commit has
// the reverse appliance B seed the recovered volume from the old production
// disk (Admin.SeedVolume: B reads the production agent's NBD export itself),
// and the failover agent's initial copy to B then sends only the sectors
// that differ from it. Real processes throughout: appliances A (recovery)
// and B (reverse), production agent P on a small Linux guest's root,
// replicating to A, a real VM booted by plan failover.
//
// The seed's refusals (an existing volume, a caller without admin, a source
// that cannot be read) and a kill -9 during a seed are tested against
// appliances of their own: each leaves nothing behind.
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { FailoverState } from '../client/plans/failover-state'
import type { PlanRunReport } from '../client/plans/runner'
import type { SeedOutcome } from '../client/plans/reverse-seed'
import { tidemark, tidemarkJson, volumeStats, waitFor } from './claims-helpers'
import { guestPlanYaml, planGuestOrWhy, qmp, type Guest } from './lib/guest'
import { failoverNetwork, killPid, killRunLeftovers } from './lib/plan-site'
import { BIN, differingSectors, must, nbdUri, restore, run, ServiceProcess, sha256, startAgent, startAppliance, tmpdir } from './helpers'

const built = planGuestOrWhy({ tools: ['qemu-io'] })

const oneLine = (stderr: string): string[] => stderr.split('\n').filter(Boolean)

/** Sectors of an image that are not all zero. */
function dataSectors(file: string): number {
  const b = fs.readFileSync(file)
  const zero = Buffer.alloc(512)
  let n = 0
  for (let o = 0; o < b.length; o += 512) if (!b.subarray(o, o + 512).equals(zero)) n++
  return n
}

/** The volume directories (and half-made ones) in an appliance's data directory. */
function volumeDirs(data: string): string[] {
  return fs.readdirSync(path.join(data, 'volumes')).sort()
}

t.test('plan commit seeds the reverse appliance from the old production disk', { skip: typeof built === 'string' ? built : false }, async (t) => {
  const guest = built as Guest
  const dir = tmpdir(t, 'tidemark-reverse-seed-')
  const stateDir = path.join(dir, 'plans')
  const runDir = path.join(stateDir, 'shop')
  const ns = await failoverNetwork(t, 'tmrs')
  const readJson = <T>(f: string): T | null => (fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as T) : null)
  const readState = (): FailoverState | null => readJson<FailoverState>(path.join(runDir, 'failover.json'))
  // Whatever a run left (detached VMs, agents), killed at the end: the state says which.
  killRunLeftovers(t, runDir)

  const aSock = path.join(dir, 'a.sock')
  const A = await startAppliance(t, { data: path.join(dir, 'a'), extra: ['--listen', `unix:${aSock}`, '--nbd', `unix:${path.join(dir, 'a-nbd.sock')}`] })
  const bSock = path.join(dir, 'b.sock')
  const bData = path.join(dir, 'b')
  const B = await startAppliance(t, { data: bData, extra: ['--listen', `unix:${bSock}`, '--nbd', `unix:${path.join(dir, 'b-nbd.sock')}`] })

  // Production: the guest's root on P, replicating to A, and a TimeMark.
  // Its disk: the guest's root filesystem, then 32 MiB of data past its end (which the guest
  // never touches): most of what a whole copy would send, and where our writes below go.
  const img = path.join(dir, 'prod.img')
  fs.copyFileSync(guest.rootImage, img)
  const fd = fs.openSync(img, 'r+')
  for (let i = 0; i < 32; i++) fs.writeSync(fd, crypto.randomBytes(1024 * 1024), 0, 1024 * 1024, guest.rootSize + i * 1024 * 1024)
  fs.closeSync(fd)
  const size = guest.rootSize + 32 * 1024 * 1024
  const prodSock = path.join(dir, 'prod-nbd.sock')
  const prodControl = path.join(dir, 'prod-control.sock')
  const prodArgs = { state: path.join(dir, 'prod-state'), sock: prodSock, volumes: { vol: img }, extra: ['--appliance', A.address, '--control', `unix:${prodControl}`] }
  let prod = await startAgent(t, prodArgs)
  await A.waitForLog(/initial copy complete/, 120_000)
  const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${prodControl}`, '--volume', 'vol', '--label', 'before-failover'])
  t.ok(mark.durable, 'a TimeMark of production, durable at A')

  const planFile = path.join(dir, 'shop.yaml')
  fs.writeFileSync(
    planFile,
    guestPlanYaml(guest, {
      mark: 'before-failover',
      role: 'rec',
      timeout: 240,
      failover: 'br-prod',
      machine: `    production: { nbd: 'unix:${prodSock}', control: 'unix:${prodControl}' }\n`,
      plan: `reverse: { appliance: 'unix:${bSock}' }\n`,
    })
  )
  const plan = (action: string, args: string[], withAppliance = false) =>
    run('ip', ['netns', 'exec', ns, process.execPath, BIN, 'plan', action, ...(withAppliance ? ['--appliance', `unix:${aSock}`] : []), '--plan', planFile, '--state', stateDir, ...args], {
      timeoutMs: 600_000,
    })

  // Production is gone; the failover boots its VM from the mark.
  prod.proc.kill('SIGKILL')
  await prod.exited
  const fo = await plan('failover', ['--json', '--commit-within', '2h'], true)
  t.equal(fo.code, 0, `failover exits 0 ${fo.stderr}`)
  const s0 = readState()!
  const disk = path.join(runDir, 'disks', 'vol.img')

  // The recovery VM paused (its own writes so far stay), then writes of our own through the failover
  // agent, past the guest's filesystem: with the VM's, the sectors B must get.
  await qmp(s0.vms[0].qmp, 'stop')
  const failoverNbd = nbdUri(path.join(runDir, 'nbd.sock'), 'vol')
  const end = size
  await must('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${end - 64 * 1024} 64k`, '-c', `write -P 0x5b ${end - 2 * 1024 * 1024} 4k`, '-c', 'flush', failoverNbd])

  // Production's agent is back: its disk still holds the mark (nothing wrote it since).
  prod = await startAgent(t, prodArgs)
  const atA = path.join(dir, 'mark-at-a.img')
  await restore(A.address, 'vol', mark.seq, atA)
  t.equal(sha256(img), sha256(atA), 'the old production disk holds the point the failover restored')
  const prodAtSeed = sha256(img)
  const changed = differingSectors(img, disk)
  const ours = [...Array(128).keys()].map((i) => (end - 64 * 1024) / 512 + i).concat([...Array(8).keys()].map((i) => (end - 2 * 1024 * 1024) / 512 + i))
  t.ok(ours.every((x) => changed.includes(x)), `the ${ours.length} sectors we wrote are among the ${changed.length} that differ from production`)

  await t.test('commit: B is seeded and the copy sends only the differing sectors', async (t) => {
    const r = await plan('commit', ['--wait', '--json'])
    t.equal(r.code, 0, `commit exits 0 ${r.stderr}`)
    const report = JSON.parse(r.stdout) as PlanRunReport
    const seeds = (report.details as { reverseSeed: Array<SeedOutcome & { sectorsSent: number | null }> }).reverseSeed
    t.match(report, { action: 'commit', result: 'passed', details: { initialCopy: { vol: 'complete' } } })
    t.match(seeds, [{ volume: 'vol', seeded: true, source: `nbd+unix:///vol?socket=${prodSock}` }], 'the report says vol was seeded, and from where')
    const total = dataSectors(img)
    t.equal(seeds[0].sectorsSent, changed.length, `the copy sent the ${changed.length} differing sectors, of ${total} holding data`)
    t.ok(changed.length * 20 < total, 'far fewer than a whole copy')
    const st = await volumeStats(B.address, 'vol')
    t.match(st, { fullSyncDone: true, changedBytes: changed.length * 512, seed: { seq: 1, source: `nbd+unix:///vol?socket=${prodSock}` } }, "B's stats: the seed, and only the differing sectors taken from the agent")
    t.ok(readState()!.agent?.argv.includes('--seeded'), 'the failover agent continues the seed')
  })

  await t.test("B holds the failover disk byte for byte, and the seed restores as production's disk", async (t) => {
    const s = readState()!
    const m = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${path.join(runDir, 'control.sock')}`, '--group', 'shop', '--label', 'after-copy'])
    t.ok(m.durable, 'a mark through the failover agent, durable on B')
    const fromB = path.join(dir, 'from-b.img')
    await restore(B.address, 'vol', m.seq, fromB)
    t.equal(sha256(fromB), sha256(disk), 'B at the mark equals the failover disk')
    const seeded = path.join(dir, 'seed.img')
    await must(process.execPath, [BIN, 'restore', '--appliance', B.address, '--volume', 'vol', '--timemark', 'seed', '--out', seeded])
    t.equal(sha256(seeded), prodAtSeed, 'the seeded point equals the old production disk')
    const v = await tidemarkJson<Record<string, { ok: boolean; problems: string[] }>>(['journal', 'verify', '--appliance', B.address, '--volume', 'vol'])
    t.same(v.vol.problems, [], "B's journal verifies")
    t.ok(v.vol.ok)
    await qmp(s.vms[0].qmp, 'cont')
  })

  await t.test('SeedVolume refuses a volume B holds, changing nothing', async (t) => {
    const before = volumeDirs(bData)
    const r = await tidemark(['volume', 'seed', '--appliance', B.address, '--volume', 'vol', '--generation', 'again', '--source', nbdUri(prodSock, 'vol')])
    t.equal(r.code, 1)
    t.match(oneLine(r.stderr), [/^tidemark volume seed: VOLUME_EXISTS: cannot seed volume vol: this appliance holds it already \(generation [0-9a-f-]+\); a seed only makes a new volume$/], r.stderr)
    t.same(volumeDirs(bData), before, 'nothing created')
  })

  await t.test('failback still works from the seeded history', async (t) => {
    const beforeImg = path.join(dir, 'before-failback.img')
    fs.copyFileSync(img, beforeImg)
    const r = await plan('failback', ['--json'], true)
    t.equal(r.code, 0, `failback exits 0 ${r.stderr}`)
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.match(report, { action: 'failback', result: 'passed', machines: [{ name: 'db', check: { result: 'green' } }] })
    const d = report.details as { mark: { seq: number }; disks: Array<{ volume: string; sectorsDiffering: number; sectorsWritten: number }>; production: Array<{ pid: number }> }
    const markImg = path.join(dir, 'final-mark.img')
    await restore(B.address, 'vol', d.mark.seq, markImg)
    const diff = differingSectors(beforeImg, markImg)
    t.match(d.disks, [{ volume: 'vol', sectorsDiffering: diff.length, sectorsWritten: diff.length }], 'only the changed sectors were written to production')
    await killPid(d.production[0].pid)
  })
  await prod.stop()
})

t.test('SeedVolume refuses a caller without admin and a source it cannot read; a kill -9 mid-seed leaves no volume', async (t) => {
  const uid = process.getuid!()
  const dir = tmpdir(t, 'tidemark-seed-refusals-')
  const img = path.join(dir, 'disk.img')
  fs.writeFileSync(img, Buffer.alloc(4 * 1024 * 1024))
  fs.writeFileSync(img, Buffer.alloc(64 * 1024, 0x33), { flag: 'r+' })
  const src = await startAgent(t, { state: path.join(dir, 'src-state'), sock: path.join(dir, 'src.sock'), volumes: { disk: img } })
  const source = nbdUri(src.sock, 'disk')

  // An appliance whose only caller, our uid on its unix listener, may read but not administer.
  const cData = path.join(dir, 'c')
  const cSock = path.join(dir, 'c.sock')
  const c = new ServiceProcess(spawn(process.execPath, [BIN, 'appliance', '--data', cData, '--listen', `unix:${cSock}`, '--stats-interval', '0', '--allow', `uid:${uid}=read:*`], { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.teardown(() => c.stop())
  await waitFor('appliance C to listen', () => /listening on unix:/.test(c.err) || c.proc.exitCode !== null)
  const denied = await tidemark(['volume', 'seed', '--appliance', `unix:${cSock}`, '--volume', 'x', '--generation', 'g', '--source', source])
  t.equal(denied.code, 1)
  t.match(oneLine(denied.stderr), [/^tidemark volume seed: PERMISSION_DENIED: local user uid:\d+ may not administer volume x \(SeedVolume needs role admin\)$/], denied.stderr)
  t.same(volumeDirs(cData), [], 'nothing created')

  const D = await startAppliance(t, { data: path.join(dir, 'd') })
  const unreadable = await tidemark(['volume', 'seed', '--appliance', D.address, '--volume', 'x', '--generation', 'g', '--source', nbdUri(path.join(dir, 'gone.sock'), 'disk')])
  t.equal(unreadable.code, 1)
  t.match(oneLine(unreadable.stderr), [/^tidemark volume seed: SEED_SOURCE: cannot seed volume x: reading export 'disk' on .*gone\.sock \(.*\) failed: .*No such file or directory/], unreadable.stderr)
  const missing = await tidemark(['volume', 'seed', '--appliance', D.address, '--volume', 'x', '--generation', 'g', '--source', nbdUri(src.sock, 'nope')])
  t.equal(missing.code, 1)
  t.match(oneLine(missing.stderr), [/^tidemark volume seed: SEED_SOURCE: cannot seed volume x: reading export 'nope' on .* failed: /], missing.stderr)
  t.same(volumeDirs(path.join(dir, 'd')), [], 'nothing created')
  await D.stop()

  // Killed between the copy and the commit: after a restart the volume is not there, and a seed works.
  const crashing = await startAppliance(t, { data: path.join(dir, 'd'), env: { TIDEMARK_CRASH_AT: 'seed:before-commit' } })
  const cut = await tidemark(['volume', 'seed', '--appliance', crashing.address, '--volume', 'x', '--generation', 'g', '--source', source])
  t.equal(cut.code, 1, 'the seed fails with its appliance')
  await crashing.exited
  t.equal(crashing.proc.signalCode, 'SIGKILL', 'killed at the crash point')
  t.match(volumeDirs(path.join(dir, 'd')), [/^\.x\.new-/], 'a half-made volume is left under a hidden name')
  const again = await startAppliance(t, { data: path.join(dir, 'd') })
  t.same(volumeDirs(path.join(dir, 'd')), [], 'removed at the restart')
  const st = await tidemark(['stats', '--appliance', again.address, '--volume', 'x'])
  t.match(st.stderr, /UNKNOWN_VOLUME/, 'no volume x')
  const ok = await tidemarkJson<{ seq: number; size: number; dataBytes: number }>(['volume', 'seed', '--appliance', again.address, '--volume', 'x', '--generation', 'g', '--source', source])
  t.match(ok, { seq: 1, size: 4 * 1024 * 1024, dataBytes: 64 * 1024 })
  const out = path.join(dir, 'x.img')
  await restore(again.address, 'x', 1, out)
  t.equal(sha256(out), sha256(img), 'the seed restores byte-exact')
  await again.stop()
  t.equal(await src.stop(), 0)
})

t.test('a seeded volume lives on: its agent continues it, retention folds the seed, a restart keeps it all', async (t) => {
  const MiB = 1024 * 1024
  const dir = tmpdir(t, 'tidemark-seed-life-')
  // The disk as production left it, and the copy an agent serves.
  const old = path.join(dir, 'old.img')
  fs.writeFileSync(old, Buffer.alloc(8 * MiB))
  const fd = fs.openSync(old, 'r+')
  fs.writeSync(fd, crypto.randomBytes(3 * MiB), 0, 3 * MiB, MiB)
  fs.closeSync(fd)
  const img = path.join(dir, 'new.img')
  fs.copyFileSync(old, img)
  const src = await startAgent(t, { state: path.join(dir, 'src-state'), sock: path.join(dir, 'src.sock'), volumes: { v: old } })
  const data = path.join(dir, 'data')
  const appArgs = ['--segment-size', '1M', '--retain', 'v=2marks', '--limit-mark-rate', 'off', '--compact-every', '0']
  let app = await startAppliance(t, { data, extra: appArgs })
  const seeded = await tidemarkJson<{ generation: string; dataBytes: number }>(['volume', 'seed', '--appliance', app.address, '--volume', 'v', '--generation', 'gen-seed', '--source', nbdUri(src.sock, 'v'), '--size', String(8 * MiB)])
  t.equal(seeded.dataBytes, 3 * MiB, 'the seed wrote the source\'s data, its zeroes left as holes')
  t.equal(await src.stop(), 0)

  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agentArgs = { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`, '--seeded', 'v=gen-seed'] }
  // What changed on the disk since the seed's source was read (as the recovery VMs' writes before a commit): 9 sectors.
  const w = fs.openSync(img, 'r+')
  fs.writeSync(w, Buffer.alloc(4096, 0x44), 0, 4096, 2 * MiB)
  fs.writeSync(w, Buffer.alloc(512, 0x45), 0, 512, 6 * MiB)
  fs.closeSync(w)
  let agent = await startAgent(t, agentArgs)
  // A write at once, before the agent's Welcome: its seq is above the seed's all the same.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x46 7M 512', '-c', 'flush', nbdUri(sock, 'v')])
  await app.waitForLog(/initial copy complete/, 60_000)
  t.notMatch(app.out, /SEQ_OUT_OF_ORDER/, 'no batch collides with the seed\'s seq')
  const st = await volumeStats(app.address, 'v')
  t.match(st, { generation: 'gen-seed', fullSyncDone: true }, 'the agent continued the seed')
  // (the early write's sector may go twice: as the write, and again in the copy of its region)
  const sent = Number(st.changedBytes) / 512
  t.ok(sent >= 10 && sent <= 11, `it sent only the 10 sectors that differ from the seed (${sent})`)
  const latest = path.join(dir, 'latest.img')
  await restore(app.address, 'v', 'latest', latest)
  t.equal(sha256(latest), sha256(img), 'the latest point equals the agent\'s disk')
  t.equal(fs.readFileSync(path.join(dir, 'state', 'v.gen'), 'utf8').trim(), 'gen-seed', 'NAME.gen names the seed\'s generation')

  // Enough writes and marks to fill segments; then retention folds the seed away.
  const snap = new Map<string, string>()
  for (let k = 1; k <= 4; k++) {
    await must('qemu-io', ['-f', 'raw', '-c', `write -P ${k * 17} ${(k % 3) * MiB + 512} 1536k`, nbdUri(sock, 'v')])
    await tidemarkJson(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', `m${k}`])
    const copy = path.join(dir, `m${k}.img`)
    fs.copyFileSync(img, copy)
    snap.set(`m${k}`, copy)
  }
  // A restart with --seeded still given changes nothing: the generation is the seed's already.
  t.equal(await agent.stop(), 0)
  agent = await startAgent(t, agentArgs)
  const c = await tidemarkJson<{ compaction: { baseSeq: number; segmentsDropped: number } | null }>(['journal', 'compact', '--appliance', app.address, '--volume', 'v'])
  t.ok(c.compaction && c.compaction.baseSeq > 1 && c.compaction.segmentsDropped > 0, `retention folded the seed and ${c.compaction?.segmentsDropped} segments into a new base at seq ${c.compaction?.baseSeq}`)
  const gone = await tidemark(['restore', '--appliance', app.address, '--volume', 'v', '--timemark', 'seed', '--out', path.join(dir, 'x.img')])
  t.match(oneLine(gone.stderr), [/no TimeMark labelled/], 'the seed mark expired with it')
  t.equal(await agent.stop(), 0)
  await app.stop()
  app = await startAppliance(t, { data, extra: appArgs })
  for (const l of ['m3', 'm4']) {
    const out = path.join(dir, `r-${l}.img`)
    await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--timemark', l, '--out', out])
    t.equal(sha256(out), sha256(snap.get(l)!), `after a restart, ${l} restores byte-exact`)
  }
  const v = await tidemarkJson<Record<string, { ok: boolean; problems: string[] }>>(['journal', 'verify', '--appliance', app.address, '--volume', 'v'])
  t.same(v.v.problems, [], 'the journal verifies')
  const after = await volumeStats(app.address, 'v')
  t.match(after, { generation: 'gen-seed', seed: { seq: 1, dataBytes: 3 * MiB }, replica: { ready: true } }, 'stats still show where the volume came from; its replica image is ready')
})
