// The dashboard's routes on the appliance's --http listener, beside the
// status API's (appliance-http.ts asks these first):
//   /, /index.html, /dashboard/FILE   the page: static files served as they
//                                      are from the repository's dashboard/
//                                      directory and uPlot's dist/ (no build step)
//   /api/v1/series?...                the time series (client/series-api.ts)
//   /api/v1/volumes/NAME/timemarks    the volume's TimeMarks, for the timeline
// The static files need no role (they hold no data, and the transport's own
// rules still apply: loopback, or HTTPS with a client certificate); what
// they fetch is checked like the rest of the API, with the `read` role.
import fs from 'node:fs'
import path from 'node:path'
import type { Authorizer } from '../appliance/authorizer'
import type { TimeSeries } from '../appliance/time-series'
import type { VolumeStatusSource } from '../appliance/volume-status'
import { SERIES_STEPS, type SeriesStep, type TimeMarksReply } from '../client/series-api'
import { STATUS_API } from '../client/status-api'
import { TidemarkError } from '../proto/errors'
import type { HttpCaller, HttpReply } from './http-server'

export const DASHBOARD_ROUTES = `/ (the dashboard), ${STATUS_API}/series?volume=NAME|store&from=ISO&to=ISO&step=1s|1m and ${STATUS_API}/volumes/NAME/timemarks`

/**
 * The dashboard/ directory: ROOT/dashboard both from the sources (cli/) and
 * from the compiled tree (dist/cli/), so a fresh clone serves it without
 * copying anything into dist.
 */
export function dashboardDir(): string {
  const candidates = [path.resolve(__dirname, '..', 'dashboard'), path.resolve(__dirname, '..', '..', 'dashboard')]
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'index.html')))
  if (!found) throw new TidemarkError('NOT_FOUND', `the dashboard's files are missing (looked in ${candidates.join(' and ')})`)
  return found
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
}

/** The only files served: a fixed table, so no request path ever reaches the file system. */
function staticFiles(): Map<string, string> {
  const dir = dashboardDir()
  const uplot = path.dirname(require.resolve('uplot/dist/uPlot.iife.min.js'))
  return new Map([
    ['/', path.join(dir, 'index.html')],
    ['/index.html', path.join(dir, 'index.html')],
    ['/dashboard/dashboard.js', path.join(dir, 'dashboard.js')],
    ['/dashboard/dashboard.css', path.join(dir, 'dashboard.css')],
    ['/dashboard/uPlot.iife.min.js', path.join(uplot, 'uPlot.iife.min.js')],
    ['/dashboard/uPlot.min.css', path.join(uplot, 'uPlot.min.css')],
  ])
}

function badRequest(why: string): HttpReply {
  return { status: 400, body: { error: why } }
}

/** An ISO time from the query, or undefined when absent; a reason string when unreadable. */
function isoParam(q: URLSearchParams, name: string): number | undefined | string {
  const v = q.get(name)
  if (v === null || v === '') return undefined
  const ms = Date.parse(v)
  return Number.isNaN(ms) ? `${name}=${v} is not an ISO time such as 2026-12-02T08:00:00Z` : ms
}

export function dashboardRoutes(d: {
  status: VolumeStatusSource
  series: TimeSeries
  auth: Authorizer
}): (path: string, c: HttpCaller, query: URLSearchParams) => Promise<HttpReply | null> {
  const files = staticFiles()
  return async (p, c, query) => {
    const file = files.get(p)
    if (file) return { status: 200, body: await fs.promises.readFile(file), type: TYPES[path.extname(file)] }

    if (p === `${STATUS_API}/series`) {
      const volume = query.get('volume')
      const store = query.has('store')
      if (!volume === !store) return badRequest('give exactly one of volume=NAME (a volume\'s series) or store (the store\'s)')
      const from = isoParam(query, 'from')
      const to = isoParam(query, 'to')
      if (typeof from === 'string') return badRequest(from)
      if (typeof to === 'string') return badRequest(to)
      const step = query.get('step') || undefined
      if (step !== undefined && !(step in SERIES_STEPS)) return badRequest(`step=${step} is not one of ${Object.keys(SERIES_STEPS).join(', ')}`)
      if (volume) {
        d.auth.check(c.identity, 'Stats', volume, c.tls)
        if (!d.status.volume(volume)) throw new TidemarkError('UNKNOWN_VOLUME', `the appliance has no volume ${JSON.stringify(volume)}`)
      } else {
        d.auth.check(c.identity, 'Stats', null, c.tls)
      }
      return { status: 200, body: d.series.series(volume || null, { fromMs: from, toMs: to, step: step as SeriesStep | undefined }) }
    }

    const m = new RegExp(`^${STATUS_API}/volumes/([^/]+)/timemarks$`).exec(p)
    if (m) {
      const name = m[1]
      d.auth.check(c.identity, 'Stats', name, c.tls)
      const v = d.status.volume(name)
      if (!v) throw new TidemarkError('UNKNOWN_VOLUME', `the appliance has no volume ${JSON.stringify(name)}`)
      const all = await v.timemarks()
      const reply: TimeMarksReply = {
        volume: name,
        timemarks: all
          .sort((a, b) => a.seq - b.seq)
          .map((e) => ({ id: e.seq, label: e.label, time: new Date(e.wallMs).toISOString(), consistency: e.consistency, pinned: e.pinned })),
      }
      return { status: 200, body: reply }
    }
    return null
  }
}
