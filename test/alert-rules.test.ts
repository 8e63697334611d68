// The alert rules (appliance/alert-rules.ts) as a function of the status the
// API serves, evaluated at chosen instants: the clocks the rules keep
// themselves (Behind, ReplicationStale, AgentDisconnected) and the cases the
// end-to-end tests (alerts.test.ts) cannot reach in test time: ten minutes
// behind, a young volume's history, the initial copy, an idle link.
import t from 'tap'
import { AlertRules, type Condition } from '../appliance/alert-rules'
import type { StoreStatus, VolumeStatus } from '../client/status-api'

const T0 = Date.parse('2026-12-01T00:00:00Z')

function status(over: Partial<VolumeStatus> & { rpoSeconds?: number | null } = {}): VolumeStatus {
  const { rpoSeconds, ...rest } = over
  return {
    volume: 'vol',
    state: 'normal',
    agent: { id: 'a', connected: true, identity: null, peer: '127.0.0.1:1', since: null, lastHeard: null },
    rpo: { seconds: rpoSeconds === undefined ? 0.5 : rpoSeconds, capturedBefore: null, targetSeconds: 30, errorSeconds: 120 },
    history: { seconds: 600, since: '2026-11-30T23:50:00Z', targetSeconds: 3600, trimmed: false },
    journal: { bytes: 1000, segments: 1, durableSeq: 10 },
    bytes: { app: 0, changed: 0, wire: 0 },
    rates: { appBytesPerSecond: 0, changedBytesPerSecond: 0, wireBytesPerSecond: 0 },
    backlogBytes: 0,
    timemarks: 0,
    lastTimeMark: null,
    sync: null,
    ...rest,
  }
}

const STORE: StoreStatus = { freeBytes: 500, totalBytes: 1000, journalBytes: 0, volumes: 1 }

function rules(cap: number | null = null): AlertRules {
  return new AlertRules({ behindAfterSeconds: 600, stallAfterSeconds: 300, journalCap: () => cap })
}

const names = (cs: Condition[]): string[] => cs.map((c) => `${c.name}/${c.severity}`)

t.test('RpoBreach: warning above the target, error above the error threshold, nothing without a target', async (t) => {
  const r = rules()
  t.same(names(r.evaluate(T0, [status({ rpoSeconds: 30 })], STORE)), [], 'at the threshold: not above it')
  t.same(names(r.evaluate(T0, [status({ rpoSeconds: 31 })], STORE)), ['RpoBreach/warning'])
  const e = r.evaluate(T0, [status({ rpoSeconds: 121 })], STORE)
  t.same(names(e), ['RpoBreach/error'], 'one condition, at its worst severity')
  t.equal(e[0].threshold, 120)
  const none = status({ rpoSeconds: 9999 })
  none.rpo.targetSeconds = null
  none.rpo.errorSeconds = null
  t.same(names(r.evaluate(T0, [none], STORE)), [], 'no target, no RpoBreach')
})

t.test('Behind only after --alert-behind-after in that state, and its clock restarts when it leaves it', async (t) => {
  const r = rules()
  const behind = status({ state: 'behind' })
  t.same(names(r.evaluate(T0, [behind], STORE)), [])
  t.same(names(r.evaluate(T0 + 600_000, [behind], STORE)), [], 'exactly 10 minutes: not longer')
  const c = r.evaluate(T0 + 601_000, [behind], STORE)
  t.same(names(c), ['Behind/warning'])
  t.equal(c[0].value, 601)
  t.same(names(r.evaluate(T0 + 602_000, [status()], STORE)), [], 'normal again')
  t.same(names(r.evaluate(T0 + 603_000, [behind], STORE)), [], 'behind again: a new clock')
})

t.test('HistoryShrinking: silent for a young volume and during the initial copy, 85 % and 75 % once trimmed', async (t) => {
  const r = rules()
  t.same(names(r.evaluate(T0, [status()], STORE)), [], '10 min of a 1 h target, nothing given up: young, not shrinking')
  const trimmed = (seconds: number, over: Partial<VolumeStatus> = {}): VolumeStatus => {
    const s = status(over)
    s.history = { ...s.history, seconds, trimmed: true }
    return s
  }
  t.same(names(r.evaluate(T0, [trimmed(3100)], STORE)), [], '86 %')
  t.same(names(r.evaluate(T0, [trimmed(3000)], STORE)), ['HistoryShrinking/warning'], '83 %')
  t.same(names(r.evaluate(T0, [trimmed(2600)], STORE)), ['HistoryShrinking/error'], '72 %')
  const copying = trimmed(100, { state: 'initial_copy', sync: { kind: 'initial_copy', remainingBytes: 10, percent: 50, bytesPerSecond: 1 } })
  t.same(names(r.evaluate(T0, [copying], STORE)), [], 'silent during the initial copy')
})

t.test('ReplicationStale counts only while connected with a backlog and nothing durable', async (t) => {
  const r = rules()
  t.same(names(r.evaluate(T0, [status()], STORE)), [])
  // An hour idle (no backlog): nothing to be stale about.
  t.same(names(r.evaluate(T0 + 3_600_000, [status()], STORE)), [])
  const waiting = status({ backlogBytes: 4096 })
  t.same(names(r.evaluate(T0 + 3_601_000, [waiting], STORE)), [], 'a backlog that just came: the clock starts now')
  t.same(names(r.evaluate(T0 + 3_632_000, [waiting], STORE)), ['ReplicationStale/warning'], '31 s without a durable write')
  const moved = status({ backlogBytes: 4096, journal: { bytes: 2000, segments: 1, durableSeq: 11 } })
  t.same(names(r.evaluate(T0 + 3_633_000, [moved], STORE)), [], 'a durable write restarts it')
})

t.test('AgentDisconnected: the RPO target, or 60 s without one; JournalNearLimit; StoreNearlyFull', async (t) => {
  const r = rules(10_000)
  const gone = status({ agent: { id: 'a', connected: false, identity: null, peer: null, since: null, lastHeard: new Date(T0).toISOString() }, backlogBytes: null })
  t.same(names(r.evaluate(T0 + 1000, [gone], STORE)), [])
  t.same(names(r.evaluate(T0 + 31_000, [gone], STORE)), ['AgentDisconnected/warning'], 'since it was last heard: 31 s, over the 30 s target')
  t.same(names(r.evaluate(T0 + 121_000, [gone], STORE)), ['AgentDisconnected/error'])
  const untargeted = status({ volume: 'other', agent: { ...gone.agent, lastHeard: null }, backlogBytes: null })
  untargeted.rpo = { ...untargeted.rpo, targetSeconds: null, errorSeconds: null }
  const r2 = rules()
  t.same(names(r2.evaluate(T0, [untargeted], STORE)), [], 'never heard since the start: from the first evaluation')
  t.same(names(r2.evaluate(T0 + 60_000, [untargeted], STORE)), [])
  t.same(names(r2.evaluate(T0 + 61_000, [untargeted], STORE)), ['AgentDisconnected/warning'], '60 s without a target')

  const full = status({ journal: { bytes: 9001, segments: 3, durableSeq: 10 } })
  const near = r.evaluate(T0, [full], STORE)
  t.same(names(near), ['JournalNearLimit/warning'])
  t.equal(near[0].threshold, 9000)
  t.same(names(rules(null).evaluate(T0, [full], STORE)), [], 'no cap, no JournalNearLimit')

  const store = (free: number): string[] => names(rules().evaluate(T0, [], { ...STORE, freeBytes: free }))
  t.same(store(100), [], '10 % free')
  t.same(store(99), ['StoreNearlyFull/warning'])
  t.same(store(49), ['StoreNearlyFull/error'])
})

t.test('scheduled plan tests: a failed one is an error at once; none passed for two periods is overdue', async (t) => {
  const DAY = 86_400_000
  let plans = [{ plan: 'shop', file: '/etc/tidemark/shop.yaml', everyMs: DAY, running: false, lastRun: null as number | null, lastResult: null as 'passed' | 'failed' | null, lastSuccess: null as number | null, rtoSeconds: null, lastError: null as string | null, runs: 0, scheduledSince: T0 }]
  const r = new AlertRules({ behindAfterSeconds: 600, stallAfterSeconds: 300, journalCap: () => null, plans: () => plans })
  t.same(names(r.evaluate(T0 + DAY, [], STORE)), [], 'not run yet, within two periods: nothing')
  const late = r.evaluate(T0 + 2 * DAY + 1000, [], STORE)
  t.same(names(late), ['PlanTestOverdue/warning'], 'no pass for two periods since the schedule began: overdue')
  t.equal(late[0].plan, 'shop')
  plans = [{ ...plans[0], lastRun: T0 + DAY, lastResult: 'failed', lastError: 'machine db: check timed out', runs: 1 }]
  const failed = r.evaluate(T0 + DAY + 5000, [], STORE)
  t.same(names(failed), ['PlanTestFailed/error'], 'a failed run: an error at once')
  t.match(failed[0].summary, /plan shop failed: machine db: check timed out/)
  plans = [{ ...plans[0], lastRun: T0 + 2 * DAY, lastResult: 'passed', lastSuccess: T0 + 2 * DAY, lastError: null, runs: 2 }]
  t.same(names(r.evaluate(T0 + 3 * DAY, [], STORE)), [], 'a passed run clears both')
  t.same(names(r.evaluate(T0 + 4 * DAY + 1000, [], STORE)), ['PlanTestOverdue/warning'], 'and two periods without another pass is overdue again')
})
