// `tidemark appliance`: the recovery-site daemon. Opens (and recovers) the
// store under --data, serves Replication and Admin on a TCP listener, a unix
// one (unix-listener.ts) or both, and logs counts now and then. Without TLS
// TCP is loopback only, unless told --insecure: an appliance reachable from
// the network without mutual TLS would journal whatever anyone sends it.
//
// With an allow-list (roles, access-policy.ts) every caller must be
// identified: by its certificate (TCP with TLS) or its uid (the unix
// listener). Plain TCP identifies nobody, so an allow-list refuses it at start
// (and --insecure with it), as it refuses a TCP NBD listener without TLS (on
// a unix socket NBD clients are their uid, nbd-exports.ts). Without
// an allow-list plain loopback TCP trusts everyone who can reach it, and the
// appliance says so at start.
import type { JournalIo } from './journal'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { MAX_MESSAGE_BYTES } from '../proto/load'
import { initHash } from '../proto/hash'
import { StatsLineGate } from '../proto/stats-line-gate'
import { AdminService } from './admin-service'
import { DataChannelServer } from './data-channel'
import type { NbdListenerOptions } from '../native/nbd-listener'
import { ApplianceNbdServer, type NbdEndpoint } from './nbd-exports'
import { AccessPolicy, describeAllowList, type AllowList } from './access-policy'
import { Authorizer } from './authorizer'
import { IdentityLimits, type IdentityLimitOptions } from './identity-limits'
import { UnixListener } from './unix-listener'
import { ReplicationService } from './replication-service'
import { ApplianceStore } from './store'
import { Retention, type MarkRate, type RetentionRule } from './retention'
import { settleRetentionLock } from './retention-lock'
import { Scrubber } from './scrub'
import { AuditTrail } from './audit-trail'
import { PlanSchedule, type ScheduledPlan } from './plan-schedule'
import { ViewRegistry } from './view-registry'

export interface ApplianceOptions {
  dataDir: string
  /** The TCP listener (null: the unix listener only). */
  listen: { host: string; port: number } | null
  /** The unix listener's socket path (unix-listener.ts). */
  listenUnix?: string
  tls?: { cert: string; key: string; ca: string }
  insecure?: boolean
  /**
   * The data channel's port (data-channel.ts) on the listen host: 0 for any
   * free port (the default; agents learn it from their Welcome), null for
   * none (batches then travel on the gRPC streams).
   */
  dataPort?: number | null
  /** Roles per identity (access-policy.ts); null: none, every caller may everything. */
  allow?: AllowList | null
  /** Caps per identity (identity-limits.ts); none by default. */
  limits?: IdentityLimitOptions
  segmentBytes?: number
  /** Each volume keeps a replica image (replica-image.ts); default true. */
  replicaImages?: boolean
  /** How journal segments are written (journal.ts JournalIo; default direct). */
  journalIo?: JournalIo
  statsIntervalMs?: number
  /** Retention rules, first match per volume (retention.ts). */
  retain?: RetentionRule[]
  /** --retain-lock (retention-lock.ts): history younger than it is never given up. */
  retainLock?: { ms: number; text: string } | null
  /** --limit-mark-rate (retention.ts): how far an "N marks" rule may reach; null or absent: off. */
  markRate?: MarkRate | null
  /** How often retention runs, ms (0: only when asked, `journal compact`). */
  compactEveryMs?: number
  /** Serve every point over NBD here (nbd-exports.ts). */
  nbd?: NbdEndpoint
  /** The NBD listener's connection cap and handshake deadline. */
  nbdListener?: NbdListenerOptions
  /** How often every journal is scrubbed, ms (0: never; scrub.ts). */
  scrubEveryMs?: number
  /** Recovery plans tested on a schedule (plan-schedule.ts). */
  plans?: ScheduledPlan[]
  logger: Logger
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true
  if (net.isIPv4(host)) return host.startsWith('127.')
  if (net.isIPv6(host)) return host === '::1' || host === '0:0:0:0:0:0:0:1'
  return false
}

/** The appliance's id: made once, kept in DATA/appliance-id. */
function applianceId(dataDir: string): string {
  const file = path.join(dataDir, 'appliance-id')
  try {
    return fs.readFileSync(file, 'utf8').trim()
  } catch {
    const id = crypto.randomUUID()
    fs.writeFileSync(`${file}.tmp`, `${id}\n`)
    fs.renameSync(`${file}.tmp`, file)
    return id
  }
}

/**
 * Refuses at start what would serve callers it cannot identify or should not
 * trust; each message names the fix.
 */
function checkExposure(opts: ApplianceOptions): void {
  if (!opts.listen && !opts.listenUnix) throw new TidemarkError('USAGE', 'give --listen HOST:PORT, --listen unix:PATH, or both')
  if (opts.allow) {
    if (opts.insecure) {
      throw new TidemarkError('USAGE', '--insecure with --allow: roles need identified callers; drop --insecure and use TLS (--tls-cert, --tls-key, --tls-ca) or --listen unix:PATH')
    }
    if (opts.listen && !opts.tls) {
      throw new TidemarkError(
        'USAGE',
        `refusing --listen ${opts.listen.host}:${opts.listen.port} without TLS with an allow-list: plain TCP identifies nobody; give --tls-cert, --tls-key and --tls-ca, or listen only on --listen unix:PATH`
      )
    }
    // On a unix socket NBD clients are identified by uid (nbd-exports.ts); over TCP only by certificate.
    if (opts.nbd && 'tcp' in opts.nbd && !opts.tls) {
      throw new TidemarkError('USAGE', '--nbd tcp: without TLS with an allow-list: NBD clients could not be identified; give --tls-cert, --tls-key and --tls-ca (NBD STARTTLS), or --nbd unix:PATH (clients identified by uid)')
    }
  }
  if (opts.listen && !opts.tls && !opts.insecure && !isLoopback(opts.listen.host)) {
    throw new TidemarkError('USAGE', `refusing to listen on ${opts.listen.host} without TLS: give --tls-cert, --tls-key and --tls-ca, or --insecure`)
  }
}

/** What the appliance says at start about who it trusts, or null when every caller is identified. */
export function trustNote(opts: ApplianceOptions): string | null {
  if (opts.allow) return null
  const notes: string[] = []
  if (opts.listen && !opts.tls) {
    notes.push(
      isLoopback(opts.listen.host)
        ? `no TLS and no --allow: everyone who can reach ${opts.listen.host} (every local user) may replicate, restore, pin and compact every volume`
        : `--insecure: everyone who can reach ${opts.listen.host} may replicate, restore, pin and compact every volume`
    )
  }
  if (opts.listen && opts.tls) notes.push('no --allow: every certificate the CA signed may replicate, restore, pin and compact every volume')
  if (opts.listenUnix) notes.push(`no --allow: the unix listener is 0600, the appliance's own user may do everything there`)
  return notes.length ? notes.join('; ') : null
}

export class Appliance {
  readonly port: number
  private timer: NodeJS.Timeout | null = null
  // The history kept is measured up to now: it grows by the second while nothing happens.
  private readonly statsGate = new StatsLineGate(['retainedWindowSeconds'])
  private retention: Retention | null = null
  private scrubber: Scrubber | null = null
  /** Recovery plans tested on a schedule (plan-schedule.ts). */
  plans: PlanSchedule | null = null
  private stopping: Promise<void> | null = null
  /** The NBD server, with --nbd. */
  nbd: ApplianceNbdServer | null = null
  /** The data channel, unless turned off. */
  data: DataChannelServer | null = null
  /** The unix listener, with --listen unix:PATH. */
  unix: UnixListener | null = null
  /** Who may do what: the HTTP listener (cli/appliance-http.ts) checks its callers here too. */
  auth!: Authorizer

  private constructor(
    private readonly server: grpc.Server,
    readonly store: ApplianceStore,
    readonly replication: ReplicationService,
    private readonly log: Logger,
    port: number
  ) {
    this.port = port
  }

  static async start(opts: ApplianceOptions): Promise<Appliance> {
    const log = opts.logger
    checkExposure(opts)
    let creds: grpc.ServerCredentials
    let tlsFiles: { ca: Buffer; cert: Buffer; key: Buffer } | null = null
    if (opts.tls) {
      const read = (f: string, what: string): Buffer => {
        try {
          return fs.readFileSync(f)
        } catch (err) {
          throw new TidemarkError('USAGE', `cannot read ${what} ${f}: ${(err as Error).message}`)
        }
      }
      tlsFiles = { ca: read(opts.tls.ca, '--tls-ca'), cert: read(opts.tls.cert, '--tls-cert'), key: read(opts.tls.key, '--tls-key') }
      creds = grpc.ServerCredentials.createSsl(tlsFiles.ca, [{ cert_chain: tlsFiles.cert, private_key: tlsFiles.key }], true)
    } else {
      creds = grpc.ServerCredentials.createInsecure()
    }
    fs.mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 })
    // Before anything is opened: a start that would shorten the lock is refused.
    const lock = await settleRetentionLock(opts.dataDir, opts.retainLock ?? null)
    await initHash()
    const id = applianceId(opts.dataDir)
    const store = await ApplianceStore.open(opts.dataDir, log, { segmentBytes: opts.segmentBytes, replicaImages: opts.replicaImages, journalIo: opts.journalIo })
    const auth = new Authorizer(opts.allow ? new AccessPolicy(opts.allow, log) : null, !!opts.tls)
    let data: DataChannelServer | null = null
    if (opts.dataPort !== null && opts.listen) {
      try {
        data = await DataChannelServer.listen(opts.listen.host, opts.dataPort ?? 0, tlsFiles, log)
      } catch (err) {
        await store.close()
        throw err
      }
    }
    const replication = new ReplicationService(store, auth, log, id, data)
    const limits = new IdentityLimits(opts.limits ?? {}, log)
    limits.count = (code, volume) => replication.countRejection(code, volume)
    for (const v of store.volumes()) if (v.meta.createdBy) limits.noteCreated(v.meta.createdBy, v.meta.name)
    replication.limits = limits
    store.limits = limits
    if (lock) log.info({ retainLock: lock.text, since: lock.since }, `retention lock: no point younger than ${lock.text} is given up, by any rule or request`)
    const retention = new Retention(store, opts.retain ?? [], log, lock?.ms ?? 0, opts.markRate ?? null)
    store.onNoSpace = (volume) => retention.underPressure(volume)
    let nbd: ApplianceNbdServer | null = null
    if (opts.nbd) {
      try {
        nbd = await ApplianceNbdServer.start(store, opts.nbd, { insecure: !!opts.insecure, isLoopback, tls: opts.tls, auth, limits: opts.nbdListener }, log)
      } catch (err) {
        await data?.close()
        await store.close()
        throw err
      }
    }
    const admin = new AdminService(store, replication, auth, log, id, retention, nbd)
    admin.audit = await AuditTrail.open(opts.dataDir)
    // Named views (timeview create): kept in DATA/views, served by the NBD
    // server, their seqs held from retention.
    const views = await ViewRegistry.open(opts.dataDir, log)
    retention.holds = (volume) => views.seqsOf(volume)
    admin.views = views
    if (nbd) {
      views.attach(nbd, [nbd.endpoint], !!opts.tls)
      nbd.setViewSource(views)
    }
    const server = new grpc.Server({
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
    })
    replication.addToServer(server)
    admin.addToServer(server)
    let port = 0
    let unix: UnixListener | null = null
    const listening = opts.listen ? `${opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host}:${opts.listen.port}` : null
    try {
      if (opts.listen) {
        const where = listening!
        port = await new Promise<number>((resolve, reject) =>
          server.bindAsync(where, creds, (err, p) => (err ? reject(new TidemarkError('LISTEN_FAILED', `cannot listen on ${where}: ${err.message}`)) : resolve(p)))
        )
      }
      if (opts.listenUnix) {
        unix = await UnixListener.listen(opts.listenUnix, server, grpc.ServerCredentials.createInsecure(), !!opts.allow, log)
        auth.unix = unix
      }
    } catch (err) {
      server.forceShutdown()
      await nbd?.close()
      await data?.close()
      await store.close()
      throw err
    }
    const host = listening ? listening.slice(0, listening.lastIndexOf(':')) : null
    const a = new Appliance(server, store, replication, log, port)
    a.unix = unix
    a.auth = auth
    a.nbd = nbd
    a.data = data
    a.retention = retention
    retention.start(opts.compactEveryMs ?? 60_000)
    a.scrubber = new Scrubber(store, log)
    a.scrubber.start(opts.scrubEveryMs ?? 86_400_000)
    // The scheduled plan tests reach this appliance as an operator would: its unix listener, else its TCP one.
    // With TLS on its NBD, TCP with its own TLS files even when it has a unix listener: the plan's VMs
    // must show a certificate there, and a command on the unix listener has none to give them.
    const viaUnix = unix && !(opts.tls && nbd && host)
    a.plans = new PlanSchedule(
      opts.plans ?? [],
      () => (unix && viaUnix ? { appliance: `unix:${unix.file}` } : { appliance: `${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`, tls: opts.tls }),
      log
    )
    a.plans.start()
    log.info(
      {
        listen: host ? `${host}:${port}` : null,
        listenUnix: unix ? `unix:${unix.file}` : null,
        data: opts.dataDir,
        tls: !!opts.tls,
        nbd: nbd?.address ?? null,
        dataPort: data?.port ?? null,
        allowList: opts.allow ? describeAllowList(opts.allow) : null,
        limits: limits.describe(),
        markRate: opts.markRate?.text ?? null,
        volumes: store.volumes().map((v) => ({ name: v.name, durableSeq: v.durableSeq, generation: v.meta.generation })),
      },
      'appliance listening'
    )
    const every = opts.statsIntervalMs ?? 10_000
    if (every > 0) {
      a.timer = setInterval(() => a.logStats('stats'), every)
      a.timer.unref()
    }
    return a
  }

  /** The periodic lines: at info when they changed since last logged (or a minute passed), else at debug; the final ones always. */
  private logStats(msg: string, always = false): void {
    for (const v of this.store.volumes()) {
      const line = { volume: v.name, ...v.stats() }
      if (always || this.statsGate.due(v.name, line)) this.log.info(line, msg)
      else this.log.debug(line, msg)
    }
    const rejected = this.replication.rejected
    if (Object.keys(rejected).length) {
      if (always || this.statsGate.due('', { rejected })) this.log.info({ rejected }, `${msg}: rejections`)
      else this.log.debug({ rejected }, `${msg}: rejections`)
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.timer) clearInterval(this.timer)
      await this.retention?.stop()
      await this.scrubber?.stop()
      await this.plans?.close()
      this.replication.closeAll()
      await this.unix?.close()
      await this.data?.close()
      await this.nbd?.close()
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.server.forceShutdown()
          resolve()
        }, 5000)
        this.server.tryShutdown(() => {
          clearTimeout(t)
          resolve()
        })
      })
      this.logStats('final stats', true)
      await this.store.close()
    })()
    return this.stopping
  }
}
