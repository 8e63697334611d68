// `tidemark appliance --http HOST:PORT`: the appliance's routes on the
// operator plane's listener (http-server.ts):
//   /metrics                 Prometheus (appliance/appliance-metrics.ts)
//   /api/v1/volumes[/NAME]   the JSON status (client/status-api.ts)
//   /api/v1/store            the store's free space
//   /, /api/v1/series, /api/v1/volumes/NAME/timemarks   the dashboard (dashboard-http.ts)
//   /api/v1/alerts           the alerts firing (appliance/alerts.ts)
// With an allow-list, every route needs the `read` role (Admin.Stats's) on
// some volume, and shows only the volumes the caller holds it on; /metrics
// drops the other volumes' series from its text.
import type { Logger } from 'pino'
import type { Appliance } from '../appliance/appliance'
import type { AlertEngine } from '../appliance/alerts'
import { ApplianceMetrics } from '../appliance/appliance-metrics'
import type { Authorizer } from '../appliance/authorizer'
import { VolumeStatusSource } from '../appliance/volume-status'
import { TimeSeries } from '../appliance/time-series'
import { STATUS_API } from '../client/status-api'
import { TidemarkError } from '../proto/errors'
import { DASHBOARD_ROUTES, dashboardRoutes } from './dashboard-http'
import { HttpServer, metricsReply, notFound, type HttpCaller, type HttpReply } from './http-server'

const ROUTES = `/metrics, ${STATUS_API}/volumes, ${STATUS_API}/volumes/NAME, ${STATUS_API}/store and ${STATUS_API}/alerts`

/** Keeps the lines of an exposition text whose volume label (if any) is one of `visible`. */
export function onlyVolumes(text: string, visible: Set<string>): string {
  return text
    .split('\n')
    .filter((line) => {
      if (line.startsWith('#')) return true
      const m = /[{,]volume="((?:[^"\\]|\\.)*)"/.exec(line)
      return !m || visible.has(m[1].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)))
    })
    .join('\n')
}

export async function startApplianceHttp(
  appliance: Appliance,
  // status: the volumes' status the alerts read too (started and stopped by the caller: one sampler, not two)
  o: { host: string; port: number; tls?: { cert: string; key: string; ca: string }; dataDir: string; log: Logger; alerts: AlertEngine; status: VolumeStatusSource }
): Promise<{ server: HttpServer; close(): Promise<void> }> {
  const status = o.status
  const metrics = new ApplianceMetrics(status, appliance.replication, o.alerts)
  const plans = appliance.plans
  if (plans) metrics.setPlans(() => plans.status())
  const auth: Authorizer = appliance.auth
  const series = new TimeSeries(TimeSeries.dirOf(o.dataDir), status, o.log)
  const dashboard = dashboardRoutes({ status, series, auth })
  series.start()
  // null: every volume (no allow-list)
  const visible = (c: HttpCaller): string[] | null => {
    if (!auth.policy) {
      auth.check(c.identity, 'Stats', null, c.tls)
      return null
    }
    auth.check(c.identity, 'Stats', null, c.tls)
    return auth.visibleTo(c.identity, 'Stats', status.names())
  }
  const router = async (path: string, c: HttpCaller, query: URLSearchParams): Promise<HttpReply> => {
    const page = await dashboard(path, c, query)
    if (page) return page
    if (path === '/metrics') {
      const names = visible(c)
      // Plans name no volume: their series go to who may see every volume (no roles, or admin of *).
      const text = await metrics.metrics(names, !auth.policy || (c.identity !== null && auth.policy.allows(c.identity, 'admin', '*')))
      return metricsReply(names ? onlyVolumes(text, new Set(names)) : text)
    }
    if (path === `${STATUS_API}/volumes` || path === `${STATUS_API}/volumes/`) {
      return { status: 200, body: { volumes: await status.volumes(visible(c)) } }
    }
    if (path.startsWith(`${STATUS_API}/volumes/`)) {
      const name = path.slice(`${STATUS_API}/volumes/`.length)
      auth.check(c.identity, 'Stats', name, c.tls)
      const v = status.volume(name)
      if (!v) throw new TidemarkError('UNKNOWN_VOLUME', `the appliance has no volume ${JSON.stringify(name)}`)
      return { status: 200, body: await status.status(v) }
    }
    if (path === `${STATUS_API}/store`) {
      visible(c)
      return { status: 200, body: await status.storeStatus() }
    }
    if (path === `${STATUS_API}/alerts`) {
      return { status: 200, body: { alerts: o.alerts.firing(visible(c)) } }
    }
    return notFound(path, `${ROUTES}, ${DASHBOARD_ROUTES}`)
  }
  let server: HttpServer
  try {
    server = await HttpServer.start({ host: o.host, port: o.port, tls: o.tls, name: 'tidemark appliance', router, log: o.log })
  } catch (err) {
    await series.close()
    throw err
  }
  return {
    server,
    close: async () => {
      await series.close()
      await server.close()
    },
  }
}
