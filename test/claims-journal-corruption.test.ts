// README claim (Journal): damage followed by intact batches is corruption:
// kept, reported by `journal verify` and `stats`, and points at or after it
// refuse to restore. Tested through real processes: a byte flipped in an older
// segment while the appliance is stopped, the appliance started again, and the
// CLI asked what a user would ask.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { makeImage, must, nbdUri, restore, sha256, startAgent, startAppliance, tmpdir } from './helpers'
import { oneLine, replicatedSeq, tidemark, tidemarkJson, volumeStats } from './claims-helpers'

const MiB = 1024 * 1024

interface Shown {
  seq: number
  kind: string
  segment: string
  offset: number
}

interface Segment {
  segment: string
  firstSeq: number
  lastSeq: number
}

t.test('a flipped byte in an older segment: verify and stats report it, later points refused, earlier ones restore', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 8 * MiB, null)
  const data = path.join(dir, 'data')
  const app = await startAppliance(t, { data, extra: ['--segment-size', '1M'] })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock, volumes: { vol: img },
    extra: ['--appliance', app.address, '--stats-interval', '0.2'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', '-c', 'flush', uri])
  const good = await replicatedSeq(agent, app, 'vol')
  const atGood = path.join(dir, 'good.held')
  fs.copyFileSync(img, atGood)
  // About 4 MiB more in 128 KiB writes: several batches over several 1 MiB segments.
  const writes = Array.from({ length: 32 }, (_, i) => ['-c', `write -P 0x${(0x60 + i).toString(16)} ${(i * 128 + 1024) * 1024} 128k`]).flat()
  await must('qemu-io', ['-f', 'raw', ...writes, '-c', 'flush', uri])
  const latest = await replicatedSeq(agent, app, 'vol')
  t.equal(await agent.stop(), 0, 'the agent drains and stops')

  const segments = (await tidemarkJson<Record<string, Segment[]>>(['journal', 'ls', '--appliance', app.address, '--volume', 'vol'])).vol
  t.ok(segments.length >= 3, `${segments.length} segments`)
  const newest = segments.at(-1)!.segment
  const shown = (await tidemarkJson<Record<string, Shown[]>>(['journal', 'show', '--appliance', app.address, '--volume', 'vol', '--from', String(good + 1), '--limit', '1000'])).vol
  const victim = shown.find((r) => r.kind.toLowerCase() === 'write' && r.segment !== newest)
  if (!victim) throw new Error(`no WRITE record after seq ${good} outside the newest segment ${newest}: ${JSON.stringify(shown)}`)
  t.ok(victim.seq > good, `the damaged record (seq ${victim.seq} in ${victim.segment} at ${victim.offset}) comes after seq ${good}`)
  t.equal((await tidemark(['journal', 'verify', '--appliance', app.address, '--volume', 'vol'])).code, 0, 'verify passes before the damage')

  t.equal(await app.stop(), 0, 'the appliance stops')
  const file = path.join(data, 'volumes', 'vol', 'segments', victim.segment)
  const fd = fs.openSync(file, 'r+')
  const b = Buffer.alloc(1)
  const at = victim.offset + 12 + 32 + 100 // inside the record's sector data
  fs.readSync(fd, b, 0, 1, at)
  b[0] ^= 0x40
  fs.writeSync(fd, b, 0, 1, at)
  fs.closeSync(fd)

  // A scrub soon after the start (--scrub-every 1: the first one after 1 s).
  const app2 = await startAppliance(t, { data, port: app.port, extra: ['--segment-size', '1M', '--scrub-every', '1'] })

  const prodSha = sha256(img)
  const refusedAfter = async (t: Test, address: string, what: string, todo: { todo?: string } = {}): Promise<void> => {
    const out = path.join(dir, 'after.img')
    const r = await tidemark(['restore', '--appliance', address, '--volume', 'vol', '--seq', String(latest), '--out', out])
    const wrote = fs.existsSync(out) ? (sha256(out) === prodSha ? 'an image equal to the volume' : 'an image that differs from the volume') : 'nothing'
    t.equal(r.code, 1, `${what}: exit 1 (exit ${r.code}, wrote ${wrote})`, todo)
    t.equal(oneLine(r.stderr).length, 1, `${what}: one line: ${r.stderr.trim()}`, todo)
    t.match(r.stderr, new RegExp(`^tidemark restore: .*journal corruption in ${victim.segment} at offset ${victim.offset}`), `${what}: says where the journal is corrupt`, todo)
    t.notOk(fs.existsSync(out), `${what}: no image is written`, todo)
    fs.rmSync(out, { force: true })
  }

  // Recovery scans the journal only from the index's position, and reads do
  // not check frame checksums (a point map's read is a bare pread), so damage
  // in an older segment is found by the scrub (appliance/scrub.ts), with no
  // one running `journal verify`.
  await t.test('before any verify: the scrub finds it, stats shows it and a later point is refused', async (t) => {
    await app2.waitForLog(/journal scrub of vol: \d+ problems/, 60_000)
    t.equal((await volumeStats(app2.address, 'vol')).corrupt.length, 1, 'stats after the scrub shows the damage')
    await refusedAfter(t, app2.address, 'a restore after the damage')
  })

  await t.test('journal verify reports it with the segment and the offset, exit 1', async (t) => {
    const r = await tidemark(['journal', 'verify', '--appliance', app2.address, '--volume', 'vol'])
    t.equal(r.code, 1, 'exit 1')
    t.match(r.stdout, /^vol: PROBLEMS/m, 'the volume has problems')
    t.match(r.stdout, new RegExp(`corruption in ${victim.segment} at offset ${victim.offset} .*after seq ${good}\\b`), `names the segment and offset: ${r.stdout.trim()}`)
    const j = await tidemark(['journal', 'verify', '--appliance', app2.address, '--volume', 'vol', '--json'])
    t.equal(j.code, 1, '--json: exit 1 too')
    t.equal(JSON.parse(j.stdout).vol.ok, false, '--json: not ok')
  })

  await t.test('stats shows it', async (t) => {
    const s = await volumeStats(app2.address, 'vol')
    t.equal(s.corrupt.length, 1, 'one corrupt range')
    t.equal(s.corrupt[0]?.segment, victim.segment, 'in the damaged segment')
    t.equal(s.corrupt[0]?.offset, victim.offset, 'at the damaged frame')
    t.equal(s.corrupt[0]?.afterSeq, good, `after seq ${good}, the last intact batch before it`)
    const table = await tidemark(['stats', '--appliance', app2.address, '--volume', 'vol'])
    t.equal(table.code, 0, 'stats (the table) exits 0')
    t.match(table.stdout, new RegExp(`warning: volume vol: journal corruption in ${victim.segment} at offset ${victim.offset}`), `the table for people says it too:\n${table.stdout}`)
  })

  await t.test('a point after the damage is refused; one before it restores byte-exact', async (t) => {
    await refusedAfter(t, app2.address, `seq ${latest}`)
    const before = path.join(dir, 'before.img')
    await restore(app2.address, 'vol', good, before)
    t.equal(sha256(before), sha256(atGood), `seq ${good} restores byte-exact`)
  })

  t.equal(await app2.stop(), 0, 'the appliance stops cleanly')

  // What verify found is kept (corrupt.json), so a restart does not forget it.
  const app3 = await startAppliance(t, { data, port: app.port, extra: ['--segment-size', '1M'] })
  await t.test('after another restart the appliance still knows', async (t) => {
    t.equal((await volumeStats(app3.address, 'vol')).corrupt.length, 1, 'stats after the second restart shows the damage')
    await refusedAfter(t, app3.address, 'a restore after the damage')
  })
  t.equal(await app3.stop(), 0, 'the appliance stops cleanly again')
})
