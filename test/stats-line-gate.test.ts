// The rule that keeps idle stats lines out of the log (proto/stats-line-gate.ts),
// with the clock given: a changed line passes, an unchanged one waits a minute,
// fields that drift on their own do not count as a change.
import t from 'tap'
import { IDLE_REPEAT_MS, StatsLineGate } from '../proto/stats-line-gate'

t.test('a line passes when it changed, and an unchanged one once a minute', async (t) => {
  const g = new StatsLineGate([])
  t.ok(g.due('v', { writes: 0 }, 0), 'the first line of a key is logged')
  t.notOk(g.due('v', { writes: 0 }, 10_000), 'the same values 10 s later are not')
  t.ok(g.due('w', { writes: 0 }, 10_000), 'another key has its own last line')
  t.ok(g.due('v', { writes: 1 }, 20_000), 'a changed value is logged at once')
  t.notOk(g.due('v', { writes: 1 }, 20_000 + IDLE_REPEAT_MS - 1), 'unchanged: held back until a minute after the last logged line')
  t.ok(g.due('v', { writes: 1 }, 20_000 + IDLE_REPEAT_MS), 'and logged once the minute is up')
  t.notOk(g.due('v', { writes: 1 }, 20_000 + IDLE_REPEAT_MS + 1000), 'the minute starts again from that line')
})

t.test('fields that drift with the clock are not a change, at any depth', async (t) => {
  const g = new StatsLineGate(['rpoLagMs', 'syncProgress.secondsLeft'])
  t.ok(g.due('v', { rpoLagMs: 5, syncProgress: { percent: 10, secondsLeft: 90 } }, 0))
  t.notOk(g.due('v', { rpoLagMs: 900, syncProgress: { percent: 10, secondsLeft: 3 } }, 1000), 'a lag and a time left that moved alone')
  t.ok(g.due('v', { rpoLagMs: 900, syncProgress: { percent: 11, secondsLeft: 3 } }, 2000), 'progress is a change')
  t.ok(g.due('v', { rpoLagMs: 900, syncProgress: null }, 3000), 'so is the copy ending')
  // Only the path named: a field of the same name elsewhere still counts.
  t.ok(g.due('x', { other: { rpoLagMs: 1 } }, 0))
  t.ok(g.due('x', { other: { rpoLagMs: 2 } }, 1000), 'other.rpoLagMs is not rpoLagMs')
})
