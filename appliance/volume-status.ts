// Each volume's status as the operator plane shows it (client/status-api.ts
// defines the shape): read from what the appliance already keeps — the
// volume store's stats, the streams of the replication service, what agents
// report (agent-reports.ts), the operator's targets (volume-targets.ts) —
// and computed when asked, except two things kept here:
//   rates   the byte counters sampled every second, ten samples per volume,
//           so a rate is over the last ~10 s whoever asks and how often;
//   marks   the newest TimeMark per volume, read from the index only when the
//           catalog's count changes (listing every mark per scrape would not
//           scale with a long history).
// The metrics (appliance-metrics.ts) and the HTTP API both read status(), so
// the two can never disagree.
import fs from 'node:fs'
import type { StoreStatus, VolumeState, VolumeStatus } from '../client/status-api'
import type { CatalogEntry } from './index-keys'
import type { AgentReports } from './agent-reports'
import type { ReplicationService } from './replication-service'
import type { ApplianceStore } from './store'
import type { VolumeStore } from './volume-store'
import { targetsFor, type VolumeTargets } from './volume-targets'

const RATE_SAMPLES = 11
const RATE_EVERY_MS = 1000

/** The fields of VolumeStore.stats() (volume-inspection.ts) this reads. */
interface StoreStats {
  agentId: string
  journalBytes: number
  segments: number
  durableSeq: number
  appBytes: number
  changedBytes: number
  wireBytes: number
  timemarks: number
  fullSyncDone: boolean
  inexactWindows: Array<{ start: number; end: number }>
  retainedSince: string
  retainedWindowSeconds: number
  base: { seq: number; timeMs: number } | null
  state: string
}

type Sample = [ms: number, app: number, changed: number, wire: number]

export class VolumeStatusSource {
  private readonly samples = new Map<string, Sample[]>()
  private readonly marks = new Map<string, { count: number; last: CatalogEntry | null; reading: Promise<void> | null }>()
  private readonly seeded = new Set<string>()
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly store: ApplianceStore,
    private readonly replication: ReplicationService,
    private readonly reports: AgentReports,
    private readonly targets: VolumeTargets,
    private readonly dataDir: string
  ) {}

  start(): void {
    this.sampleRates()
    this.timer = setInterval(() => this.sampleRates(), RATE_EVERY_MS)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
  }

  names(): string[] {
    return this.store.volumes().map((v) => v.name)
  }

  private sampleRates(): void {
    const now = Date.now()
    for (const v of this.store.volumes()) {
      const s = v.stats() as unknown as StoreStats
      let xs = this.samples.get(v.name)
      if (!xs) this.samples.set(v.name, (xs = []))
      xs.push([now, s.appBytes, s.changedBytes, s.wireBytes])
      if (xs.length > RATE_SAMPLES) xs.shift()
      this.seed(v, s)
    }
  }

  /** Before any agent reports, the RPO counts from the newest durable batch's time (agent-reports.ts). */
  private seed(v: VolumeStore, s: StoreStats): void {
    if (this.seeded.has(v.name)) return
    this.seeded.add(v.name)
    if (s.durableSeq > 0) {
      v.timeOfSeq(s.durableSeq).then(
        (t) => t && this.reports.seed(v.name, t),
        () => undefined // a closing store: the next report sets it
      )
    }
  }

  private rates(name: string): VolumeStatus['rates'] {
    const xs = this.samples.get(name)
    if (!xs || xs.length < 2) return { appBytesPerSecond: 0, changedBytesPerSecond: 0, wireBytesPerSecond: 0 }
    const a = xs[0]
    const b = xs[xs.length - 1]
    const dt = (b[0] - a[0]) / 1000
    const r = (i: 1 | 2 | 3): number => Math.max(0, Math.round((b[i] - a[i]) / dt))
    return { appBytesPerSecond: r(1), changedBytesPerSecond: r(2), wireBytesPerSecond: r(3) }
  }

  /** The newest TimeMark, re-read only when the count changed. */
  private async lastMark(v: VolumeStore, count: number): Promise<CatalogEntry | null> {
    let m = this.marks.get(v.name)
    if (!m) this.marks.set(v.name, (m = { count: -1, last: null, reading: null }))
    if (m.count !== count) {
      const entry = m
      entry.reading ??= v.timemarks().then(
        (all) => {
          entry.last = all.reduce<CatalogEntry | null>((a, e) => (!a || e.seq > a.seq ? e : a), null)
          entry.count = count
          entry.reading = null
        },
        () => {
          entry.reading = null
        }
      )
      await entry.reading
    }
    return m.last
  }

  async status(v: VolumeStore): Promise<VolumeStatus> {
    const s = v.stats() as unknown as StoreStats
    const stream = this.replication.info().find((i) => i.volume === v.name) ?? null
    const r = this.reports.get(v.name)
    const t = targetsFor(this.targets, v.name)
    const now = Date.now()
    const last = await this.lastMark(v, s.timemarks)
    const openWindow = s.inexactWindows.some((w) => w.end === 0)
    let state: VolumeState
    if (s.state === 'no_space') state = 'no_space'
    else if (!stream) state = 'disconnected'
    else if (!s.fullSyncDone) state = 'initial_copy'
    else if (r?.agentState === 'behind' || r?.agentState === 'resync') state = r.agentState
    else if (openWindow) state = 'resync'
    else state = 'normal'
    let sync: VolumeStatus['sync'] = null
    if (!s.fullSyncDone) {
      const c = r?.copy
      sync = {
        kind: 'initial_copy',
        remainingBytes: r ? r.resyncRemainingBytes : null,
        percent: c && c.regionsTotal ? Math.floor((1000 * c.regionsDone) / c.regionsTotal) / 10 : null,
        bytesPerSecond: c ? c.bytesPerSecond : null,
      }
    } else if (state === 'behind' || state === 'resync') {
      sync = { kind: 'resync', remainingBytes: r ? r.resyncRemainingBytes : null, percent: null, bytesPerSecond: null }
    }
    const tb = r && r.capturedBeforeMs ? r.capturedBeforeMs : 0
    return {
      volume: v.name,
      state,
      agent: {
        id: stream?.agentId ?? s.agentId ?? '',
        connected: !!stream,
        identity: stream ? stream.identity : null,
        peer: stream?.peer ?? null,
        since: stream?.since ?? null,
        lastHeard: r?.lastHeardMs ? new Date(r.lastHeardMs).toISOString() : null,
      },
      rpo: {
        seconds: tb ? Math.max(0, (now - tb) / 1000) : null,
        capturedBefore: tb ? new Date(tb).toISOString() : null,
        targetSeconds: t.rpo?.warnSeconds ?? null,
        errorSeconds: t.rpo?.errorSeconds ?? null,
      },
      history: { seconds: s.retainedWindowSeconds, since: s.retainedSince, targetSeconds: t.history?.seconds ?? null, trimmed: !!s.base?.timeMs },
      journal: { bytes: s.journalBytes, segments: s.segments, durableSeq: s.durableSeq },
      bytes: { app: s.appBytes, changed: s.changedBytes, wire: s.wireBytes },
      rates: this.rates(v.name),
      backlogBytes: stream && r ? r.backlogBytes : null,
      timemarks: s.timemarks,
      lastTimeMark: last ? { id: last.seq, label: last.label, time: new Date(last.wallMs).toISOString(), consistency: last.consistency } : null,
      sync,
    }
  }

  /** The named volumes (all when names is null). */
  async volumes(names: string[] | null = null): Promise<VolumeStatus[]> {
    const want = names ? new Set(names) : null
    const vs = this.store.volumes().filter((v) => !want || want.has(v.name))
    return Promise.all(vs.map((v) => this.status(v)))
  }

  volume(name: string): VolumeStore | undefined {
    return this.store.get(name)
  }

  async storeStatus(): Promise<StoreStatus> {
    const st = await fs.promises.statfs(this.dataDir)
    const vols = this.store.volumes()
    return {
      freeBytes: st.bavail * st.bsize,
      totalBytes: st.blocks * st.bsize,
      journalBytes: vols.reduce((a, v) => a + v.journalBytes, 0),
      volumes: vols.length,
    }
  }
}
