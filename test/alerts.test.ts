// The appliance's alerts (appliance/alerts.ts, alert-rules.ts), through real
// processes: an agent stopped with SIGSTOP breaches its RPO target and the
// alert shows in GET /api/v1/alerts, in tidemark_alerts_firing, in the log and
// through --alert-command, then ends after SIGCONT; a journal cap gives
// history up and HistoryShrinking fires (JournalNearLimit before it); a store
// on a small tmpfs that a file fills raises StoreNearlyFull.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { getAlerts, getVolumes, type Alert } from '../client/status-api'
import type { AlertEvent } from '../appliance/alert-command'
import { BIN, must, protectedVolume, run, startAppliance, tmpdir, waitFor, type ApplianceProcess } from './helpers'
import { httpUrl, scrape } from './lib/prom-text'

const MiB = 1024 * 1024

/** The tidemark_alerts_firing series of a scrape, as "ALERT/SEVERITY/VOLUME" strings. */
async function firingSeries(base: string): Promise<string[]> {
  const e = await scrape(`${base}/metrics`)
  return e.samples.filter((s) => s.name === 'tidemark_alerts_firing' && s.value === 1).map((s) => `${s.labels.alert}/${s.labels.severity}/${s.labels.volume ?? ''}`)
}

/** What --alert-command received so far (the test's command appends each stdin to one file). */
function received(file: string): AlertEvent[] {
  if (!fs.existsSync(file)) return []
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as AlertEvent)
}

const find = (alerts: Alert[], name: string, volume: string | null = 'vol'): Alert | undefined => alerts.find((a) => a.name === name && a.volume === volume)

t.test('a stopped agent raises RpoBreach within target + 2 s, and SIGCONT clears it: API, metric, log, --alert-command', async (t) => {
  const dir = tmpdir(t)
  const got = path.join(dir, 'alerts.jsonl')
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 3,
    applianceExtra: ['--http', '127.0.0.1:0', '--rpo-target', 'vol=3s,60s', '--history-target', 'vol=1h', '--alert-command', `cat >> ${got}`],
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  // The initial copy may have let the RPO grow past 3 s: wait for everything to be quiet.
  // A young volume's history (seconds) is far under its 1 h target, and that is no alert: nothing was given up.
  await waitFor(async () => (await getAlerts(base)).alerts.length === 0, 'no alert firing once the copy is done', 30_000, 200)
  t.same(await firingSeries(base), [], 'no tidemark_alerts_firing series')
  const before = received(got).length

  const pid = v.agent.proc.pid!
  process.kill(pid, 'SIGSTOP')
  const stoppedAt = Date.now()
  try {
    const a = await waitFor(async () => find((await getAlerts(base)).alerts, 'RpoBreach'), 'RpoBreach in /api/v1/alerts', 20_000, 100)
    const took = (Date.now() - stoppedAt) / 1000
    t.ok(took <= 3 + 2, `RpoBreach within the 3 s target + 2 s (${took.toFixed(1)} s)`)
    t.equal(a.severity, 'warning', 'under the 60 s error threshold: a warning')
    t.equal(a.threshold, 3)
    t.ok(a.value > 3, `value ${a.value} s, past the threshold`)
    t.ok(Date.parse(a.since) >= stoppedAt - 1000, 'since: when it started')
    t.match(a.summary, /^volume vol: RPO .* above its warning threshold of 3\.0 s$/)
    t.ok(a.action.length > 20, 'says what to do')
    t.notOk(find((await getAlerts(base)).alerts, 'AgentDisconnected'), 'a stopped agent is still attached: not disconnected')

    const series = await waitFor(async () => ((await firingSeries(base)).includes('RpoBreach/warning/vol') ? firingSeries(base) : null), 'the firing series')
    t.ok(series.includes('RpoBreach/warning/vol'), 'tidemark_alerts_firing{alert="RpoBreach",severity="warning",volume="vol"} 1')
    const line = await v.app.waitForLog(/^alert RpoBreach \(warning\) firing on volume vol: /)
    t.equal(line.level, 40, 'logged as a warning')
    const fired = await waitFor(() => received(got).slice(before).find((e) => e.name === 'RpoBreach' && e.state === 'firing'), '--alert-command to receive the start')
    t.equal(fired.volume, 'vol')
    t.equal(fired.severity, 'warning')
    t.equal(fired.since, a.since, 'the same alert the API shows')
  } finally {
    process.kill(pid, 'SIGCONT')
  }

  await waitFor(async () => !find((await getAlerts(base)).alerts, 'RpoBreach'), 'RpoBreach to end after SIGCONT', 30_000, 100)
  t.pass('RpoBreach ended after SIGCONT')
  t.notOk((await firingSeries(base)).some((s) => s.startsWith('RpoBreach/')), 'its series is gone')
  const ended = await v.app.waitForLog(/^alert RpoBreach resolved on volume vol after \d+ s$/)
  t.equal(ended.level, 30, 'logged at info')
  const resolved = await waitFor(() => received(got).slice(before).find((e) => e.name === 'RpoBreach' && e.state === 'resolved'), '--alert-command to receive the end')
  t.equal(resolved.volume, 'vol')
  const mine = received(got).slice(before).filter((e) => e.name === 'RpoBreach')
  t.same(mine.map((e) => e.state), ['firing', 'resolved'], 'one start and one end, in order')
  const lines = v.app.logs().filter((l) => /^alert RpoBreach/.test(String(l.msg)) && Date.parse(String((l.alert as Alert).since)) >= stoppedAt - 1000)
  t.equal(lines.length, 2, 'one line when it started and one when it ended')
})

t.test('a journal cap: JournalNearLimit over 90 % of it, HistoryShrinking once compaction gives history up', async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 5,
    applianceExtra: ['--http', '127.0.0.1:0', '--segment-size', '1M', '--retain', 'vol=30d,3M', '--compact-every', '0', '--history-target', 'vol=1h'],
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x41 0 2M', v.uri])
  const near = await waitFor(async () => find((await getAlerts(base)).alerts, 'JournalNearLimit'), 'JournalNearLimit', 30_000, 200)
  t.equal(near.severity, 'warning')
  t.equal(near.threshold, Math.round(0.9 * 3 * MiB * 1000) / 1000, '90 % of the 3M cap')
  t.ok(near.value > 3 * MiB, `the journal's bytes (${near.value})`)
  t.notOk(find((await getAlerts(base)).alerts, 'HistoryShrinking'), 'nothing given up yet: the history is young, not shrinking')

  const c = await run(process.execPath, [BIN, 'journal', 'compact', '--appliance', v.app.address, '--volume', 'vol', '--json'])
  t.equal(c.code, 0, c.stderr)
  const h = await waitFor(async () => find((await getAlerts(base)).alerts, 'HistoryShrinking'), 'HistoryShrinking after the cap gave history up', 30_000, 200)
  t.equal(h.severity, 'error', 'seconds of a 1 h target: under 75 %')
  t.equal(h.threshold, 0.75 * 3600)
  t.ok(h.value < 60, `the history left (${h.value} s)`)
  t.match(h.summary, /^volume vol: the journal reaches back .*, under 75 % of its target of 60\.0 min$/)
  t.match(h.action, /journal cap/)
  await v.app.waitForLog(/^alert HistoryShrinking \(error\) firing on volume vol/)
})

t.test('StoreNearlyFull: a file fills the small file system under --data, and removing it clears the alert', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'store')
  fs.mkdirSync(mnt)
  const m = await run('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mnt])
  if (m.code !== 0) {
    t.plan(0, `skipped: cannot mount a tmpfs here: ${m.stderr.trim()}`)
    return
  }
  let app: ApplianceProcess | null = null
  // After the appliance has exited: nothing holds the mount then.
  t.teardown(async () => {
    await app?.stop()
    await run('umount', [mnt])
  })
  app = await startAppliance(t, { data: path.join(mnt, 'data'), extra: ['--http', '127.0.0.1:0'] })
  const base = await waitFor(() => httpUrl(app!.err), "the appliance's http line")
  // Evaluated at least once with room to spare: no alert.
  await app.waitForLog(/http listening/)
  t.same((await getAlerts(base)).alerts, [], 'a roomy store: nothing firing')

  const st = fs.statfsSync(mnt)
  const fill = Math.floor(st.bavail * st.bsize - 0.03 * st.blocks * st.bsize)
  const filler = path.join(mnt, 'filler')
  await must('fallocate', ['-l', String(fill), filler])
  const a = await waitFor(async () => find((await getAlerts(base)).alerts, 'StoreNearlyFull', null), 'StoreNearlyFull', 20_000, 100)
  t.equal(a.severity, 'error', 'about 3 % free: under the 5 % error threshold')
  t.equal(a.threshold, 5)
  t.ok(a.value < 5 && a.value > 0, `value: the percent free (${a.value})`)
  t.equal(a.volume, null, "the store's, not a volume's")
  t.match(a.summary, /^the store's file system has .* free of 32\.0 MiB/)
  t.ok((await firingSeries(base)).includes('StoreNearlyFull/error/'), 'its series, without a volume label')

  fs.rmSync(filler)
  await waitFor(async () => !find((await getAlerts(base)).alerts, 'StoreNearlyFull', null), 'StoreNearlyFull to end', 20_000, 100)
  await app.waitForLog(/^alert StoreNearlyFull resolved on the store after \d+ s$/)
  t.pass('it ended, with one line')
})

t.test('a hanging --alert-command is killed after its timeout and a failing one logged, while alerts go on', async (t) => {
  const dir = tmpdir(t)
  const first = path.join(dir, 'first')
  const pidFile = path.join(dir, 'hung.pid')
  // The first run hangs (its pid noted), every later one fails with a reason on stderr.
  const script = path.join(dir, 'notify.sh')
  fs.writeFileSync(script, `#!/bin/sh\nif [ ! -e ${first} ]; then touch ${first}; echo $$ > ${pidFile}; exec sleep 60; fi\necho "pager unreachable" >&2\nexit 3\n`, { mode: 0o755 })
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 13,
    applianceExtra: ['--http', '127.0.0.1:0', '--rpo-target', 'vol=2s', '--alert-command', script, '--alert-command-timeout', '4s'],
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  await waitFor(async () => (await getAlerts(base)).alerts.length === 0, 'no alert firing once the copy is done', 30_000, 200)
  await v.agent.stop()

  // Both alerts show while the first command still hangs: evaluation does not wait for it.
  const both = await waitFor(async () => {
    const a = (await getAlerts(base)).alerts
    return find(a, 'RpoBreach') && find(a, 'AgentDisconnected') ? a : null
  }, 'RpoBreach and AgentDisconnected', 20_000, 100)
  t.equal(both.length, 2)
  t.ok(fs.existsSync(pidFile), 'the first command is running')
  t.notOk(v.app.logs().some((l) => /did not finish/.test(String(l.msg))), 'and not yet killed')

  const killed = await v.app.waitForLog(/^--alert-command for \w+ on vol \(firing\) did not finish within 4 s and was killed$/)
  t.equal(killed.level, 50, 'logged as an error')
  const pid = Number(fs.readFileSync(pidFile, 'utf8'))
  // Gone, or a zombie that only waits for whoever inherited it to reap it: either way no longer running.
  const alive = (): boolean => {
    try {
      return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z'
    } catch {
      return false
    }
  }
  t.notOk(alive(), `the hung command (pid ${pid}) is gone with its process group`)
  const failed = await v.app.waitForLog(/^--alert-command for \w+ on vol \(firing\) failed \(exit 3\): pager unreachable$/)
  t.equal(failed.level, 50)
  const lines = v.app.logs().filter((l) => /^--alert-command/.test(String(l.msg)))
  t.equal(lines.length, 2, 'one line per run: the one killed and the one that failed')
})

t.test('ResyncWithoutProgress past --alert-stall-after while a resync is stopped, and its end when it goes on', async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, {
    // zeroes: the initial copy sends little, so the 1 MB/s cap below costs seconds only in the resync
    size: 32 * MiB,
    seed: null,
    applianceExtra: ['--http', '127.0.0.1:0', '--alert-stall-after', '3s'],
    // A 1 MiB buffer and 1 MB/s on the wire: fio's 16 MiB push the agent behind, and the resync takes many seconds.
    agentExtra: ['--buffer', '1M', '--throttle', '1'],
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  await must('fio', ['--name=push', '--ioengine=nbd', `--uri=${v.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=16M', '--output-format=json'])
  const resync = await waitFor(async () => (await getVolumes(base)).volumes.find((x) => x.sync?.kind === 'resync' && (x.sync.remainingBytes ?? 0) > 0), 'a resync with bytes remaining', 30_000, 100)
  t.ok(resync.state === 'resync' || resync.state === 'behind', `behind or resyncing (${resync.state})`)
  t.notOk(find((await getAlerts(base)).alerts, 'ResyncWithoutProgress'), 'a resync that moves: no alert')

  const pid = v.agent.proc.pid!
  process.kill(pid, 'SIGSTOP')
  const stoppedAt = Date.now()
  try {
    const stall = await waitFor(async () => find((await getAlerts(base)).alerts, 'ResyncWithoutProgress'), 'ResyncWithoutProgress', 30_000, 100)
    // The last progress the appliance saw came with a heartbeat (one a second) before the stop.
    t.ok(Date.now() - stoppedAt >= 2000, `not before 3 s without progress (${Date.now() - stoppedAt} ms after the stop)`)
    t.equal(stall.threshold, 3, '--alert-stall-after 3s')
    t.ok(stall.value > 3, `no progress for ${stall.value} s`)
    t.match(stall.summary, /^volume vol: a resync made no progress for .* \(.* remaining\)$/)
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  await waitFor(async () => !find((await getAlerts(base)).alerts, 'ResyncWithoutProgress'), 'the alert to end once the resync moves again', 60_000, 200)
  await v.app.waitForLog(/^alert ResyncWithoutProgress resolved on volume vol after \d+ s$/)
  t.pass('it ended')
})
