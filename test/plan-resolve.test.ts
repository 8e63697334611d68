// A plan's disks of one consistency group resolve to one seq, and to the
// right one (client/plans/resolve.ts), through `plan validate --json` against
// a real appliance and an agent protecting two volumes as one group. The
// volumes are written one after the other, so each volume's own answer to a
// point differs: `latest` must land on the newest seq both volumes hold,
// `at=TIME` between the two writes on the group's instant at TIME (the first
// volume's write in, the second's out), and a TimeMark of the group on its seq.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { replicatedSeq, tidemark, tidemarkJson, volumeStats, waitFor } from './claims-helpers'
import { have, makeImage, must, nbdUri, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

interface Validated {
  valid: boolean
  disks: Array<{ machine: string; volume: string; seq: number; group: string; point: string }>
}

t.test('plan validate: the volumes of a consistency group resolve to one seq, the right one', { skip: !have('qemu-io') && 'qemu-io is not installed' }, async (t) => {
  const dir = tmpdir(t, 'tidemark-plan-resolve-')
  const exportsSock = path.join(dir, 'appliance-nbd.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--nbd', `unix:${exportsSock}`] })
  const imgs = { db: path.join(dir, 'db.img'), log: path.join(dir, 'log.img') }
  for (const f of Object.values(imgs)) makeImage(f, 8 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: imgs,
    extra: ['--appliance', app.address, '--control', `unix:${control}`, '--group', 'shop', '--stats-interval', '0.2'],
  })
  for (const v of ['db', 'log']) await waitFor(`the initial copy of ${v}`, async () => (await volumeStats(app.address, v).catch(() => undefined))?.fullSyncDone)

  // db is written, then (a clock tick later) log: each volume's newest seq is its own write.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'flush', nbdUri(sock, 'db')])
  const dbSeq = await replicatedSeq(agent, app, 'db')
  const between = Date.now()
  await waitFor('the clock to move past the time between the writes', () => Date.now() > between + 1)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 2M 64k', '-c', 'flush', nbdUri(sock, 'log')])
  const logSeq = await replicatedSeq(agent, app, 'log')
  const stats = { db: await volumeStats(app.address, 'db'), log: await volumeStats(app.address, 'log') }
  t.ok(logSeq > dbSeq, `log's write came after db's (seqs ${dbSeq} and ${logSeq})`)
  t.equal(stats.db.exactSeq, dbSeq, "db's newest exact seq is its write")
  t.equal(stats.log.exactSeq, logSeq, "log's newest exact seq is its write")

  const plan = (point: string): string => {
    const f = path.join(dir, `plan-${point.replace(/[^a-z0-9]/gi, '_')}.yaml`)
    fs.writeFileSync(f, `name: shop\npoint: ${point}\nmachines:\n  - name: db\n    boot: 1\n    disks: [db, log]\n`)
    return f
  }
  const validate = (point: string): Promise<Validated> => tidemarkJson<Validated>(['plan', 'validate', '--appliance', app.address, '--plan', plan(point)])
  // db's point holds db's write: read through the appliance's own export of that seq.
  const dbHoldsItsWrite = (seq: number): Promise<string> => must('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x5a 1M 64k', `nbd+unix:///db@seq=${seq}?socket=${exportsSock}`])

  await t.test('latest: the newest seq every volume of the group holds', async (t) => {
    const r = await validate('latest')
    t.equal(r.valid, true)
    t.same(
      r.disks.map((d) => [d.volume, d.seq, d.group]),
      [
        ['db', dbSeq, 'shop'],
        ['log', dbSeq, 'shop'],
      ],
      `both disks at db's newest seq ${dbSeq} (log's ${logSeq} is past what db is known to hold)`
    )
    t.match(r.disks[1].point, /the instant every volume of group shop has/, 'log says why it is not at its own newest')
  })

  await t.test('at=TIME between the writes: the group\'s instant at that time', async (t) => {
    const r = await validate(`at=${new Date(between).toISOString()}`)
    t.equal(r.valid, true)
    t.same(
      r.disks.map((d) => [d.volume, d.seq]),
      [
        ['db', dbSeq],
        ['log', dbSeq],
      ],
      `both disks at seq ${dbSeq}: db's write is in, log's (seq ${logSeq}) is not`
    )
    await dbHoldsItsWrite(r.disks[0].seq)
    t.pass(`db at seq ${r.disks[0].seq} holds the write it made before that time`)
    await must('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 2M 64k', `nbd+unix:///log@seq=${r.disks[1].seq}?socket=${exportsSock}`])
    t.pass(`and log at seq ${r.disks[1].seq} does not hold the write it made after`)
    // The same point from the command line: one answer.
    const flag = await tidemark(['plan', 'validate', '--appliance', app.address, '--plan', plan('latest'), '--at', new Date(between).toISOString(), '--json'])
    t.equal(flag.code, 0, flag.stderr)
    t.same((JSON.parse(flag.stdout) as Validated).disks.map((d) => d.seq), [dbSeq, dbSeq], '--at gives the same seqs')
  })

  await t.test('a TimeMark of the group: its seq for both', async (t) => {
    const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${control}`, '--group', 'shop', '--label', 'group-mark'])
    t.ok(mark.durable, 'the mark is durable at the appliance')
    // Written after the mark: the mark, not the newest, is what the plan names.
    await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7c 3M 64k', '-c', 'flush', nbdUri(sock, 'db')])
    const after = await replicatedSeq(agent, app, 'db')
    t.ok(after > mark.seq, 'db moved on past the mark')
    for (const v of ['db', 'log']) {
      const listed = await tidemarkJson<Array<{ seq: number; label: string }>>(['timemark', 'list', '--appliance', app.address, '--volume', v])
      t.ok(listed.some((m) => m.seq === mark.seq && m.label === 'group-mark'), `${v} lists the group's mark at seq ${mark.seq}`)
    }
    const r = await validate('mark=group-mark')
    t.same(
      r.disks.map((d) => [d.volume, d.seq]),
      [
        ['db', mark.seq],
        ['log', mark.seq],
      ],
      'both disks at the mark\'s seq'
    )
    t.match(r.disks[0].point, /group-mark/)
  })
})
