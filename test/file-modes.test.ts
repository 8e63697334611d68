// File modes and planted paths, through real processes started under umask
// 022 (the usual shell default, under which files would be world-readable):
// every file and directory the appliance, the agent and restore create is
// owner-only, sockets included, while they run and after; a regular file or
// a symbolic link planted at a socket path or at restore's FILE.partial is
// refused with one line and left exactly as it was; a stale socket (its
// agent killed) is replaced.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t from 'tap'
import { BIN, makeImage, must, nbdUri, run, sha256, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

// Children inherit the umask: every process below starts under 022.
process.umask(0o022)

/** Every path under `root` (root included) whose mode lets the group or others in, with its mode. */
function exposed(root: string): string[] {
  const out: string[] = []
  const walk = (p: string): void => {
    const st = fs.lstatSync(p)
    // A symbolic link's own mode is always 0777 and means nothing.
    if (!st.isSymbolicLink() && (st.mode & 0o077) !== 0) out.push(`${path.relative(root, p) || '.'} ${(st.mode & 0o777).toString(8)}`)
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n))
  }
  walk(root)
  return out
}

/** What lstat sees at `p`, and what a regular file holds: to say it is untouched. */
function snapshot(p: string): string {
  const st = fs.lstatSync(p)
  if (st.isSymbolicLink()) return `link -> ${fs.readlinkSync(p)}`
  return `file ${st.ino} ${fs.readFileSync(p, 'utf8')}`
}

/** An agent that must refuse to start: its exit code and stderr. */
async function refusedAgent(dir: string, sock: string, img: string, extra: string[] = []): Promise<{ code: number | null; stderr: string }> {
  return run(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', `unix:${sock}`, '--volume', `v=${img}`, '--stats-interval', '0', ...extra])
}

t.test('under umask 022, nothing the appliance, the agent or restore creates is readable by others', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 8 * MiB, 3)
  const data = path.join(dir, 'data')
  const run1 = path.join(dir, 'run') // created by the agent (the socket's directory)
  const state = path.join(dir, 'state')
  const appSock = path.join(dir, 'app', 'nbd.sock')
  fs.mkdirSync(path.dirname(appSock))
  fs.chmodSync(path.dirname(appSock), 0o755)
  const app = await startAppliance(t, { data, extra: ['--nbd', `unix:${appSock}`] })
  const sock = path.join(run1, 'nbd.sock')
  const control = path.join(run1, 'control.sock')
  const agent = await startAgent(t, {
    state,
    sock,
    volumes: { vol: img },
    extra: ['--appliance', app.address, '--control', `unix:${control}`],
  })
  await app.waitForLog(/initial copy complete/, 120_000)
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7e 1M 64k', '-c', 'flush', nbdUri(sock, 'vol')])
  const mark = JSON.parse(await must(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'm', '--json']))
  const outDir = path.join(dir, 'out')
  fs.mkdirSync(outDir)
  // Both ways a file is restored: the native NBD copy and the gRPC stream.
  const viaNbd = path.join(outDir, 'nbd.img')
  const viaGrpc = path.join(outDir, 'grpc.img')
  await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--timemark', String(mark.id), '--out', viaNbd, '--transport', 'nbd'])
  await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--timemark', String(mark.id), '--out', viaGrpc, '--transport', 'grpc'])
  t.equal(sha256(viaNbd), sha256(viaGrpc), 'both restores hold the same bytes')

  // While everything runs: sockets, maps and open segments included.
  for (const s of [sock, control, appSock]) {
    const st = fs.lstatSync(s)
    t.ok(st.isSocket() && (st.mode & 0o777) === 0o600, `${path.basename(path.dirname(s))}/${path.basename(s)} is a socket, mode 0600`)
  }
  for (const [what, root] of [['the appliance data directory', data], ['the agent state directory', state], ["the agent's socket directory", run1]] as const) {
    t.same(exposed(root), [], `${what}: nothing open to group or others while running`)
  }
  t.same(exposed(appSock), [], "the appliance's NBD socket is 0600 (in a directory anyone may enter)")
  t.same([...exposed(viaNbd), ...exposed(viaGrpc)], [], 'restored files are 0600')

  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
  t.equal(await app.stop(), 0, 'the appliance stops cleanly')
  for (const [what, root] of [['the appliance data directory', data], ['the agent state directory', state], ["the agent's socket directory", run1]] as const) {
    t.same(exposed(root), [], `${what}: nothing open to group or others after the run`)
  }
})

t.test('a regular file or a symbolic link at a socket path is refused and left alone; a stale socket is replaced', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 4 * MiB, null)
  const victim = path.join(dir, 'victim.txt')
  fs.writeFileSync(victim, 'keep me\n')
  const sock = path.join(dir, 'nbd.sock')

  fs.writeFileSync(sock, 'not a socket\n')
  const before = snapshot(sock)
  let r = await refusedAgent(dir, sock, img)
  t.equal(r.code, 1, 'the agent refuses a regular file at its NBD socket path')
  t.match(r.stderr, /^tidemark agent: the NBD socket path .*nbd\.sock exists and is a regular file: refusing to replace it/, 'and says so')
  t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
  t.equal(snapshot(sock), before, 'the file survives as it was')

  fs.rmSync(sock)
  fs.symlinkSync(victim, sock)
  r = await refusedAgent(dir, sock, img)
  t.equal(r.code, 1, 'the agent refuses a symbolic link at its NBD socket path')
  t.match(r.stderr, /^tidemark agent: the NBD socket path .*nbd\.sock exists and is a symbolic link: refusing to replace it/, 'and says so')
  t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
  t.equal(snapshot(sock), `link -> ${victim}`, 'the link survives')
  t.equal(fs.readFileSync(victim, 'utf8'), 'keep me\n', 'and so does what it names')
  fs.rmSync(sock)

  // The control socket: the same rules.
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const control = path.join(dir, 'control.sock')
  fs.symlinkSync(victim, control)
  r = await refusedAgent(dir, sock, img, ['--appliance', app.address, '--control', `unix:${control}`])
  t.not(r.code, 0, 'the agent refuses a symbolic link at its control socket path')
  t.match(r.stderr, /--control .*control\.sock exists and is a symbolic link: refusing to replace it/, 'and says so')
  t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
  t.equal(snapshot(control), `link -> ${victim}`, 'the link survives')
  fs.rmSync(control)
  t.notOk(fs.existsSync(sock), 'the refused agent left no NBD socket behind')

  // A stale socket, from an agent killed with SIGKILL, is replaced.
  const a1 = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img } })
  await a1.kill9()
  t.ok(fs.lstatSync(sock).isSocket(), 'the killed agent left its socket')
  const refused = await new Promise<string>((resolve) => {
    const c = net.connect(sock)
    c.on('connect', () => resolve('connected'))
    c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
  })
  t.equal(refused, 'ECONNREFUSED', 'nobody answers on it')
  const a2 = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img } })
  t.match(await must('nbdinfo', ['--size', nbdUri(sock, 'v')]), /^4194304/, 'a new agent replaced the stale socket and serves')
  // A live socket is not taken over either.
  r = await refusedAgent(path.join(dir, 'other'), sock, img)
  t.equal(r.code, 1, 'a second agent on a live socket is refused')
  t.match(r.stderr, /is in use by another server/, 'and says why')
  t.equal(await a2.stop(), 0, 'the agent stops cleanly')
  t.notOk(fs.existsSync(sock), 'and removes its own socket')
  await app.stop()
})

t.test("restore refuses a file or a symbolic link planted at FILE.partial and leaves it as it was", async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 4 * MiB, 5)
  const appSock = path.join(dir, 'app.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--nbd', `unix:${appSock}`] })
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock: path.join(dir, 'nbd.sock'), volumes: { vol: img }, extra: ['--appliance', app.address] })
  await app.waitForLog(/initial copy complete/, 120_000)
  const victim = path.join(dir, 'victim.txt')
  fs.writeFileSync(victim, 'keep me\n')
  const out = path.join(dir, 'restored.img')
  const partial = `${out}.partial`
  for (const transport of ['nbd', 'grpc']) {
    for (const plant of ['link', 'file'] as const) {
      if (plant === 'link') fs.symlinkSync(victim, partial)
      else fs.writeFileSync(partial, 'left here\n')
      const before = snapshot(partial)
      const r = await run(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', 'latest', '--out', out, '--transport', transport])
      t.equal(r.code, 1, `${transport}: a planted ${plant} at FILE.partial fails the restore`)
      t.match(
        r.stderr,
        new RegExp(`^tidemark restore: .*restored\\.img\\.partial already exists \\(${plant === 'link' ? 'a symbolic link' : 'a file'}: .*neither followed nor overwritten; remove it and run again`),
        'with one line naming the cause'
      )
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
      t.equal(snapshot(partial), before, `the ${plant} is left as it was`)
      t.equal(fs.readFileSync(victim, 'utf8'), 'keep me\n', 'and nothing was written through it')
      t.notOk(fs.existsSync(out), 'no restored file appeared')
      fs.rmSync(partial)
    }
  }
  await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', 'latest', '--out', out])
  t.equal(sha256(out), sha256(img), 'with the path clear, the restore completes byte-exact')
  t.equal(fs.statSync(out).mode & 0o777, 0o600, 'as a 0600 file')
  await agent.stop()
  await app.stop()
})

