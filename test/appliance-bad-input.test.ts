// Bad input at the appliance, sent by a real gRPC client to a real appliance
// process: each is refused with a status that says what and why, counted,
// logged, and never journaled; the other volume's stream goes on.
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { encodeBatch } from '../proto/change-batch'
import { initHash } from '../proto/hash'
import type { AgentMessage } from '../proto/generated/tidemark/v1/AgentMessage'
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, restore, run, startAppliance, tmpdir } from './helpers'
import { Stream } from './lib/replicate-stream'
import { MAX_FINGERPRINTS_IN_FLIGHT } from '../appliance/replication-service'
import path from 'node:path'
import fs from 'node:fs'

const SIZE = 4 * 1024 * 1024

/** One change record in the tap's layout (native/record-batch.ts). */
function record(seq: number, sector: number, count: number, kind: number, data?: Buffer): Buffer {
  const h = Buffer.alloc(32)
  h.writeBigUInt64LE(BigInt(seq), 0)
  h.writeBigUInt64LE(BigInt(sector), 8)
  h.writeUInt32LE(count, 16)
  h[20] = kind
  h.writeUInt32LE(data?.length ?? 0, 24)
  return data ? Buffer.concat([h, data]) : h
}

function batch(records: Buffer[], firstSeq: number, lastSeq: number, compress = true) {
  const raw = Buffer.concat(records)
  return encodeBatch(raw, { firstSeq, lastSeq, recordCount: records.length, appBytes: 0, changedBytes: 0 }, compress)
}

function hello(volume: string, generation = 'gen-1') {
  return { hello: { protocol: PROTOCOL_VERSION, agentId: 'test', volume, generation, size: SIZE, group: '', ackedSeq: 0 } }
}

t.test('bad batches are refused with a reason, counted, and never journaled', async (t) => {
  await initHash()
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const client = new replicationProto.Replication(app.address, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': 64 * 1024 * 1024,
  })
  t.teardown(() => client.close())

  // A good stream on another volume, kept open throughout.
  const good = new Stream(client)
  good.send(hello('good'))
  t.equal((await good.next('welcome')).welcome!.fullSync, true, 'a new volume needs a full copy')
  const data = Buffer.alloc(4096, 0x5a)
  good.send({ batch: batch([record(10, 8, 8, 1, data)], 10, 10) })
  t.equal((await good.next('ack')).ack!.durableSeq, 10, 'the good stream is acknowledged')

  // One stream per bad input; each must end with the status and the reason.
  async function refused(name: string, msgs: AgentMessage[], code: grpc.status, re: RegExp): Promise<void> {
    const s = new Stream(client)
    s.send(hello('vol'))
    await s.next('welcome')
    for (const m of msgs) s.send(m)
    const st = await s.ended
    t.equal(st.code, code, `${name}: ${grpc.status[code]}`)
    t.match(st.details, re, `${name}: says why (${st.details})`)
  }

  const ok = batch([record(5, 0, 8, 1, data)], 5, 5)
  // The agent says its initial copy is done (64 regions of 64 KiB), so 'vol' restores later.
  const done = { progress: { regionsDone: 64, regionsTotal: 64, bytesPerSecond: 0 } }
  await refused('first batch is fine', [{ batch: ok }, done, { batch: batch([record(3, 0, 8, 1, data)], 3, 3) }],
    grpc.status.FAILED_PRECONDITION, /SEQ_OUT_OF_ORDER/)
  const flipped = batch([record(20, 0, 8, 1, data)], 20, 20, false)
  ;(flipped.payload as Buffer)[40] ^= 0xff
  await refused('flipped byte', [{ batch: flipped }], grpc.status.DATA_LOSS, /BATCH_CHECKSUM.*mismatch/)
  const mangled = batch([record(20, 0, 8, 1, data)], 20, 20)
  t.equal(mangled.compression, 'COMPRESSION_LZ4', 'the repetitive batch is compressed')
  ;(mangled.payload as Buffer)[0] ^= 0x01
  await refused('LZ4 length lies', [{ batch: mangled }], grpc.status.INVALID_ARGUMENT, /BATCH_CORRUPT: LZ4 payload does not announce/)
  await refused('past the end', [{ batch: batch([record(21, SIZE / 512 - 4, 8, 1, data)], 21, 21) }],
    grpc.status.OUT_OF_RANGE, /RECORD_OUT_OF_RANGE/)
  await refused('data length lies', [{ batch: batch([record(22, 0, 16, 1, data)], 22, 22) }],
    grpc.status.INVALID_ARGUMENT, /RECORD_MALFORMED/)
  const bomb = batch([record(23, 0, 8, 1, data)], 23, 23)
  bomb.rawLength = 64 * 1024 * 1024
  await refused('oversize batch', [{ batch: bomb }], grpc.status.RESOURCE_EXHAUSTED, /BATCH_TOO_LARGE/)
  await refused('fingerprints past the end', [{ fingerprintRequest: { id: 1, regions: [SIZE / 65536] } }],
    grpc.status.OUT_OF_RANGE, /region/)

  // No hello: no volume.
  const nohello = new Stream(client)
  nohello.send({ batch: ok })
  const st = await nohello.ended
  t.equal(st.code, grpc.status.NOT_FOUND, 'a batch before the hello: NOT_FOUND')
  t.match(st.details, /before the hello/)

  // An oversize gRPC message is refused by the transport.
  const huge = new Stream(client)
  huge.send(hello('vol'))
  await huge.next('welcome')
  huge.send({ batch: { ...ok, firstSeq: 30, lastSeq: 30, payload: Buffer.alloc(MAX_MESSAGE_BYTES + 1024) } })
  t.equal((await huge.ended).code, grpc.status.RESOURCE_EXHAUSTED, 'a message over the limit: RESOURCE_EXHAUSTED')

  // The good stream is unaffected.
  good.send({ batch: batch([record(11, 16, 8, 1, data)], 11, 11) })
  t.equal((await good.next('ack')).ack!.durableSeq, 11, 'the other volume goes on')
  good.call.end()
  await good.ended

  // Nothing of the bad batches was journaled: 'vol' holds exactly seq 5.
  const stats = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json'])
  t.equal(stats.code, 0, 'stats answers')
  const s = JSON.parse(stats.stdout)
  const vol = s.volumes.find((v: { name: string }) => v.name === 'vol')
  t.equal(vol.durableSeq, 5, 'vol holds only the good batch')
  for (const code of ['SEQ_OUT_OF_ORDER', 'BATCH_CHECKSUM', 'BATCH_CORRUPT', 'RECORD_OUT_OF_RANGE', 'RECORD_MALFORMED', 'BATCH_TOO_LARGE', 'UNKNOWN_VOLUME']) {
    t.ok(s.appliance.rejected[code] >= 1, `rejections counted: ${code}`)
  }
  const logged = app.logs().filter((l) => /rejected/.test(String(l.msg)))
  t.ok(logged.length >= 6, `each rejection logged (${logged.length} lines)`)
  const img = path.join(dir, 'vol.img')
  await restore(app.address, 'vol', 'latest', img)
  const want = Buffer.alloc(SIZE)
  data.copy(want, 0)
  t.ok(fs.readFileSync(img).equals(want), 'the restored image holds the good batch and nothing else')

  // Restore refuses a point in the future and an unknown volume.
  const future = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', '99', '--out', img])
  t.equal(future.code, 1)
  t.match(future.stderr, /seq 99 .* not durable here yet/, 'a point in the future is refused')
  const unknown = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'nope', '--seq', 'latest', '--out', img])
  t.match(unknown.stderr, /no volume named "nope"/, 'an unknown volume is refused')
  const incomplete = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'good', '--seq', 'latest', '--out', img])
  t.equal(incomplete.code, 1)
  t.match(incomplete.stderr, /initial copy is not complete yet/, 'a volume whose initial copy is incomplete is refused')
  t.notOk(fs.existsSync(`${img}.partial`), 'no partial image is left behind')
})

t.test('an agent that asks for fingerprints without reading the replies is refused, not buffered for', async (t) => {
  await initHash()
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  // As the agent does (replication-session.ts): a 4096-region reply is a little over 4 MiB.
  const client = new replicationProto.Replication(app.address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  })
  t.teardown(() => client.close())
  // A 1 GiB volume: a request for 4096 regions is answered with 4 MiB of fingerprints.
  const s = new Stream(client)
  s.send({ hello: { protocol: PROTOCOL_VERSION, agentId: 'test', volume: 'greedy', generation: 'g', size: 1024 * 1024 * 1024, group: '', ackedSeq: 0 } })
  await s.next('welcome')
  s.call.pause() // reads nothing more: the replies back up behind HTTP/2 flow control
  const regions = Array.from({ length: 4096 }, (_, i) => i)
  for (let id = 1; id <= MAX_FINGERPRINTS_IN_FLIGHT + 8; id++) s.send({ fingerprintRequest: { id, regions } })
  s.call.resume()
  const st = await s.ended
  t.equal(st.code, grpc.status.RESOURCE_EXHAUSTED, 'the stream is refused: RESOURCE_EXHAUSTED')
  t.match(st.details, new RegExp(`TOO_MANY_REQUESTS: more than ${MAX_FINGERPRINTS_IN_FLIGHT} fingerprint requests in flight`), `and says why (${st.details})`)
  const replies = s.got.filter((m) => m.body === 'fingerprints').length
  t.ok(replies <= MAX_FINGERPRINTS_IN_FLIGHT, `no more than ${MAX_FINGERPRINTS_IN_FLIGHT} replies were made for it (${replies})`)

  // A well-behaved stream on the same appliance is answered.
  const ok = new Stream(client)
  ok.send(hello('polite'))
  await ok.next('welcome')
  ok.send({ fingerprintRequest: { id: 1, regions: [0, 1] } })
  t.equal((await ok.next('fingerprints')).fingerprints!.fingerprints.length, 2 * 128 * 8, 'a stream that reads its replies gets them')
  ok.call.end()
})
