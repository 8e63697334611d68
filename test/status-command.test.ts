// tidemark status (cli/status-command.ts) against a real appliance's --http
// API: --json is the API's data, the lines say what the API says (and an
// alert's name when one fires), an initial copy gets a progress bar, and
// --watch on a pipe prints plain blocks until SIGINT.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { getAlerts, getStore, getVolumes, type VolumeStatus } from '../client/status-api'
import { BIN, exitOf, have, makeImage, makePki, tlsArgs, protectedVolume, run, startAgent, startAppliance, tmpdir, waitFor } from './helpers'
import { httpUrl } from './lib/prom-text'

const MiB = 1024 * 1024

/** `tidemark status ARGS`: its stdout, after checking it exited 0. */
async function status(...args: string[]): Promise<string> {
  const r = await run(process.execPath, [BIN, 'status', ...args])
  if (r.code !== 0) throw new Error(`status ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return r.stdout
}

/** A volume's status without what moves with the clock between two reads (ages, rates). */
function steady(v: VolumeStatus): unknown {
  return { ...v, rpo: { ...v.rpo, seconds: typeof v.rpo.seconds, capturedBefore: typeof v.rpo.capturedBefore }, history: { ...v.history, seconds: typeof v.history.seconds }, rates: Object.keys(v.rates), agent: { ...v.agent, lastHeard: typeof v.agent.lastHeard } }
}

t.test('status --json is the API; status lines say the same; a stopped agent shows its alerts', async (t) => {
  const dir = tmpdir(t)
  const control = path.join(dir, 'control.sock')
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 7,
    applianceExtra: ['--http', '127.0.0.1:0', '--rpo-target', 'vol=4s,1h', '--history-target', 'vol=1h'],
    agentExtra: ['--control', `unix:${control}`],
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  const mark = await run(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'first'])
  t.equal(mark.code, 0, mark.stderr)
  await waitFor(async () => (await getVolumes(base)).volumes[0].lastTimeMark?.label === 'first' && (await getAlerts(base)).alerts.length === 0, 'the mark at the appliance, no alert firing')

  const json = JSON.parse(await status('--appliance', base, '--json')) as { volumes: VolumeStatus[]; store: unknown; alerts: unknown }
  t.same(Object.keys(json).sort(), ['alerts', 'store', 'volumes'])
  const api = { volumes: (await getVolumes(base)).volumes, store: await getStore(base), alerts: (await getAlerts(base)).alerts }
  t.same(json.volumes.map(steady), api.volumes.map(steady), 'the volumes as the API serves them')
  // Free space moves with anything else writing to the file system holding --data (here, /tmp).
  t.same({ ...(json.store as object), freeBytes: 0 }, { ...api.store, freeBytes: 0 }, 'the store as the API serves it')
  t.equal(typeof (json.store as { freeBytes: unknown }).freeBytes, 'number')
  t.same(json.alerts, api.alerts, 'the alerts as the API serves them')
  const one = JSON.parse(await status('--appliance', base.replace('http://', ''), '--volume', 'vol', '--json')) as { volumes: VolumeStatus[] }
  t.same(one.volumes.map((x) => x.volume), ['vol'], '--volume, and HOST:PORT for http://HOST:PORT')

  const text = await status('--appliance', base)
  const lines = text.trimEnd().split('\n')
  t.match(lines[0], /^VOLUME +STATE +RPO\/TARGET +HISTORY\/TARGET +BACKLOG +APP → CHANGED → WIRE MB\/s \(REDUCTIONS\) +JOURNAL +LAST TIMEMARK +OVERALL$/, 'a header')
  const row = lines.find((l) => l.startsWith('vol '))!
  t.ok(row, `a line for the volume:\n${text}`)
  const s = api.volumes[0]
  t.match(row, /^vol +normal +\d+\.\ds\/4\.0s +\d+(\.\d)?[sm]\/60m +0\.0 MB +\d+\.\d\d → \d+\.\d\d → \d+\.\d\d \(\S+ \S+( total)?\) +\d+\.\d MB +#\d+ first, \d+(\.\d)?s ago +ok$/, 'state, RPO/target, history/target, backlog, rates, journal, mark, overall')
  t.match(row, `#${s.lastTimeMark!.id} first`, "the mark's id")
  t.match(row, `${(s.journal.bytes / 1e6).toFixed(1)} MB`, "the journal's size")
  t.match(lines[lines.length - 1], /^store: \d+(\.\d)? [MGT]B free of \d+(\.\d)? [MGT]B \(\d+\.\d %\), journals \d+\.\d MB, 1 volume +ok$/, "the store's line")

  // The agent goes away: past the 4 s target the volume is disconnected with its alerts named.
  await v.agent.stop()
  const gone = await waitFor(async () => {
    const out = await status('--appliance', base, '--volume', 'vol')
    return /^vol +disconnected .*warning: .*AgentDisconnected/m.test(out) ? out : null
  }, 'the line to show the disconnected volume and its alert', 30_000, 250)
  t.match(gone, /warning: (RpoBreach, AgentDisconnected|AgentDisconnected, RpoBreach)$/m, 'overall: the worst severity and the names')

  const bad = await run(process.execPath, [BIN, 'status', '--appliance', base, '--volume', 'nope'])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /^tidemark status: http:\/\/127\.0\.0\.1:\d+ answered GET \/api\/v1\/volumes\/nope: 404 the appliance has no volume "nope"\n$/, 'one line')
})

t.test('an initial copy shows a progress bar with rate and ETA; --watch on a pipe prints plain blocks until SIGINT', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'prod.img')
  makeImage(img, 24 * MiB, 9)
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--http', '127.0.0.1:0'] })
  const base = await waitFor(() => httpUrl(app.err), "the appliance's http line")
  // 2 MB/s: the 24 MiB copy takes about 12 s, long enough to watch.
  await startAgent(t, { state: path.join(dir, 'state'), sock: path.join(dir, 'nbd.sock'), volumes: { vol: img }, extra: ['--appliance', app.address, '--throttle', '2'] })

  const copying = await waitFor(async () => {
    const out = await status('--appliance', base)
    return /^ {2}initial copy +\[#*-*\] +\d+\.\d % +\d+\.\d MB left +\d+\.\d MB\/s +ETA \d/m.test(out) ? out : null
  }, 'a progress bar with rate and ETA under the copying volume', 30_000, 200)
  const at = copying.split('\n').findIndex((l) => l.startsWith('vol '))
  t.match(copying.split('\n')[at], /^vol +initial_copy /, 'the volume is in its initial copy')
  t.match(copying.split('\n')[at + 1], /^ {2}initial copy /, 'its bar on the next line')

  const watch = spawn(process.execPath, [BIN, 'status', '--appliance', base, '--watch', '0.5'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = exitOf(watch)
  t.teardown(async () => {
    watch.kill('SIGKILL')
    await exited
  })
  let out = ''
  watch.stdout.on('data', (d) => (out += d))
  const stamp = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  http:\/\/127\.0\.0\.1:\d+$/m
  await waitFor(() => (out.match(new RegExp(stamp.source, 'gm')) ?? []).length >= 2, 'two blocks from --watch', 30_000, 100)
  watch.kill('SIGINT')
  t.equal(await exited, 0, 'SIGINT ends the watch with exit 0')
  t.notMatch(out, /\x1b/, 'no terminal escapes on a pipe')
  const blocks = out.trimEnd().split(/\n\n(?=\d{4}-)/)
  t.ok(blocks.length >= 2, `${blocks.length} blocks, a blank line between them`)
  for (const b of blocks) {
    t.match(b, stamp, 'each opens with its time and the address')
    t.match(b, /^vol +\S+ /m, 'and has the volume line')
    t.match(b, /^store: /m, 'and the store line')
  }
})

t.test('--watch on a terminal redraws in place', { skip: !have('script') && 'script (util-linux) is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--http', '127.0.0.1:0'] })
  const base = await waitFor(() => httpUrl(app.err), "the appliance's http line")
  // script(1) gives the command a pseudo-terminal; the shell notes the pid that SIGINT goes to.
  const pidFile = path.join(dir, 'status.pid')
  const inner = `echo $$ > ${pidFile}; exec ${process.execPath} ${BIN} status --appliance ${base} --watch 0.3`
  const term = spawn('script', ['-qec', inner, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
  const exited = exitOf(term)
  t.teardown(async () => {
    term.kill('SIGKILL')
    await exited
  })
  let out = ''
  term.stdout.on('data', (d) => (out += d))
  const clears = (): number => out.split('\x1b[H\x1b[2J').length - 1
  await waitFor(() => clears() >= 2, 'two redraws', 30_000, 100)
  process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGINT')
  t.equal(await exited, 0, 'SIGINT ends it with exit 0')
  t.ok(out.startsWith('\x1b[H\x1b[2J'), 'each refresh homes the cursor and clears the screen first')
  const last = out.split('\x1b[H\x1b[2J').pop()!
  t.match(last, /every 0\.3 s/, 'its heading says how often')
  t.match(last, /\(no volumes\)/, 'an appliance without volumes says so')
  t.match(last, /^store: /m, "and shows the store's line")
})

t.test('HTTPS: status with a client certificate sees what its identity may read', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'reader'])
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 17,
    applianceExtra: [...tlsArgs(pki, 'appliance'), '--allow', 'agent=write:vol', '--allow', 'reader=read:vol', '--http', '127.0.0.1:0'],
    agentExtra: tlsArgs(pki, 'agent'),
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  const reader = ['--tls-cert', path.join(pki, 'reader.pem'), '--tls-key', path.join(pki, 'reader.key'), '--tls-ca', path.join(pki, 'ca.pem')]
  const json = JSON.parse(await status('--appliance', base.replace('https://', ''), ...reader, '--json')) as { volumes: VolumeStatus[] }
  t.same(json.volumes.map((x) => x.volume), ['vol'], 'HOST:PORT with TLS files is HTTPS, and the reader sees its volume')
  t.match(await status('--appliance', base, ...reader), /^vol +normal /m, 'the lines over HTTPS')
  const bare = await run(process.execPath, [BIN, 'status', '--appliance', base])
  t.equal(bare.code, 2)
  t.match(bare.stderr, /^tidemark status: --appliance https:\/\/127\.0\.0\.1:\d+ is HTTPS: give --tls-cert, --tls-key and --tls-ca/)
  t.equal(bare.stderr.trim().split('\n').length, 1, 'one line')
})
