// The tap serves each connection's requests at once and applies changes to
// different sectors in parallel (range locks): the order that matters must
// survive it. Through a real agent and a real appliance:
// - two fio jobs (one NBD connection each, 16 requests in flight) write the
//   SAME 4 MiB at once, and a pipelining client sends bursts of overlapping
//   unaligned writes; replaying the journal (`restore --seq latest`) gives
//   the backing file byte for byte, so for every two overlapping writes the
//   one that reached the file last has the higher seq;
// - a TimeMark is taken while all that runs, and a fourth client writes
//   numbered blocks one at a time (each answered before the next is sent):
//   the mark restores to a prefix of those blocks that holds every block
//   answered before the mark was asked for and none begun after it returned;
// - the pipelining client's READ, sent right behind its overlapping WRITEs on
//   the same connection, returns what they wrote.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { NbdClient } from '../client/nbd-client'
import { BIN, makeImage, must, nbdUri, restore, sha256, startAgent, startAppliance, tmpdir } from './helpers'
import { replicatedSeq, tidemarkJson, waitFor } from './claims-helpers'

const MiB = 1024 * 1024
const KiB = 1024
const BLOCK = 4 * KiB
const SEQ_AREA = 16 * MiB // where the numbered blocks go, away from the overlapped 4 MiB
const SEQ_BLOCKS = (32 * MiB) / BLOCK

/** A block's bytes: every byte (n % 251) + 1, so block n is recognisable and never the initial data. */
function blockOf(n: number): Buffer {
  return Buffer.alloc(BLOCK, (n % 251) + 1)
}

t.test('overlapping writes from several connections at once replay byte-exact; a TimeMark taken meanwhile keeps its barrier', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 48 * MiB, 9)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'),
    sock,
    volumes: { vol: img },
    // A record buffer larger than everything the test writes: the volume never
    // falls behind (a TimeMark would be refused while it resyncs), however
    // slowly the appliance drains on a busy machine.
    extra: ['--appliance', app.address, '--control', `unix:${control}`, '--stats-interval', '0.2', '--buffer', '320M'],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  const uri = nbdUri(sock, 'vol')

  // Two fio jobs on the same 4 MiB: sizes from 512 bytes to 1 MiB, 512-byte
  // aligned (fio's nbd engine), 16 in flight each, an fsync now and then. Two
  // large overlapping writes that ran at once without a range lock would
  // interleave their pages in the file.
  const fio = must('fio', [
    '--name=overlap', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bssplit=512/10:4k/30:60k/30:1m/30', '--blockalign=512',
    '--iodepth=16', '--numjobs=2', '--offset=0', '--size=4M', '--io_size=64M', '--norandommap', '--randrepeat=0',
    '--refill_buffers', '--fsync=64', '--group_reporting', '--output-format=json',
  ], { cwd: dir, timeoutMs: 300_000 })

  // A pipelining client, in the 4 MiB after fio's (so that what its READs
  // must return is known): bursts of overlapping unaligned writes, each
  // burst followed at once by a READ of the whole range it wrote.
  const piper = await NbdClient.connect({ unix: sock, export: 'vol' })
  t.teardown(() => piper.destroy())
  const pipelined = (async () => {
    let mismatches = 0
    for (let burst = 0; burst < 40; burst++) {
      const model = Buffer.alloc(256 * KiB)
      const base = 4 * MiB + ((burst * 37 * KiB) % (4 * MiB - model.length))
      const first = await piper.read(base, model.length)
      first.copy(model)
      const writes: Promise<void>[] = []
      for (let i = 0; i < 24; i++) {
        const len = 1 + Math.floor(Math.random() * 48 * KiB)
        const at = Math.floor(Math.random() * (model.length - len))
        const data = Buffer.alloc(len, (burst * 24 + i) % 255)
        data.copy(model, at)
        writes.push(piper.write(base + at, data))
      }
      const read = piper.read(base, model.length) // sent behind the writes, before any answer
      await Promise.all(writes)
      if (!(await read).equals(model)) mismatches++
    }
    return mismatches
  })()

  // The numbered blocks, one at a time.
  const seqClient = await NbdClient.connect({ unix: sock, export: 'vol' })
  t.teardown(() => seqClient.destroy())
  let answered = 0
  let started = 0
  let stop = false
  const sequential = (async () => {
    while (!stop && started < SEQ_BLOCKS) {
      const n = started++
      await seqClient.write(SEQ_AREA + n * BLOCK, blockOf(n))
      answered = n + 1
      // Paced once under way, so the writer is still going when the mark
      // returns however slowly the CLI starts on a busy machine (2 ms a block:
      // the 32 MiB area lasts over 16 s).
      if (n >= 50) await new Promise((r) => setTimeout(r, 2))
    }
  })()

  // The mark, once the writers are well under way.
  await waitFor('the numbered writer to get going', () => answered >= 50, 60_000)
  const answeredBefore = answered
  // --no-wait: back as soon as the barrier is in the stream (durability is
  // waited for below), so the window between asking and returning is short.
  const mark = await tidemarkJson<{ id: number; seq: number }>(
    ['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'mid-overlap', '--no-wait'])
  const startedAfter = started
  t.ok(startedAfter + 20 <= SEQ_BLOCKS, `the mark (seq ${mark.seq}) came while the numbered writer had room to go on`)
  await waitFor('the numbered writer to go on past the mark', () => answered >= Math.min(startedAfter + 20, SEQ_BLOCKS), 60_000)
  stop = true
  await sequential

  const job = JSON.parse((await fio).replace(/^[^{]*/, '')).jobs[0]
  t.equal(job.error, 0, `fio: two connections wrote ${job.write.total_ios} overlapping blocks without an error`)
  t.equal(await pipelined, 0, 'each pipelined READ returned the overlapping WRITEs sent before it')
  await piper.flush()
  await piper.close()
  await seqClient.close()

  // Everything replicated: the journal replayed equals the file.
  await replicatedSeq(agent, app, 'vol')
  const latest = path.join(dir, 'latest.img')
  await restore(app.address, 'vol', 'latest', latest)
  t.equal(sha256(latest), sha256(img), 'restore --seq latest equals the backing file byte for byte')

  // The mark: a prefix of the numbered blocks, with the barrier where it must be.
  const atMark = path.join(dir, 'mark.img')
  await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--timemark', String(mark.id),
    '--out', atMark, '--json'])
  const fd = fs.openSync(atMark, 'r')
  const present: boolean[] = []
  const buf = Buffer.alloc(BLOCK)
  for (let n = 0; n < started; n++) {
    fs.readSync(fd, buf, 0, BLOCK, SEQ_AREA + n * BLOCK)
    present.push(buf.equals(blockOf(n)))
  }
  fs.closeSync(fd)
  const count = present.indexOf(false) === -1 ? present.length : present.indexOf(false)
  t.ok(present.slice(count).every((p) => !p), `the mark holds a prefix of the numbered blocks (${count} of ${started})`)
  t.ok(count >= answeredBefore, `every block answered before the mark was asked for is in it (${answeredBefore} <= ${count})`)
  t.ok(count <= startedAfter, `no block begun after the mark returned is in it (${count} <= ${startedAfter})`)

  const stats = agent.logs().filter((l) => l.volume === 'vol' && typeof l.droppedRecords === 'number').pop()
  t.equal(stats?.droppedRecords, 0, 'nothing was dropped: every change went through the ring')
})
