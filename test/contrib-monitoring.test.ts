// What contrib/ ships for Prometheus and Grafana works against what tidemark
// exports: every metric the alerting rules (contrib/prometheus/
// tidemark-alerts.yml) and the dashboard's queries (contrib/grafana/
// tidemark.json) name is in a real scrape of a real appliance and agent;
// every appliance alert has its rule; and where promtool is installed the
// rules pass `promtool check rules` and their unit tests (tidemark-alerts.test.yml).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import YAML from 'yaml'
import { ALERT_NAMES } from '../client/status-api'
import { have, protectedVolume, ROOT, run, tmpdir, waitFor } from './helpers'
import { httpUrl, scrape, type Exposition } from './lib/prom-text'

const RULES = path.join(ROOT, 'contrib', 'prometheus', 'tidemark-alerts.yml')
const RULE_TESTS = path.join(ROOT, 'contrib', 'prometheus', 'tidemark-alerts.test.yml')
const DASHBOARD = path.join(ROOT, 'contrib', 'grafana', 'tidemark.json')
const MiB = 1024 * 1024

/** Prometheus's own series a rule may name beside tidemark's. */
const PROMETHEUS_OWN = new Set(['up'])
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan'])

/**
 * The metric names a PromQL expression reads: identifiers outside strings,
 * label matchers, ranges and grouping lists that are not functions, keywords,
 * numbers or Grafana variables.
 */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ')
  const names: string[] = []
  for (const m of bare.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] || KEYWORDS.has(m[1].toLowerCase())) continue
    // a duration in offset 5m is a number with a unit, not a name
    if (/^\d/.test(m[1])) continue
    names.push(m[1])
  }
  return [...new Set(names)]
}

/** Every name an exposition has: its TYPE lines' and its samples' (a histogram's _bucket, _sum, _count). */
function namesIn(...e: Exposition[]): Set<string> {
  return new Set(e.flatMap((x) => [...x.types.keys(), ...x.samples.map((s) => s.name)]))
}

t.test('metricNames reads PromQL as Prometheus would', async (t) => {
  t.same(metricNames('sum by (volume) (rate(a_total{x="b c", volume=~"$volume"}[$__rate_interval])) / ignoring(severity) b'), ['a_total', 'b'])
  t.same(metricNames('x > 0 and x >= x offset 5m and on(volume) y{state="behind"} == 1'), ['x', 'y'])
  t.same(metricNames('histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) or on() vector(0)'), ['h_bucket'])
})

t.test('the Prometheus rules and the Grafana dashboard name only metrics a real appliance and agent export', async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 11,
    // Targets and a cap, so that every per-volume series exists.
    applianceExtra: ['--http', '127.0.0.1:0', '--rpo-target', 'vol=30s,2m', '--history-target', 'vol=1h', '--retain', 'vol=30d,1G'],
    agentExtra: ['--http', '127.0.0.1:0'],
  })
  const appliance = await scrape(`${await waitFor(() => httpUrl(v.app.err), "the appliance's http line")}/metrics`)
  const agent = await scrape(`${await waitFor(() => httpUrl(v.agent.err), "the agent's http line")}/metrics`)
  const exported = namesIn(appliance, agent)
  t.ok(exported.has('tidemark_alerts_firing'), 'the alerts gauge is exported even with nothing firing')

  const rules = YAML.parse(fs.readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: Array<{ alert: string; expr: string; labels?: { severity?: string } }> }> }
  const all = rules.groups.flatMap((g) => g.rules)
  t.ok(all.length >= ALERT_NAMES.length, `${all.length} rules`)
  for (const r of all) {
    const names = metricNames(r.expr)
    t.ok(names.length > 0, `${r.alert} reads some metric`)
    const unknown = names.filter((n) => !exported.has(n) && !PROMETHEUS_OWN.has(n))
    t.same(unknown, [], `${r.alert} (${r.labels?.severity}): ${names.join(', ')} are exported`)
    t.ok(r.labels?.severity === 'warning' || r.labels?.severity === 'error', `${r.alert} has a severity the appliance uses`)
  }
  const ruleNames = new Set(all.map((r) => r.alert))
  for (const a of ALERT_NAMES) t.ok(ruleNames.has(`Tidemark${a}`), `the appliance's ${a} has its Prometheus rule`)

  const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
    uid: string
    panels: Array<{ id: number; type: string; title: string; datasource?: { uid: string }; targets?: Array<{ expr: string }>; gridPos: { x: number; y: number; w: number; h: number } }>
    templating: { list: Array<{ name: string; type: string; query: unknown }> }
  }
  t.equal(dash.uid, 'tidemark')
  const queries: Array<[string, string]> = []
  for (const p of dash.panels) {
    t.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: placed on the grid`)
    if (p.type === 'row') continue
    t.equal(p.datasource?.uid, '${datasource}', `${p.title}: reads the chosen Prometheus`)
    t.ok(p.targets && p.targets.length > 0, `${p.title}: has queries`)
    for (const q of p.targets ?? []) queries.push([p.title, q.expr])
  }
  for (const v of dash.templating.list) {
    if (v.type === 'query') queries.push([`variable ${v.name}`, (v.query as { query: string }).query.replace(/^label_values\((.*),\s*\w+\)$/, '$1')])
  }
  t.equal(new Set(dash.panels.map((p) => p.id)).size, dash.panels.length, 'panel ids are unique')
  for (const [title, expr] of queries) {
    const names = metricNames(expr)
    t.ok(names.length > 0, `${title}: ${expr} reads some metric`)
    t.same(names.filter((n) => !exported.has(n)), [], `${title}: ${names.join(', ')} are exported`)
  }
  // The rows: RPO vs target, the three bandwidths, history vs target, the alerts.
  const titles = dash.panels.map((p) => p.title).join('\n')
  for (const want of [/RPO against target/, /Application, changed, wire/, /History against target/, /Issues/]) t.match(titles, want)
})

t.test('promtool: the rules check, and their unit tests pass', { skip: !have('promtool') && 'promtool is not installed (apt-get install prometheus)' }, async (t) => {
  const check = await run('promtool', ['check', 'rules', RULES])
  t.equal(check.code, 0, `promtool check rules: ${check.stdout}${check.stderr}`)
  t.match(check.stdout, /SUCCESS: \d+ rules found/)
  const unit = await run('promtool', ['test', 'rules', path.basename(RULE_TESTS)], { cwd: path.dirname(RULE_TESTS) })
  t.equal(unit.code, 0, `promtool test rules: ${unit.stdout}${unit.stderr}`)
  t.match(unit.stdout, /SUCCESS/)
})
