// Restore at the speed of the disk, through real processes: the native NBD
// copier (native/nbd-copy.ts) reading from real NBD servers (`nbdkit file`,
// the appliance's own `--nbd` server) into a file, an NBD target (`nbdkit
// memory`) and back, with every image compared by sha256; and `tidemark
// restore` taking the appliance's NBD endpoint when it has one, gRPC when it
// has none, with the same bytes either way.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { NbdCopy } from '../native/nbd-copy'
import { freePort, replicatedSeq, tcpOpen } from './claims-helpers'
import {
  BIN,
  connectable,
  have,
  makeImage,
  makePki,
  must,
  nbdUri,
  protectedVolume,
  restore,
  run,
  ServiceProcess,
  sha256,
  startAgent,
  startAppliance,
  tlsArgs,
  tmpdir,
  waitFor,
} from './helpers'

const MiB = 1024 * 1024

if (!have('nbdkit') || !have('nbdcopy') || !have('qemu-io')) {
  t.plan(0, 'needs nbdkit, nbdcopy (libnbd-bin) and qemu-io (scripts/test-deps.sh installs them)')
  process.exit(0)
}

/**
 * `nbdkit -f ARGS...` listening on a unix socket (a path) or on 127.0.0.1:PORT
 * (a number), stopped at teardown; resolves once it accepts connections.
 */
async function nbdkit(t: Test, listen: string | number, args: string[]): Promise<ServiceProcess> {
  const where = typeof listen === 'number' ? ['-i', '127.0.0.1', '-p', String(listen)] : ['-U', listen]
  const proc = spawn('nbdkit', ['-f', ...where, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const p = new ServiceProcess(proc)
  t.teardown(() => p.stop())
  const accepts = (): Promise<boolean> => (typeof listen === 'number' ? tcpOpen('127.0.0.1', listen) : connectable(listen))
  await waitFor(async () => proc.exitCode !== null || (await accepts()), `nbdkit on ${listen}`)
  if (proc.exitCode !== null) throw new Error(`nbdkit ${args.join(' ')} exited ${proc.exitCode}: ${p.err}`)
  return p
}

/**
 * A 2 MiB ext4 loop-mounted at DIR/mnt (unmounted at teardown), for targets
 * that fill up; null where this cannot mount (not root, no mkfs.ext4).
 */
async function tinyFs(t: Test, dir: string): Promise<string | null> {
  if (process.getuid?.() !== 0 || !have('mkfs.ext4')) return null
  const fsImg = path.join(dir, 'tiny.ext4')
  makeImage(fsImg, 2 * MiB, null)
  await must('mkfs.ext4', ['-q', '-F', fsImg])
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  await must('mount', ['-o', 'loop', fsImg, mnt])
  t.teardown(() => run('umount', [mnt]))
  return mnt
}

/** An image with data, holes and a lone 4 KiB block: what restores look like. */
function patchwork(file: string, size: number): void {
  makeImage(file, size, null)
  const fd = fs.openSync(file, 'r+')
  const data = Buffer.alloc(3 * MiB)
  makeImage(`${file}.tmp`, data.length, 7)
  fs.readSync(fs.openSync(`${file}.tmp`, 'r'), data, 0, data.length, 0)
  fs.rmSync(`${file}.tmp`)
  fs.writeSync(fd, data, 0, data.length, 1 * MiB)
  fs.writeSync(fd, data, 0, 4096, 9 * MiB + 8192)
  fs.writeSync(fd, data, 0, 512, size - 512)
  fs.closeSync(fd)
}

/** A loop device over a file of `size` bytes of junk (root only; null when there is none); detached at teardown. */
async function junkDevice(t: Test, dir: string, size: number, seed: number): Promise<string | null> {
  if (process.getuid?.() !== 0 || !have('losetup')) return null
  const backing = path.join(dir, `loop-${seed}.img`)
  makeImage(backing, size, seed)
  const r = await run('losetup', ['-f', '--show', backing])
  if (r.code !== 0) return null
  const dev = r.stdout.trim()
  t.teardown(() => run('losetup', ['-d', dev]))
  return dev
}

/** A fresh directory with a 16 MiB patchwork image (DIR/src.img), served read-only by `nbdkit file` on DIR/src.sock. */
async function servedPatchwork(t: Test): Promise<{ dir: string; src: string; sock: string }> {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src.img')
  patchwork(src, 16 * MiB)
  const sock = path.join(dir, 'src.sock')
  await nbdkit(t, sock, ['-r', 'file', src])
  return { dir, src, sock }
}

/** Bytes the file really occupies on disk. */
const allocated = (file: string): number => fs.statSync(file).blocks * 512

t.test('the copier: nbdkit file into a file, byte-exact, zero blocks as holes', async (t) => {
  const { dir, src, sock } = await servedPatchwork(t)
  const out = path.join(dir, 'out.img')
  const copy = new NbdCopy({ source: { unix: sock, export: '' }, target: out, connections: 3, requests: 4, requestBytes: 1 * MiB })
  const r = await copy.done
  t.equal(sha256(out), sha256(src), 'the copy equals the source')
  t.equal(fs.statSync(out).size, 16 * MiB)
  t.equal(r.size, 16 * MiB)
  t.equal(r.targetKind, 'file')
  t.equal(r.dataBytes, 3 * MiB + 4096 + 4096, 'only the non-zero 4 KiB granules were written')
  t.equal(r.dataBytes + r.zeroBytes, r.size)
  t.equal(r.dataRuns, 5, 'one write per 1 MiB request of the 3 MiB run, and one per lone block')
  t.ok(allocated(out) <= 3 * MiB + 64 * 1024, `the zero blocks are holes (${allocated(out)} bytes allocated)`)
  t.same(copy.progress(), { done: 16 * MiB, size: 16 * MiB }, 'progress ends at the size')
})

t.test('the copier: into an NBD target, zero ranges zeroed over what it held', async (t) => {
  const { dir, src, sock } = await servedPatchwork(t)
  const junk = path.join(dir, 'junk.img')
  makeImage(junk, 16 * MiB, 3)
  const tsock = path.join(dir, 'target.sock')
  await nbdkit(t, tsock, ['memory', String(16 * MiB)])
  await must('nbdcopy', [junk, nbdUri(tsock, '')])
  const r = await new NbdCopy({ source: { unix: sock, export: '' }, target: { unix: tsock, export: '' } }).done
  t.equal(r.targetKind, 'nbd')
  const back = path.join(dir, 'back.img')
  await must('nbdcopy', [nbdUri(tsock, ''), back])
  t.equal(sha256(back), sha256(src), 'the target reads as the source: data written, the rest zeroed')
})

t.test('the copier: into a block device, zero ranges zeroed (BLKZEROOUT) over what it held', async (t) => {
  const { dir, src, sock } = await servedPatchwork(t)
  const dev = await junkDevice(t, dir, 16 * MiB, 3)
  if (!dev) return t.plan(0, 'needs root and losetup')
  const r = await new NbdCopy({ source: { unix: sock, export: '' }, target: dev }).done
  t.equal(r.targetKind, 'device')
  t.equal(sha256(dev), sha256(src), 'the device reads as the source')
  const small = await junkDevice(t, dir, 8 * MiB, 4)
  await t.rejects(new NbdCopy({ source: { unix: sock, export: '' }, target: small! }).done, {
    code: 'COPY_TARGET', message: new RegExp(`^the block device ${small} holds 8388608 bytes, fewer than the 16777216 of export ''`),
  })
})

t.test('the copier: a server without multi-conn gets one connection, and a 1-request pipeline still works', async (t) => {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src.img')
  makeImage(src, 5 * MiB + 512, 11)
  const sock = path.join(dir, 'src.sock')
  // nbdkit's noparallel filter serializes requests; the multi-conn filter set to "disable" takes the flag away
  await nbdkit(t, sock, ['-r', '--filter=multi-conn', 'file', src, 'multi-conn-mode=disable'])
  const out = path.join(dir, 'out.img')
  const r = await new NbdCopy({ source: { unix: sock, export: '' }, target: out, connections: 4, requests: 1, requestBytes: 64 * 1024 }).done
  t.equal(r.connections, 1, 'no CAN_MULTI_CONN: one connection')
  t.equal(sha256(out), sha256(src), 'an odd size (a 512-byte tail) copies exactly')
})

t.test('the copier: failures are one line naming the cause', async (t) => {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src.img')
  makeImage(src, 4 * MiB, 5)
  const sock = path.join(dir, 'src.sock')
  await nbdkit(t, sock, ['-r', 'file', src])
  const fail = async (opts: ConstructorParameters<typeof NbdCopy>[0]) => {
    try {
      await new NbdCopy(opts).done
    } catch (err) {
      return err as Error & { code: string }
    }
    throw new Error('the copy did not fail')
  }

  let e = await fail({ source: { unix: path.join(dir, 'none.sock'), export: '' }, target: path.join(dir, 'o.img') })
  t.equal(e.code, 'NBD_CONNECT')
  t.match(e.message, /^cannot connect to the NBD server for export '' on .*none\.sock: No such file or directory \(ENOENT\)$/)

  e = await fail({ source: { unix: sock, export: '' }, target: path.join(dir, 'missing', 'o.img') })
  t.equal(e.code, 'COPY_TARGET')
  t.match(e.message, /^cannot open .*missing\/o\.img for writing: No such file or directory \(ENOENT\)$/)

  const strict = path.join(dir, 'strict.sock')
  await nbdkit(t, strict, ['-r', '--filter=exportname', 'file', src, 'exportname=vol@seq=1', 'exportname-strict=true'])
  e = await fail({ source: { unix: strict, export: 'vol@seq=2' }, target: path.join(dir, 'o.img') })
  t.equal(e.code, 'NBD_REFUSED')
  t.match(e.message, /^the NBD server for export 'vol@seq=2' on .*strict\.sock refused it \(NBD_REP_ERR_UNKNOWN\)/)
  const ok = await new NbdCopy({ source: { unix: strict, export: 'vol@seq=1' }, target: path.join(dir, 'o.img') }).done
  t.equal(ok.size, 4 * MiB, 'the export it has is copied')

  const eio = path.join(dir, 'eio.sock')
  await nbdkit(t, eio, ['-r', '--filter=error', 'file', src, 'error=EIO', 'error-pread-rate=1'])
  e = await fail({ source: { unix: eio, export: '' }, target: path.join(dir, 'o.img') })
  t.equal(e.code, 'NBD_ERROR')
  t.match(e.message, /failed a READ of \d+ bytes at \d+: EIO \(Input\/output error\)$/)
  t.notOk(fs.readdirSync(dir).some((f) => f.endsWith('.partial')))

  const small = path.join(dir, 'small.sock')
  await nbdkit(t, small, ['memory', String(1 * MiB)])
  e = await fail({ source: { unix: sock, export: '' }, target: { unix: small, export: '' } })
  t.equal(e.code, 'COPY_TARGET')
  t.match(e.message, /holds 1048576 bytes, fewer than the 4194304 of export ''/)

  e = await fail({ source: { unix: sock, export: '' }, target: { unix: path.join(dir, 'none.sock'), export: 't' } })
  t.equal(e.code, 'COPY_TARGET', 'an NBD target that cannot be reached is a target error')
  t.match(e.message, /^the NBD target: cannot connect to the NBD server for export 't' on .*none\.sock: No such file or directory \(ENOENT\)$/)

  const ro = path.join(dir, 'ro.sock')
  await nbdkit(t, ro, ['-r', 'memory', String(8 * MiB)])
  e = await fail({ source: { unix: sock, export: '' }, target: { unix: ro, export: '' } })
  t.equal(e.code, 'COPY_TARGET')
  t.match(e.message, /is read-only$/)

  // ENOSPC on the target: a file system that is too small for the data
  const mnt = await tinyFs(t, dir)
  if (mnt) {
    e = await fail({ source: { unix: sock, export: '' }, target: path.join(mnt, 'o.img') })
    t.equal(e.code, 'COPY_TARGET')
    t.match(e.message, /^writing .*mnt\/o\.img at \d+: No space left on device \(ENOSPC\)$/)
  }
})

/** A CA, certificates it signs (SANs 127.0.0.1 and localhost) for a server and a client, in nbdkit's file names, and another CA. */
async function makeCertificates(dir: string) {
  const ssl = (args: string[]) => must('openssl', args, { cwd: dir })
  await ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test ca', '-keyout', 'ca.key', '-out', 'ca-cert.pem'])
  await ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=rogue ca', '-keyout', 'rogue.key', '-out', 'rogue-ca.pem'])
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  for (const n of ['server', 'client']) {
    await ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${n}`, '-keyout', `${n}-key.pem`, '-out', `${n}.csr`])
    await ssl(['x509', '-req', '-in', `${n}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', `${n}-cert.pem`])
  }
  return { cert: path.join(dir, 'client-cert.pem'), key: path.join(dir, 'client-key.pem'), ca: path.join(dir, 'ca-cert.pem'), rogueCa: path.join(dir, 'rogue-ca.pem') }
}

t.test('the copier: NBD TLS (STARTTLS, mutual) over TCP and over a unix socket that requires it', { skip: !have('openssl') && 'needs openssl' }, async (t) => {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src.img')
  patchwork(src, 16 * MiB)
  const certs = path.join(dir, 'certs')
  fs.mkdirSync(certs)
  const c = await makeCertificates(certs)
  const tls = { cert: c.cert, key: c.key, ca: c.ca }
  const port = await freePort()
  const args = ['--tls=require', `--tls-certificates=${certs}`, '--tls-verify-peer', '-r', 'file', src]
  await nbdkit(t, port, args)

  const out = path.join(dir, 'out.img')
  const r = await new NbdCopy({ source: { host: '127.0.0.1', port, export: '' }, target: out, tls }).done
  t.equal(r.size, 16 * MiB)
  t.equal(sha256(out), sha256(src), 'byte-exact over TLS')

  await t.rejects(new NbdCopy({ source: { host: '127.0.0.1', port, export: '' }, target: out }).done, {
    code: 'NBD_TLS_REQUIRED', message: `the NBD server for export '' on 127.0.0.1:${port} refused it (NBD_REP_ERR_TLS_REQD)`,
  }, 'without certificates: TLS required (restore falls back to gRPC)')
  await t.rejects(new NbdCopy({ source: { host: '127.0.0.1', port, export: '' }, target: out, tls: { ...tls, ca: c.rogueCa } }).done, {
    code: 'NBD_REFUSED', message: /: the server's TLS certificate is not trusted: .*issuer is unknown\.$/,
  }, 'a server the CA did not sign is refused')
  await t.rejects(new NbdCopy({ source: { host: '127.0.0.1', port, export: '' }, target: out, tls: { ...tls, cert: path.join(dir, 'none.pem') } }).done, {
    code: 'TLS_FILE', message: /^cannot load the TLS certificate .*none\.pem and key /,
  })

  const usock = path.join(dir, 'tls.sock')
  await nbdkit(t, usock, args)
  const u = await new NbdCopy({ source: { unix: usock, export: '' }, target: out, tls }).done
  t.equal(u.size, 16 * MiB)
  t.equal(sha256(out), sha256(src), 'a unix socket that requires TLS gets it')

  const plainPort = await freePort()
  await nbdkit(t, plainPort, ['-r', 'file', src])
  await t.rejects(new NbdCopy({ source: { host: '127.0.0.1', port: plainPort, export: '' }, target: out, tls }).done, {
    code: 'NBD_TLS_REQUIRED', message: /does not offer TLS \(NBD_REP_ERR_\w+\), which the TLS files given require$/,
  }, 'with certificates, TCP is never in the clear')
})

t.test('the copier: a server that dies in the middle of a copy is one line, not a hang', async (t) => {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src.img')
  makeImage(src, 64 * MiB, 13)
  const sock = path.join(dir, 'slow.sock')
  const server = await nbdkit(t, sock, ['-r', '--filter=delay', 'file', src, 'rdelay=20ms'])
  const copy = new NbdCopy({ source: { unix: sock, export: '' }, target: path.join(dir, 'o.img'), connections: 2, requests: 4 })
  await waitFor(() => copy.progress().done > 0, 'the copy under way')
  server.proc.kill('SIGKILL')
  // Whichever side notices first: a reply cut short, or the next READ sent into a closed socket.
  await t.rejects(copy.done, {
    code: 'NBD_ERROR',
    message: /^((short read: )?the NBD server for export '' on .*slow\.sock (failed while replying: |sent \d+ of \d+ bytes of a READ .*\()(the server closed the connection|Connection reset by peer \(ECONNRESET\))|sending a READ to the NBD server for export '' on .*slow\.sock: (Broken pipe \(EPIPE\)|Connection reset by peer \(ECONNRESET\)))/,
  })
})

t.test('the copier: cancel stops a copy that is waiting on a slow server', async (t) => {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src.img')
  makeImage(src, 64 * MiB, 9)
  const sock = path.join(dir, 'slow.sock')
  await nbdkit(t, sock, ['-r', '--filter=delay', 'file', src, 'rdelay=1'])
  const copy = new NbdCopy({ source: { unix: sock, export: '' }, target: path.join(dir, 'o.img'), connections: 2, requests: 2 })
  await waitFor(() => copy.progress().size > 0, 'the copy connected')
  copy.cancel()
  await t.rejects(copy.done, { code: 'COPY_CANCELLED', message: 'the copy was cancelled' })
  t.ok(copy.progress().done < 64 * MiB, 'it stopped before the end')
})

// ---- tidemark restore through a real agent and appliance

/** Whether this build's appliance serves NBD itself (`appliance --nbd`). */
async function applianceServesNbd(): Promise<boolean> {
  const r = await run(process.execPath, [BIN, 'appliance', '--help'])
  return /--nbd /.test(r.stdout)
}

/** The volume with data written (qemu-io through the agent) and replicated: the seq that holds it. */
async function writtenVolume(t: Test, dir: string, applianceExtra: string[]) {
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 24 * MiB, seed: null, applianceExtra })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0xa5 9M 4k', '-c', 'write -P 0x11 20M 64k', '-c', 'flush', uri])
  const seq = await replicatedSeq(agent, app, 'vol')
  return { img, app, agent, seq }
}

t.test('restore without an appliance NBD endpoint falls back to gRPC, byte-exact', async (t) => {
  const dir = tmpdir(t)
  const { img, app, seq } = await writtenVolume(t, dir, [])
  const out = path.join(dir, 'grpc.img')
  const r = await restore(app.address, 'vol', seq, out)
  t.equal(r.transport, 'grpc')
  t.match(r.nbdSkipped, /does not serve NBD|serves no NBD endpoint/)
  t.equal(sha256(out), sha256(img), 'the restore equals the volume')

  const forced = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', String(seq), '--out', path.join(dir, 'x.img'), '--transport', 'nbd'])
  t.equal(forced.code, 1)
  t.match(forced.stderr, /^tidemark restore: --transport nbd, but the appliance (does not serve NBD|serves no NBD endpoint)/)
  t.equal(forced.stderr.trim().split('\n').length, 1, 'one line')
  t.notOk(fs.existsSync(path.join(dir, 'x.img.partial')))

  const dev = await junkDevice(t, dir, 24 * MiB, 8)
  if (dev) {
    const d = await restore(app.address, 'vol', seq, dev)
    t.equal(d.target, 'device')
    t.equal(sha256(dev), sha256(img), 'a block device holds the point, the gaps between extents zeroed')
  }

  // into an NBD target over gRPC: the gaps between extents are zeroed too
  const tsock = path.join(dir, 'target.sock')
  await nbdkit(t, tsock, ['memory', String(24 * MiB)])
  const junk = path.join(dir, 'junk.img')
  makeImage(junk, 24 * MiB, 4)
  await must('nbdcopy', [junk, nbdUri(tsock, '')])
  const n = await restore(app.address, 'vol', seq, nbdUri(tsock, ''))
  t.equal(n.target, 'nbd')
  const back = path.join(dir, 'back.img')
  await must('nbdcopy', [nbdUri(tsock, ''), back])
  t.equal(sha256(back), sha256(img), 'the NBD target holds the point')
})

/** A written volume on an appliance serving NBD on a unix socket; null (the test planned empty) without --nbd. */
async function nbdAppliance(t: Test) {
  if (!(await applianceServesNbd())) {
    t.plan(0, 'this build of the appliance has no --nbd (issue 9 item 1)')
    return null
  }
  const dir = tmpdir(t)
  const asock = path.join(dir, 'appliance-nbd.sock')
  return { dir, asock, ...(await writtenVolume(t, dir, ['--nbd', `unix:${asock}`])) }
}

t.test('restore through the appliance NBD endpoint', async (t) => {
  const s = await nbdAppliance(t)
  if (!s) return
  const { dir, asock, img, app, seq } = s

  const fast = path.join(dir, 'fast.img')
  const r = await restore(app.address, 'vol', seq, fast)
  t.equal(r.transport, 'nbd', 'the NBD endpoint was taken')
  t.match(r.source, new RegExp(`export 'vol@seq=${seq}' on .*appliance-nbd\\.sock`))
  t.equal(r.serverCopy, true, 'on its own host the appliance copied the point into the file itself')
  const slow = path.join(dir, 'slow.img')
  const g = await restore(app.address, 'vol', seq, slow, ['--transport', 'grpc'])
  t.equal(g.transport, 'grpc')
  t.equal(sha256(fast), sha256(slow), 'the fast path equals the gRPC path')
  t.equal(sha256(fast), sha256(img), 'and the volume')
  t.equal(r.dataBytes, 3 * MiB + 4096 + 64 * 1024, 'only the data was written')
  t.ok(allocated(fast) < 4 * MiB, `zero blocks are holes (${allocated(fast)} bytes allocated)`)

  // straight into an NBD target
  const tsock = path.join(dir, 'target.sock')
  await nbdkit(t, tsock, ['memory', String(24 * MiB)])
  const n = await restore(app.address, 'vol', seq, nbdUri(tsock, ''))
  t.equal(n.transport, 'nbd')
  t.equal(n.target, 'nbd')
  const back = path.join(dir, 'back.img')
  await must('nbdcopy', [nbdUri(tsock, ''), back])
  t.equal(sha256(back), sha256(img), 'the NBD target holds the point')

  // straight into a block device that held something else
  const dev = await junkDevice(t, dir, 24 * MiB, 6)
  if (dev) {
    const d = await restore(app.address, 'vol', seq, dev)
    t.equal(d.target, 'device')
    t.equal(sha256(dev), sha256(img), 'the device holds the point')
    t.equal(d.serverCopy, true, 'copied by the appliance, zero ranges zeroed over the junk')
  }

  // the target's directory is missing: one line, nothing left behind
  const bad = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', String(seq), '--out', path.join(dir, 'nodir', 'x.img')])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /^tidemark restore: cannot open .*nodir\/x\.img\.partial for writing: No such file or directory \(ENOENT\)\n$/)

  // an endpoint that is not reachable from here: gRPC, saying why
  fs.renameSync(asock, `${asock}.aside`)
  const moved = await restore(app.address, 'vol', seq, path.join(dir, 'moved.img'))
  t.equal(moved.transport, 'grpc')
  t.match(moved.nbdSkipped, /NBD endpoint \(.*appliance-nbd\.sock\) is not reachable from this host/)
  // a socket file nobody listens on: the connection is refused, gRPC again
  await must('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', asock])
  const stale = await restore(app.address, 'vol', seq, path.join(dir, 'stale.img'))
  t.equal(stale.transport, 'grpc')
  t.match(stale.nbdSkipped, /^cannot connect to the NBD server for export 'vol@seq=\d+' on .*: Connection refused \(ECONNREFUSED\)$/)
  t.equal(sha256(path.join(dir, 'stale.img')), sha256(img))
  fs.rmSync(asock)
  fs.renameSync(`${asock}.aside`, asock)

  const isDir = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', String(seq), '--out', dir])
  t.equal(isDir.code, 1)
  t.equal(isDir.stderr, `tidemark restore: --out ${dir} is neither a regular file nor a block device\n`)

  // the appliance's NBD server refuses a point it cannot serve, with its reason
  const refused = await new NbdCopy({ source: { unix: asock, export: 'nosuch@latest' }, target: path.join(dir, 'r.img') }).done.catch((e: Error & { code: string }) => e)
  t.equal((refused as { code: string }).code, 'NBD_REFUSED')
  t.match((refused as Error).message, /refused it \(NBD_REP_ERR_\w+\): .*nosuch/)
})

t.test('the appliance copies a point into a file handed over its unix socket (NBD_OPT_TIDEMARK_COPY); every refusal names its cause', async (t) => {
  const s = await nbdAppliance(t)
  if (!s) return
  const { dir, asock, img, app, seq } = s
  const size = 24 * MiB
  const target = path.join(dir, 'copy.img')
  fs.writeFileSync(target, '')
  fs.truncateSync(target, size)
  const small = path.join(dir, 'small.img')
  fs.writeFileSync(small, '')
  fs.truncateSync(small, MiB)
  const name = `vol@seq=${seq}`
  type Reply = { type: string; name?: string; text?: string; status?: number; dataBytes?: number; zeroBytes?: number }
  const option = async (ops: Array<Record<string, unknown>>): Promise<Reply[][]> =>
    JSON.parse(await must('python3', [path.join(__dirname, 'lib', 'nbd-copy-option.py'), JSON.stringify({ socket: asock, ops })]))

  // Two ranges on one connection, the way the copier asks for them.
  const ok = await option([
    { export: name, offset: 0, length: 16 * MiB, fd: 'rw', path: target },
    { export: name, offset: 16 * MiB, length: 8 * MiB, fd: 'rw', path: target },
  ])
  for (const r of ok) t.same(r.map((x) => [x.type, x.status]), [['copied', 0], ['ack', undefined]], 'a range copied, then acknowledged')
  t.equal(sha256(target), sha256(img), 'the file holds the point')
  t.equal(ok[0][0].dataBytes! + ok[1][0].dataBytes!, 3 * MiB + 4096 + 64 * 1024, 'only the data was copied')
  t.equal(ok[0][0].dataBytes! + ok[0][0].zeroBytes! + ok[1][0].dataBytes! + ok[1][0].zeroBytes!, size, 'the rest was zero, left as holes')

  // Refusals: each one line, nothing written, and the connection goes on to the next.
  const before = sha256(target)
  const bad = await option([
    { export: name, offset: 0, length: MiB, fd: 'ro', path: target },
    { export: name, offset: 0, length: MiB, fd: 'append', path: target },
    { export: name, offset: 0, length: MiB, fd: 'none' },
    { export: name, offset: 100, length: 512, fd: 'rw', path: target },
    { export: name, offset: 0, length: size + 512, fd: 'rw', path: target },
    { export: name, offset: 0, length: 2 * MiB, fd: 'rw', path: small },
    { export: name, offset: 0, length: MiB, flags: 2, fd: 'rw', path: target },
    { export: 'nosuch@latest', offset: 0, length: MiB, fd: 'rw', path: target },
    { export: name, offset: 0, length: MiB, fd: 'pipe' },
  ])
  const refusal = (i: number) => `${bad[i][0].name}: ${bad[i][0].text}`
  t.ok(bad.every((r) => r.length === 1 && r[0].type === 'err'), 'every bad option is refused before anything is copied')
  t.match(refusal(0), /^INVALID: the descriptor passed is not open for positioned writes$/)
  t.match(refusal(1), /^INVALID: the descriptor passed is not open for positioned writes$/)
  t.match(refusal(2), /^INVALID: no file descriptor came with TIDEMARK_COPY \(it is passed over a unix socket\)$/)
  t.match(refusal(3), /^INVALID: TIDEMARK_COPY of 512 bytes at 100 is not whole sectors inside/)
  t.match(refusal(4), new RegExp(`^INVALID: TIDEMARK_COPY of ${size + 512} bytes at 0 is not whole sectors inside both the export's ${size} bytes`))
  t.match(refusal(5), /^INVALID: TIDEMARK_COPY of 2097152 bytes at 0 is not whole sectors inside both the export's \d+ bytes and the target's 1048576$/)
  t.match(refusal(6), /^INVALID: TIDEMARK_COPY has unknown flags 0x2$/)
  t.match(refusal(7), /nosuch/)
  t.match(refusal(8), /^INVALID: the descriptor passed is neither a regular file nor a block device$/)
  t.equal(sha256(target), before, 'the refusals changed nothing')
  t.equal(fs.statSync(small).size, MiB, 'nor the file that was too small')

  // A writable view is not the point's files: the server says so and the copier reads it instead.
  await must(process.execPath, [BIN, 'timeview', 'create', '--appliance', app.address, '--volume', 'vol', '--seq', String(seq), '--writable', '--name', 'scratch'])
  const view = await option([{ export: 'scratch', offset: 0, length: MiB, fd: 'rw', path: target }])
  t.match(`${view[0][0].name}: ${view[0][0].text}`, /^UNSUP: export 'scratch' is not copied by the server: read it$/)
  const read = await new NbdCopy({ source: { unix: asock, export: 'scratch' }, target: path.join(dir, 'view.img') }).done
  t.equal(read.serverCopy, false, 'the copier read the view')
  t.match(read.serverCopySkipped, /refused to copy it \(NBD_REP_ERR_UNSUP\): export 'scratch' is not copied by the server/)
  t.equal(sha256(path.join(dir, 'view.img')), sha256(img), 'and it holds the point')
  const copied = await new NbdCopy({ source: { unix: asock, export: name }, target: path.join(dir, 'c.img'), serverCopyConnections: 3 }).done
  t.equal(copied.serverCopy, true)
  t.equal(sha256(path.join(dir, 'c.img')), sha256(img), 'three connections copying ranges')

  // A target that fills up: the target's failure, one line, nothing left behind.
  const mnt = await tinyFs(t, dir)
  if (mnt) {
    const full = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', String(seq), '--out', path.join(mnt, 'x.img')])
    t.equal(full.code, 1)
    t.match(full.stderr, /^tidemark restore: the NBD server for export 'vol@seq=\d+' on .* could not copy \d+ bytes at \d+: writing the target at \d+: No space left on device\n$/)
    t.same(fs.readdirSync(mnt).filter((f) => f !== 'lost+found'), [], 'the partial file was removed')
  }
})

t.test('restore through the appliance NBD endpoint over TCP', async (t) => {
  if (!(await applianceServesNbd())) {
    t.plan(0, 'this build of the appliance has no --nbd (issue 9 item 1)')
    return
  }
  const dir = tmpdir(t)
  const { img, app, seq } = await writtenVolume(t, dir, ['--nbd', 'tcp:127.0.0.1:0'])
  const out = path.join(dir, 'tcp.img')
  const r = await restore(app.address, 'vol', seq, out)
  t.equal(r.transport, 'nbd')
  t.match(r.source, new RegExp(`^export 'vol@seq=${seq}' on 127\\.0\\.0\\.1:\\d+$`))
  t.equal(sha256(out), sha256(img), 'byte-exact over TCP')
})

t.test('restore from an appliance that requires NBD TLS: the same certificates as gRPC', { skip: !have('openssl') && 'needs openssl' }, async (t) => {
  if (!(await applianceServesNbd())) {
    t.plan(0, 'this build of the appliance has no --nbd (issue 9 item 1)')
    return
  }
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'reader'])
  const img = path.join(dir, 'prod.img')
  makeImage(img, 8 * MiB, 12)
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: ['--nbd', 'tcp:127.0.0.1:0', ...tlsArgs(pki, 'appliance'), '--allow', 'agent=vol', '--allow', 'reader=read:vol'],
  })
  const address = `localhost:${app.port}`
  const sock = path.join(dir, 'tap.sock')
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', address, ...tlsArgs(pki, 'agent')] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 2M 1M', '-c', 'flush', nbdUri(sock, 'vol')])
  const stats = async (): Promise<{ fullSyncDone: boolean; durableSeq: number; lastSeq?: number }> => {
    const r = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--volume', 'vol', '--json', ...tlsArgs(pki, 'reader')])
    return r.code === 0 ? JSON.parse(r.stdout).volumes[0] : { fullSyncDone: false, durableSeq: 0 }
  }
  await waitFor(async () => (await stats()).fullSyncDone, 'the initial copy', 120_000, 100)
  const seq = (await stats()).durableSeq
  const fast = path.join(dir, 'fast.img')
  const r = await restore(address, 'vol', seq, fast, tlsArgs(pki, 'reader'))
  t.equal(r.transport, 'nbd', 'NBD over TLS was taken')
  t.match(r.source, /on 127\.0\.0\.1:\d+$/, 'its TCP endpoint, the server certificate checked against that address')
  const slow = path.join(dir, 'slow.img')
  const g = await restore(address, 'vol', seq, slow, [...tlsArgs(pki, 'reader'), '--transport', 'grpc'])
  t.equal(g.transport, 'grpc')
  t.equal(sha256(fast), sha256(slow), 'the NBD TLS restore equals the gRPC one')
})
