// A short soak in CI (benchmarks/soak.ts runs the long one): one cycle of
// each fault kind (a full appliance disk too) during fio and ext4 + sqlite3 workloads through real agent
// and appliance processes, each cycle ending in a TimeMark restored
// byte-exact against the volume, and `journal verify` clean at the end.
import t from 'tap'
import { soak } from '../benchmarks/soak'

t.test('faults during workloads: every cycle converges byte-exact, the journal verifies', async (t) => {
  const lines: string[] = []
  // Cycle 4 runs ext4 + sqlite3 (every fourth cycle does), so it gets an appliance-side fault.
  const sequence = ['agent-kill', 'appliance-kill', 'link-cut', 'appliance-kill', 'both-kill', 'disk-full'] as const
  const rep = await soak({ cycles: sequence.length, seed: 42, faults: [...sequence], sequence: [...sequence], volumeMiB: 32, ext4: true, progress: (l) => lines.push(l) })
  t.comment(lines.join('\n'))
  t.equal(rep.cycles, sequence.length, 'every cycle ran')
  t.same(rep.faults, { 'agent-kill': 1, 'appliance-kill': 2, 'link-cut': 1, 'both-kill': 1, 'disk-full': 1 }, 'each fault was injected')
  t.equal(rep.results[5].bit, true, 'the full disk hit the journal: the appliance reported it out of space')
  t.equal(rep.results[3].workload, 'ext4', 'the fourth cycle ran ext4 + sqlite3')
  t.ok(rep.results[3].written > 0, `sqlite3 committed rows on ext4 (${rep.results[3].written})`)
  for (const r of rep.results.filter((r) => r.workload === 'fio' && (r.fault === 'appliance-kill' || r.fault === 'link-cut'))) {
    t.ok(r.written > 0, `cycle ${r.cycle}: fio wrote ${r.written} bytes through the ${r.fault}`)
  }
  t.equal(rep.divergences, 0, `no cycle diverged${rep.results.filter((r) => r.divergent).map((r) => `; cycle ${r.cycle}: ${r.detail}`).join('')}`)
  t.ok(rep.verify.ok, `journal verify is clean${rep.verify.problems.length ? `: ${rep.verify.problems.join('; ')}` : ''}`)
})
