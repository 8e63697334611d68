// Continuous recoverability proof (appliance/plan-schedule.ts): the appliance
// runs `tidemark plan test` on each scheduled plan by itself. A plan that
// fails its test is an alert (PlanTestFailed, in the API, the metric, the
// log and --alert-command) and its metrics say when it last ran and whether
// it passed. (A passing scheduled run boots VMs: test/plan.test.ts proves
// `plan test` itself; this file proves the schedule around it.)
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { getAlerts } from '../client/status-api'
import { have, startAppliance, tmpdir, waitFor } from './helpers'
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
