// Named recovery views (`tidemark timeview create|list|delete`): which views
// the appliance serves from its own NBD server, kept in DATA/views/ so that
// they, and what clients wrote to them, survive a restart or a kill -9.
//
// One directory per view, DATA/views/NAME/:
//   view.json     the record (name, volume, seq, writable, when, the point as
//                 given), replaced atomically (native/atomic-file.ts): the
//                 view exists exactly when this file does
//   overlay.data  a writable view's copy-on-write overlay, and
//   overlay.map   which sectors it holds (native/src/overlay.h owns their
//                 format; the NBD server's View creates them when it first
//                 opens the view and reopens them as of their last FLUSH)
// The overlay lives here, beside the journal but never in it: nothing a view
// holds is journalled, indexed or replicated.
//
// Create: mkdir, then view.json. Delete: the view is forgotten first, then
// the NBD server drops it (ApplianceNbdServer.dropView: no new connection
// gets it), then view.json goes, then the directory. A directory without
// view.json is a create or a delete a crash interrupted: open() removes it.
//
// A view is pinned to the seq its point named when it was created, so it
// shows the same bytes for its whole life however the volume's history grows.
// Retention keeps that seq, and everything after it, while the view exists,
// as it keeps a pinned TimeMark (seqsOf() -> Retention.holds).
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { syncDir, writeFileAtomic } from '../native/atomic-file'
import { TidemarkError } from '../proto/errors'
import type { NbdEndpoint, ViewExportSpec } from './nbd-exports'

export type { NbdEndpoint, ViewExportSpec }

/** What view.json holds. */
export interface ViewRecord {
  name: string
  volume: string
  seq: number
  writable: boolean
  /** ISO 8601 */
  createdAt: string
  volumeSize: number
  /** The point as it was given, said in words ("TimeMark 12 'nightly' (app, ...)", "seq 1234"). */
  point: string
}

/** The NBD server's side of a delete (ApplianceNbd). */
export interface ViewServer {
  /** No new connection gets the view (ApplianceNbdServer.dropView). */
  dropView(name: string): void | Promise<void>
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/
const RECORD = 'view.json'

/** Refuses a name that cannot be a view's export name (isVolume: a volume has this name). */
export function checkViewName(name: string, isVolume: (name: string) => boolean): void {
  if (name.includes('@')) {
    throw new TidemarkError('VIEW_BAD_NAME', `view name ${JSON.stringify(name)} may not contain '@' (VOLUME@POINT names the appliance's own exports of points)`)
  }
  if (!NAME.test(name) || name === '.' || name === '..') {
    throw new TidemarkError('VIEW_BAD_NAME', `view name ${JSON.stringify(name)} must be 1 to 64 of A-Z a-z 0-9 . _ - (and not . or ..)`)
  }
  if (isVolume(name)) throw new TidemarkError('VIEW_BAD_NAME', `view name ${JSON.stringify(name)} is a volume's name; an export name must say one thing`)
}

export function viewDescription(r: ViewRecord): string {
  return `tidemark view ${r.name}: volume ${r.volume} at ${r.point}, ${r.writable ? 'writable (copy-on-write overlay)' : 'read-only'}`
}

export class ViewRegistry {
  private readonly views = new Map<string, ViewRecord>()
  /** Creates and deletes one at a time (two creates of one name, a delete during a create). */
  private chain: Promise<unknown> = Promise.resolve()
  private server: ViewServer | null = null
  private endpoints: NbdEndpoint[] = []
  private tls = false

  private constructor(
    /** DATA/views */
    readonly dir: string,
    private readonly log: Logger
  ) {}

  /** Loads DATA/views/, removing what interrupted creates and deletes left behind. */
  static async open(dataDir: string, log: Logger): Promise<ViewRegistry> {
    const r = new ViewRegistry(path.join(dataDir, 'views'), log)
    await fs.promises.mkdir(r.dir, { recursive: true, mode: 0o700 })
    for (const e of await fs.promises.readdir(r.dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue
      const dir = path.join(r.dir, e.name)
      let text: string
      try {
        text = await fs.promises.readFile(path.join(dir, RECORD), 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        log.info({ view: e.name }, `removing ${dir}: a view create or delete a restart interrupted`)
        await fs.promises.rm(dir, { recursive: true, force: true })
        continue
      }
      try {
        const rec = JSON.parse(text) as ViewRecord
        if (rec.name !== e.name || typeof rec.volume !== 'string' || !Number.isSafeInteger(rec.seq)) throw new Error('fields missing or wrong')
        r.views.set(rec.name, rec)
      } catch (err) {
        // Kept on disk (it may hold a DR test's writes); not served.
        log.error({ view: e.name, err: (err as Error).message }, `view ${e.name}: ${path.join(dir, RECORD)} is unreadable (${(err as Error).message}); not served`)
      }
    }
    await syncDir(r.dir)
    if (r.views.size) log.info({ views: [...r.views.keys()] }, `${r.views.size} views`)
    return r
  }

  /**
   * The NBD server that serves the views, where it listens, and whether it
   * requires TLS (null: none, `appliance` without --nbd).
   */
  attach(server: ViewServer | null, endpoints: NbdEndpoint[] = [], tls = false): void {
    this.server = server
    this.endpoints = server ? endpoints : []
    this.tls = tls
  }

  /** Where NBD clients reach a view (nbds: with TLS). */
  uris(name: string): string[] {
    const s = this.tls ? 's' : ''
    return this.endpoints.map((e) =>
      'unix' in e ? `nbd${s}+unix:///${name}?socket=${e.unix}` : `nbd${s}://${e.tcp.host.includes(':') ? `[${e.tcp.host}]` : e.tcp.host}:${e.tcp.port}/${name}`
    )
  }

  get served(): boolean {
    return this.server !== null
  }

  record(name: string): ViewRecord | undefined {
    return this.views.get(name)
  }

  records(): ViewRecord[] {
    return [...this.views.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  // ---- what the NBD server asks (ApplianceNbd.setViewSource) ----

  get(name: string): ViewExportSpec | undefined {
    const r = this.views.get(name)
    return r ? this.spec(r) : undefined
  }

  list(): ViewExportSpec[] {
    return this.records().map((r) => this.spec(r))
  }

  private spec(r: ViewRecord): ViewExportSpec {
    const s: ViewExportSpec = { name: r.name, volume: r.volume, seq: r.seq, writable: r.writable, description: viewDescription(r) }
    if (r.writable) s.overlay = this.overlayFiles(r.name)
    return s
  }

  overlayFiles(name: string): { data: string; map: string } {
    return { data: path.join(this.dir, name, 'overlay.data'), map: path.join(this.dir, name, 'overlay.map') }
  }

  /** Bytes the view's overlay takes on disk (sparse: what was written). */
  overlayBytes(name: string): number {
    const r = this.views.get(name)
    if (!r?.writable) return 0
    try {
      return fs.statSync(this.overlayFiles(name).data).blocks * 512
    } catch {
      return 0  // not opened yet: nothing written
    }
  }

  /** The seqs retention must keep for a volume: its views' seqs. */
  seqsOf(volume: string): number[] {
    const out: number[] = []
    for (const r of this.views.values()) if (r.volume === volume) out.push(r.seq)
    return out.sort((a, b) => a - b)
  }

  // ---- create, delete ----

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn)
    this.chain = run.catch(() => {})
    return run
  }

  /** Records a new view (the name checked by checkViewName, the point resolved by the caller). */
  create(rec: ViewRecord): Promise<ViewRecord> {
    return this.serial(async () => {
      if (this.views.has(rec.name)) {
        const o = this.views.get(rec.name)!
        throw new TidemarkError('VIEW_EXISTS', `a view named ${rec.name} exists already (volume ${o.volume} at seq ${o.seq}); delete it first or pick another name`)
      }
      const dir = path.join(this.dir, rec.name)
      if (fs.existsSync(dir)) {
        if (fs.existsSync(path.join(dir, RECORD))) {
          throw new TidemarkError('VIEW_EXISTS', `${dir} holds a view this appliance cannot read (see its log); move it away or pick another name`)
        }
        // Left over from a delete that failed part way: nothing in it counts.
        await fs.promises.rm(dir, { recursive: true, force: true })
      }
      await fs.promises.mkdir(dir, { mode: 0o700 })
      await syncDir(this.dir) // the directory's own entry, so a power cut cannot take the view with it
      await writeFileAtomic(path.join(dir, RECORD), `${JSON.stringify(rec, null, 2)}\n`)
      this.views.set(rec.name, rec)
      this.log.info({ view: rec.name, volume: rec.volume, seq: rec.seq, writable: rec.writable }, `view ${rec.name} created: ${viewDescription(rec)}`)
      return rec
    })
  }

  /** Forgets a view, closes its connections and drops its overlay. */
  delete(name: string): Promise<ViewRecord> {
    return this.serial(async () => {
      const rec = this.views.get(name)
      if (!rec) throw new TidemarkError('UNKNOWN_VIEW', `no view named ${JSON.stringify(name)} on this appliance (see tidemark timeview list)`)
      this.views.delete(name)
      const dir = path.join(this.dir, name)
      try {
        await this.server?.dropView(name)
        await fs.promises.rm(path.join(dir, RECORD), { force: true })
        await syncDir(dir)
      } catch (err) {
        this.views.set(name, rec)
        throw err
      }
      await fs.promises.rm(dir, { recursive: true, force: true })
      this.log.info({ view: name, volume: rec.volume, seq: rec.seq }, rec.writable ? `view ${name} deleted with its overlay` : `view ${name} deleted`)
      return rec
    })
  }
}
