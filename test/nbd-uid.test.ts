// The appliance's NBD unix socket identifies clients by uid (native
// SO_PEERCRED, "uid:N" in the allow-list) when there is an allow-list and no
// TLS: real nbdinfo and nbdcopy clients run as other users with setpriv; a
// uid with read on the volume reads it byte-exact, others are refused with
// the reason and list nothing of it. The socket is 0666 (the allow-list
// decides) and removed at stop.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makeImage, must, nbdUri, otherUsersCannotRun, run, runAsUid, sha256, startAgent, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024
const needs = otherUsersCannotRun() || (!have('nbdinfo') || !have('qemu-io') ? 'needs nbdinfo and qemu-io' : false)

t.test('NBD clients on the unix socket are their uid', { skip: needs }, async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o711) // other users may reach the sockets; the allow-list decides what they may do
  const grpcSock = path.join(dir, 'grpc.sock')
  const nbdSock = path.join(dir, 'nbd.sock')
  const proc = spawn(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'data'), '--listen', `unix:${grpcSock}`, '--nbd', `unix:${nbdSock}`,
    '--stats-interval', '0', '--allow', 'uid:0=write:vol,read:vol', '--allow', 'uid:65534=read:elsewhere'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  let out = ''
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  t.teardown(async () => {
    if (proc.exitCode === null) proc.kill('SIGTERM')
    await exited
  })
  await waitFor(() => /serving NBD on unix:/.test(err) || proc.exitCode !== null, 'the appliance to serve NBD')
  t.match(err, `serving NBD on unix:${nbdSock}`, `started with --allow, --nbd unix: and no TLS (${err.trim()})`)
  const st = fs.lstatSync(nbdSock)
  t.ok(st.isSocket(), 'the NBD socket is in place')
  t.equal(st.mode & 0o777, 0o666, 'anyone may connect: the allow-list decides what each uid may open')
  t.same(fs.readdirSync(dir).filter((n) => n.startsWith('.tidemark-sock-')), [], 'the 0700 directory it was bound in is gone')

  // uid 0 (write:vol) replicates over the unix listener.
  const img = path.join(dir, 'prod.img')
  makeImage(img, 4 * MiB, 9)
  const sock = path.join(dir, 'tap.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', `unix:${grpcSock}`] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 1M 64k', '-c', 'flush', nbdUri(sock, 'vol')])
  const copied = async (): Promise<boolean> => {
    const r = await run(process.execPath, [BIN, 'stats', '--appliance', `unix:${grpcSock}`, '--volume', 'vol', '--json'])
    return r.code === 0 && JSON.parse(r.stdout).volumes[0].fullSyncDone
  }
  await waitFor(copied, 'the initial copy', 60_000, 100)
  t.equal(await agent.stop(), 0, 'the agent drained and stopped')

  const as = (uid: number, cmd: string, args: string[]) =>
    // LIBNBD_DEBUG: nbdinfo then prints the server's reason for a refusal.
    runAsUid(uid, cmd, args, ['LIBNBD_DEBUG=1'])
  const uri = `nbd+unix:///vol@latest?socket=${nbdSock}`
  const root = await run('nbdinfo', [uri])
  t.equal(root.code, 0, `uid 0 (read:vol) opens vol@latest (${root.stderr.trim()})`)
  if (have('nbdcopy')) {
    const outDir = path.join(dir, 'out')
    fs.mkdirSync(outDir)
    await must('nbdcopy', [uri, path.join(outDir, 'vol.img')])
    t.equal(sha256(path.join(outDir, 'vol.img')), sha256(img), 'and reads it byte-exact')
  }
  const other = await as(65534, 'nbdinfo', [uri])
  t.not(other.code, 0, 'uid 65534 (read on another volume) may not open vol')
  t.match(other.stderr, /local user uid:65534 may not read volume vol \(NbdExport needs role read\)/, 'refused with the reason')
  const list = await as(65534, 'nbdinfo', ['--list', `nbd+unix:///?socket=${nbdSock}`])
  t.notMatch(list.stdout, /export="vol/, 'and lists nothing of it')
  const stranger = await as(65533, 'nbdinfo', [uri])
  t.match(stranger.stderr, /local user uid:65533 may not read volume vol/, 'an unlisted uid is refused too')
  t.ok(out.includes('NBD clients on the unix socket are identified by uid'), 'the appliance says how it identifies NBD clients')

  proc.kill('SIGTERM')
  await exited
  t.notOk(fs.existsSync(nbdSock), 'the socket is removed at stop')
})
