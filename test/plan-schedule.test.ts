// Continuous recoverability proof (appliance/plan-schedule.ts): the appliance
// runs `tidemark plan test` on each scheduled plan by itself. A plan that
// fails its test is an alert (PlanTestFailed, in the API, the metric, the
// log and --alert-command) and its metrics say when it last ran and whether
// it passed. A plan that passes boots a real guest on the schedule: its
// metrics, its entry in the audit trail, no alert; and an appliance stopped
// while a run boots its VM ends that run and waits for it (no plan test, qemu,
// namespace or view is left).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { AuditEntryJson } from '../client/plan-audit'
import { getAlerts } from '../client/status-api'
import { tidemarkJson } from './claims-helpers'
import { have, must, makeImage, nbdUri, startAgent, startAppliance, tmpdir, waitFor } from './helpers'
import { type Guest, planGuestOrWhy, processRuns, guestPlanYaml } from './lib/guest'
import { httpUrl, sample, scrape } from './lib/prom-text'

const needs = have('qemu-system-x86_64') && have('ip') ? false : 'plan test needs qemu-system-x86_64 and ip'

t.test('a scheduled plan whose test fails raises PlanTestFailed, and its metrics say so', { skip: needs }, async (t) => {
  const dir = tmpdir(t)
  const plan = path.join(dir, 'shop.yaml')
  // A plan the appliance cannot run: its disk is a volume it does not hold.
  fs.writeFileSync(plan, ['name: shop', 'point: latest', 'machines:', '  - name: db', '    boot: 1', '    disks: [no-such-volume]', "    check: { console: 'BOOTED', timeout: 30 }", ''].join('\n'))
  const got = path.join(dir, 'alerts.jsonl')
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: ['--http', '127.0.0.1:0', '--plan', `${plan}=10s`, '--alert-command', `cat >> ${got}`, '--listen', `unix:${path.join(dir, 'app.sock')}`],
  })
  const base = await waitFor(() => httpUrl(app.err), "the appliance's http line")
  const alert = await waitFor(async () => (await getAlerts(base)).alerts.find((a) => a.name === 'PlanTestFailed'), 'PlanTestFailed after the first scheduled run', 90_000, 200)
  t.equal(alert.plan, 'shop', 'the alert names the plan')
  t.equal(alert.severity, 'error')
  t.equal(alert.volume, null, 'and no volume')
  t.match(alert.summary, /the scheduled test of recovery plan shop failed: .*no-such-volume/, 'saying why, in the plan test\'s own words')
  t.match(alert.action, /tidemark plan test --plan .*shop\.yaml/, 'and what to run')
  const e = await scrape(`${base}/metrics`)
  t.equal(sample(e, 'tidemark_plan_last_result', { plan: 'shop' }), 0, 'tidemark_plan_last_result 0')
  t.ok(sample(e, 'tidemark_plan_last_run_timestamp_seconds', { plan: 'shop' }) > Date.now() / 1000 - 120, 'a recent run')
  t.equal(e.samples.filter((s) => s.name === 'tidemark_plan_last_success_timestamp_seconds').length, 0, 'no success yet')
  t.equal(sample(e, 'tidemark_alerts_firing', { alert: 'PlanTestFailed', severity: 'error', plan: 'shop' }), 1, 'the firing series, by plan')
  await waitFor(() => fs.existsSync(got) && fs.readFileSync(got, 'utf8').includes('"PlanTestFailed"'), 'the alert command to run')
  const ev = JSON.parse(fs.readFileSync(got, 'utf8').split('\n').find((l) => l.includes('PlanTestFailed'))!)
  t.equal(ev.state, 'firing', '--alert-command was told')
  t.ok(app.logs().some((l) => /^scheduled test of plan shop failed/.test(String(l.msg))), 'the failure is logged')
  t.equal(await app.stop(), 0, 'the appliance stops cleanly, its plan runs with it')
})

const built = needs || planGuestOrWhy()

/** Processes whose command line contains `text` (read from /proc, to check they are gone later). */
function pidsWith(text: string): Array<{ pid: number; cmd: string }> {
  const out: Array<{ pid: number; cmd: string }> = []
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ')
      if (cmd.includes(text)) out.push({ pid: Number(d), cmd })
    } catch {
      // gone meanwhile
    }
  }
  return out
}

t.test('a scheduled plan that boots its guest passes: metrics, audit trail, no alert; stopping the appliance mid-run leaves nothing', { skip: typeof built === 'string' ? built : false }, async (t) => {
  const guest = built as Guest
  const dir = tmpdir(t, 'tidemark-plan-proof-')
  const data = path.join(dir, 'data')
  const exportsSock = path.join(dir, 'appliance-nbd.sock')

  // The volume first, with an appliance that schedules nothing: the guest's root, a TimeMark.
  const first = await startAppliance(t, { data, extra: ['--nbd', `unix:${exportsSock}`] })
  const img = path.join(dir, 'prod.img')
  makeImage(img, guest.rootSize, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', first.address, '--control', `unix:${control}`] })
  await first.waitForLog(/initial copy complete/, 120_000)
  await must('nbdcopy', [guest.rootImage, nbdUri(sock, 'vol')])
  const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'proof-mark'])
  t.ok(mark.durable, 'a TimeMark of the guest root, durable at the appliance')
  t.equal(await agent.stop(), 0, 'the agent stops')
  t.equal(await first.stop(), 0, 'the appliance stops')

  const plan = path.join(dir, 'shop.yaml')
  fs.writeFileSync(
    plan,
    guestPlanYaml(guest, { mark: 'proof-mark', role: 'db', timeout: 120 })
  )
  const listener = path.join(dir, 'app.sock')
  const app = await startAppliance(t, { data, extra: ['--nbd', `unix:${exportsSock}`, '--http', '127.0.0.1:0', '--plan', `${plan}=10s`, '--listen', `unix:${listener}`] })
  const base = await waitFor(() => httpUrl(app.err), "the appliance's http line")
  const passedAt = Date.now() / 1000
  const e = await waitFor(
    async () => {
      const e = await scrape(`${base}/metrics`)
      const r = e.samples.find((s) => s.name === 'tidemark_plan_last_result' && s.labels.plan === 'shop')
      if (r?.value === 0) throw new Error(`the scheduled test failed: ${app.logs().filter((l) => /scheduled test of plan shop/.test(String(l.msg))).map((l) => l.err).join('; ')}`)
      return r?.value === 1 ? e : undefined
    },
    'a scheduled run of the plan to pass',
    180_000,
    200
  )
  t.pass('tidemark_plan_last_result 1')
  const success = sample(e, 'tidemark_plan_last_success_timestamp_seconds', { plan: 'shop' })
  t.ok(success > passedAt - 60 && success <= Date.now() / 1000, `tidemark_plan_last_success_timestamp_seconds is the run's (${success})`)
  const rto = sample(e, 'tidemark_plan_rto_seconds', { plan: 'shop' })
  t.ok(rto > 0, `tidemark_plan_rto_seconds ${rto}`)
  t.ok(app.logs().some((l) => /^scheduled test of plan shop passed: RTO [\d.]+ s$/.test(String(l.msg))), 'the pass is logged')

  const audit = await tidemarkJson<{ entries: AuditEntryJson[] }>(['plan', 'audit', '--appliance', `unix:${listener}`])
  const entry = audit.entries.find((x) => x.action === 'plan test' && x.plan === 'shop' && x.result === 'passed' && x.details.rtoSeconds === rto)
  t.ok(entry, `the audit trail lists the run as passed with its RTO ${rto} s`, { entries: audit.entries })
  t.match(entry, { volumes: ['vol'], point: /TimeMark .*proof-mark/, who: /^uid:\d+$/ }, 'with its volume, its point and who ran it (the appliance, by its uid on the unix listener)')

  const alerts = (await getAlerts(base)).alerts.filter((a) => a.plan === 'shop' || /^Plan/.test(a.name))
  t.same(alerts, [], 'no plan alert is firing')
  t.equal(e.samples.filter((s) => s.name === 'tidemark_alerts_firing' && s.labels.plan === 'shop' && s.value !== 0).length, 0, 'nor counted as firing')

  // The next run holds its VM up (its check never matches): the appliance is stopped in the middle of it.
  fs.writeFileSync(plan, fs.readFileSync(plan, 'utf8').replace('tm.role=db', 'tm.role=hold').replace(/check: .*/, "check: { console: 'never-says-this', timeout: 300 }"))
  const held = await waitFor(() => pidsWith('qemu-system-x86_64').find((p) => p.cmd.includes('tm.role=hold')), 'the next run\'s qemu', 60_000, 100)
  const ns = /tidemark-plan-shop-[0-9a-f]+/.exec(held.cmd)![0]
  const console = /path=(\S+\.console)/.exec(held.cmd)![1]
  await waitFor(() => fs.existsSync(console) && fs.readFileSync(console, 'utf8').includes('tm-boot role=hold'), 'the held VM to boot', 60_000, 100)
  const runners = pidsWith(plan).filter((p) => p.cmd.includes(' plan test '))
  const qemu = pidsWith('qemu-system-x86_64').filter((p) => p.cmd.includes(`${ns}-`))
  t.same(qemu.map((p) => p.pid), [held.pid], `the run's qemu runs its booted guest (pid ${held.pid})`)
  t.equal(runners.length, 1, `as does its plan test (pid ${runners[0]?.pid})`)
  t.match((await must('ip', ['netns', 'list'])).toString(), ns, `in its namespace ${ns}`)
  t.equal(await app.stop(), 0, 'the appliance stops cleanly in the middle of a run')
  for (const p of [...qemu, ...runners]) t.notOk(processRuns(p.pid), `pid ${p.pid} was waited for (${p.cmd.split(' ').slice(0, 3).join(' ')} ...)`)
  t.notMatch((await must('ip', ['netns', 'list'])).toString(), ns, `its network namespace ${ns} is deleted`)
  t.same(pidsWith(`${ns}-`), [], 'nothing of the run is left running')
  t.ok(app.logs().some((l) => /^scheduled test of plan shop stopped with the appliance/.test(String(l.msg))), 'the cut run is logged as stopped, not as a failed proof')

  // What the cut run made on the appliance is gone too, and the run is in the trail as interrupted.
  const after = await startAppliance(t, { data, extra: ['--nbd', `unix:${exportsSock}`] })
  t.same(await tidemarkJson<unknown[]>(['timeview', 'list', '--appliance', after.address]), [], 'no view of the cut run is left')
  const trail = await tidemarkJson<{ entries: AuditEntryJson[] }>(['plan', 'audit', '--appliance', after.address])
  t.match(trail.entries.at(-1), { action: 'plan test', plan: 'shop', result: 'failed', details: { error: /^interrupted/ } }, 'the cut run is recorded as interrupted')
  t.equal(await after.stop(), 0)
})
