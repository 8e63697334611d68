// The appliance's own NBD server (`tidemark appliance --nbd unix:PATH|tcp:HOST:PORT`):
// every point of every volume, read-only, as export `VOLUME@POINT`
// (proto/export-name.ts), and the named views `timeview create` makes.
//
// The server and every request are native (native/src/appliance_nbd_addon.cc):
// a read is a binary search in the point's map and a pread of the journal
// segment or the base image that holds it. JavaScript is asked only when a
// client names an export: this module resolves the name to a seq with the
// same rules as restore (point-resolver.ts; a refused point is refused here
// with the same message, in the NBD option's error reply), gets the point's
// map (point-maps.ts) and answers with an export over it. A connection keeps
// its export, and so its point, for as long as it lasts: `VOLUME` and
// `VOLUME@latest` are the newest exact point when the client connects.
//
// Over TCP, the gRPC rule: loopback only, unless --insecure. (NBD STARTTLS,
// which a TLS appliance would need on the network, is not built yet.)
import type { Logger } from 'pino'
import {
  listenApplianceNbd,
  openApplianceExport,
  type ApplianceExportHandle,
  type ApplianceNbdHandle,
  type NbdRefusal,
} from '../native/appliance-nbd'
import { TidemarkError } from '../proto/errors'
import { parseExportName } from '../proto/export-name'
import { resolvePoint, type ResolvedPoint } from './point-resolver'
import type { ApplianceStore } from './store'

export type NbdEndpoint = { unix: string } | { tcp: { host: string; port: number } }

/** A named view (view-registry.ts), as the NBD server needs it. */
export interface ViewExportSpec {
  name: string
  volume: string
  seq: number
  writable: boolean
  description: string
  /** A writable view's overlay files, in the appliance's data directory. */
  overlay?: { data: string; map: string }
}

export interface ViewSource {
  get(name: string): ViewExportSpec | undefined
  list(): ViewExportSpec[]
}

/** How often the export listing (NBD_OPT_LIST) is refreshed. */
const LISTING_MS = 1000

/** Why a point was refused -> the NBD option error that carries it. */
function refusalOf(code: string): NbdRefusal {
  switch (code) {
    case 'UNKNOWN_VOLUME':
    case 'UNKNOWN_TIMEMARK':
      return 'unknown'
    case 'BAD_POINT':
    case 'AMBIGUOUS_TIMEMARK':
      return 'invalid'
    default:
      return 'policy' // a point restore refuses too: expired, not durable, inexact, copy incomplete, corrupt
  }
}

/** "demo at seq 1234 (TimeMark 7 'nightly', app, 2026-...)" */
export function describeResolved(volume: string, p: ResolvedPoint): string {
  if (p.timemark) {
    const t = p.timemark
    return `${volume} at seq ${p.seq}: TimeMark ${t.seq}${t.label ? ` '${t.label}'` : ''} (${t.consistency}, ${new Date(t.wallMs).toISOString()})`
  }
  return `${volume} at seq ${p.seq}${p.timeMs ? ` (recorded ${new Date(p.timeMs).toISOString()})` : ''}`
}

export class ApplianceNbdServer {
  private views: ViewSource | null = null
  /** Named views' exports, shared by every connection to them (one overlay each). */
  private readonly viewExports = new Map<string, ApplianceExportHandle>()
  private readonly timer: NodeJS.Timeout
  opened = 0
  refused = 0

  private constructor(
    private readonly handle: ApplianceNbdHandle,
    private readonly store: ApplianceStore,
    private readonly log: Logger,
    readonly endpoint: NbdEndpoint
  ) {
    this.timer = setInterval(() => this.refreshListing(), LISTING_MS)
    this.timer.unref()
    this.refreshListing()
  }

  static start(store: ApplianceStore, endpoint: NbdEndpoint, opts: { insecure: boolean; isLoopback: (h: string) => boolean }, log: Logger): ApplianceNbdServer {
    if ('tcp' in endpoint && !opts.insecure && !opts.isLoopback(endpoint.tcp.host)) {
      throw new TidemarkError(
        'USAGE',
        `refusing to serve NBD on ${endpoint.tcp.host} without TLS: NBD STARTTLS is not built yet, so --nbd tcp: is loopback only unless --insecure`
      )
    }
    let server: ApplianceNbdServer | undefined
    const nlog = log.child({ component: 'nbd' })
    let handle: ApplianceNbdHandle
    try {
      handle = listenApplianceNbd(
        'unix' in endpoint ? { unix: endpoint.unix } : { tcpHost: endpoint.tcp.host, tcpPort: endpoint.tcp.port },
        (id, name) => server!.open(id, name),
        (level, message) => nlog[level >= 50 ? 'error' : level >= 40 ? 'warn' : level >= 30 ? 'info' : 'debug'](message)
      )
    } catch (err) {
      throw new TidemarkError('LISTEN_FAILED', `cannot serve NBD: ${(err as Error).message}`)
    }
    const bound: NbdEndpoint = 'unix' in endpoint ? endpoint : { tcp: { host: endpoint.tcp.host, port: handle.tcpPort() } }
    server = new ApplianceNbdServer(handle, store, nlog, bound)
    return server
  }

  /** "unix:PATH" or "tcp:HOST:PORT", as the log and ServerInfo say it. */
  get address(): string {
    const e = this.endpoint
    return 'unix' in e ? `unix:${e.unix}` : `tcp:${e.tcp.host.includes(':') ? `[${e.tcp.host}]` : e.tcp.host}:${e.tcp.port}`
  }

  /** Named views (view-registry.ts) join the exports. */
  setViewSource(src: ViewSource): void {
    this.views = src
    this.refreshListing()
  }

  /** A deleted view: no new connection gets it (open ones end when their clients go). */
  dropView(name: string): void {
    this.viewExports.get(name)?.close()
    this.viewExports.delete(name)
    this.refreshListing()
  }

  private refreshListing(): void {
    const l = this.store.volumes().map((v) => ({
      name: `${v.meta.name}@latest`,
      description: v.fullSyncDone ? `${v.meta.name} at seq ${v.exactSeq}, the newest exact point (it moves on: a connection keeps the one it opened)` : `${v.meta.name}: initial copy not complete, no point is exact yet`,
    }))
    for (const view of this.views?.list() ?? []) l.push({ name: view.name, description: view.description })
    this.handle.setListing(l)
  }

  private open(id: number, name: string): void {
    this.resolve(name).then(
      (exp) => {
        this.opened++
        this.handle.answer(id, exp.handle)
        if (!exp.shared) exp.handle.close() // the connection holds it now
      },
      (err: unknown) => {
        this.refused++
        const e = err as TidemarkError
        this.handle.refuse(id, refusalOf(e.code ?? ''), e.message ?? String(err))
      }
    )
  }

  private async resolve(name: string): Promise<{ handle: ApplianceExportHandle; shared: boolean }> {
    const view = this.views?.get(name)
    if (view) return { handle: await this.viewExport(view), shared: true }
    const parsed = parseExportName(name)
    if ('error' in parsed) throw new TidemarkError('BAD_POINT', parsed.error)
    const v = this.store.get(parsed.volume)
    if (!v) {
      throw new TidemarkError(
        'UNKNOWN_VOLUME',
        parsed.volume ? `no volume or view named ${JSON.stringify(parsed.volume)} on this appliance` : 'name an export: VOLUME@POINT or a view (nbdinfo --list shows them)'
      )
    }
    const p = await resolvePoint(v, parsed.point)
    const map = await v.pointMap(p.seq)
    const handle = openApplianceExport({ name, description: describeResolved(v.meta.name, p), size: v.meta.size, writable: false }, map)
    return { handle, shared: false }
  }

  private async viewExport(view: ViewExportSpec): Promise<ApplianceExportHandle> {
    const have = this.viewExports.get(view.name)
    if (have) return have
    const v = this.store.get(view.volume)
    if (!v) throw new TidemarkError('UNKNOWN_VOLUME', `view ${view.name}: its volume ${view.volume} is no longer on this appliance`)
    const map = await v.pointMap(view.seq)
    const again = this.viewExports.get(view.name) // another connection built it meanwhile
    if (again) return again
    const handle = openApplianceExport({ name: view.name, description: view.description, size: v.meta.size, writable: view.writable }, map)
    this.viewExports.set(view.name, handle)
    return handle
  }

  stats(): { address: string; opened: number; refused: number; rejectedHandshakes: number } {
    return { address: this.address, opened: this.opened, refused: this.refused, rejectedHandshakes: this.handle.rejectedHandshakes() }
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    await this.handle.close()
    for (const h of this.viewExports.values()) h.close()
    this.viewExports.clear()
  }
}
