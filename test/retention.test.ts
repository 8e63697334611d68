// Retention and compaction through real processes: expired history is folded
// into the base image and its segments deleted, while ingest goes on; every
// retained point still restores byte-exact, expired ones are refused with a
// clear error, pinned marks never expire, and kill -9 of the appliance in the
// middle of a compaction is survived.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseMarkRate, parseRetentionSpec, ruleFor, parseRetentionRule } from '../appliance/retention'
import { BIN, eventually, makeImage, must, nbdUri, restore, run, sha256, sleep, startAgent, startAppliance, tmpdir, type ApplianceProcess } from './helpers'

const MiB = 1024 * 1024

async function json<T>(...args: string[]): Promise<T> {
  const r = await run(process.execPath, [BIN, ...args, '--json'], { timeoutMs: 120_000 })
  if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

interface Stats {
  volumes: Array<{ fullSyncDone: boolean; journalBytes: number; segments: number; base: { seq: number } | null; durableSeq: number; timemarks: number; retention: { rule: string | null; warning: string | null } }>
}

async function waitCopied(app: ApplianceProcess, volume: string): Promise<void> {
  for (let i = 0; ; i++) {
    const s = await json<Stats>('stats', '--appliance', app.address, '--volume', volume).catch(() => null)
    if (s?.volumes[0]?.fullSyncDone) return
    if (i > 600) throw new Error('the initial copy did not complete')
    await sleep(100)
  }
}

t.test('retention specs', async (t) => {
  t.same(parseRetentionSpec('7d'), { text: '7d', timeMs: 7 * 86_400_000 })
  t.same(parseRetentionSpec('100marks, 20G'), { text: '100marks, 20G', marks: 100, maxBytes: 20 * 1024 ** 3 })
  t.throws(() => parseRetentionSpec('forever'), /is not a duration/)
  t.throws(() => parseRetentionSpec('0marks'), /at least 1 mark/)
  t.throws(() => parseRetentionRule('7d'), /must be PATTERN=SPEC/)
  const rules = ['db*=2marks', '*=1h'].map(parseRetentionRule)
  t.equal(ruleFor(rules, 'db-data')?.marks, 2, 'the first matching pattern applies')
  t.equal(ruleFor(rules, 'web')?.timeMs, 3_600_000, '* matches the rest')
  const r = await run(process.execPath, [BIN, 'appliance', '--data', '/tmp/x', '--listen', '127.0.0.1:0', '--retain', 'v=soon'])
  t.equal(r.code, 2, 'a bad --retain is a usage error')
  t.match(r.stderr, /retention 'soon' is not a duration/)
  t.same(parseMarkRate('12/h'), { count: 12, periodMs: 3_600_000, text: '12/h' }, 'a mark rate: COUNT/UNIT')
  t.same(parseMarkRate('10/30m'), { count: 10, periodMs: 1_800_000, text: '10/30m' }, 'or COUNT/DURATION')
  t.equal(parseMarkRate('off'), null, 'off: no cap')
  for (const bad of ['12', '0/h', '12/hour', '12/0m']) t.throws(() => parseMarkRate(bad), { code: 'USAGE', message: /must be COUNT\/PERIOD \(12\/h, 10\/30m\) or off/ }, `${bad} is refused`)
})

t.test('compaction keeps every retained point byte-exact, refuses expired ones, honours pins, and survives kill -9', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 12 * MiB, 3)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const data = path.join(dir, 'data')
  // Marks made seconds apart expire at once: no mark rate floor (test/mark-flood.test.ts has it).
  const applianceArgs = ['--segment-size', '1M', '--retain', 'v=2marks', '--limit-mark-rate', 'off', '--compact-every', '0']
  let app = await startAppliance(t, { data, extra: applianceArgs })
  const port = app.port
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await waitCopied(app, 'v')
  const uri = nbdUri(sock, 'v')

  const snapshots = new Map<string, string>() // label -> source image at the mark
  const markTimes = new Map<string, number>()
  const mark = async (label: string): Promise<number> => {
    const m = await json<{ id: number; wallTimeMs: number }>('timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', label)
    markTimes.set(label, m.wallTimeMs)
    const copy = path.join(dir, `src-${label}.img`)
    fs.copyFileSync(img, copy)
    snapshots.set(label, copy)
    return m.id
  }
  const churn = async (k: number): Promise<void> => {
    await must('qemu-io', ['-f', 'raw', '-c', `write -P ${(k * 37) % 250} ${(k % 6) * MiB + 512} 1536k`, '-c', `write -z ${((k + 3) % 10) * MiB} 128k`, uri])
  }
  const restoresExactly = async (label: string): Promise<boolean> => {
    const out = path.join(dir, `r-${label}.img`)
    const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--timemark', label, '--out', out])
    const ok = r.code === 0 && sha256(out) === sha256(snapshots.get(label)!)
    fs.rmSync(out, { force: true })
    return ok
  }

  for (let k = 1; k <= 5; k++) {
    await churn(k)
    await mark(`m${k}`)
  }
  const before = (await json<Stats>('stats', '--appliance', app.address, '--volume', 'v')).volumes[0]
  t.ok(before.segments >= 8, `the journal spans ${before.segments} segments`)

  // Ingest goes on while the compaction runs.
  let writing = true
  const writer = (async () => {
    for (let k = 100; writing; k++) await churn(k)
  })()
  const c1 = await json<{ rule: string; compaction: { baseSeq: number; segmentsDropped: number; journalBytesBefore: number; journalBytesAfter: number; expiredTimeMarks: number } }>(
    'journal', 'compact', '--appliance', app.address, '--volume', 'v'
  )
  writing = false
  await writer
  t.equal(c1.rule, 'v=2marks'.slice(2), 'the volume\'s rule applied')
  t.ok(c1.compaction && c1.compaction.segmentsDropped > 0, `compaction dropped ${c1.compaction?.segmentsDropped} segments`)
  t.ok(c1.compaction.journalBytesAfter < c1.compaction.journalBytesBefore, 'and reclaimed journal space')
  const list1 = await json<Array<{ label: string }>>('timemark', 'list', '--appliance', app.address, '--volume', 'v')
  t.same(list1.map((m) => m.label).filter((l) => l.startsWith('m')), ['m4', 'm5'], 'the two newest marks are kept, the older ones expired')
  for (const l of ['m4', 'm5']) t.ok(await restoresExactly(l), `${l} still restores byte-exact`)
  for (const l of ['m1', 'm2']) {
    const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--timemark', l, '--out', path.join(dir, 'x.img')])
    t.not(r.code, 0, `${l} is refused`)
    t.match(r.stderr, /no TimeMark labelled/, `${l}: the catalog no longer has it`)
  }
  const old = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--seq', '2', '--out', path.join(dir, 'x.img')])
  t.match(old.stderr, /seq 2 has expired: retention folded the history before seq \d+ .*into the base image/, 'an expired seq is refused with the reason')
  t.equal(old.stderr.trim().split('\n').length, 1, 'one line')
  const oldAt = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--at', new Date(markTimes.get('m2')!).toISOString(), '--out', path.join(dir, 'x.img')])
  t.match(oldAt.stderr, /has expired: retention folded the history/, 'a time before the retained history is refused as expired')
  const verify1 = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'v'])
  t.equal(verify1.code, 0, 'journal verify is clean after compaction', { out: verify1.stdout })

  // A pinned mark holds retention back: it and every point after it stay.
  await must(process.execPath, [BIN, 'timemark', 'pin', '--appliance', app.address, '--volume', 'v', '--timemark', 'm4'])
  for (let k = 6; k <= 8; k++) {
    await churn(k)
    await mark(`m${k}`)
  }
  await must(process.execPath, [BIN, 'journal', 'compact', '--appliance', app.address, '--volume', 'v'])
  const list2 = await json<Array<{ label: string; pinned: boolean }>>('timemark', 'list', '--appliance', app.address, '--volume', 'v')
  t.ok(list2.find((m) => m.label === 'm4')?.pinned, 'the pinned mark is kept and listed as pinned')
  for (const l of ['m4', 'm5', 'm7', 'm8']) t.ok(await restoresExactly(l), `${l} restores byte-exact with m4 pinned`)
  await must(process.execPath, [BIN, 'timemark', 'unpin', '--appliance', app.address, '--volume', 'v', '--timemark', 'm4'])

  // kill -9 of the appliance at each step of a compaction (appliance/crash-points.ts), then once at a random moment.
  const points = ['compact:before-commit', 'compact:committed', 'compact:mid-purge', 'compact:purged', 'compact:mid-drop', '']
  const volDir = path.join(data, 'volumes', 'v')
  const bases = () => new Set(fs.readdirSync(volDir).filter((f) => /^base-\d+\.img$/.test(f)))
  for (const [round, point] of points.entries()) {
    // The random round kills the appliance once the compaction has started writing its new base
    // image, at a random moment after that; a compaction that outran the kill is run again on
    // new history (a few tries), so the round never passes without a kill mid-compaction.
    let c: { code: number | null } = { code: 0 }
    let tag = `k${round}`
    for (let attempt = 0; attempt < 4 && c.code === 0; attempt++) {
      tag = attempt ? `k${round}a${attempt}` : `k${round}`
      for (let k = 0; k < 3; k++) {
        await churn(20 + round * 3 + k + attempt * 100)
        await mark(`${tag}-${k}`)
      }
      await app.stop()
      app = await startAppliance(t, { data, port, extra: applianceArgs, env: point ? { TIDEMARK_CRASH_AT: point } : {} })
      const before = bases()
      const compacting = run(process.execPath, [BIN, 'journal', 'compact', '--appliance', app.address, '--volume', 'v'])
      if (!point) {
        const started = await eventually(() => [...bases()].some((f) => !before.has(f)), 60_000, 1)
        if (started) await sleep(Math.floor(Math.random() * 20)) // a random moment inside it, not a synchronization
        await app.kill9()
      }
      c = await compacting
      await app.exited
      if (c.code === 0) t.comment(`round ${round}: the compaction finished before the kill; again on new history`)
    }
    t.not(c.code, 0, `round ${round}: the appliance died ${point ? `at ${point}` : 'mid-compaction'}`)
    app = await startAppliance(t, { data, port, extra: applianceArgs })
    const list = await json<Array<{ label: string }>>('timemark', 'list', '--appliance', app.address, '--volume', 'v')
    const labels = list.map((m) => m.label)
    t.ok(labels.includes(`${tag}-1`) && labels.includes(`${tag}-2`), `round ${round}: the two newest marks survive`)
    let exact = true
    for (const l of labels) if (snapshots.has(l)) exact &&= await restoresExactly(l)
    t.ok(exact, `round ${round}: every listed mark (${labels.join(', ')}) restores byte-exact after the restart`)
    const v = await run(process.execPath, [BIN, 'journal', 'verify', '--appliance', app.address, '--volume', 'v'])
    t.equal(v.code, 0, `round ${round}: journal verify is clean after the restart`, { out: v.stdout })
    // The interrupted compaction is simply done again.
    await must(process.execPath, [BIN, 'journal', 'compact', '--appliance', app.address, '--volume', 'v'])
    const after = (await json<Array<{ label: string }>>('timemark', 'list', '--appliance', app.address, '--volume', 'v')).map((m) => m.label)
    t.same(after, [`${tag}-1`, `${tag}-2`], `round ${round}: compacting again leaves the two newest marks`)
    for (const l of after) t.ok(await restoresExactly(l), `round ${round}: ${l} restores byte-exact after the second compaction`)
  }
  const leftovers = fs.readdirSync(path.join(data, 'volumes', 'v')).filter((f) => f.startsWith('base-'))
  t.equal(leftovers.length, 2, `one base image and its map remain (${leftovers.join(', ')})`)

  // The replica still converges.
  await must('qemu-io', ['-f', 'raw', '-c', 'flush', uri])
  t.equal(await agent.stop(), 0, 'the agent drains to the restarted appliance')
  const out = path.join(dir, 'latest.img')
  await restore(app.address, 'v', 'latest', out)
  t.equal(sha256(out), sha256(img), 'the newest point equals the volume')
  const s = (await json<Stats>('stats', '--appliance', app.address, '--volume', 'v')).volumes[0]
  t.ok(s.base && s.base.seq > 0, `stats shows the base (seq ${s.base?.seq})`)
  t.equal(s.retention.rule, '2marks', 'stats shows the rule')
  const sx = s as unknown as { retainedSince: string; retainedWindowSeconds: number; oldestExactSeq: number }
  t.ok(Date.parse(sx.retainedSince) > 0 && sx.retainedWindowSeconds >= 0, `stats shows the retained window (since ${sx.retainedSince})`)
  t.ok(sx.oldestExactSeq >= (s.base?.seq ?? Infinity), 'the oldest restorable point is at or after the base')
})

t.test('a journal size cap gives history up early and says so', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 8 * MiB, 4)
  const sock = path.join(dir, 'nbd.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--segment-size', '1M', '--retain', '*=30d,3M', '--compact-every', '0'] })
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { w: img }, extra: ['--appliance', app.address] })
  await waitCopied(app, 'w')
  for (let k = 0; k < 4; k++) await must('qemu-io', ['-f', 'raw', '-c', `write -P ${k + 1} ${k * MiB} 1M`, nbdUri(sock, 'w')])
  const r = await json<{ warning: string | null; compaction: { journalBytesAfter: number } | null }>('journal', 'compact', '--appliance', app.address, '--volume', 'w')
  t.match(r.warning, /history shrinking/, 'the warning names the problem')
  t.ok(r.compaction && r.compaction.journalBytesAfter <= 4 * MiB, `the journal is back near its cap (${r.compaction?.journalBytesAfter} bytes)`)
  const s = (await json<Stats>('stats', '--appliance', app.address, '--volume', 'w')).volumes[0]
  t.match(s.retention.warning, /history shrinking/, 'stats carries the warning')
  const table = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--volume', 'w'])
  t.match(table.stdout, /warning: volume w: history shrinking/, 'the stats table shows the warning too')
})
