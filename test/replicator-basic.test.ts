// The agent's replication side through real processes: `tidemark agent
// --appliance` and `tidemark appliance` started as the CLI starts them,
// qemu-io writing through the agent's NBD socket, `tidemark restore`
// bringing the image back. Each test ends with a byte-exact comparison.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t from 'tap'
import { AgentProcess, BIN, makeImage, must, nbdUri, restore, run, sha256, sleep, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

/** startAgent, logging stats every 200 ms (startAgent turns them off). */
async function startAgentWithStats(t: { teardown(fn: () => unknown): void }, state: string, sock: string, volumes: Record<string, string>, extra: string[]): Promise<AgentProcess> {
  const argv = [BIN, 'agent', '--state', state, '--nbd', `unix:${sock}`, '--stats-interval', '0.2', ...extra]
  for (const [n, p] of Object.entries(volumes)) argv.push('--volume', `${n}=${p}`)
  const a = new AgentProcess(spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] }), sock)
  t.teardown(() => a.stop())
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const c = net.connect(sock, () => {
        c.destroy()
        resolve(true)
      })
      c.on('error', () => resolve(false))
    })
    if (up) return a
    if (a.proc.exitCode !== null || i > 1000) throw new Error(`agent did not start:\n${a.out}\n${a.err}`)
    await sleep(30)
  }
}

/** The agent's newest stats line for a volume (the agent logs one every --stats-interval when its counts changed). */
async function agentStats(a: AgentProcess, volume: string): Promise<Record<string, number>> {
  for (let i = 0; i < 100; i++) {
    const l = a.logs().filter((x) => x.msg === 'stats' && x.volume === volume).pop()
    if (l) return l as Record<string, number>
    await sleep(100)
  }
  throw new Error(`no stats line for ${volume}:\n${a.out}`)
}

/** Waits until the agent's newest stats line satisfies `ok`. */
async function until(a: AgentProcess, volume: string, ok: (s: Record<string, number>) => boolean, what: string, ms = 60_000): Promise<Record<string, number>> {
  const end = Date.now() + ms
  for (;;) {
    const s = await agentStats(a, volume)
    if (ok(s)) return s
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms; last stats ${JSON.stringify(s)}`)
    await sleep(200)
  }
}

t.test('writes, trims and zeroes replicate byte-exact; MicroScan sends only changed sectors', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 32 * MiB, null)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgentWithStats(t, path.join(dir, 'state'), sock, { vol: img }, ['--appliance', app.address])
  const uri = nbdUri(sock, 'vol')
  await agent.waitForLog(/initial copy complete/)
  // The newest line that shows the copy complete (the agent logs a line only when its counts change).
  const copied = await until(agent, 'vol', (s) => (s.syncProgress as unknown as { complete: boolean } | null)?.complete === true, 'a stats line after the initial copy')
  t.equal(copied.changedBytes, 0, 'the initial copy of an all-zero volume sends no sector data')

  // 4 MiB of 32 KiB blocks, then each block rewritten with one sector changed.
  const cmds: string[] = []
  for (let off = 0; off < 4 * MiB; off += 32 * 1024) cmds.push('-c', `write -P 0x11 ${off} 32k`)
  await must('qemu-io', ['-f', 'raw', ...cmds, '-c', 'flush', uri])
  const first = await until(agent, 'vol', (s) => s.appBytes >= 4 * MiB && s.durableSeq >= s.lastSeq, 'the first pass is acknowledged')
  const rw: string[] = []
  for (let off = 0; off < 4 * MiB; off += 32 * 1024) {
    rw.push('-c', `write -P 0x11 ${off} 32k`, '-c', `write -P 0x22 ${off + 4096} 512`)
  }
  await must('qemu-io', ['-f', 'raw', ...rw, '-c', 'flush', uri])
  const second = await until(agent, 'vol', (s) => s.appBytes >= first.appBytes + 4 * MiB + 64 * 1024 && s.durableSeq >= s.lastSeq, 'the rewrite is acknowledged')
  const app2 = second.appBytes - first.appBytes
  const changed = second.changedBytes - first.changedBytes
  const wire = second.wireBytes - first.wireBytes
  t.ok(changed <= 128 * 512, `the unchanged 32 KiB rewrites cost nothing; the 128 changed sectors are sent (${changed} bytes)`)
  t.ok(wire * 40 <= app2, `wire bytes (${wire}) are at most 1/40 of application bytes (${app2})`)

  // Trims and zeroes, unaligned writes, a write larger than one record.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 12345 77777', '-c', 'discard 1M 1M', '-c', 'write -z 3M 512k',
    '-c', 'write -P 0x33 8M 3M', '-c', 'write -z 33000 1000', '-c', 'flush', uri])
  t.equal(await agent.stop(), 0, 'the agent drains and stops cleanly')
  const final = agent.logs().filter((l) => l.msg === 'final stats').pop()!
  t.ok((final.wireBytes as number) > 0 && (final.batches as number) > 0, 'the final stats count batches and wire bytes')
  const out = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', 'latest', out)
  t.equal(sha256(out), sha256(img), 'the restored image equals the protected volume')
})

t.test('an initial copy killed half way resumes where it stopped, and ends byte-exact', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  const size = 64 * MiB
  makeImage(img, size, 17)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const state = path.join(dir, 'state')
  // Random data does not compress: at 8 MB/s the copy takes about 8 s.
  const slow = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--throttle', '8'] })
  const syncFile = path.join(state, 'vol.sync')
  let next = 0
  for (let i = 0; next < 400; i++) {
    if (i > 600) throw new Error(`the copy did not get far: ${slow.out}`)
    await sleep(50)
    try {
      next = JSON.parse(fs.readFileSync(syncFile, 'utf8')).nextRegion
    } catch {
      next = 0
    }
  }
  // Writes during the copy must survive the crash too.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 100k 8k', '-c', 'write -P 0x78 60M 8k', uri(sock)])
  await slow.kill9()
  const saved = JSON.parse(fs.readFileSync(syncFile, 'utf8'))
  t.ok(saved.nextRegion >= 400 && saved.nextRegion < 1024, `the copy got to region ${saved.nextRegion} of 1024 before the crash`)
  t.notOk(app.logs().some((l) => /initial copy complete/.test(String(l.msg))), 'the appliance does not hold a complete copy yet')

  const again = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', app.address] })
  const resumed = await again.waitForLog(/initial copy: resuming/)
  t.ok((resumed.fromRegion as number) >= saved.nextRegion, `resumed at region ${resumed.fromRegion}, not at zero`)
  await app.waitForLog(/initial copy complete/, 120_000)
  t.equal(await again.stop(), 0)
  const final = again.logs().filter((l) => l.msg === 'final stats').pop()!
  t.ok((final.changedBytes as number) < size * 0.75, `the second run sent ${final.changedBytes} bytes, not the whole ${size}`)
  t.notOk(fs.existsSync(syncFile) && JSON.parse(fs.readFileSync(syncFile, 'utf8')).nextRegion < 1024, 'no unfinished copy is left in the state')
  const out = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', 'latest', out)
  t.equal(sha256(out), sha256(img), 'byte-exact after the resumed copy')
})

t.test('--throttle caps data on the wire', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 16 * MiB, 23)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const sock = path.join(dir, 'nbd.sock')
  const started = Date.now()
  const agent = await startAgent(t, {
    state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--throttle', '4', '--stats-interval', '1'],
  })
  await app.waitForLog(/initial copy complete/, 60_000)
  const secs = (Date.now() - started) / 1000
  // 16 MiB of random data at 4 MB/s: at least 3.5 s after the first quarter-second burst.
  t.ok(secs >= 3.5, `16 MiB of incompressible data took ${secs.toFixed(1)} s at 4 MB/s`)
  t.equal(await agent.stop(), 0)
  // The bound above alone is passed by a busy machine with the throttle
  // broken. The token bucket's own accounting is not: a busy machine sends
  // less, never more, so at every stats line (one a second, with its time)
  // the bytes on the wire so far are at most the burst (a quarter second)
  // plus the rate times the time since the agent started.
  const rate = 4e6
  const burst = rate / 4
  const lines = agent.logs().filter((l) => (l.msg === 'stats' || l.msg === 'final stats') && l.volume === 'vol' && typeof l.wireBytes === 'number')
  const over = lines
    .map((l) => ({ ms: (l.time as number) - started, wire: l.wireBytes as number }))
    .filter((l) => l.wire > burst + (rate * l.ms) / 1000 + 64 * 1024)
  t.same(over, [], `no stats line shows more on the wire than ${burst} + ${rate} bytes/s since the start (${lines.length} lines)`)
  const during = lines.filter((l) => (l.wireBytes as number) > 0 && (l.wireBytes as number) < 15 * MiB)
  t.ok(during.length >= 2, `${during.length} stats lines were taken during the copy, so the bound was checked while data flowed`)
  const final = lines.filter((l) => l.msg === 'final stats').pop()
  t.ok(final && (final.wireBytes as number) >= 15 * MiB, `the whole volume went on the wire (${final?.wireBytes} bytes)`)
})

t.test('bad replication settings are one clear line and exit 2', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'v.img')
  makeImage(img, MiB, null)
  const base = ['agent', '--state', dir, '--nbd', `unix:${path.join(dir, 's')}`, '--volume', `v=${img}`]
  const cases: Array<[string[], RegExp]> = [
    [['--appliance', '127.0.0.1:99999'], /must be HOST:PORT/],
    [['--appliance', '127.0.0.1:1', '--throttle', 'fast'], /--throttle 'fast' is not a positive number/],
    [['--appliance', '127.0.0.1:1', '--throttle', '0'], /--throttle '0' is not a positive number/],
    [['--appliance', '127.0.0.1:1', '--memory', '64K'], /--memory 64K is less than/],
    [['--appliance', '127.0.0.1:1', '--fingerprint-cache', 'lots'], /--fingerprint-cache 'lots' is not a size/],
    [['--appliance', '127.0.0.1:1', '--tls-cert', img], /go together/],
    [['--appliance', '127.0.0.1:1', '--capture-log', dir], /one or the other/],
    [['--throttle', '5'], /--throttle needs --appliance/],
    [['--no-microscan'], /--no-microscan needs --appliance/],
  ]
  for (const [extra, re] of cases) {
    const r = await run(process.execPath, [BIN, ...base, ...extra])
    t.equal(r.code, 2, `${extra.join(' ')}: exit 2`)
    t.match(r.stderr, re, `${extra.join(' ')}: ${r.stderr.trim()}`)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
  const help = await run(process.execPath, [BIN, 'agent', '--help'])
  for (const flag of ['--appliance', '--throttle', '--memory', '--fingerprint-cache', '--agent-id', '--tls-cert']) t.match(help.stdout, flag)
})

function uri(sock: string): string {
  return nbdUri(sock, 'vol')
}
