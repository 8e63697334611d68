// Bad input on the NBD socket: each malformed handshake or request gets the
// error reply the spec names or a clean disconnect, a log line says what was
// wrong, the count goes up, nothing is written, and other clients are served.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import {
  decodeOptionReply, decodeSimpleReply, encodeClientFlags, encodeGoData, encodeOption, encodeRequest,
  FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, NBD_MAGIC, OPT_GO, OPT_MAGIC, REP_ACK, REP_ERR, REP_INFO, INFO_EXPORT, SIMPLE_REPLY_MAGIC,
} from '../client/nbd-client'
import { makeImage, must, nbdUri, sha256, sleep, startAgent, tmpdir, type AgentProcess } from './helpers'

const MiB = 1024 * 1024
const IHAVEOPT = Buffer.from('IHAVEOPT')

/** A hand-driven NBD client: bytes in, bytes out, nothing hidden. */
class RawClient {
  private sock: net.Socket
  private buf = Buffer.alloc(0)
  private waiters: Array<() => void> = []
  closed = false

  private constructor(sock: net.Socket) {
    this.sock = sock
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d])
      this.wake()
    })
    sock.on('close', () => {
      this.closed = true
      this.wake()
    })
    sock.on('error', () => {})
  }
  private wake(): void {
    const w = this.waiters
    this.waiters = []
    w.forEach((f) => f())
  }
  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path, () => resolve(new RawClient(s)))
      s.once('error', reject)
    })
  }
  write(b: Buffer): void {
    this.sock.write(b)
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed with ${this.buf.length} of ${n} bytes`)
      await new Promise<void>((r) => this.waiters.push(r))
    }
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }
  /** Resolves when the server closes the connection (after draining what it sent). */
  async closedByServer(timeoutMs = 5000): Promise<boolean> {
    const end = Date.now() + timeoutMs
    while (!this.closed && Date.now() < end) await sleep(20)
    return this.closed
  }
  end(): void {
    this.sock.end()
  }
  destroy(): void {
    this.sock.destroy()
  }

  async greet(): Promise<void> {
    const g = await this.read(18)
    if (g.readBigUInt64BE(0) !== NBD_MAGIC || g.readBigUInt64BE(8) !== OPT_MAGIC) throw new Error('bad greeting')
    this.write(encodeClientFlags(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
  }
  option(opt: number, data: Buffer, magic: Buffer = IHAVEOPT, lengthOverride?: number): void {
    this.write(encodeOption(opt, data, { magic, length: lengthOverride }))
  }
  async optReply(): Promise<{ opt: number; type: number; data: Buffer }> {
    const h = decodeOptionReply(await this.read(20))
    return { opt: h.opt, type: h.type, data: await this.read(h.length) }
  }
  /** NBD_OPT_GO for name; returns the export size. */
  async go(name: string): Promise<number> {
    this.option(OPT_GO, encodeGoData(name))
    let size = -1
    for (;;) {
      const r = await this.optReply()
      if (r.type === REP_INFO && r.data.readUInt16BE(0) === INFO_EXPORT) size = Number(r.data.readBigUInt64BE(2))
      if (r.type === REP_ACK) return size
      if (r.type & REP_ERR) throw new Error(`GO refused: ${r.data.toString()}`)
    }
  }
  request(type: number, offset: number | bigint, length: number, opts: { flags?: number; cookie?: number; magic?: number; payload?: Buffer } = {}): void {
    const h = encodeRequest(type, offset, length, { flags: opts.flags, handle: opts.cookie ?? 1, magic: opts.magic })
    this.write(opts.payload ? Buffer.concat([h, opts.payload]) : h)
  }
  async reply(): Promise<{ error: number; cookie: number }> {
    const r = decodeSimpleReply(await this.read(16))
    if (r.magic !== SIMPLE_REPLY_MAGIC) throw new Error('bad reply magic')
    return { error: r.error, cookie: r.handle }
  }
}

async function setup(t: Test): Promise<{ sock: string; img: string; agent: AgentProcess }> {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 77)
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img } })
  return { sock, img, agent }
}
const tap = t

function logged(agent: AgentProcess, re: RegExp): Promise<Record<string, unknown>> {
  return agent.waitForLog(re, 5000)
}

t.test('malformed handshakes are closed cleanly and logged', async (t) => {
  const { sock, img, agent } = await setup(t)
  const before = sha256(img)

  let c = await RawClient.connect(sock)
  await c.greet()
  c.option(7, Buffer.alloc(6), Buffer.from('BADMAGIC'))
  t.ok(await c.closedByServer(), 'wrong option magic: disconnect')
  await logged(agent, /bad option magic/)

  c = await RawClient.connect(sock)
  await c.read(18)
  const bad = Buffer.alloc(4)
  bad.writeUInt32BE(0x80)
  c.write(bad)
  t.ok(await c.closedByServer(), 'unknown client flags: disconnect')
  await logged(agent, /unknown client flags 0x80/)

  c = await RawClient.connect(sock)
  await c.greet()
  c.option(7, Buffer.alloc(0), IHAVEOPT, 2 * MiB)
  t.ok(await c.closedByServer(), 'oversized option: disconnect')
  await logged(agent, /length 2097152, over the 65536-byte limit/)

  c = await RawClient.connect(sock)
  await c.greet()
  c.option(7, Buffer.alloc(10), IHAVEOPT, 100)
  c.end()
  await logged(agent, /truncated option 7 \(100 bytes announced\)/)

  c = await RawClient.connect(sock)
  await c.greet()
  c.option(7, Buffer.from([0, 0, 0, 200, 1, 2]))
  let r = await c.optReply()
  t.equal(r.type, 0x80000003, 'GO whose name runs past the option: NBD_REP_ERR_INVALID')
  c.option(6, Buffer.concat([Buffer.from([0, 0, 0, 4]), Buffer.from('nope'), Buffer.from([0, 0])]))
  r = await c.optReply()
  t.equal(r.type, 0x80000006, 'INFO for an unknown export: NBD_REP_ERR_UNKNOWN')
  t.match(r.data.toString(), /no export named 'nope'/, 'with a message that says why')
  c.option(42, Buffer.alloc(3))
  r = await c.optReply()
  t.equal(r.type, 0x80000001, 'unknown option: NBD_REP_ERR_UNSUP, never a hang')
  c.option(3, Buffer.alloc(0))
  r = await c.optReply()
  t.equal(r.type, 2, 'LIST still works on the same connection')
  t.equal(r.data.subarray(4).toString(), 'vol')
  t.equal((await c.optReply()).type, 1, 'LIST ends with ACK')
  c.option(2, Buffer.alloc(0))
  t.equal((await c.optReply()).type, 1, 'ABORT is acknowledged')
  t.ok(await c.closedByServer(), 'and the connection closed')

  await must('qemu-io', ['-f', 'raw', '-c', 'read -v 0 512', nbdUri(sock, 'vol')])
  t.equal(sha256(img), before, 'nothing was written')
})

t.test('malformed requests get the error the spec names and change nothing', async (t) => {
  const { sock, img, agent } = await setup(t)
  const before = sha256(img)
  const c = await RawClient.connect(sock)
  await c.greet()
  const size = await c.go('vol')
  t.equal(size, 4 * MiB, 'GO reports the export size')

  c.request(0, size - 512, 1024, { cookie: 11 })
  t.same(await c.reply(), { error: 22, cookie: 11 }, 'READ past the end: EINVAL')
  c.request(1, size, 4096, { cookie: 12, payload: Buffer.alloc(4096, 0xee) })
  t.same(await c.reply(), { error: 28, cookie: 12 }, 'WRITE past the end: ENOSPC, payload discarded')
  c.request(0, 0, 64 * MiB, { cookie: 13 })
  t.same(await c.reply(), { error: 22, cookie: 13 }, 'READ over the maximum block size: EINVAL')
  c.request(99, 0, 0, { cookie: 14 })
  t.same(await c.reply(), { error: 22, cookie: 14 }, 'unknown command: EINVAL')
  c.request(3, 0, 0, { cookie: 15, flags: 0x8000 })
  t.same(await c.reply(), { error: 22, cookie: 15 }, 'unknown flag: EINVAL')
  c.request(4, size, 512, { cookie: 16 })
  t.same(await c.reply(), { error: 22, cookie: 16 }, 'TRIM past the end: EINVAL')
  c.request(6, size - 512, 1024, { cookie: 17 })
  t.same(await c.reply(), { error: 28, cookie: 17 }, 'WRITE_ZEROES past the end: ENOSPC')
  c.request(0, 2n ** 64n - 512n, 1024, { cookie: 18 })
  t.same(await c.reply(), { error: 22, cookie: 18 }, 'READ whose end overflows 64 bits: EINVAL')
  c.request(0, 0, 512, { cookie: 19 })
  const ok = await c.reply()
  t.same(ok, { error: 0, cookie: 19 }, 'the connection still serves a valid READ')
  await c.read(512)
  c.request(1, 0, 64 * MiB, { cookie: 20 })
  t.ok(await c.closedByServer(), 'WRITE over the maximum block size: disconnect')

  const d = await RawClient.connect(sock)
  await d.greet()
  await d.go('vol')
  d.request(0, 0, 512, { magic: 0x12345678 })
  t.ok(await d.closedByServer(), 'bad request magic: disconnect')

  const e = await RawClient.connect(sock)
  await e.greet()
  await e.go('vol')
  e.request(1, 0, 4096, { payload: Buffer.alloc(1000, 0xee) })
  e.end() // after what was written is sent: the server reads the 1000 bytes, then the end
  await logged(agent, /disconnected in the middle of a WRITE payload; the write was not applied/)

  await must('qemu-io', ['-f', 'raw', '-c', 'read -v 0 512', nbdUri(sock, 'vol')])
  t.equal(sha256(img), before, 'none of it reached the volume')
  await logged(agent, /READ past the end of the export/)
  await logged(agent, /unknown command/)
  await logged(agent, /WRITE larger than the maximum block size.*disconnecting/)
  await agent.stop()
  const stats = agent.logs().find((l) => l.msg === 'final stats')!
  t.ok((stats.rejected as number) >= 10, `rejected requests are counted (${stats.rejected})`)
  t.equal(stats.records, 1, 'only the FLUSH of the last qemu-io became a record')
})
