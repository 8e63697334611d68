// The appliance's time series on disk (appliance/series-ring.ts and
// appliance/time-series.ts), through their files: a ring wraps around in
// place and never grows, a torn record is skipped, a reopened ring shows the
// old points and a gap, a ring of another shape starts again; the 1 min
// rollup averages (max for the RPO), survives a close mid-minute and a crash
// mid-minute, and the query defaults its step from the range.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { HEADER_SIZE, recordSize, ringFileSize, SeriesRing } from '../appliance/series-ring'
import { COARSE_SLOTS, FINE_SLOTS, TimeSeries, type SeriesSource } from '../appliance/time-series'
import { VOLUME_COLUMNS } from '../client/series-api'
import type { StoreStatus, VolumeStatus } from '../client/status-api'
import { tmpdir } from './helpers'

const T0 = Date.parse('2026-12-03T10:00:00Z')

t.test('a ring wraps around in place, keeps its size, and skips empty, stale and torn slots', async (t) => {
  const file = path.join(tmpdir(t), 'r.ring')
  const shape = { columns: 2, stepMs: 1000, slots: 10 }
  const r = SeriesRing.open(file, shape)
  t.ok(r.fresh)
  t.equal(fs.statSync(file).size, ringFileSize(shape), 'created at its full size')
  for (let i = 0; i < 25; i++) r.write(T0 + i * 1000 + 300, [i, i === 3 ? null : -i])
  t.equal(fs.statSync(file).size, ringFileSize(shape), 'no bigger after wrapping twice')

  const all = r.read(T0, T0 + 24_000)
  t.same(all.t, Array.from({ length: 10 }, (_, i) => T0 + (15 + i) * 1000), 'only the last 10 steps: the older ones were overwritten')
  t.same(all.values[0], [15, 16, 17, 18, 19, 20, 21, 22, 23, 24])
  const some = r.read(T0 + 17_000, T0 + 19_500)
  t.same(some.t, [T0 + 17_000, T0 + 18_000, T0 + 19_000], 'a range inside the reach, times rounded down to the step')
  t.same(r.read(T0 + 30_000, T0 + 31_000).t, [], 'the future holds nothing: its slots hold older times')

  // A crash mid-write: the record's trailing time is not its leading one.
  const slot = (T0 / 1000 + 20) % 10
  const fd = fs.openSync(file, 'r+')
  const torn = Buffer.alloc(8)
  torn.writeDoubleLE(T0 + 10_000)
  fs.writeSync(fd, torn, 0, 8, HEADER_SIZE + (slot + 1) * recordSize(2) - 8)
  fs.closeSync(fd)
  t.notOk(r.read(T0, T0 + 24_000).t.includes(T0 + 20_000), 'the torn record is skipped')
  t.equal(r.read(T0, T0 + 24_000).t.length, 9, 'and only it')
  r.close()

  // Not-known values come back as NaN.
  const r2 = SeriesRing.open(file, shape)
  t.notOk(r2.fresh, 'the same shape reopens the same file')
  r2.write(T0 + 40_000, [1, null])
  t.ok(Number.isNaN(r2.read(T0 + 40_000, T0 + 40_000).values[1][0]))
  r2.close()

  const r3 = SeriesRing.open(file, { ...shape, columns: 3 })
  t.ok(r3.fresh, 'another shape cannot be read as this one: started again')
  t.same(r3.read(T0, T0 + 60_000).t, [])
  t.equal(fs.statSync(file).size, ringFileSize({ ...shape, columns: 3 }))
  r3.close()

  t.throws(() => SeriesRing.open(file, { columns: 0, stepMs: 1000, slots: 10 }), /whole positive columns/)
})

/** A status source that says what the test tells it to. */
class FakeVolumes implements SeriesSource {
  rpo: number | null = 1
  app = 0
  free = 1e9
  async volumes(): Promise<VolumeStatus[]> {
    return [
      {
        volume: 'vol',
        state: 'normal',
        agent: { id: 'a', connected: true, identity: null, peer: null, since: null, lastHeard: null },
        rpo: { seconds: this.rpo, capturedBefore: null, targetSeconds: 10, errorSeconds: null },
        history: { seconds: 100, since: '', targetSeconds: null, trimmed: false },
        journal: { bytes: 4096, segments: 1, durableSeq: 1 },
        bytes: { app: 0, changed: 0, wire: 0 },
        rates: { appBytesPerSecond: this.app, changedBytesPerSecond: 0, wireBytesPerSecond: 0 },
        backlogBytes: 0,
        timemarks: 0,
        lastTimeMark: null,
        sync: null,
      },
    ]
  }
  async storeStatus(): Promise<StoreStatus> {
    return { freeBytes: this.free, totalBytes: 2e9, journalBytes: 4096, volumes: 1 }
  }
}

t.test('samples at 1 s and 1 min (average, max for the RPO), bounded, across a close and a crash mid-minute', async (t) => {
  const dir = path.join(tmpdir(t), 'timeseries')
  const src = new FakeVolumes()
  const umask = process.umask(0o022) // the usual shell default: the modes below must not rely on a stricter one
  t.teardown(() => process.umask(umask))
  let ts = new TimeSeries(dir, src)
  // Minute 0: RPO 1..6 s, app rate 100..600 B/s, one sample with the RPO not known.
  for (let i = 0; i < 6; i++) {
    src.rpo = i + 1
    src.app = (i + 1) * 100
    await ts.sample(T0 + i * 10_000)
  }
  src.rpo = null
  await ts.sample(T0 + 59_000)
  src.rpo = 2
  await ts.sample(T0 + 61_000) // minute 1 starts: minute 0 is written

  const fine = ts.series('vol', { fromMs: T0, toMs: T0 + 61_000, step: '1s' }, T0 + 61_000)
  t.equal(fine.step, '1s')
  t.same(fine.t, [0, 10, 20, 30, 40, 50, 59, 61].map((s) => T0 / 1000 + s), 't in Unix seconds, only the seconds sampled')
  t.same(fine.rpoSeconds, [1, 2, 3, 4, 5, 6, null, 2], 'a not-known RPO is null')
  t.same(fine.rpoTargetSeconds?.slice(0, 2), [10, 10])
  t.same(fine.rpoErrorSeconds?.[0], null)
  t.same(Object.keys(fine).filter((k) => (VOLUME_COLUMNS as readonly string[]).includes(k)).sort(), [...VOLUME_COLUMNS].sort(), 'every column')

  const coarse = ts.series('vol', { fromMs: T0, toMs: T0 + 61_000, step: '1m' }, T0 + 61_000)
  t.same(coarse.t, [T0 / 1000], 'minute 0 is written, minute 1 is still in progress')
  t.equal(coarse.rpoSeconds?.[0], 6, "the minute's RPO is its worst")
  t.equal(coarse.appBytesPerSecond?.[0], (100 + 200 + 300 + 400 + 500 + 600 + 600) / 7, 'the rates are averaged')

  const store = ts.series(null, { fromMs: T0, toMs: T0 + 61_000, step: '1s' }, T0 + 61_000)
  t.equal(store.volume, null)
  t.same(store.freeBytes?.length, 8)

  // A clean close mid-minute writes the minute so far; a reopen in the same minute takes it up again.
  await ts.close()
  t.same(ts.series('vol', { fromMs: T0, toMs: T0 + 120_000, step: '1m' }, T0 + 62_000).t, [T0 / 1000, T0 / 1000 + 60], 'the minute in progress was written at close')
  ts = new TimeSeries(dir, src)
  src.rpo = 8
  await ts.sample(T0 + 70_000)
  const back = ts.series('vol', { fromMs: T0, toMs: T0 + 70_000, step: '1s' }, T0 + 70_000)
  t.same(back.t.slice(-3), [T0 / 1000 + 59, T0 / 1000 + 61, T0 / 1000 + 70], 'the old points, then a gap, then the new one')

  // A crash mid-minute (no close): the next start rebuilds that minute from the 1 s ring.
  src.rpo = 3
  await ts.sample(T0 + 80_000)
  ts = new TimeSeries(dir, src) // the old one is dropped without close(): its fds leak for this test's length only
  await ts.sample(T0 + 185_000)
  const rebuilt = ts.series('vol', { fromMs: T0, toMs: T0 + 185_000, step: '1m' }, T0 + 185_000)
  t.same(rebuilt.t, [T0 / 1000, T0 / 1000 + 60], 'minute 1 was rebuilt; minute 3 is in progress')
  t.equal(rebuilt.rpoSeconds?.[1], 8, "minute 1's worst RPO, from every second it had")
  await ts.close()

  // The default step: 1s within the last hour, 1m beyond it; a 1 s query reaches one hour back at most.
  ts = new TimeSeries(dir, src)
  const now = T0 + 185_000
  t.equal(ts.series('vol', {}, now).step, '1s')
  t.equal(ts.series('vol', { fromMs: now - 2 * 3600_000 }, now).step, '1m')
  t.throws(() => ts.series('vol', { fromMs: now, toMs: now - 1 }, now), /is after to/)
  await ts.close()

  // Bounded: the files are their fixed size whatever was written.
  const sizes = fs.readdirSync(dir).map((f) => [f, fs.statSync(path.join(dir, f)).size])
  t.same(new Map(sizes as Array<[string, number]>), new Map([
    ['vol.1s.ring', ringFileSize({ columns: VOLUME_COLUMNS.length, stepMs: 1000, slots: FINE_SLOTS })],
    ['vol.1m.ring', ringFileSize({ columns: VOLUME_COLUMNS.length, stepMs: 60_000, slots: COARSE_SLOTS })],
    ['_store.1s.ring', ringFileSize({ columns: 1, stepMs: 1000, slots: FINE_SLOTS })],
    ['_store.1m.ring', ringFileSize({ columns: 1, stepMs: 60_000, slots: COARSE_SLOTS })],
  ]), 'two rings per volume and two for the store, each its fixed size')
  t.equal(fs.statSync(dir).mode & 0o777, 0o700, 'the directory is owner-only')
  t.same(fs.readdirSync(dir).filter((f) => (fs.statSync(path.join(dir, f)).mode & 0o777) !== 0o600), [], 'and so is every file')
})
