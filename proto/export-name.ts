// The names of the appliance's NBD exports: `VOLUME@POINT`, where POINT is
// `latest`, `seq=N`, `mark=ID|LABEL` or `at=ISO-TIME`, and a bare `VOLUME`
// (the newest exact point when the client connects). The one place that
// reads and writes them: the appliance parses what a client asks for, the
// CLI and the tests build names to connect to.
//
// A volume name never holds '@' (it is cut at the last '@', so a label may
// hold one); a mark's label is taken as it is, so `mark=` followed by digits
// is an id, like `--timemark`.
import type { PointInTime, PointInTime__Output } from './generated/tidemark/v1/PointInTime'

/** An ISO time (with a time of day) in ms since the epoch; null when it is not one. */
export function isoTimeMs(v: string): number | null {
  // A date alone (2026-11-23) is midnight UTC to Date.parse; insist on a time.
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(v) ? Date.parse(v) : NaN
  return Number.isFinite(ms) && ms >= 0 ? ms : null
}

export type ParsedExportName = { volume: string; point: PointInTime__Output | null } | { error: string }

/** `VOLUME[@POINT]` -> the volume and the point (null: bare, the newest exact point). */
export function parseExportName(name: string): ParsedExportName {
  const at = name.indexOf('@')
  if (at < 0) return { volume: name, point: null }
  const volume = name.slice(0, at)
  const p = name.slice(at + 1)
  if (!volume) return { error: `export name ${JSON.stringify(name)} has no volume before '@'` }
  const usage = 'a point is latest, seq=N, mark=ID|LABEL or at=ISO-TIME'
  if (p === 'latest') return { volume, point: { latest: true, point: 'latest' } }
  const eq = p.indexOf('=')
  const key = eq < 0 ? p : p.slice(0, eq)
  const value = eq < 0 ? '' : p.slice(eq + 1)
  switch (key) {
    case 'seq':
      if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) return { error: `export ${JSON.stringify(name)}: seq=${value} is not a seq (${usage})` }
      return { volume, point: { seq: Number(value), point: 'seq' } }
    case 'mark':
      if (!value) return { error: `export ${JSON.stringify(name)}: mark= needs a TimeMark id or label (${usage})` }
      return { volume, point: { timemark: value, point: 'timemark' } }
    case 'at': {
      const ms = isoTimeMs(value)
      if (ms === null) return { error: `export ${JSON.stringify(name)}: at=${value} is not an ISO time such as 2026-12-02T08:00:00Z (${usage})` }
      return { volume, point: { atMs: ms, point: 'atMs' } }
    }
    default:
      return { error: `export ${JSON.stringify(name)}: unknown point ${JSON.stringify(p)} (${usage})` }
  }
}

/** The export name of a point of a volume. */
export function exportName(volume: string, point: PointInTime | null): string {
  if (!point) return volume
  if (point.latest) return `${volume}@latest`
  if (point.seq !== undefined && point.seq !== null) return `${volume}@seq=${point.seq}`
  if (point.timemark) return `${volume}@mark=${point.timemark}`
  if (point.atMs !== undefined && point.atMs !== null) return `${volume}@at=${new Date(Number(point.atMs)).toISOString()}`
  return volume
}
