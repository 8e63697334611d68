// The Admin service: restore, stats and journal inspection for the CLI.
//
// Restore streams the image of a volume at a point as extents that are not
// all zero, in offset order, ~1 MiB each, respecting the client's flow
// control (a slow disk at the client pauses the reads here, it never buffers
// the volume in memory).
//
// Every method checks one role (access-policy.ts OPERATION_ROLES) before
// anything else is looked at; a call that names no volume (stats or journal
// of every volume, listing views) shows only the volumes the caller holds that
// role on.
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import type { ImageChunk } from '../proto/generated/tidemark/v1/ImageChunk'
import type { JournalReply } from '../proto/generated/tidemark/v1/JournalReply'
import type { JournalRequest__Output } from '../proto/generated/tidemark/v1/JournalRequest'
import type { RestoreRequest__Output } from '../proto/generated/tidemark/v1/RestoreRequest'
import type { StatsReply } from '../proto/generated/tidemark/v1/StatsReply'
import type { StatsRequest__Output } from '../proto/generated/tidemark/v1/StatsRequest'
import { adminProto } from '../proto/load'
import type { ResolveRequest__Output } from '../proto/generated/tidemark/v1/ResolveRequest'
import type { ResolveReply } from '../proto/generated/tidemark/v1/ResolveReply'
import type { ReadRequest__Output } from '../proto/generated/tidemark/v1/ReadRequest'
import type { ReadReply } from '../proto/generated/tidemark/v1/ReadReply'
import type { ListTimeMarksRequest__Output } from '../proto/generated/tidemark/v1/ListTimeMarksRequest'
import type { ListTimeMarksReply } from '../proto/generated/tidemark/v1/ListTimeMarksReply'
import type { TimeMark } from '../proto/generated/tidemark/v1/TimeMark'
import type { FingerprintsRequest__Output } from '../proto/generated/tidemark/v1/FingerprintsRequest'
import type { FingerprintsReply } from '../proto/generated/tidemark/v1/FingerprintsReply'
import type { CatalogEntry } from './chunk-index'
import type { Retention } from './retention'
import type { PinTimeMarkRequest__Output } from '../proto/generated/tidemark/v1/PinTimeMarkRequest'
import type { CompactRequest__Output } from '../proto/generated/tidemark/v1/CompactRequest'
import type { CompactReply } from '../proto/generated/tidemark/v1/CompactReply'
import { toStatus } from '../proto/status'
import { unaryHandler, type UnaryOptions } from '../proto/unary-handler'
import type { VolumeJournal } from '../proto/generated/tidemark/v1/VolumeJournal'
import { compactReply, volumeStatsReply } from './admin-replies'
import { alreadyLogged, type Operation } from './access-policy'
import type { Authorizer, Caller } from './authorizer'
import { checkPoint, resolvePoint } from './point-resolver'
import type { ApplianceNbdServer } from './nbd-exports'
import type { ServerInfoRequest__Output } from '../proto/generated/tidemark/v1/ServerInfoRequest'
import type { ServerInfoReply } from '../proto/generated/tidemark/v1/ServerInfoReply'
import type { ReplicationService } from './replication-service'
import type { ApplianceStore } from './store'
import type { VolumeStore } from './volume-store'
import type { CreateViewRequest__Output } from '../proto/generated/tidemark/v1/CreateViewRequest'
import type { DeleteViewRequest__Output } from '../proto/generated/tidemark/v1/DeleteViewRequest'
import type { ListViewsReply } from '../proto/generated/tidemark/v1/ListViewsReply'
import type { ListViewsRequest__Output } from '../proto/generated/tidemark/v1/ListViewsRequest'
import type { ViewInfo } from '../proto/generated/tidemark/v1/ViewInfo'
import type { AcceptGenerationRequest__Output } from '../proto/generated/tidemark/v1/AcceptGenerationRequest'
import type { AcceptGenerationReply } from '../proto/generated/tidemark/v1/AcceptGenerationReply'
import type { SeedVolumeRequest__Output } from '../proto/generated/tidemark/v1/SeedVolumeRequest'
import type { SeedVolumeReply } from '../proto/generated/tidemark/v1/SeedVolumeReply'
import { SEED_SEQ, seedSource } from './volume-seed'
import type { RecordAuditRequest__Output } from '../proto/generated/tidemark/v1/RecordAuditRequest'
import type { AuditEntry as AuditEntryMsg } from '../proto/generated/tidemark/v1/AuditEntry'
import type { ListAuditRequest__Output } from '../proto/generated/tidemark/v1/ListAuditRequest'
import type { ListAuditReply } from '../proto/generated/tidemark/v1/ListAuditReply'
import type { AuditEntry, AuditTrail } from './audit-trail'
import { checkViewName, viewDescription, type ViewRecord, type ViewRegistry } from './view-registry'

/** Largest Read (TimeView) request. */
export const MAX_READ_BYTES = 4 * 1024 * 1024
/** Most regions one Fingerprints request may name. */
export const MAX_FINGERPRINT_REGIONS = 1024

/** Journal is two operations: listing and showing read, verify is admin's. */
function journalOperation(r: JournalRequest__Output): Operation {
  return r.action === 'VERIFY' ? 'JournalVerify' : 'Journal'
}

function toTimeMark(e: CatalogEntry): TimeMark {
  return {
    id: e.seq,
    seq: e.seq,
    label: e.label,
    wallTimeMs: e.wallMs,
    consistency: e.consistency,
    group: e.group,
    pinned: e.pinned,
    note: e.note,
  }
}

export class AdminService {
  /** Named views (timeview create|list|delete); null: this appliance keeps none. */
  views: ViewRegistry | null = null
  /** The audit trail of recovery-plan actions; null: this appliance keeps none. */
  audit: AuditTrail | null = null

  constructor(
    private readonly store: ApplianceStore,
    private readonly replication: ReplicationService,
    private readonly auth: Authorizer,
    private readonly log: Logger,
    private readonly applianceId: string,
    private readonly retention: Retention | null = null,
    private readonly nbd: ApplianceNbdServer | null = null,
    private readonly startedAt = new Date()
  ) {}

  addToServer(server: grpc.Server): void {
    // Every request names a volume ("" for all of them, where allowed): the
    // caller needs the operation's role on it before anything else is looked at.
    const opts = <Req extends { volume: string }>(op: Operation, context?: (r: Req) => Record<string, unknown>): UnaryOptions<Req> => ({
      log: this.log,
      codeInDetails: true,
      authorize: (call) => {
        this.auth.require(call, op, call.request.volume || null)
      },
      context: context ?? ((r) => ({ volume: r.volume })),
    })
    server.addService(adminProto.Admin.service, {
      restore: (call: grpc.ServerWritableStream<RestoreRequest__Output, ImageChunk>) => {
        this.restore(call).catch((err) => {
          if (!alreadyLogged(err)) this.log.warn({ volume: call.request.volume, err: (err as Error).message }, 'restore failed')
          call.emit('error', toStatus(err))
        })
      },
      stats: unaryHandler<StatsRequest__Output, StatsReply>('stats', opts('Stats'), (call) => this.stats(call.request.volume, call)),
      journal: unaryHandler<JournalRequest__Output, JournalReply>(
        'journal',
        {
          ...opts<JournalRequest__Output>('Journal'),
          authorize: (call) => {
            this.auth.require(call, journalOperation(call.request), call.request.volume || null)
          },
        },
        (call) => this.journal(call.request, call)
      ),
      resolve: unaryHandler<ResolveRequest__Output, ResolveReply>('resolve', opts('Resolve'), async (call) => {
        const v = this.volume(call.request.volume)
        const p = await resolvePoint(v, call.request.point)
        return { seq: p.seq, volumeSize: v.meta.size, timemark: p.timemark ? toTimeMark(p.timemark) : null, timeMs: p.timeMs }
      }),
      read: unaryHandler<ReadRequest__Output, ReadReply>('read', opts('Read', (r) => ({ volume: r.volume, seq: r.seq })), async (call) => {
        const r = call.request
        const v = this.volume(r.volume)
        if (r.length > MAX_READ_BYTES) {
          throw new TidemarkError('READ_TOO_LARGE', `a read of ${r.length} bytes is over the ${MAX_READ_BYTES}-byte limit`)
        }
        checkPoint(v, r.seq)
        return { data: await v.readMapped(r.seq, r.offset, r.length) }
      }),
      fingerprints: unaryHandler<FingerprintsRequest__Output, FingerprintsReply>('fingerprints', opts('Fingerprints', (r) => ({ volume: r.volume, seq: r.seq })), async (call) => {
        const r = call.request
        const v = this.volume(r.volume)
        if (r.regions.length > MAX_FINGERPRINT_REGIONS) {
          throw new TidemarkError('READ_TOO_LARGE', `${r.regions.length} regions is over the ${MAX_FINGERPRINT_REGIONS} one request may name`)
        }
        checkPoint(v, r.seq)
        return { fingerprints: await v.fingerprintsAt(r.seq, r.regions) }
      }),
      pinTimeMark: unaryHandler<PinTimeMarkRequest__Output, TimeMark>('pinTimeMark', opts('PinTimeMark'), async (call) => {
        const r = call.request
        const v = this.volume(r.volume)
        const p = await resolvePoint(v, { timemark: r.timemark, point: 'timemark' }, { anyPoint: true })
        return toTimeMark(await v.pin(p.timemark!.seq, r.pinned))
      }),
      compact: unaryHandler<CompactRequest__Output, CompactReply>('compact', opts('Compact'), async (call) => {
        const v = this.volume(call.request.volume)
        if (!this.retention) throw new TidemarkError('BAD_POINT', 'this appliance has no retention')
        return compactReply(v.name, await this.retention.run(v))
      }),
      serverInfo: unaryHandler<ServerInfoRequest__Output, ServerInfoReply>('serverInfo', opts('ServerInfo'), async () => {
        const e = this.nbd?.endpoint
        return {
          applianceId: this.applianceId,
          nbdUnix: e && 'unix' in e ? e.unix : '',
          nbdTcp: e && 'tcp' in e ? this.nbd!.address.slice(4) : '',
          nbdTls: this.nbd?.requiresTls ?? false,
        }
      }),
      listTimeMarks: unaryHandler<ListTimeMarksRequest__Output, ListTimeMarksReply>('listTimeMarks', opts('ListTimeMarks'), async (call) => {
        const v = this.volume(call.request.volume)
        return { timemarks: (await v.timemarks()).map(toTimeMark) }
      }),
      createView: unaryHandler<CreateViewRequest__Output, ViewInfo>('createView', opts('CreateView', (r) => ({ volume: r.volume, view: r.name })), (call) =>
        this.createView(call.request)
      ),
      listViews: unaryHandler<ListViewsRequest__Output, ListViewsReply>('listViews', opts('ListViews'), (call) => {
        const views = this.registry()
        if (call.request.volume) this.volume(call.request.volume)
        const recs = views.records().filter((r) => !call.request.volume || r.volume === call.request.volume)
        const mayRead = new Set(this.auth.visible(call, 'ListViews', [...new Set(recs.map((r) => r.volume))]))
        return { views: recs.filter((r) => mayRead.has(r.volume)).map((r) => this.viewInfo(r)) }
      }),
      deleteView: unaryHandler<DeleteViewRequest__Output, ViewInfo>(
        'deleteView',
        {
          log: this.log,
          codeInDetails: true,
          // The caller needs the role on the view's volume (on some volume, for a view that does not exist).
          authorize: (call) => {
            this.auth.require(call, 'DeleteView', this.views?.record(call.request.name)?.volume ?? null)
          },
          context: (r) => ({ view: r.name }),
        },
        async (call) => {
          const r = await this.registry().delete(call.request.name)
          return { ...this.viewInfo(r), overlayBytes: 0, uris: [] }
        }
      ),
      recordAudit: unaryHandler<RecordAuditRequest__Output, AuditEntryMsg>(
        'recordAudit',
        {
          log: this.log,
          codeInDetails: true,
          // admin on every volume the entry names (on some volume, for an entry that names none)
          authorize: (call) => {
            const vols = call.request.volumes
            if (!vols.length) this.auth.require(call, 'RecordAudit', null)
            for (const v of vols) this.auth.require(call, 'RecordAudit', v)
          },
          context: (r) => ({ action: r.action, plan: r.plan }),
        },
        (call) => this.recordAudit(call.request, this.auth.identity(call))
      ),
      listAudit: unaryHandler<ListAuditRequest__Output, ListAuditReply>(
        'listAudit',
        {
          log: this.log,
          codeInDetails: true,
          authorize: (call) => {
            this.auth.require(call, 'ListAudit', null)
          },
        },
        async (call) => {
          const trail = this.trail()
          const all = await trail.list(0)
          // Entries whose every volume the caller may read; those naming none, only to who sees everything.
          const names = [...new Set(all.flatMap((e) => e.volumes))]
          const mayRead = new Set(this.auth.visible(call, 'ListAudit', names))
          const everything = this.auth.seesEverything(call)
          let shown = all.filter((e) => (e.volumes.length ? e.volumes.every((v) => mayRead.has(v)) : everything))
          if (call.request.limit > 0) shown = shown.slice(-call.request.limit)
          const verdict = call.request.verify ? await trail.verify() : null
          return { entries: shown.map(toAuditEntry), verified: verdict?.ok ?? false, problem: verdict?.problem ?? '' }
        }
      ),
      acceptGeneration: unaryHandler<AcceptGenerationRequest__Output, AcceptGenerationReply>(
        'acceptGeneration',
        opts('AcceptGeneration', (r) => ({ volume: r.volume, generation: r.generation })),
        (call) => this.acceptGeneration(call.request, this.auth.identity(call))
      ),
      seedVolume: unaryHandler<SeedVolumeRequest__Output, SeedVolumeReply>(
        'seedVolume',
        opts('SeedVolume', (r) => ({ volume: r.volume, generation: r.generation, source: r.source })),
        (call) => this.seedVolume(call.request, this.auth.identity(call))
      ),
    })
  }

  private trail(): AuditTrail {
    if (!this.audit) throw new TidemarkError('AUDIT_UNAVAILABLE', 'this appliance keeps no audit trail')
    return this.audit
  }

  private async recordAudit(r: RecordAuditRequest__Output, who: string | null): Promise<AuditEntryMsg> {
    let details: Record<string, unknown> = {}
    if (r.detailsJson) {
      try {
        details = JSON.parse(r.detailsJson) as Record<string, unknown>
      } catch {
        throw new TidemarkError('AUDIT_BAD_ENTRY', 'audit details_json is not JSON')
      }
      if (!details || typeof details !== 'object' || Array.isArray(details)) throw new TidemarkError('AUDIT_BAD_ENTRY', 'audit details_json must be a JSON object')
    }
    const e = await this.trail().append(who, { action: r.action, plan: r.plan, point: r.point, result: r.result, durationMs: Number(r.durationMs), volumes: r.volumes, details })
    this.log.info({ audit: e.seq, action: e.action, plan: e.plan, result: e.result, who: e.who }, `audit: ${e.action} of plan ${e.plan}: ${e.result}`)
    return toAuditEntry(e)
  }

  /** The volume a request names (authorize() has let the caller at it). */
  private volume(name: string): VolumeStore {
    const v = this.store.get(name)
    if (!v) throw new TidemarkError('UNKNOWN_VOLUME', `no volume named ${JSON.stringify(name)} on this appliance`)
    return v
  }

  private async restore(call: grpc.ServerWritableStream<RestoreRequest__Output, ImageChunk>): Promise<void> {
    this.auth.require(call, 'Restore', call.request.volume || null)
    const v = this.volume(call.request.volume)
    const { seq } = await resolvePoint(v, call.request.point)
    let cancelled = false
    call.on('cancelled', () => (cancelled = true))
    const t0 = Date.now()
    let bytes = 0
    call.write({ offset: 0, data: Buffer.alloc(0), volumeSize: v.meta.size, seq, scanned: 0 })
    for await (const e of v.extents(seq)) {
      if (cancelled) return
      bytes += e.data.length
      if (!call.write({ offset: e.offset, data: e.data, volumeSize: 0, seq: 0, scanned: e.offset + e.data.length })) {
        await new Promise<void>((resolve) => {
          const go = (): void => {
            call.off('cancelled', go)
            call.off('drain', go)
            resolve()
          }
          call.once('drain', go)
          call.once('cancelled', go)
        })
      }
    }
    call.end()
    this.log.info({ volume: v.name, seq, bytes, ms: Date.now() - t0 }, 'restore served')
  }

  /** The volumes a call names: the one it names, else those the caller holds the operation's role on. */
  private volumesFor(name: string, call: Caller, op: Operation): VolumeStore[] {
    if (name) return [this.volume(name)]
    const all = this.store.volumes()
    const visible = new Set(this.auth.visible(call, op, all.map((v) => v.name)))
    return all.filter((v) => visible.has(v.name))
  }

  private stats(name: string, call: Caller): StatsReply {
    const vols = this.volumesFor(name, call, 'Stats')
    const streams = this.replication.info()
    // Appliance-wide counts tell of every volume (and of callers refused before naming one): an
    // admin of every volume sees them, anyone else the counts of the volumes they may read.
    const counts = this.auth.seesEverything(call)
      ? { streams: streams.length, rejected: { ...this.replication.rejected } }
      : this.replication.countsFor(new Set(this.auth.visible(call, 'Stats', this.store.volumes().map((v) => v.name))))
    return {
      appliance: {
        id: this.applianceId,
        startedAt: this.startedAt.toISOString(),
        streams: counts.streams,
        rejected: counts.rejected,
      },
      volumes: vols.map((v) =>
        volumeStatsReply(v.name, v.stats(), this.retention?.info(v) ?? null, streams.find((s) => s.volume === v.name) ?? null)
      ),
    }
  }

  private async journal(r: JournalRequest__Output, call: Caller): Promise<JournalReply> {
    const vols = this.volumesFor(r.volume, call, journalOperation(r))
    const out: VolumeJournal[] = []
    for (const v of vols) {
      const volume = v.name
      if (r.action === 'SHOW') out.push({ volume, records: await v.show(r.fromSeq, r.limit || 100) })
      else if (r.action === 'VERIFY') out.push({ volume, verify: await v.verify() })
      else out.push({ volume, segments: await v.journal() })
    }
    return { volumes: out }
  }

  /** An admin accepts the new generation or size a refused agent announced (store.ts acceptGeneration). */
  private async acceptGeneration(r: AcceptGenerationRequest__Output, identity: string | null): Promise<AcceptGenerationReply> {
    this.volume(r.volume)
    // A view pins a seq of this history by the volume's name: it would show the new one's bytes.
    const views = this.views?.records().filter((v) => v.volume === r.volume) ?? []
    if (views.length) {
      throw new TidemarkError(
        'VIEWS_OF_VOLUME',
        `volume ${r.volume} has views (${views.map((v) => v.name).join(', ')}): delete them first (tidemark timeview delete NAME), they would show the new history`
      )
    }
    await this.replication.endStream(r.volume, `an admin is accepting a new generation of volume ${r.volume}`)
    const { retiredAs, old, pending } = await this.store.acceptGeneration(r.volume, r.generation, identity)
    this.log.warn({ volume: r.volume, retiredAs, generation: pending.generation }, `volume ${r.volume}: new generation accepted`)
    return { volume: r.volume, retiredAs, oldGeneration: old.generation, oldSize: old.size, generation: pending.generation, size: pending.size }
  }

  /** A new volume whose first point is the disk at r.source, read by this appliance (volume-seed.ts). */
  private async seedVolume(r: SeedVolumeRequest__Output, identity: string | null): Promise<SeedVolumeReply> {
    const source = seedSource(r.source, r.volume)
    const { volume, seed } = await this.store.seed({ volume: r.volume, generation: r.generation, source, size: r.size }, identity)
    return {
      volume: volume.name,
      generation: volume.meta.generation,
      size: seed.size,
      seq: SEED_SEQ,
      dataBytes: seed.dataBytes,
      zeroBytes: seed.zeroBytes,
      seconds: seed.ms / 1000,
    }
  }

  // ---- named views (view-registry.ts) ----

  private registry(): ViewRegistry {
    if (!this.views?.served) {
      throw new TidemarkError('VIEWS_NOT_SERVED', 'this appliance serves no NBD exports, so it keeps no views: start it with --nbd unix:PATH|tcp:HOST:PORT')
    }
    return this.views
  }

  private async createView(r: CreateViewRequest__Output): Promise<ViewInfo> {
    const views = this.registry()
    const v = this.volume(r.volume)
    checkViewName(r.name, (n) => this.store.get(n) !== undefined)
    // The same resolution, and refusals, as restore: a view shows a point restore would give.
    const p = await resolvePoint(v, r.point)
    let point = `seq ${p.seq}`
    if (p.timemark) {
      const t = p.timemark
      point = `TimeMark ${t.seq}${t.label ? ` '${t.label}'` : ''} (${t.consistency}, ${new Date(t.wallMs).toISOString()})`
    } else if (p.timeMs) {
      point = `seq ${p.seq} (recorded ${new Date(p.timeMs).toISOString()})`
    }
    const rec = await views.create({
      name: r.name,
      volume: v.name,
      seq: p.seq,
      writable: r.writable,
      createdAt: new Date().toISOString(),
      volumeSize: v.meta.size,
      point,
    })
    try {
      // Retention holds the seq from now on; a compaction already running
      // when the view was recorded did not know, and may fold it away.
      await this.retention?.settled()
      v.checkRetained(p.seq)
    } catch (err) {
      await views.delete(rec.name).catch(() => {})
      throw err
    }
    return this.viewInfo(rec)
  }

  private viewInfo(r: ViewRecord): ViewInfo {
    return {
      name: r.name,
      volume: r.volume,
      seq: r.seq,
      writable: r.writable,
      createdAt: r.createdAt,
      volumeSize: r.volumeSize,
      point: r.point,
      description: viewDescription(r),
      overlayBytes: this.views?.overlayBytes(r.name) ?? 0,
      uris: this.views?.uris(r.name) ?? [],
    }
  }
}

function toAuditEntry(e: AuditEntry): AuditEntryMsg {
  return {
    seq: e.seq,
    time: e.time,
    who: e.who,
    action: e.action,
    plan: e.plan,
    point: e.point,
    result: e.result,
    durationMs: e.durationMs,
    volumes: e.volumes,
    detailsJson: JSON.stringify(e.details ?? {}),
    hash: e.hash,
  }
}
