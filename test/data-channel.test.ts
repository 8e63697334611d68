// The data channel beside a Replicate stream (appliance/data-channel.ts,
// proto/data-frame.ts), through a real appliance process: raw connections
// that lie are refused with a reason and counted, a bad batch that arrives
// there ends its stream with the same status it would get on the stream, and
// nothing of it is journaled. Then real agents: batches travel on the
// channel; an agent that cannot reach it says so once and sends them on the
// stream; an appliance without one (--data-port off) is replicated to as
// before. All byte-exact.
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { encodeBatch } from '../proto/change-batch'
import { FRAME_MAGIC, MAX_FRAME_PAYLOAD, encodeFrame } from '../proto/data-frame'
import { initHash } from '../proto/hash'
import type { AgentMessage } from '../proto/generated/tidemark/v1/AgentMessage'
import { PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, makeImage, must, nbdUri, restore, run, sha256, startAgent, startAppliance, tmpdir, waitFor } from './helpers'
import { Stream } from './lib/replicate-stream'
import { rec } from './lib/bad-batches'

const SIZE = 4 * 1024 * 1024
const MiB = 1024 * 1024

/** A raw connection to the data port: write bytes, see it closed. */
function dial(port: number): { sock: net.Socket; closed: Promise<void> } {
  const sock = net.connect({ host: '127.0.0.1', port })
  sock.on('error', () => undefined)
  sock.resume()
  return { sock, closed: new Promise((resolve) => sock.on('close', () => resolve())) }
}

function frame(m: AgentMessage): Buffer {
  const { head, payload } = encodeFrame(m)
  return payload ? Buffer.concat([head, payload]) : head
}

function batchMsg(seq: number, sector: number, fill: number, compress = true): AgentMessage {
  const raw = rec(seq, sector, 8, 1, Buffer.alloc(4096, fill))
  return { batch: encodeBatch(raw, { firstSeq: seq, lastSeq: seq, recordCount: 1, appBytes: 4096, changedBytes: 4096 }, compress) }
}

t.test('the data channel refuses lies with a reason, and a bad batch there ends its stream as it would on the stream', async (t) => {
  await initHash()
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const client = new replicationProto.Replication(app.address, grpc.credentials.createInsecure())
  t.teardown(() => client.close())
  const hello = (volume: string): AgentMessage => ({
    hello: { protocol: PROTOCOL_VERSION, agentId: 'test', volume, generation: 'gen-1', size: SIZE, group: '', ackedSeq: 0 },
  })

  const s = new Stream(client)
  s.call.write(hello('vol'))
  const w = (await s.next('welcome')).welcome!
  t.ok(w.dataPort > 0, `the Welcome names the data channel's port (${w.dataPort})`)
  t.equal(w.dataToken.length, 16, 'and a 16-byte token for this stream')
  t.match(app.err, new RegExp(`data channel on 127\\.0\\.0\\.1:${w.dataPort}`), 'the appliance says where it listens')

  // Refused before they attach: the stream and its token are untouched.
  const refusals: Array<[string, Buffer, RegExp]> = [
    ['not a frame', Buffer.from('GET / HTTP/1.1\r\n\r\n'), /not the TMDF magic/],
    ['an unknown token', frame({ dataHello: { token: Buffer.alloc(16, 7) } }), /names no live Replicate stream/],
    ['a batch before the DataHello', frame(batchMsg(1, 0, 1)), /a batch before the DataHello/],
  ]
  const head = Buffer.alloc(12)
  head.writeUInt32LE(FRAME_MAGIC, 0)
  head.writeUInt32LE(1 << 30, 4)
  refusals.push(['a message of a gigabyte', head, /a frame's message of 1073741824 bytes/])
  for (const [what, bytes, re] of refusals) {
    const c = dial(w.dataPort)
    c.sock.write(bytes)
    await c.closed
    await waitFor(() => app.logs().some((l) => /data channel connection refused/.test(String(l.msg)) && re.test(String(l.msg))), `${what}: logged`, 10_000)
    t.pass(`${what}: closed, and logged with the reason`)
  }

  // Attached: a batch and a fingerprint request go through, answered on the stream.
  const a = dial(w.dataPort)
  a.sock.write(frame({ dataHello: { token: w.dataToken } }))
  a.sock.write(frame(batchMsg(5, 0, 0x5a)))
  t.equal((await s.next('ack')).ack!.durableSeq, 5, 'a batch on the data channel is acknowledged on the stream')
  a.sock.write(frame({ fingerprintRequest: { id: 9, regions: [0] } }))
  const fp = (await s.next('fingerprints')).fingerprints!
  t.equal(fp.id, 9, 'a fingerprint request there is answered on the stream')
  t.equal(fp.fingerprints.length, 128 * 8, 'one fingerprint per sector of the region')
  const again = dial(w.dataPort)
  again.sock.write(frame({ dataHello: { token: w.dataToken } }))
  await again.closed
  t.pass('a token works once: a second connection naming it is closed')
  // A flipped byte in a batch on the channel: the stream ends with the stream's status and reason.
  const flipped = batchMsg(6, 8, 0x11, false)
  ;(flipped.batch!.payload as Buffer)[40] ^= 0xff
  a.sock.write(frame(flipped))
  const st = await s.ended
  t.equal(st.code, grpc.status.DATA_LOSS, 'a corrupt batch on the data channel: DATA_LOSS')
  t.match(st.details, /BATCH_CHECKSUM.*mismatch/, `and the reason (${st.details})`)
  await a.closed
  t.pass('and its data connection is closed with it')

  // A batch on the stream once the channel carries it; a frame cut short; a payload over the limit.
  async function ended(name: string, act: (s2: Stream, port: number, token: Buffer) => void, code: grpc.status, re: RegExp): Promise<void> {
    const s2 = new Stream(client)
    s2.call.write(hello('vol'))
    const w2 = (await s2.next('welcome')).welcome!
    act(s2, w2.dataPort, w2.dataToken)
    const st2 = await s2.ended
    t.equal(st2.code, code, `${name}: ${grpc.status[code]}`)
    t.match(st2.details, re, `${name}: says why (${st2.details})`)
  }
  const attach = (port: number, token: Buffer): net.Socket => {
    const c = dial(port)
    c.sock.write(frame({ dataHello: { token } }))
    return c.sock
  }
  await ended('a batch on the stream after the channel attached', (s2, port, token) => {
    const c = attach(port, token)
    c.write(frame({ fingerprintRequest: { id: 1, regions: [0] } }))
    s2.next('fingerprints').then(() => s2.call.write(batchMsg(7, 0, 1)), () => undefined)
  }, grpc.status.INVALID_ARGUMENT, /while its data channel is attached/)
  await ended('a frame cut short', (_s2, port, token) => {
    const c = attach(port, token)
    c.end(frame(batchMsg(7, 0, 1)).subarray(0, 40))
  }, grpc.status.INVALID_ARGUMENT, /ended inside a frame/)
  await ended('a payload over the limit', (_s2, port, token) => {
    const c = attach(port, token)
    const h = encodeFrame(batchMsg(7, 0, 1)).head
    h.writeUInt32LE(MAX_FRAME_PAYLOAD + 1, 8)
    c.write(h)
  }, grpc.status.RESOURCE_EXHAUSTED, /BATCH_TOO_LARGE/)

  // Many frames written at once: each payload must stay as it arrived while
  // the appliance checks it on another thread, as later frames keep coming.
  const PIPE = 48 * MiB
  const p = new Stream(client)
  p.call.write({ hello: { protocol: PROTOCOL_VERSION, agentId: 'test', volume: 'pipe', generation: 'gen-1', size: PIPE, group: '', ackedSeq: 0 } })
  const pw = (await p.next('welcome')).welcome!
  const want = Buffer.alloc(PIPE)
  const frames: Buffer[] = [frame({ dataHello: { token: pw.dataToken } })]
  for (let i = 0; i < 48; i++) {
    const data = crypto.randomBytes(MiB)
    data.copy(want, i * MiB)
    const raw = rec(i + 1, i * 2048, 2048, 1, data)
    frames.push(frame({ batch: encodeBatch(raw, { firstSeq: i + 1, lastSeq: i + 1, recordCount: 1, appBytes: MiB, changedBytes: MiB }, false) }))
  }
  frames.push(frame({ progress: { regionsDone: PIPE / 65536, regionsTotal: PIPE / 65536, bytesPerSecond: 0 } }))
  const pc = dial(pw.dataPort)
  pc.sock.end(Buffer.concat(frames))
  for (;;) {
    const ack = (await p.next('ack')).ack!
    if (ack.durableSeq === 48) break
  }
  p.call.end()
  t.equal((await p.ended).code, grpc.status.OK, '48 pipelined 1 MiB batches on the data channel: all acknowledged, the stream ends cleanly')
  const pipeImg = path.join(dir, 'pipe.img')
  await restore(app.address, 'pipe', 'latest', pipeImg)
  t.ok(fs.readFileSync(pipeImg).equals(want), 'and restored byte-exact')

  const stats = JSON.parse((await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json'])).stdout)
  const vol = stats.volumes.find((v: { name: string }) => v.name === 'vol')
  t.equal(vol.durableSeq, 5, 'nothing but the good batch was journaled')
  for (const code of ['PROTOCOL', 'PERMISSION_DENIED', 'BATCH_CHECKSUM', 'BATCH_TOO_LARGE']) {
    t.ok(stats.appliance.rejected[code] >= 1, `refusals counted: ${code} (${stats.appliance.rejected[code]})`)
  }
})

t.test('agents: batches on the data channel; one that cannot reach it sends them on the stream; --data-port off', async (t) => {
  const dir = tmpdir(t)
  // The appliance listens on 127.0.0.2; a proxy on 127.0.0.1 forwards the
  // gRPC port only, as a firewall or NAT that lets one port through would: the
  // agent behind it finds no data channel at 127.0.0.1.
  const fenced = await startAppliance(t, { data: path.join(dir, 'fenced'), host: '127.0.0.2' })
  const proxy = net.createServer((c) => {
    const up = net.connect({ host: '127.0.0.2', port: fenced.port })
    c.pipe(up).pipe(c)
    const close = (): void => {
      c.destroy()
      up.destroy()
    }
    c.on('error', close)
    up.on('error', close)
    c.on('close', close)
    up.on('close', close)
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => proxy.close(() => resolve())))
  const proxied = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`
  const direct = await startAppliance(t, { data: path.join(dir, 'direct') })
  const off = await startAppliance(t, { data: path.join(dir, 'off'), extra: ['--data-port', 'off'] })
  t.notMatch(off.err, /data channel on/, '--data-port off: no data channel')

  const cases = [
    { name: 'direct', address: direct.address, app: direct, channel: true },
    { name: 'fenced', address: proxied, app: fenced, channel: false },
    { name: 'off', address: off.address, app: off, channel: false },
  ]
  for (const c of cases) {
    const img = path.join(dir, `${c.name}.img`)
    makeImage(img, 16 * MiB, 3)
    const sock = path.join(dir, `${c.name}.sock`)
    const agent = await startAgent(t, {
      state: path.join(dir, `${c.name}-state`), sock, volumes: { vol: img },
      extra: ['--appliance', c.address, '--stats-interval', '0.2'],
    })
    await c.app.waitForLog(/initial copy complete/, 60_000)
    await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 3M', '-c', 'write -P 0x71 9M 64k', '-c', 'flush', nbdUri(sock, 'vol')])
    const line = await waitFor(() => {
      const l = agent.logs().filter((x) => x.msg === 'stats' && x.volume === 'vol').at(-1)
      return l && l.connected && l.durableSeq === l.lastSeq && (l.lastSeq as number) > 0 ? l : null
    }, `${c.name}: caught up`, 60_000)
    t.equal(line.dataChannel, c.channel, `${c.name}: batches ${c.channel ? 'on the data channel' : 'on the stream'}`)
    const warned = agent.logs().filter((l) => /cannot open the data channel/.test(String(l.msg)))
    if (c.name === 'fenced') {
      t.equal(warned.length, 1, 'the agent says once that it cannot reach the data channel')
      t.match(String(warned[0]?.msg), /cannot open the data channel to 127\.0\.0\.1:\d+: .*sending the batches on the replication stream instead/, 'and what it does instead')
    } else t.equal(warned.length, 0, `${c.name}: no complaint`)
    t.equal(await agent.stop(), 0, `${c.name}: the agent stops cleanly`)
    const out = path.join(dir, `${c.name}.restored`)
    await restore(c.app.address, 'vol', 'latest', out)
    t.equal(sha256(out), sha256(img), `${c.name}: byte-exact`)
    t.notOk(fs.existsSync(path.join(dir, `${c.name}.sock`)), `${c.name}: the agent removed its socket`)
  }
})
