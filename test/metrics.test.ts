// The operator plane's metrics (issue 12) through real processes: an agent
// and an appliance, both with --http on loopback, written to with qemu-io,
// their /metrics parsed as Prometheus text (test/lib/prom-text.ts).
import path from 'node:path'
import t from 'tap'
import { have, must, protectedVolume, startAgent, startAppliance, tmpdir, waitFor } from './helpers'
import { httpUrl, sample, scrape, type Exposition } from './lib/prom-text'

const MiB = 1024 * 1024
const STATES = ['normal', 'behind', 'resync', 'initial_copy', 'disconnected', 'no_space']

async function urlOf(p: { err: string }, who: string): Promise<string> {
  return waitFor(() => httpUrl(p.err), `${who}'s http listening line`)
}

t.test('app, changed and wire bytes: a write of N counts N, a rewrite of the same bytes changes nothing', async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, { size: 16 * MiB, seed: 7, agentExtra: ['--http', '127.0.0.1:0'], applianceExtra: ['--http', '127.0.0.1:0'] })
  const agentUrl = `${await urlOf(v.agent, 'agent')}/metrics`
  const appUrl = `${await urlOf(v.app, 'appliance')}/metrics`

  const before = await scrape(agentUrl)
  t.equal(before.types.get('tidemark_agent_app_bytes_total'), 'counter')
  t.equal(before.types.get('tidemark_agent_rpo_seconds'), 'histogram')
  t.equal(sample(before, 'tidemark_agent_connected', { volume: 'vol' }), 1)
  t.equal(sample(before, 'tidemark_build_info', { role: 'agent' }), 1)
  t.ok(before.samples.some((s) => s.name === 'process_cpu_user_seconds_total'), "prom-client's process defaults")
  for (const state of STATES) t.equal(sample(before, 'tidemark_volume_state', { volume: 'vol', state }), state === 'normal' ? 1 : 0, `state ${state}`)
  const totals = (e: Exposition): { app: number; changed: number; wire: number; writes: number } => ({
    app: sample(e, 'tidemark_agent_app_bytes_total', { volume: 'vol' }),
    changed: sample(e, 'tidemark_agent_changed_bytes_total', { volume: 'vol' }),
    wire: sample(e, 'tidemark_agent_wire_bytes_total', { volume: 'vol' }),
    writes: sample(e, 'tidemark_agent_tap_requests_total', { volume: 'vol', op: 'write' }),
  })
  const b0 = totals(before)

  // 1 MiB of a pattern the image (seeded random bytes) does not hold: every sector changes.
  const N = MiB
  await must('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${N}`, v.uri])
  const acked = async (): Promise<Exposition | null> => {
    const e = await scrape(agentUrl)
    return sample(e, 'tidemark_agent_app_bytes_total', { volume: 'vol' }) >= b0.app + N && sample(e, 'tidemark_agent_backlog_bytes', { volume: 'vol' }) === 0 ? e : null
  }
  const b1 = totals(await waitFor(acked, 'the write replicated'))
  t.equal(b1.app - b0.app, N, 'app bytes grew by what qemu-io wrote')
  t.equal(b1.changed - b0.changed, N, 'changed bytes too: every sector was new')
  t.ok(b1.wire > b0.wire, 'wire bytes grew')
  t.ok(b1.wire - b0.wire < N / 10, `the pattern compresses on the wire (${b1.wire - b0.wire} bytes for ${N})`)
  t.ok(b1.writes > b0.writes, 'the tap counted the write requests')

  // The same bytes again: the application writes N, nothing changes, almost nothing crosses the wire.
  await must('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${N}`, v.uri])
  const b2 = totals(
    await waitFor(async () => {
      const e = await scrape(agentUrl)
      return sample(e, 'tidemark_agent_app_bytes_total', { volume: 'vol' }) >= b1.app + N && sample(e, 'tidemark_agent_backlog_bytes', { volume: 'vol' }) === 0 ? e : null
    }, 'the rewrite replicated')
  )
  t.equal(b2.app - b1.app, N, 'app bytes grew by N again')
  t.equal(b2.changed - b1.changed, 0, 'no sector changed')
  t.ok(b2.wire - b1.wire < 1024, `wire bytes grew by ~0 (${b2.wire - b1.wire})`)

  // The appliance received exactly what the agent sent, and its series exist with the volume's label.
  const app = await waitFor(async () => {
    const e = await scrape(appUrl)
    return sample(e, 'tidemark_appliance_received_bytes_total', { volume: 'vol' }) === b2.wire ? e : null
  }, 'the appliance to count what the agent sent')
  t.equal(app.types.get('tidemark_appliance_received_bytes_total'), 'counter')
  t.ok(sample(app, 'tidemark_appliance_journal_bytes', { volume: 'vol' }) > N, 'the journal holds the first write')
  t.equal(sample(app, 'tidemark_volume_state', { volume: 'vol', state: 'normal' }), 1)
  t.ok(sample(app, 'tidemark_store_free_bytes') > 0)
  t.equal(sample(app, 'tidemark_build_info', { role: 'appliance' }), 1)
  t.notOk(app.samples.some((s) => 'timemark' in s.labels), 'no TimeMark label')

  // Restarted, the agent's byte counters go on from where they were (NAME.counters in --state),
  // also through a run that served no metrics: 64 KiB written then count as well.
  await v.agent.stop()
  const unscraped = await startAgent(t, { ...v.agentArgs, extra: (v.agentArgs.extra ?? []).filter((x, i, a) => x !== '--http' && a[i - 1] !== '--http') })
  t.notOk(httpUrl(unscraped.err), 'this run serves no metrics')
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', v.uri])
  await unscraped.stop()
  const again = await startAgent(t, { ...v.agentArgs })
  const url2 = `${await urlOf(again, 'restarted agent')}/metrics`
  const b3 = totals(await scrape(url2))
  t.equal(b3.app, b2.app + 64 * 1024, 'app bytes: what the earlier runs counted, the unscraped one included')
  t.equal(b3.changed, b2.changed + 64 * 1024, 'changed bytes too')
  t.ok(b3.wire > b2.wire, 'and wire bytes')
  t.equal(b3.writes, 0, 'the tap request counters start over with the process')
  // The restarted agent (its initial copy done in the earlier process) reports RPO points again:
  // seconds after the restart, the appliance's RPO is still small (without new points it would be
  // counting from before the stop).
  const restarted = Date.now()
  const rpoAfter = await waitFor(async () => {
    const e = await scrape(appUrl)
    const r = sample(e, 'tidemark_volume_rpo_seconds', { volume: 'vol' })
    return Date.now() - restarted > 4000 && sample(e, 'tidemark_volume_state', { volume: 'vol', state: 'normal' }) === 1 && r < 2 ? r : null
  }, "the appliance's RPO after the agent's restart", 30_000, 200)
  t.ok(rpoAfter < 2, `RPO ${rpoAfter} s after the restart`)
  t.equal(sample(await scrape(url2), 'tidemark_volume_state', { volume: 'vol', state: 'normal' }), 1, "the restarted agent's state")
})

t.test('an agent stopped with SIGSTOP: the appliance sees its RPO grow past the target, and recover after SIGCONT', async (t) => {
  const dir = tmpdir(t)
  const TARGET = 3
  const v = await protectedVolume(t, dir, {
    size: 8 * MiB,
    seed: 3,
    applianceExtra: ['--http', '127.0.0.1:0', '--rpo-target', `vol=${TARGET}s,30s`, '--history-target', '*=1h'],
  })
  const url = `${await urlOf(v.app, 'appliance')}/metrics`
  const rpo = async (): Promise<number> => sample(await scrape(url), 'tidemark_volume_rpo_seconds', { volume: 'vol' })

  const e = await scrape(url)
  t.equal(sample(e, 'tidemark_volume_rpo_target_seconds', { volume: 'vol', severity: 'warning' }), TARGET)
  t.equal(sample(e, 'tidemark_volume_rpo_target_seconds', { volume: 'vol', severity: 'error' }), 30)
  t.equal(sample(e, 'tidemark_journal_history_target_seconds', { volume: 'vol' }), 3600)
  // Idle and connected: heartbeats keep it small.
  await waitFor(async () => (await rpo()) < 2, 'an idle volume to show a small RPO')

  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 64k', v.uri])
  v.agent.proc.kill('SIGSTOP')
  // Whatever happens below, the agent must be able to stop at teardown.
  t.teardown(() => v.agent.proc.kill('SIGCONT'))
  const stalled = await waitFor(async () => {
    const r = await rpo()
    return r > TARGET ? r : null
  }, 'the RPO to grow past its target while the agent is stopped', 20_000, 200)
  t.ok(stalled > TARGET, `RPO ${stalled} s > target ${TARGET} s`)
  // Still growing: nothing the stopped agent could say moves it.
  const later = await waitFor(async () => {
    const r = await rpo()
    return r > stalled + 0.5 ? r : null
  }, 'the RPO to keep growing', 10_000, 200)
  t.ok(later > stalled)

  v.agent.proc.kill('SIGCONT')
  await waitFor(async () => (await rpo()) < TARGET, 'the RPO to come back under its target after SIGCONT', 20_000, 200)
  t.pass('recovered')
})

t.test('a volume the appliance knows has its series from the start, before any agent connects', async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, { size: 4 * MiB, seed: 5 })
  await v.agent.stop()
  await v.app.stop()
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--http', '127.0.0.1:0'] })
  const e = await scrape(`${await urlOf(app, 'appliance')}/metrics`)
  for (const state of STATES) t.equal(sample(e, 'tidemark_volume_state', { volume: 'vol', state }), state === 'disconnected' ? 1 : 0, `state ${state}`)
  t.ok(sample(e, 'tidemark_appliance_received_bytes_total', { volume: 'vol' }) > 0, 'the counter goes on from the volume\'s own count')
  t.equal(sample(e, 'tidemark_timemarks', { volume: 'vol' }), 0)
  t.equal(sample(e, 'tidemark_timemark_last_timestamp_seconds', { volume: 'vol' }), 0)
  // With no agent since the start, the RPO counts from the newest durable batch: it is not 0, and it grows.
  const r1 = await waitFor(async () => sample(await scrape(`${await urlOf(app, 'appliance')}/metrics`), 'tidemark_volume_rpo_seconds', { volume: 'vol' }), 'a seeded RPO')
  await waitFor(async () => sample(await scrape(`${await urlOf(app, 'appliance')}/metrics`), 'tidemark_volume_rpo_seconds', { volume: 'vol' }) > r1 + 0.2, 'the RPO to grow')
})

t.test('a paused appliance pushes the agent behind: its metrics say so and what it must resend, then normal again', { skip: have('fio') ? false : 'needs fio' }, async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, {
    size: 32 * MiB,
    seed: 9,
    applianceExtra: ['--http', '127.0.0.1:0'],
    // A small tap buffer and send window: the 16 MiB below cannot wait in memory.
    agentExtra: ['--http', '127.0.0.1:0', '--buffer', '1M', '--memory', '1M'],
  })
  const agentUrl = `${await urlOf(v.agent, 'agent')}/metrics`
  const appUrl = `${await urlOf(v.app, 'appliance')}/metrics`
  v.app.proc.kill('SIGSTOP')
  t.teardown(() => v.app.proc.kill('SIGCONT'))
  // fio's buffers are random bytes: nothing compresses them away.
  await must('fio', ['--name=w', '--ioengine=nbd', `--uri=${v.uri}`, '--rw=write', '--bs=1M', '--size=16M', '--output=/dev/null'])
  // Behind; or, on a busy machine where the stopped appliance's keepalive runs out first (10 s + 5 s),
  // disconnected, which the state series puts first. Either way the bytes to resend are counted.
  // The backlog is the resync's first pulled batch, waiting for the stopped appliance's
  // fingerprints: it follows the fall behind by the agent's next pull, which also
  // makes the state resync (a resync that cannot move while the appliance is stopped).
  let seen = ''
  const behind = await waitFor(async () => {
    const e = await scrape(agentUrl)
    seen = ''
    for (const state of ['behind', 'resync', 'disconnected']) if (sample(e, 'tidemark_volume_state', { volume: 'vol', state }) === 1) seen = state
    return seen && sample(e, 'tidemark_agent_backlog_bytes', { volume: 'vol' }) > 0 ? e : null
  }, 'the agent to report its volume behind, with a backlog', 60_000)
  for (const state of STATES) t.equal(sample(behind, 'tidemark_volume_state', { volume: 'vol', state }), state === seen ? 1 : 0, `${seen}, not ${state}`)
  t.ok(sample(behind, 'tidemark_volume_resync_remaining_bytes', { volume: 'vol' }) >= 8 * MiB, 'most of what fio wrote is to be resent')
  t.ok(sample(behind, 'tidemark_agent_backlog_bytes', { volume: 'vol' }) > 0, 'a backlog')

  v.app.proc.kill('SIGCONT')
  const back = await waitFor(async () => {
    const e = await scrape(agentUrl)
    return sample(e, 'tidemark_volume_state', { volume: 'vol', state: 'normal' }) === 1 && sample(e, 'tidemark_agent_backlog_bytes', { volume: 'vol' }) === 0 ? e : null
  }, 'the agent to resync and be normal again', 60_000)
  t.equal(sample(back, 'tidemark_volume_resync_remaining_bytes', { volume: 'vol' }), 0, 'nothing left to resend')
  await waitFor(async () => {
    const e = await scrape(appUrl)
    return sample(e, 'tidemark_volume_state', { volume: 'vol', state: 'normal' }) === 1 && sample(e, 'tidemark_volume_rpo_seconds', { volume: 'vol' }) < 2
  }, "the appliance's view: normal, a small RPO")
  t.pass('the appliance agrees')
})
