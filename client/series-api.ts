// The appliance's time series and TimeMark list over HTTP (served with
// `tidemark appliance --http`, kept by appliance/time-series.ts, drawn by the
// dashboard): the one definition of their shape, and fetch helpers.
//
//   GET /api/v1/series?volume=V[&from=ISO][&to=ISO][&step=1s|1m]   SeriesReply (VOLUME_COLUMNS)
//   GET /api/v1/series?store[&from=ISO][&to=ISO][&step=1s|1m]      SeriesReply (STORE_COLUMNS)
//   GET /api/v1/volumes/NAME/timemarks                              TimeMarksReply
//
// `to` defaults to now, `from` to an hour before `to`; `step` to 1s when
// `from` is within the last hour (the 1 s ring's reach), else 1m. A 1m point
// is the minute's average, except rpoSeconds: the minute's worst (max). The
// rates are the status API's, each over about the 10 s before its sample.
// Columns, not rows: t[i] goes with every column's [i], as charts take them.
// Only the points the appliance holds are listed: where it was down (or
// not yet sampling), consecutive times are more than one step apart.
import { getJson, STATUS_API, type FetchOptions } from './status-api'

export const SERIES_STEPS = { '1s': 1000, '1m': 60_000 } as const
export type SeriesStep = keyof typeof SERIES_STEPS

/** A volume's columns, in the order the ring files store them (append only: the order is on disk). */
export const VOLUME_COLUMNS = [
  'rpoSeconds',
  'rpoTargetSeconds',
  'rpoErrorSeconds',
  'appBytesPerSecond',
  'changedBytesPerSecond',
  'wireBytesPerSecond',
  'journalBytes',
  'historySeconds',
  'historyTargetSeconds',
  'backlogBytes',
] as const
export type VolumeColumn = (typeof VOLUME_COLUMNS)[number]

export const STORE_COLUMNS = ['freeBytes'] as const
export type StoreColumn = (typeof STORE_COLUMNS)[number]

export type SeriesReply<C extends string = VolumeColumn | StoreColumn> = {
  /** the volume's name, or null for the store */
  volume: string | null
  step: SeriesStep
  from: string
  to: string
  /** Unix seconds */
  t: number[]
} & {
  /** null: not known at that time (no agent report, no target set) */
  [K in C]?: Array<number | null>
}

export interface TimeMarkEntry {
  id: number
  label: string
  time: string
  consistency: 'app' | 'crash'
  pinned: boolean
}

export interface TimeMarksReply {
  volume: string
  /** oldest first */
  timemarks: TimeMarkEntry[]
}

export function getSeries(
  base: string,
  what: { volume: string } | 'store',
  range: { from?: Date; to?: Date; step?: SeriesStep } = {},
  opts?: FetchOptions
): Promise<SeriesReply> {
  const q = new URLSearchParams()
  if (what === 'store') q.set('store', '')
  else q.set('volume', what.volume)
  if (range.from) q.set('from', range.from.toISOString())
  if (range.to) q.set('to', range.to.toISOString())
  if (range.step) q.set('step', range.step)
  return getJson<SeriesReply>(base, `${STATUS_API}/series?${q}`, opts)
}

export function getTimeMarks(base: string, volume: string, opts?: FetchOptions): Promise<TimeMarksReply> {
  return getJson<TimeMarksReply>(base, `${STATUS_API}/volumes/${encodeURIComponent(volume)}/timemarks`, opts)
}
