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
// The gRPC rule: an appliance with TLS requires NBD STARTTLS with a
// certificate its CA signed on every NBD listener (nbdinfo and qemu speak it:
// nbds+unix://, tls-creds), and a client opens or lists only the volumes its
// identity holds the read role on (the --allow list, access-policy.ts);
// without TLS, TCP is loopback only unless --insecure, and there are no roles
// to check (the appliance refuses an allow-list with an NBD listener that
// cannot identify its clients: TCP without TLS).
//
// On a unix socket without TLS a client is the local user the kernel reports
// (native/src/nbd_server.cc PeerUidIdentity, "uid:N" as in the allow-list).
// With an allow-list that socket is 0666, like the gRPC unix listener: the
// allow-list decides per uid, and an unlisted uid opens and lists nothing.
// It is bound in a 0700 directory and renamed into place with its mode
// (native/unix-socket-path.ts publishSocket). Without one it stays 0600.
import fs from 'node:fs'
import { nbdListenerConfig, type NbdListenerOptions } from '../native/nbd-listener'
import { clearSocketPath, publishSocket } from '../native/unix-socket-path'
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
import type { Authorizer } from './authorizer'
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
  opened = 0
  refused = 0
  /** The socket published at the unix endpoint (publishSocket), removed at close if it is still ours. */
  private published: { file: string; ino: number } | null = null

  private constructor(
    private readonly handle: ApplianceNbdHandle,
    private readonly store: ApplianceStore,
    private readonly auth: Authorizer,
    private readonly log: Logger,
    readonly endpoint: NbdEndpoint
  ) {}

  static async start(
    store: ApplianceStore,
    endpoint: NbdEndpoint,
    opts: {
      insecure: boolean
      isLoopback: (h: string) => boolean
      tls?: { cert: string; key: string; ca: string }
      auth: Authorizer
      /** connection cap and handshake deadline (TLS comes from `tls`) */
      limits?: Omit<NbdListenerOptions, 'tls'>
    },
    log: Logger
  ): Promise<ApplianceNbdServer> {
    if ('tcp' in endpoint && !opts.tls && !opts.insecure && !opts.isLoopback(endpoint.tcp.host)) {
      throw new TidemarkError('USAGE', `refusing to serve NBD on ${endpoint.tcp.host} without TLS: give --tls-cert, --tls-key and --tls-ca, or --insecure`)
    }
    let server: ApplianceNbdServer | undefined
    const nlog = log.child({ component: 'nbd' })
    let handle: ApplianceNbdHandle
    const tls = opts.tls ? { tlsCert: opts.tls.cert, tlsKey: opts.tls.key, tlsCa: opts.tls.ca } : {}
    const listen = (where: Record<string, unknown>): ApplianceNbdHandle => {
      try {
        return listenApplianceNbd(
          { ...where, ...tls, ...nbdListenerConfig(opts.limits) },
          (id, name, identity) => (name === null ? server!.list(id, identity) : server!.open(id, name, identity)),
          (level, message) => nlog[level >= 50 ? 'error' : level >= 40 ? 'warn' : level >= 30 ? 'info' : 'debug'](message)
        )
      } catch (err) {
        throw new TidemarkError('LISTEN_FAILED', `cannot serve NBD: ${(err as Error).message}`)
      }
    }
    // Local users by uid: the allow-list decides, so any of them may connect (see the top of this file).
    const byUid = 'unix' in endpoint && !opts.tls && opts.auth.policy !== null
    let published: { file: string; ino: number } | null = null
    if (byUid) {
      const file = endpoint.unix
      await clearSocketPath(file, 'LISTEN_FAILED', `--nbd unix:${file}`, 'another process')
      let h: ApplianceNbdHandle | null = null
      try {
        const ino = await publishSocket(file, 0o666, (at) => {
          h = listen({ unix: at })
        })
        published = { file, ino }
      } catch (err) {
        await (h as ApplianceNbdHandle | null)?.close()
        throw err instanceof TidemarkError ? err : new TidemarkError('LISTEN_FAILED', `cannot serve NBD on unix:${file}: ${(err as Error).message}`)
      }
      handle = h!
      nlog.info({ nbd: `unix:${file}`, mode: '0666' }, 'NBD clients on the unix socket are identified by uid')
    } else {
      handle = listen('unix' in endpoint ? { unix: endpoint.unix } : { tcpHost: endpoint.tcp.host, tcpPort: endpoint.tcp.port })
    }
    const bound: NbdEndpoint = 'unix' in endpoint ? endpoint : { tcp: { host: endpoint.tcp.host, port: handle.tcpPort() } }
    server = new ApplianceNbdServer(handle, store, opts.auth, nlog, bound)
    server.published = published
    return server
  }

  /** "unix:PATH" or "tcp:HOST:PORT", as the log and ServerInfo say it. */
  get address(): string {
    const e = this.endpoint
    return 'unix' in e ? `unix:${e.unix}` : `tcp:${e.tcp.host.includes(':') ? `[${e.tcp.host}]` : e.tcp.host}:${e.tcp.port}`
  }

  /** Whether clients must STARTTLS with a certificate (the appliance has TLS: see the top of this file). */
  get requiresTls(): boolean {
    return this.auth.tls
  }

  /** Named views (view-registry.ts) join the exports. */
  setViewSource(src: ViewSource): void {
    this.views = src
  }

  /** A deleted view: no new connection gets it, and the open ones are cut (their requests in flight fail). */
  dropView(name: string): void {
    const exp = this.viewExports.get(name)
    if (exp) {
      const n = this.handle.disconnect(exp)
      if (n) this.log.info({ view: name, connections: n }, `view ${name} deleted: ${n} connections to it closed`)
      exp.close()
    }
    this.viewExports.delete(name)
  }

  /**
   * The native server's identity for a client ("" for none: no TLS, or a
   * certificate naming nobody) as the policy takes it. A certificate naming
   * "uid:..." is no identity here either (authorizer.ts).
   */
  private who(identity: string): string | null {
    if (!identity) return null
    // Only the native server's SO_PEERCRED says "uid:N", and only on a unix socket without TLS.
    if (identity.startsWith('uid:')) return 'unix' in this.endpoint && !this.auth.tls ? identity : null
    return identity
  }

  /** May a client of this identity read the volume (the NbdExport role)? */
  private allowed(identity: string, volume: string): boolean {
    const who = this.who(identity)
    if (!this.auth.policy) return !this.auth.tls || who !== null
    return this.auth.visibleTo(who, 'NbdExport', [volume]).length === 1
  }

  /** NBD_OPT_LIST: each volume's newest point and each view, those the client may use. */
  private list(id: number, identity: string): void {
    const l: Array<{ name: string; description: string }> = []
    for (const v of this.store.volumes()) {
      if (!this.allowed(identity, v.name)) continue
      l.push({
        name: `${v.name}@latest`,
        description: v.fullSyncDone
          ? `${v.name} at seq ${v.exactSeq}, the newest exact point (it moves on: a connection keeps the one it opened)`
          : `${v.name}: initial copy not complete, no point is exact yet`,
      })
    }
    for (const view of this.views?.list() ?? []) if (this.allowed(identity, view.volume)) l.push({ name: view.name, description: view.description })
    this.handle.listed(id, l)
  }

  private open(id: number, name: string, identity: string): void {
    this.resolve(name, identity).then(
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

  private async resolve(name: string, identity: string): Promise<{ handle: ApplianceExportHandle; shared: boolean }> {
    const view = this.views?.get(name)
    if (view) {
      this.authorize(identity, view.volume)
      return { handle: await this.viewExport(view), shared: true }
    }
    const parsed = parseExportName(name)
    if ('error' in parsed) throw new TidemarkError('BAD_POINT', parsed.error)
    // Before anything else is looked at: an unknown volume and a forbidden one look alike.
    this.authorize(identity, parsed.volume)
    const v = this.store.get(parsed.volume)
    if (!v) {
      throw new TidemarkError(
        'UNKNOWN_VOLUME',
        parsed.volume ? `no volume or view named ${JSON.stringify(parsed.volume)} on this appliance` : 'name an export: VOLUME@POINT or a view (nbdinfo --list shows them)'
      )
    }
    const p = await resolvePoint(v, parsed.point)
    const map = await v.pointMap(p.seq)
    const handle = openApplianceExport({ name, description: describeResolved(v.name, p), size: v.meta.size, writable: false }, map, this.handle)
    return { handle, shared: false }
  }

  private authorize(identity: string, volume: string): void {
    this.auth.check(this.who(identity), 'NbdExport', volume, this.auth.tls)
  }

  private async viewExport(view: ViewExportSpec): Promise<ApplianceExportHandle> {
    const have = this.viewExports.get(view.name)
    if (have) return have
    const v = this.store.get(view.volume)
    if (!v) throw new TidemarkError('UNKNOWN_VOLUME', `view ${view.name}: its volume ${view.volume} is no longer on this appliance`)
    const map = await v.pointMap(view.seq)
    const again = this.viewExports.get(view.name) // another connection built it meanwhile
    if (again) return again
    const handle = openApplianceExport(
      { name: view.name, description: view.description, size: v.meta.size, writable: view.writable, overlayPath: view.overlay?.data, overlayMapPath: view.overlay?.map },
      map,
      this.handle
    )
    this.viewExports.set(view.name, handle)
    return handle
  }

  stats(): { address: string; opened: number; refused: number; rejectedHandshakes: number } {
    return { address: this.address, opened: this.opened, refused: this.refused, rejectedHandshakes: this.handle.rejectedHandshakes() }
  }

  async close(): Promise<void> {
    await this.handle.close()
    for (const h of this.viewExports.values()) h.close()
    this.viewExports.clear()
    // The native server removes the socket it bound, which was renamed: this one is ours to remove (if still ours).
    const p = this.published
    this.published = null
    try {
      if (p && fs.lstatSync(p.file).ino === p.ino) fs.rmSync(p.file)
    } catch {
      // gone already
    }
  }
}
