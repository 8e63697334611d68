// Logs a person reads: readable lines on a terminal (or with --log-format
// pretty), JSON lines into a pipe; and the periodic stats lines of an idle
// agent and appliance not repeated while nothing changes.
import { spawn } from 'node:child_process'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makeImage, must, nbdUri, ROOT, run, ServiceProcess, startAgent, startAppliance, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024
const PRETTY_LINE = /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR|DEBUG): /

t.test('into a pipe: JSON lines; --log-format pretty: one readable line per event, the last ones too', async (t) => {
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  t.ok(app.logs().some((l) => l.msg === 'appliance listening'), 'piped, the appliance logs JSON (auto)')

  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, null)
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock: path.join(dir, 'nbd.sock'), volumes: { v: img }, extra: ['--appliance', app.address, '--log-format', 'pretty'] })
  await app.waitForLog(/initial copy complete/, 60_000)
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
  const lines = agent.out.split('\n').filter((l) => l !== '')
  t.ok(lines.length > 0, 'it logged')
  t.same(lines.filter((l) => !PRETTY_LINE.test(l)), [], 'every line is a readable one: time, level, then the message')
  t.notOk(/\x1b\[/.test(agent.out), 'no colour codes where no terminal reads them')
  t.ok(lines.some((l) => /INFO: agent: serving nbd=unix:\S+nbd\.sock volumes=\[\{"name":"v"/.test(l)), 'the event first, then its fields as key=value')
  // Written before pino's call returns: the lines logged on the way out are not lost.
  t.match(lines.at(-1), /INFO: agent v: final stats mode=\w+ writes=0 .* ackedSeq=\d+ /, 'the final stats line is the last one, per volume')
})

t.test('pretty lines escape control characters: text from a hook or a peer cannot drive the terminal', async (t) => {
  const logger = path.join(ROOT, 'dist', 'cli', 'logger.js')
  const script = `const l = require(${JSON.stringify(logger)}).createLogger({ level: 'info', format: 'pretty', base: { component: 'agent' }, fd: 1 });
    l.warn({ volume: 'v', output: 'frozen\\u001b[2J', nested: { s: '\\u0007' } }, 'hook said \\u001b]0;owned\\u0007')`
  const r = await run(process.execPath, ['-e', script])
  t.equal(r.code, 0, `the logging script runs ${r.stderr}`)
  t.notOk(/[\x00-\x09\x0b-\x1f\x7f]/.test(r.stdout), 'no control character but the newline reaches the output')
  t.match(r.stdout, /WARN: agent v: hook said \\u001b\]0;owned\\u0007 output="frozen\\u001b\[2J" nested=\{"s":"\\u0007"\}\n$/, 'they are shown as \\u escapes')
})

t.test('on a terminal the default is readable lines', { skip: !have('script') && 'script (util-linux) is not installed' }, async (t) => {
  const dir = tmpdir(t)
  // script(1) runs the appliance on a pseudo-terminal: what a person starting it by hand sees.
  const cmd = `${process.execPath} ${BIN} appliance --data ${path.join(dir, 'data')} --listen 127.0.0.1:0 --stats-interval 0`
  // NO_COLOR (no-color.org) turns the colour off: the test runner may set it.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NO_COLOR'))
  const tty: ServiceProcess = new ServiceProcess(spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env }))
  t.teardown(() => tty.stop())
  await waitFor(() => /appliance listening/.test(tty.out) && /listening on 127/.test(tty.out), 'the appliance on a terminal to start', 30_000)
  const line = tty.out.split(/\r?\n/).find((l) => /appliance listening/.test(l)) ?? ''
  t.match(line, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \x1b\[32mINFO\x1b\[39m: /, 'a readable line, its level in colour')
  t.notOk(tty.out.split(/\r?\n/).some((l) => l.startsWith('{')), 'no JSON lines')
  // script passes the signal on to the appliance through the terminal's session (it ends when its child does).
  tty.proc.kill('SIGTERM')
  await tty.exited
})

t.test('bad --log-format: one line, exit 2; a fatal error is still one line', async (t) => {
  const dir = tmpdir(t)
  for (const cmd of [
    ['appliance', '--data', dir, '--listen', '127.0.0.1:0', '--log-format', 'xml'],
    ['agent', '--state', dir, '--nbd', 'unix:/x.sock', '--volume', `v=${BIN}`, '--log-format', 'xml'],
    ['timeview', '--appliance', '127.0.0.1:1', '--volume', 'v', '--seq', 'latest', '--nbd', 'unix:/x.sock', '--log-format', 'xml'],
  ]) {
    const r = await run(process.execPath, [BIN, ...cmd])
    t.equal(r.code, 2, `${cmd[0]}: exit 2`)
    t.match(r.stderr, /--log-format 'xml' must be auto, json or pretty/, `${cmd[0]}: says what is wrong`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${cmd[0]}: one line`)
  }
  // A store the appliance cannot create, with readable logs forced: the refusal is the same plain line.
  const r = await run(process.execPath, [BIN, 'appliance', '--data', path.join(BIN, 'data'), '--listen', '127.0.0.1:0', '--log-format', 'pretty', '--stats-interval', '0'])
  t.equal(r.code, 1, 'a fatal error exits 1')
  t.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr: ${r.stderr.trim()}`)
  t.match(r.stderr, /^tidemark appliance: /, 'naming the command')
})

/** The stats lines a process logged for a volume, in order. */
function statsLines(p: ServiceProcess, volume: string): Array<Record<string, unknown>> {
  return p.logs().filter((l) => l.msg === 'stats' && l.volume === volume)
}

/** A line without what differs every time by design: its time, and the fields that drift with the clock. */
function comparable(l: Record<string, unknown>): string {
  const { time, rpoLagMs, retainedWindowSeconds, syncProgress, ...rest } = l
  const sp = syncProgress as Record<string, unknown> | null | undefined
  return JSON.stringify({ ...rest, syncProgress: sp && { ...sp, mbPerSecond: undefined, secondsLeft: undefined } })
}

t.test('idle, the agent and the appliance log no repeated stats lines; a write makes new ones', async (t) => {
  const dir = tmpdir(t)
  // At debug level every tick logs its line (at debug when it is held back): the test counts ticks by them instead of sleeping.
  const ticks = ['--stats-interval', '0.1', '--log-level', 'debug']
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ticks })
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, null)
  const sock = path.join(dir, 'nbd.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', app.address, ...ticks] })
  await app.waitForLog(/initial copy complete/, 60_000)

  const INFO = 30
  const DEBUG = 20
  /** Waits until `p` has logged `n` held-back (debug) stats lines for `volume` after the first `from` lines. */
  const heldBack = (p: ServiceProcess, volume: string, from: number, n: number, what: string) =>
    waitFor(() => statsLines(p, volume).slice(from).filter((l) => l.level === DEBUG).length >= n, what, 60_000)

  // Idle: 20 ticks (2 s, past a second boundary: the appliance's retained window moves) held back in a row.
  // (A few tries: the copy's last acknowledgements may still be arriving in the first window.)
  const settle = async (p: ServiceProcess, what: string): Promise<number> => {
    for (let i = 0; ; i++) {
      const from = statsLines(p, 'v').length
      await heldBack(p, 'v', from, 20, `${what}: 20 more ticks`)
      const since = statsLines(p, 'v').slice(from)
      if (!since.some((l) => l.level === INFO)) return from
      if (i === 4) throw new Error(`${what}: still logging stats lines at info while idle:\n${since.filter((l) => l.level === INFO).map((l) => JSON.stringify(l)).join('\n')}`)
    }
  }
  for (const [p, who] of [[agent, 'agent'], [app, 'appliance']] as const) {
    const from = await settle(p, who)
    t.pass(`${who}: idle, 20 ticks in a row log nothing at info`)
    const info = statsLines(p, 'v').filter((l) => l.level === INFO)
    t.ok(info.length >= 1, `${who}: it did log the volume's state once`)
    const repeats = info.filter((l, i) => i > 0 && comparable(l) === comparable(info[i - 1]))
    t.same(repeats, [], `${who}: no info stats line repeats the one before it`)
    t.ok(statsLines(p, 'v').slice(from).every((l) => l.level === DEBUG), `${who}: the held-back ticks are at debug`)
  }

  const agentInfo = statsLines(agent, 'v').filter((l) => l.level === INFO).length
  const appInfo = statsLines(app, 'v').filter((l) => l.level === INFO).length
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', '-c', 'flush', nbdUri(sock, 'v')])
  const written = await waitFor(
    () => statsLines(agent, 'v').filter((l) => l.level === INFO).slice(agentInfo).find((l) => l.writes === 1 && l.ackedSeq === l.lastSeq),
    'an agent stats line with the write, acknowledged'
  )
  t.equal(written.bytesWritten, 64 * 1024, 'the agent logs a line with the write')
  const durable = await waitFor(
    () => statsLines(app, 'v').filter((l) => l.level === INFO).slice(appInfo).find((l) => l.durableSeq === written.lastSeq),
    'an appliance stats line with the write durable'
  )
  t.ok(durable, 'the appliance logs a line with it durable')
  // And once it has settled, quiet again.
  await settle(agent, 'agent after the write')
  await settle(app, 'appliance after the write')
  t.pass('both are quiet again')
})
