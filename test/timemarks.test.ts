// TimeMarks through real processes: an agent with a control socket, an
// appliance, `tidemark timemark create|list` and `tidemark restore` as a user
// runs them.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { TimeMarkResult as Mark } from '../agent/timemarks'
import { controlClient, createTimeMark } from '../client/control-client'
import {
  BIN,
  clockPast,
  killAndWait,
  killPidAndWait,
  makeImage,
  mountExt4OverNbd,
  must,
  nbdUri,
  restore,
  run,
  sha256,
  sleep,
  startAgent,
  startAppliance,
  tmpdir,
  waitFor,
  type ApplianceProcess,
} from './helpers'

const MiB = 1024 * 1024

function tidemark(...args: string[]) {
  return run(process.execPath, [BIN, ...args], { timeoutMs: 180_000 })
}

async function json<T>(...args: string[]): Promise<T> {
  const r = await tidemark(...args, '--json')
  if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

/** Waits until the appliance holds a complete copy of the volume (TimeMarks are refused during the copy). */
async function waitCopied(app: ApplianceProcess, volume: string): Promise<void> {
  for (let i = 0; ; i++) {
    const s = await json<{ volumes: Array<{ name: string; fullSyncDone: boolean }> }>('stats', '--appliance', app.address, '--volume', volume).catch(() => null)
    if (s?.volumes[0]?.fullSyncDone) return
    if (i > 600) throw new Error(`volume ${volume}: the initial copy did not complete`)
    await sleep(100)
  }
}

/** e2fsck as DESIGN.md says: replay the journal on a copy, then -fn must exit 0. */
async function ext4Consistent(image: string): Promise<{ ok: boolean; output: string }> {
  const copy = `${image}.fsck`
  fs.copyFileSync(image, copy)
  const replay = await run('e2fsck', ['-y', '-E', 'journal_only', copy])
  const check = await run('e2fsck', ['-fn', copy])
  fs.rmSync(copy)
  return { ok: check.code === 0, output: `${replay.stdout}${replay.stderr}\n${check.stdout}${check.stderr}` }
}

t.test('app-consistent TimeMarks of ext4 + sqlite: each restores fsck-clean with exactly the rows counted at the mark', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 128 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: { vol: img },
    extra: ['--appliance', app.address, '--control', `unix:${control}`],
  })
  await waitCopied(app, 'vol')
  t.equal(fs.statSync(control).mode & 0o777, 0o600, 'the control socket is for its owner only')

  const { fsdir, unmount } = await mountExt4OverNbd(t, nbdUri(sock, 'vol'), dir)
  const db = path.join(fsdir, 'app.db')
  await must('sqlite3', [db, 'create table t(n integer primary key, v text);'])

  // The application: commits numbered rows, one transaction each, as fast as it can.
  // Its own process group, so that stopping it stops the sqlite3 it is running too
  // (a sqlite3 left behind keeps the database open and the file system busy).
  const writer = spawn('sh', ['-c', `i=0; while :; do i=$((i+1)); sqlite3 -cmd '.timeout 60000' ${db} "insert into t values($i, hex(randomblob(300)))" || exit 1; done`], {
    stdio: 'ignore',
    detached: true,
  })
  t.teardown(() => killAndWait(writer, 'SIGKILL', true))
  const rows = async (): Promise<number> => Number((await must('sqlite3', ['-cmd', '.timeout 60000', db, 'select count(*) from t;'])).trim())

  // Quiesce: hold sqlite's write lock (a sqlite3 reading commands from a fifo,
  // kept open by a sleeper), note the row count under the lock, sync the file
  // system. Thaw: commit and quit the holder.
  const hooks = path.join(dir, 'hooks')
  fs.mkdirSync(hooks)
  // A hook's background processes (the lock holder and its sleeper) outlive the hook: if the
  // test ends early they are killed, and waited for, before the file system is unmounted.
  t.teardown(async () => {
    for (const f of ['sleeper.pid', 'holder.pid']) {
      const pid = Number(fs.existsSync(path.join(hooks, f)) ? fs.readFileSync(path.join(hooks, f), 'utf8') : 0)
      if (pid > 0) await killPidAndWait(pid, hooks)
    }
  })
  const quiesce = path.join(hooks, 'quiesce.sh')
  fs.writeFileSync(
    quiesce,
    `set -e
label=$1
cd ${hooks}
rm -f ctl held count.tmp; mkfifo ctl
sleep 600 > ctl < /dev/null 2>/dev/null & echo $! > sleeper.pid
sqlite3 ${db} < ctl > held 2>&1 &
echo $! > holder.pid
# .once writes the next result to a file and closes it: no stdio buffering in the way
printf '.timeout 60000\\nbegin exclusive;\\n.once count.tmp\\nselect count(*), max(n) from t;\\n' > ctl
for i in $(seq 1 600); do [ -s count.tmp ] && break; sleep 0.05; done
[ -s count.tmp ] || { echo "could not take the write lock: $(cat held)" >&2; exit 1; }
mv count.tmp count.$label
sync -f ${fsdir}
`
  )
  const thaw = path.join(hooks, 'thaw.sh')
  fs.writeFileSync(
    thaw,
    `cd ${hooks}
# only a live holder reads the fifo (opening it for writing would wait forever otherwise)
if kill -0 $(cat holder.pid 2>/dev/null) 2>/dev/null; then printf 'commit;\\n.quit\\n' > ctl; fi
kill $(cat sleeper.pid) 2>/dev/null
for i in $(seq 1 200); do kill -0 $(cat holder.pid) 2>/dev/null || break; sleep 0.05; done
echo thawed >> thawed
`
  )

  const marks: Mark[] = []
  for (let k = 1, seen = 0; k <= 3; k++) {
    // The application commits more rows before each mark, so the marks differ.
    const from = seen
    seen = await waitFor(async () => {
      const n = await rows()
      return n >= from + 20 ? n : 0
    }, `the application committing rows after ${from}`, 60_000)
    const m = await json<Mark>(
      'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', `app-${k}`,
      '--quiesce', `sh ${quiesce} app-${k}`, '--thaw', `sh ${thaw}`
    )
    marks.push(m)
    t.equal(m.consistency, 'app', `mark ${k} is application-consistent`)
    t.ok(m.durable, `mark ${k} is held by the appliance when create returns`)
  }
  t.equal(fs.readFileSync(path.join(hooks, 'thawed'), 'utf8').trim().split('\n').length, 3, 'thaw ran after every mark')

  // A failing quiesce hook: no mark, a clear error, and thaw still runs.
  fs.rmSync(path.join(hooks, 'thawed'))
  let r = await tidemark('timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'bad',
    '--quiesce', 'echo "database is not answering" >&2; exit 3', '--thaw', `sh ${thaw}`)
  t.not(r.code, 0, 'a failing quiesce hook fails the mark')
  t.match(r.stderr, /quiesce hook exited with 3: database is not answering/, 'the error carries the hook\'s own words')
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  t.ok(fs.existsSync(path.join(hooks, 'thawed')), 'thaw ran although quiesce failed')
  // A hook that hangs: killed at --hook-timeout.
  r = await tidemark('timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--quiesce', 'sleep 30', '--hook-timeout', '1')
  t.match(r.stderr, /quiesce hook did not finish within 1 s/, 'a hook past its time limit aborts the mark')
  // --allow-crash-consistent records a crash-consistent mark instead, saying why.
  const crash = await json<Mark>('timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'fallback',
    '--quiesce', 'exit 4', '--allow-crash-consistent')
  t.equal(crash.consistency, 'crash', 'with --allow-crash-consistent a failed quiesce gives a crash-consistent mark')
  t.match(crash.note, /quiesce hook exited with 4/, 'and its note says why')

  await killAndWait(writer, 'SIGKILL', true)
  await unmount()

  const list = await json<Array<{ id: number; label: string; consistency: string; wallTimeMs: number }>>('timemark', 'list', '--appliance', app.address, '--volume', 'vol')
  t.same(list.map((m) => m.label), ['app-1', 'app-2', 'app-3', 'fallback'], 'the catalog lists the marks, oldest first, and none of the failed ones')
  t.same(list.map((m) => m.id), [...marks.map((m) => m.id), crash.id], 'ids are the marks\' seqs')
  const table = await tidemark('timemark', 'list', '--appliance', app.address, '--volume', 'vol')
  t.match(table.stdout, /4 TimeMarks of volume vol/, 'list prints a table for people')

  for (const [k, m] of marks.entries()) {
    const label = `app-${k + 1}`
    const out = path.join(dir, `${label}.img`)
    const res = JSON.parse((await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--timemark', label, '--out', out, '--json'])).toString())
    t.equal(res.seq, m.seq, `${label} restores at its seq`)
    const fsck = await ext4Consistent(out)
    t.ok(fsck.ok, `${label}: e2fsck accepts the restored image after journal replay`, { output: fsck.output })
    const dbOut = path.join(dir, `${label}.db`)
    await must('debugfs', ['-R', `dump /app.db ${dbOut}`, out])
    const check = await must('sqlite3', [dbOut, 'pragma integrity_check;'])
    t.equal(check.trim(), 'ok', `${label}: sqlite integrity_check is ok`)
    const got = (await must('sqlite3', [dbOut, 'select count(*), max(n) from t;'])).trim()
    const counted = fs.readFileSync(path.join(hooks, `count.${label}`), 'utf8').trim()
    t.equal(got, counted, `${label}: the database holds exactly the rows counted under the lock (${counted})`)
    const [count, max] = got.split('|').map(Number)
    t.equal(count, max, `${label}: rows 1..${max}, none missing`)
  }
  const by = await tidemark('restore', '--appliance', app.address, '--volume', 'vol', '--timemark', String(marks[1].id), '--out', path.join(dir, 'byid.img'))
  t.equal(by.code, 0, 'a TimeMark restores by id too')
  t.equal(sha256(path.join(dir, 'byid.img')), sha256(path.join(dir, 'app-2.img')), 'by id and by label give the same image')
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('--at and --seq restore the images the source held at those moments; bad points are refused', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 16 * MiB, 5)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await waitCopied(app, 'v')
  const uri = nbdUri(sock, 'v')
  const moments: Array<{ at: string; seq: number; image: string }> = []
  for (let k = 0; k < 4; k++) {
    await must('qemu-io', ['-f', 'raw', '-c', `write -P ${0x20 + k} ${k * 3 * MiB + 4096} 1M`, '-c', `write -z ${(k + 4) * MiB} 64k`, '-c', 'flush', uri])
    // The write is acknowledged; the source is quiet until the next one.
    const m = await json<Mark>('timemark', 'create', '--control', `unix:${control}`, '--volume', 'v') // waits until the appliance holds it
    // `at` is a millisecond after the write was recorded and before the next one is.
    await clockPast(Date.now())
    const atMs = Date.now()
    const at = new Date(atMs).toISOString()
    const image = path.join(dir, `source-${k}.img`)
    fs.copyFileSync(img, image)
    moments.push({ at, seq: m.seq, image })
    await clockPast(atMs)
  }
  for (const [k, m] of moments.entries()) {
    const a = path.join(dir, `at-${k}.img`)
    const res = JSON.parse((await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--at', m.at, '--out', a, '--json'])).toString())
    t.equal(sha256(a), sha256(m.image), `--at ${m.at} gives the image the source held then`)
    t.ok(res.seq >= moments[k].seq - 1 && (k === moments.length - 1 || res.seq < moments[k + 1].seq), `--at resolves to a seq between the marks (${res.seq})`)
    const s = path.join(dir, `seq-${k}.img`)
    await restore(app.address, 'v', m.seq, s)
    t.equal(sha256(s), sha256(m.image), `--seq ${m.seq} gives the same image`)
  }

  const bad: Array<[string[], RegExp]> = [
    [['--timemark', 'no-such-mark'], /no TimeMark labelled "no-such-mark"/],
    [['--timemark', '999999999'], /no TimeMark with id 999999999/],
    [['--at', '2001-01-01T00:00:00Z'], /holds nothing recorded at or before 2001-01-01/],
    [['--at', new Date(Date.now() + 86400_000).toISOString()], /is in the future/],
    [['--seq', '999999999999'], /is not durable here yet/],
  ]
  for (const [point, re] of bad) {
    const out = path.join(dir, 'bad.img')
    const r = await tidemark('restore', '--appliance', app.address, '--volume', 'v', ...point, '--out', out)
    t.not(r.code, 0, `refused: ${point.join(' ')}`)
    t.match(r.stderr, re, re.source)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
    t.notOk(fs.existsSync(out) || fs.existsSync(`${out}.partial`), 'nothing is written')
  }
  const unknown = await tidemark('timemark', 'list', '--appliance', app.address, '--volume', 'nope')
  t.match(unknown.stderr, /no volume named "nope"/, 'listing an unknown volume is refused')
  const noVol = await tidemark('timemark', 'create', '--control', `unix:${control}`, '--volume', 'nope')
  t.match(noVol.stderr, /this agent has no volume "nope"/, 'a mark of a volume the agent does not have is refused')
  const noGroup = await tidemark('timemark', 'create', '--control', `unix:${control}`, '--group', 'db')
  t.match(noGroup.stderr, /no consistency group "db"/, 'a mark of a group the agent does not have is refused')
  const dead = await tidemark('timemark', 'create', '--control', `unix:${path.join(dir, 'nobody.sock')}`, '--volume', 'v')
  t.match(dead.stderr, /no agent answers on unix:/, 'a control socket nobody listens on is one clear line')
})

t.test('a consistency group: one TimeMark covers both volumes at one instant of an interleaved write order', async (t) => {
  const dir = tmpdir(t)
  const data = path.join(dir, 'data.img')
  const log = path.join(dir, 'log.img')
  makeImage(data, 8 * MiB, null)
  makeImage(log, 8 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'app') })
  await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: { data, log },
    extra: ['--appliance', app.address, '--control', `unix:${control}`, '--group', 'db'],
  })
  await waitCopied(app, 'data')
  await waitCopied(app, 'log')
  // The application: step i writes block i of data, then block i of log
  // (each write acknowledged before the next starts), so at any instant the
  // log holds steps 1..l and data steps 1..d with d == l or d == l + 1.
  const steps = 60
  let step = 0
  const writing = (async () => {
    for (let i = 1; i <= steps; i++) {
      await must('qemu-io', ['-f', 'raw', '-c', `write -P ${i} ${i * 4096} 4k`, nbdUri(sock, 'data')])
      await must('qemu-io', ['-f', 'raw', '-c', `write -P ${i} ${i * 4096} 4k`, nbdUri(sock, 'log')])
      step = i
    }
  })()
  const marks: Mark[] = []
  let done = false
  void writing.then(() => (done = true))
  while (!done) {
    const at = step
    marks.push(await json<Mark>('timemark', 'create', '--control', `unix:${control}`, '--group', 'db', '--label', `g${marks.length}`))
    // the next mark after the application has moved on by a step
    await waitFor(() => done || step > at, 'the application taking a step', 120_000, 10)
  }
  await writing
  marks.push(await json<Mark>('timemark', 'create', '--control', `unix:${control}`, '--group', 'db', '--label', `g${marks.length}`))
  t.ok(marks.length >= 4, `${marks.length} group marks taken while the application wrote`)
  t.same(marks[0].volumes, ['data', 'log'], 'a group mark covers every volume of the group')
  const steps_ = (file: string): number => {
    const b = fs.readFileSync(file)
    let n = 0
    for (let i = 1; i <= steps; i++) if (b[i * 4096] === i) n = i
    for (let i = 1; i <= n; i++) if (b[i * 4096] !== i) return -1 // a hole: not a prefix of the order
    return n
  }
  let between = 0
  for (const m of marks) {
    const d = path.join(dir, `d-${m.id}.img`)
    const l = path.join(dir, `l-${m.id}.img`)
    await restore(app.address, 'data', m.seq, d, [])
    const r = await tidemark('restore', '--appliance', app.address, '--volume', 'log', '--timemark', m.label, '--out', l)
    t.equal(r.code, 0, `the log volume restores at group mark ${m.label}`, { stderr: r.stderr })
    const ds = steps_(d)
    const ls = steps_(l)
    t.ok(ds >= 0 && ls >= 0 && (ds === ls || ds === ls + 1), `mark ${m.label}: data at step ${ds}, log at step ${ls}: a state the order allows`)
    if (ds > 0 && ds < steps) between++
    fs.rmSync(d)
    fs.rmSync(l)
  }
  t.ok(between >= 2, `${between} marks fell in the middle of the workload`)
  const last = marks.at(-1)!
  await restore(app.address, 'data', last.seq, path.join(dir, 'last-d.img'))
  t.equal(sha256(path.join(dir, 'last-d.img')), sha256(data), 'the last group mark equals the source')
})

t.test('10,000 TimeMarks on one volume: listing and restoring still work', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 9)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: { v: img },
    extra: ['--appliance', app.address, '--control', `unix:${control}`, '--timemark-every', '1'],
  })
  await waitCopied(app, 'v')
  // Through the control socket as the CLI talks to it, 16 at a time.
  const client = controlClient(`unix:${control}`)
  const ids: number[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < 10_000) {
        const k = next++
        const m = await createTimeMark(client, { volume: 'v', label: `bulk-${k}`, noWait: k % 100 !== 99 }, Date.now() + 60_000)
        ids[k] = m.id
      }
    })
  )
  client.close()
  t.equal(ids.filter((x) => x > 0).length, 10_000, '10,000 marks taken through the control socket')
  const made = { ids }
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', nbdUri(sock, 'v')])
  const last = await json<Mark>('timemark', 'create', '--control', `unix:${control}`, '--volume', 'v', '--label', 'after')
  const list = await json<Array<{ id: number; label: string }>>('timemark', 'list', '--appliance', app.address, '--volume', 'v')
  t.ok(list.length >= 10_001, `list returns every mark (${list.length}, scheduled ones included)`)
  t.ok(list.some((m) => m.label === 'scheduled'), 'the schedule took marks of its own')
  t.ok(list.every((m, i) => i === 0 || m.id > list[i - 1].id), 'the list is in seq order, oldest first')
  t.equal(list.filter((m) => m.label === 'after').length, 1, 'the mark taken after the write is listed once')
  const out = path.join(dir, 'r.img')
  await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--timemark', 'after', '--out', out])
  t.equal(sha256(out), sha256(img), 'restoring the newest of 10,000 marks is byte-exact')
  const mid = path.join(dir, 'mid.img')
  await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'v', '--timemark', String(made.ids[5000]), '--out', mid])
  const b = fs.readFileSync(mid)
  t.not(b[0], 0x77, 'a mark from before the write restores without it')
  t.ok(last.durable, 'marks are still confirmed quickly')
  t.equal(await agent.stop(), 0)
})

t.test('scheduled TimeMarks from the agent config: app-consistent ones run their hooks, failing ones are logged and skipped', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 2)
  const sock = path.join(dir, 'nbd.sock')
  const hooks = path.join(dir, 'hooks.log')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const config = path.join(dir, 'agent.json')
  fs.writeFileSync(
    config,
    JSON.stringify({
      state: path.join(dir, 'state'),
      nbd: `unix:${sock}`,
      volumes: { v: img },
      appliance: app.address,
      statsInterval: 0,
      timemarks: [
        { every: 1, label: 'app-sched', quiesce: `echo quiesce >> ${hooks}`, thaw: `echo thaw >> ${hooks}`, hookTimeout: 5 },
        { every: 1, label: 'broken', quiesce: 'echo "no database" >&2; exit 1' },
      ],
    })
  )
  const { spawn: spawnAgent } = await import('node:child_process')
  const proc = spawnAgent(process.execPath, [BIN, 'agent', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout!.on('data', (d) => (out += d))
  const exited = new Promise((r) => proc.once('exit', r))
  t.teardown(async () => {
    proc.kill('SIGTERM')
    await exited
  })
  await waitCopied(app, 'v')
  let list: Array<{ label: string; consistency: string }> = []
  for (let i = 0; i < 100 && list.filter((m) => m.label === 'app-sched').length < 2; i++) {
    await sleep(200)
    list = await json('timemark', 'list', '--appliance', app.address, '--volume', 'v')
  }
  const sched = list.filter((m) => m.label === 'app-sched')
  t.ok(sched.length >= 2, `the schedule took app-consistent marks (${sched.length})`)
  t.ok(sched.every((m) => m.consistency === 'app'), 'with its quiesce hook they are application-consistent')
  t.equal(list.filter((m) => m.label === 'broken').length, 0, 'a schedule whose quiesce fails takes no mark')
  const lines = fs.readFileSync(hooks, 'utf8').trim().split('\n')
  t.ok(lines.length >= 4 && lines.every((l, i) => l === (i % 2 === 0 ? 'quiesce' : 'thaw')), 'quiesce and thaw alternate')
  t.match(out, /scheduled TimeMark not taken: no TimeMark taken: the quiesce hook exited with 1: no database/, 'the failure is logged with the hook\'s words')
})
