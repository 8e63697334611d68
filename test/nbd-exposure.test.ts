// Who can reach the agent's and a TimeView's NBD listeners, through real
// processes and real clients (nbdinfo, qemu-io, our NbdClient, raw sockets):
// TCP beyond loopback is refused without TLS unless --insecure-nbd (then a
// warning line at start); with --nbd-tls-* clients must STARTTLS with a
// certificate the CA signed; connections beyond --nbd-max-connections are
// closed at once, counted and logged once; a client that connects and says
// nothing is closed at --nbd-handshake-timeout, one that finished its
// handshake is not.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t from 'tap'
import { parseAgentArgs } from '../cli/agent-command'
import { NbdClient } from '../client/nbd-client'
import { AgentProcess, BIN, have, makeImage, makePki, must, protectedVolume, run, startTimeview, tmpdir, waitFor } from './helpers'
import { certDir } from './lib/tls-clients'

const MiB = 1024 * 1024


function nbdTlsArgs(pki: string): string[] {
  return ['--nbd-tls-cert', path.join(pki, 'server.pem'), '--nbd-tls-key', path.join(pki, 'server.key'), '--nbd-tls-ca', path.join(pki, 'ca.pem')]
}

/** An agent on a TCP NBD listener: resolves with it and the port it bound once it logs "serving". */
async function tcpAgent(t: { teardown(fn: () => unknown): void }, dir: string, img: string, nbd: string, extra: string[]): Promise<{ agent: AgentProcess; port: number }> {
  const proc = spawn(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', nbd, '--volume', `v=${img}`, ...(extra.includes('--stats-interval') ? [] : ['--stats-interval', '0']), ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const agent = new AgentProcess(proc, '')
  t.teardown(() => agent.stop())
  const serving = await waitFor(() => agent.logs().find((l) => l.msg === 'serving') ?? (proc.exitCode !== null ? { exited: proc.exitCode } : null), 'the agent to serve')
  if ('exited' in serving) throw new Error(`agent exited ${serving.exited}: ${agent.err}`)
  return { agent, port: Number(/:(\d+)$/.exec(String(serving.nbd))![1]) }
}

/** A raw connection: `greeting` resolves with the first bytes the server sent (empty if it closed first), `closed` when it is closed. */
function rawConnection(addr: { unix: string } | { port: number }): { sock: net.Socket; greeting: Promise<Buffer>; closed: Promise<number> } {
  const sock = 'unix' in addr ? net.connect(addr.unix) : net.connect(addr.port, '127.0.0.1')
  let got = Buffer.alloc(0)
  let resolveGreeting: (b: Buffer) => void = () => undefined
  const greeting = new Promise<Buffer>((r) => (resolveGreeting = r))
  sock.on('data', (d: Buffer) => {
    got = Buffer.concat([got, d])
    if (got.length >= 18) resolveGreeting(got)
  })
  sock.on('error', () => undefined)
  const closed = new Promise<number>((r) =>
    sock.on('close', () => {
      resolveGreeting(got)
      r(Date.now())
    })
  )
  return { sock, greeting, closed }
}

t.test('TCP beyond loopback without TLS is refused unless --insecure-nbd, which warns', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 2)
  for (const where of ['tcp:0.0.0.0:0', 'tcp:[::]:0', 'tcp:10.1.2.3:10809']) {
    const r = await run(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', where, '--volume', `v=${img}`])
    t.equal(r.code, 2, `agent --nbd ${where} is refused`)
    t.match(r.stderr, /^tidemark agent: --nbd tcp:.* is not a loopback address and the NBD listener has no TLS: anyone who can reach it could read and write the disk; give --nbd-tls-cert\/--nbd-tls-key\/--nbd-tls-ca, or --insecure-nbd for a lab/, 'naming the cause and the ways out')
    t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
  }
  const tv = await run(process.execPath, [BIN, 'timeview', '--appliance', '127.0.0.1:1', '--volume', 'v', '--seq', 'latest', '--nbd', 'tcp:0.0.0.0:0'])
  t.equal(tv.code, 2, 'timeview --nbd tcp:0.0.0.0:0 is refused too')
  t.match(tv.stderr, /^tidemark timeview: --nbd tcp:0\.0\.0\.0:0 is not a loopback address and the NBD listener has no TLS/, 'with the same line')
  const half = await run(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', 'tcp:0.0.0.0:0', '--volume', `v=${img}`, '--nbd-tls-cert', img])
  t.match(half.stderr, /--nbd-tls-cert, --nbd-tls-key and --nbd-tls-ca go together/, 'the TLS files go together')

  // Loopback needs nothing; --insecure-nbd opens the lab door, with a warning.
  const lo = await tcpAgent(t, path.join(dir, 'lo'), img, 'tcp:127.0.0.2:0', [])
  t.notMatch(lo.agent.err, /insecure/, 'no warning on loopback')
  await lo.agent.stop()
  const { agent, port } = await tcpAgent(t, dir, img, 'tcp:0.0.0.0:0', ['--insecure-nbd'])
  t.match(agent.err, /^tidemark agent: --insecure-nbd: NBD on tcp:0\.0\.0\.0:\d+ without TLS: anyone on the network who can reach it can read and write the disk\n/, 'the warning line at start')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 64k', '-c', 'flush', `nbd://127.0.0.1:${port}/v`])
  const back = await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0x42 0 64k', `nbd://127.0.0.1:${port}/v`])
  t.match(back, /read 65536\/65536 bytes/, 'and clients read and write')
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('with --nbd-tls-* a non-loopback listener serves only TLS clients our CA signed', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  const rogue = path.join(dir, 'rogue')
  await makePki(pki, ['server', 'client'])
  await makePki(rogue, ['client'])
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 4)
  const { agent, port } = await tcpAgent(t, dir, img, 'tcp:0.0.0.0:0', nbdTlsArgs(pki))
  t.notMatch(agent.err, /insecure/, 'no warning: TLS guards it')
  const certs = certDir(pki, 'client', path.join(dir, 'certs'))
  t.match(await must('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/v?tls-certificates=${certs}`]), /^4194304/, 'nbdinfo with a certificate the CA signed is served')
  const q = await must('qemu-io', [
    '--object', `tls-creds-x509,id=tls0,dir=${certs},endpoint=client`,
    '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=v,tls-creds=tls0`,
    '-c', 'write -P 0x24 1M 64k', '-c', 'read -P 0x24 1M 64k',
  ])
  t.match(q, /read 65536\/65536 bytes/, 'qemu-io over TLS writes and reads')
  const plain = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/v`])
  t.not(plain.code, 0, 'a client without TLS gets nothing')
  const other = await run('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/v?tls-certificates=${certDir(rogue, 'client', path.join(dir, 'rogue-certs'))}`])
  t.not(other.code, 0, 'a certificate from another CA gets nothing')
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('a TimeView on a non-loopback address serves over TLS', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['server', 'client'])
  const { app } = await protectedVolume(t, dir, { size: 4 * MiB, seed: 6 })
  const view = await startTimeview(t, ['--appliance', app.address, '--volume', 'vol', '--seq', 'latest', '--nbd', 'tcp:0.0.0.0:0', ...nbdTlsArgs(pki)])
  const port = Number(/:(\d+)$/.exec(String(view.served.nbd))![1])
  t.match(String(view.served.uri), /^nbds:\/\//, 'it says its URI is nbds://')
  const certs = certDir(pki, 'client', path.join(dir, 'certs'))
  t.match(await must('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/vol?tls-certificates=${certs}`]), /^4194304/, 'a TLS client is served')
  t.not((await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/vol`])).code, 0, 'a plain one is not')
  t.equal(await view.stop(), 0, 'the TimeView stops cleanly')
})

t.test('connections past --nbd-max-connections are closed at once, counted and logged once', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 7)
  // TCP, so that nothing but the test has connected yet (startAgent probes a unix socket).
  const { agent, port } = await tcpAgent(t, dir, img, 'tcp:127.0.0.1:0', ['--nbd-max-connections', '2', '--nbd-handshake-timeout', '600', '--stats-interval', '0.2'])
  const uri = `nbd://127.0.0.1:${port}/v`
  const held = [rawConnection({ port }), rawConnection({ port })]
  for (const h of held) t.equal((await h.greeting).length, 18, 'a connection under the cap gets the NBD greeting')
  const over = [rawConnection({ port }), rawConnection({ port })]
  for (const o of over) {
    t.equal((await o.greeting).length, 0, 'one over the cap is closed before a byte is sent')
    await o.closed
  }
  const nbdinfo = await run('nbdinfo', ['--size', uri])
  t.not(nbdinfo.code, 0, 'a real client over the cap is refused too')
  const line = await waitFor(() => agent.logs().find((l) => l.msg === 'stats' && (l.nbdListener as { refusedConnections?: number } | undefined)?.refusedConnections === 3), 'the stats line to count 3 refusals')
  t.match(line.nbdListener, { refusedConnections: 3, handshakeTimeouts: 0 }, 'every refusal is counted')
  const capLines = agent.logs().filter((l) => /connections are open \(the cap, --nbd-max-connections\)/.test(String(l.msg)))
  t.equal(capLines.length, 1, 'and logged once')
  for (const h of held) h.sock.destroy()
  await Promise.all(held.map((h) => h.closed))
  // The server notices the two closed when their threads see the end: retry until it has.
  const size = await waitFor(async () => {
    const r = await run('nbdinfo', ['--size', uri])
    return r.code === 0 ? r.stdout : null
  }, 'a client to be served once the held connections closed')
  t.match(size, /^4194304/, 'under the cap again, clients are served')
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('a client that says nothing is closed at --nbd-handshake-timeout; one that finished its handshake stays', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 8)
  const { agent, port } = await tcpAgent(t, dir, img, 'tcp:127.0.0.1:0', ['--nbd-handshake-timeout', '0.5', '--stats-interval', '0.2'])
  const client = await NbdClient.connect({ host: '127.0.0.1', port, export: 'v' })
  const t0 = Date.now()
  const silent = rawConnection({ port })
  t.equal((await silent.greeting).length, 18, 'the silent client got the greeting')
  const closedAt = await silent.closed
  t.ok(closedAt - t0 >= 450, `closed no sooner than the deadline (${closedAt - t0} ms)`)
  t.ok(closedAt - t0 < 5000, 'and not long after it')
  const line = await waitFor(() => agent.logs().find((l) => /did not finish the NBD handshake within 500 ms/.test(String(l.msg))), 'the log line')
  t.ok(line, 'the agent logs why')
  await waitFor(() => agent.logs().find((l) => (l.nbdListener as { handshakeTimeouts?: number } | undefined)?.handshakeTimeouts === 1), 'the count')
  // Connected before the silent one, so past its own deadline too: served.
  const data = await client.read(0, 4096)
  t.equal(data.length, 4096, 'a client that finished its handshake is not cut')
  await client.close()
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('the new agent options read the same from flags and from the config file', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, MiB, null)
  const pki = path.join(dir, 'pki')
  fs.mkdirSync(pki)
  for (const f of ['server.pem', 'server.key', 'ca.pem']) fs.writeFileSync(path.join(pki, f), '')
  const argv = ['--state', path.join(dir, 'state'), '--nbd', 'tcp:0.0.0.0:10809', '--volume', `v=${img}`, '--appliance', '127.0.0.1:7000',
    ...nbdTlsArgs(pki), '--insecure-nbd', '--nbd-max-connections', '5', '--nbd-handshake-timeout', '2.5', '--hook-output-in-note']
  const config = {
    state: path.join(dir, 'state'), nbd: 'tcp:0.0.0.0:10809', volumes: { v: img }, appliance: '127.0.0.1:7000',
    nbdTlsCert: path.join(pki, 'server.pem'), nbdTlsKey: path.join(pki, 'server.key'), nbdTlsCa: path.join(pki, 'ca.pem'),
    insecureNbd: true, nbdMaxConnections: 5, nbdHandshakeTimeout: 2.5, hookOutputInNote: true,
  }
  const file = path.join(dir, 'agent.json')
  fs.writeFileSync(file, JSON.stringify(config))
  const plain = (o: unknown): string => JSON.stringify(o, (k, v) => (k === 'logger' ? undefined : v))
  const fromFlags = parseAgentArgs(argv)
  t.match(fromFlags, { nbdListener: { maxConnections: 5, handshakeTimeoutMs: 2500, tls: { cert: path.join(pki, 'server.pem') } }, hookOutputInNote: true }, 'the flags as options')
  t.equal(plain(parseAgentArgs(['--config', file])), plain(fromFlags), 'the config file gives the same')
  const dflt = parseAgentArgs(['--state', path.join(dir, 'state'), '--nbd', `unix:${path.join(dir, 's')}`, '--volume', `v=${img}`])
  t.match(dflt, { nbdListener: { maxConnections: 16, handshakeTimeoutMs: 10_000 }, hookOutputInNote: false }, 'the defaults: 16 connections, 10 s')
  for (const [bad, re] of [[['--nbd-max-connections', '0'], /--nbd-max-connections '0' must be a whole number from 1 to 4096/], [['--nbd-handshake-timeout', 'x'], /--nbd-handshake-timeout 'x' must be a number of seconds/]] as const) {
    const r = await run(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', `unix:${path.join(dir, 's')}`, '--volume', `v=${img}`, ...bad])
    t.equal(r.code, 2, `${bad.join(' ')} is a usage error`)
    t.match(r.stderr, re, 'saying what is wrong')
  }
})

t.test("the appliance's NBD front closes a silent client, and its deadline does not count the server's own work", async (t) => {
  const dir = tmpdir(t)
  const appSock = path.join(dir, 'app.sock')
  const { app, img } = await protectedVolume(t, dir, { size: 16 * MiB, seed: 12, applianceExtra: ['--nbd', `unix:${appSock}`, '--nbd-handshake-timeout', '0.3'] })
  const t0 = Date.now()
  const silent = rawConnection({ unix: appSock })
  t.equal((await silent.greeting).length, 18, 'the silent client got the greeting')
  const closedAt = await silent.closed
  t.ok(closedAt - t0 >= 250 && closedAt - t0 < 5000, `and was closed at the deadline (${closedAt - t0} ms)`)
  // A restore on the appliance's host hands its file over the socket and the
  // appliance copies the point during the handshake (TIDEMARK_COPY).
  const out = path.join(dir, 'restored.img')
  const r = JSON.parse(await must(process.execPath, [BIN, 'restore', '--appliance', app.address, '--volume', 'vol', '--seq', 'latest', '--out', out, '--json']))
  t.equal(r.serverCopy, true, 'a server-side copy ran in the handshake')
  t.equal(fs.readFileSync(out).equals(fs.readFileSync(img)), true, 'and completed byte-exact')
  t.equal(await app.stop(), 0, 'the appliance stops cleanly')
})
