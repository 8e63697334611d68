// The TypeScript NBD client (client/nbd-client.ts) against a real server,
// nbdkit: handshake, many requests in flight, splitting by the server's
// maximum block size, FLUSH, error replies, refused exports, read-only
// exports and a server that dies mid-request.
import { spawn, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import { NbdClient, parseNbdUri } from '../client/nbd-client'
import { sleep, tmpdir } from './helpers'

const MiB = 1024 * 1024

interface Nbdkit {
  proc: ChildProcess
  sock: string
  err(): string
  exited: Promise<unknown>
}

/** `nbdkit -f -U SOCK ARGS...`, waiting until the socket answers; killed at teardown. */
async function nbdkit(t: Test, dir: string, args: string[], name = 'nbdkit.sock'): Promise<Nbdkit> {
  const sock = path.join(dir, name)
  const proc = spawn('nbdkit', ['-f', '-U', sock, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  proc.stderr!.on('data', (d) => (err += d))
  const exited = new Promise((r) => proc.once('exit', r))
  t.teardown(async () => {
    proc.kill('SIGKILL')
    await exited
  })
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`nbdkit exited ${proc.exitCode}: ${err}`)
    if (fs.existsSync(sock) && (await canConnect(sock))) break
    if (i > 300) throw new Error(`nbdkit did not listen: ${err}`)
    await sleep(20)
  }
  return { proc, sock, err: () => err, exited }
}

function canConnect(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock)
    c.on('connect', () => {
      c.end()
      resolve(true)
    })
    c.on('error', () => resolve(false))
  })
}

function connect(sock: string, name = ''): Promise<NbdClient> {
  return NbdClient.connect({ unix: sock, export: name })
}

t.test('parseNbdUri: unix and tcp forms, clear errors for malformed ones', async (t) => {
  t.same(parseNbdUri('nbd+unix:///vol?socket=/run/a.sock'), { unix: '/run/a.sock', export: 'vol' })
  t.same(parseNbdUri('nbd://10.0.0.5:10810/prod'), { host: '10.0.0.5', port: 10810, export: 'prod' })
  t.same(parseNbdUri('nbd://host/'), { host: 'host', port: 10809, export: '' })
  t.same(parseNbdUri('nbd://[::1]:9000/x'), { host: '::1', port: 9000, export: 'x' })
  t.equal(parseNbdUri('/tmp/disk.img'), null, 'a path is not an NBD URI')
  t.throws(() => parseNbdUri('nbd+unix:///vol'), /names no socket/)
  t.throws(() => parseNbdUri('nbds://host/vol'), /TLS NBD URIs/)
})

t.test('nbdkit memory: handshake, 64 writes in flight, unaligned I/O, read back, flush, disconnect', async (t) => {
  const dir = tmpdir(t)
  const k = await nbdkit(t, dir, ['memory', '64M'])
  const c = await connect(k.sock)
  t.equal(c.size, 64 * MiB, 'size from NBD_INFO_EXPORT')
  t.notOk(c.readOnly, 'writable')
  t.ok(c.canFlush, 'nbdkit memory takes FLUSH')
  const writes: Array<{ off: number; data: Buffer }> = []
  for (let i = 0; i < 64; i++) writes.push({ off: i * MiB + (i % 7) * 333, data: crypto.randomBytes(4096 + i * 513) })
  const p = writes.map((w) => c.write(w.off, w.data))
  t.ok(c.inFlight > 1, `several requests in flight on one connection (${c.inFlight})`)
  await Promise.all(p)
  const back = await Promise.all(writes.map((w) => c.read(w.off, w.data.length)))
  t.ok(back.every((b, i) => b.equals(writes[i].data)), 'every read returns what was written, matched by handle')
  t.equal(await c.flush(), true, 'FLUSH sent and acknowledged')
  t.rejects(c.read(64 * MiB - 512, 1024), /outside the 67108864-byte/, 'a read past the end is refused before it is sent')
  await c.close()
  t.rejects(c.read(0, 512), /closed the connection/, 'no requests after close')
})

t.test('nbdkit file: writes land in the file after FLUSH', async (t) => {
  const dir = tmpdir(t)
  const file = path.join(dir, 'disk.img')
  fs.writeFileSync(file, Buffer.alloc(8 * MiB, 0x11))
  const k = await nbdkit(t, dir, ['file', file])
  const c = await connect(k.sock)
  const data = crypto.randomBytes(3 * MiB + 512)
  await c.write(1 * MiB + 512, data)
  t.equal(await c.flush(), true)
  await c.close()
  const img = fs.readFileSync(file)
  t.ok(img.subarray(1 * MiB + 512, 1 * MiB + 512 + data.length).equals(data), 'the bytes written are in the file')
  t.equal(img[1 * MiB + 511], 0x11, 'the byte before is untouched')
  t.equal(img[1 * MiB + 512 + data.length], 0x11, 'the byte after is untouched')
})

t.test('a server maximum block size of 64 KiB: larger reads and writes are split to fit', async (t) => {
  const dir = tmpdir(t)
  const log = path.join(dir, 'nbdkit.log')
  const k = await nbdkit(t, dir, [
    '--filter=log', '--filter=blocksize-policy', 'memory', '16M',
    'blocksize-minimum=512', 'blocksize-preferred=4096', 'blocksize-maximum=65536', 'blocksize-error-policy=error', `logfile=${log}`,
  ])
  const c = await connect(k.sock)
  t.equal(c.maxBlock, 65536, 'maximum from NBD_INFO_BLOCK_SIZE')
  t.equal(c.minBlock, 512, 'minimum from NBD_INFO_BLOCK_SIZE')
  const data = crypto.randomBytes(MiB)
  await c.write(2 * MiB, data)
  t.ok((await c.read(2 * MiB, MiB)).equals(data), 'a 1 MiB write and read round-trip through 64 KiB requests')
  await c.close()
  // nbdkit's log filter writes a line per request (and per reply); the file may lag the close
  const requests = (): number[] =>
    fs.readFileSync(log, 'utf8').split('\n').filter((l) => / (Read|Write) id=/.test(l) && !/ return=/.test(l)).map((l) => parseInt(/count=0x([0-9a-f]+)/.exec(l)![1], 16))
  let counts = requests()
  for (const end = Date.now() + 10_000; counts.length < 32 && Date.now() < end; counts = requests()) await sleep(20)
  t.equal(counts.length, 32, '16 writes and 16 reads reached the server')
  t.ok(counts.every((n) => n <= 65536), 'none over the maximum')
})

t.test('an error reply fails that request only; the connection keeps working', async (t) => {
  const dir = tmpdir(t)
  const trigger = path.join(dir, 'inject')
  const k = await nbdkit(t, dir, ['--filter=error', 'memory', '4M', 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`])
  const c = await connect(k.sock)
  await c.write(0, Buffer.alloc(4096, 0x42))
  fs.writeFileSync(trigger, '')
  await t.rejects(c.read(0, 4096), /NBD READ of 4096 bytes at 0 .* failed: EIO \(input\/output error\)/, 'the server error is one clear line')
  fs.rmSync(trigger)
  t.ok((await c.read(0, 4096)).equals(Buffer.alloc(4096, 0x42)), 'the next read on the same connection succeeds')
  await c.close()
})

t.test('a server that dies mid-request fails the requests in flight with a clear error', async (t) => {
  const dir = tmpdir(t)
  // the log filter (before the delay) says when both reads have reached the server
  const log = path.join(dir, 'nbdkit.log')
  const k = await nbdkit(t, dir, ['--filter=log', '--filter=delay', 'memory', '4M', 'delay-read=20', `logfile=${log}`])
  const c = await connect(k.sock)
  const pending = c.read(0, 65536)
  const second = c.read(65536, 512)
  const reads = (): number => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => / Read id=/.test(l) && !/ return=/.test(l)).length : 0)
  for (const end = Date.now() + 30_000; reads() < 2 && Date.now() < end; ) await sleep(20)
  t.equal(reads(), 2, 'both reads reached the server')
  k.proc.kill('SIGKILL')
  await t.rejects(pending, /closed the connection.* with 2 requests in flight \(READ of 65536 bytes at 0/, 'the read in flight fails')
  await t.rejects(second, /closed the connection/, 'and so does the other')
  await t.rejects(c.write(0, Buffer.alloc(512)), /closed the connection/, 'later requests fail at once')
})

t.test('refusals are clear: unknown export, read-only export, no server, not an NBD server', async (t) => {
  const dir = tmpdir(t)
  const strict = await nbdkit(t, dir, ['--filter=exportname', 'memory', '1M', 'exportname=prod', 'exportname-strict=true'], 'strict.sock')
  await t.rejects(connect(strict.sock, 'nosuch'), /^export 'nosuch' on .*strict\.sock: the NBD server (has no such export|refuses it|calls the request invalid)/, 'an unknown export name')
  const ok = await connect(strict.sock, 'prod')
  t.equal(ok.size, MiB, 'the advertised export opens')
  await ok.close()

  const ro = await nbdkit(t, dir, ['-r', 'memory', '1M'], 'ro.sock')
  const c = await connect(ro.sock)
  t.ok(c.readOnly, 'NBD_FLAG_READ_ONLY seen')
  await t.rejects(c.write(0, Buffer.alloc(512)), /read-only/, 'a write to a read-only export is refused')
  await c.close()

  await t.rejects(connect(path.join(dir, 'missing.sock')), /cannot connect to the NBD server for export '' on .*missing\.sock: .*ENOENT/, 'no server')

  const notNbd = path.join(dir, 'http.sock')
  const srv = net.createServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'))
  await new Promise<void>((r) => srv.listen(notNbd, r))
  t.teardown(() => srv.close())
  await t.rejects(connect(notNbd), /not an NBD server/, 'something else on the socket')
})
