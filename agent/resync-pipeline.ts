// The batches of one volume between "pulled from the tap" and "sent": while
// a resync runs, several of them wait here for the appliance's fingerprints
// at once, so a 4 MiB resync batch no longer costs a whole round trip during
// which nothing is pulled, asked or sent (issue 10: "pipeline fingerprint
// round trips, never one at a time").
//
// Each pulled batch that holds RESYNC records asks for the fingerprints of
// their regions the moment it is added; the replicator encodes and sends the
// batches strictly in pull order, each once its reply is in. The appliance
// answers requests in request order, and a reply reflects every batch
// written to the stream before its request. So a reply can be stale in one
// way only: batches pulled earlier but written after the request (the ones
// ahead of it here) may have changed sectors of its regions. When a batch
// leaves (done), the sectors it writes, trims or zeroes are noted on every
// batch still waiting behind it, and those sectors' fingerprints are set to
// 0, unknown, before the batch is scanned: MicroScan then sends them instead
// of trusting a value the replica no longer holds (microscan.ts: the cache's
// invariant). The same covers the initial copy's "reads as zeroes" regions
// (initial-copy.ts), which only know of the batches already sent.
//
// A batch stays here until it is in the send window, so a stream that breaks
// while it waits costs a second request, never a record: after the window
// is sent again on the next stream, every held batch asks again, in order.
//
// The batches live in a small pool of pull buffers (reused, no allocation
// per batch); a batch is a view of its buffer until MicroScan has encoded
// it, which copies what is sent.
import type { RecordBatch } from '../native/record-batch'
import { SECTORS_PER_REGION, changesSectors } from '../proto/record'
import type { InitialCopy } from './initial-copy'
import type { MicroScan, ReplicaFingerprints } from './microscan'
import type { Session } from './replication-session'

/** Batches held at once while a resync waits for fingerprints. */
export const PIPELINE_DEPTH = 4
/** Bytes of pulled batches held at once. */
export const PIPELINE_BYTES = 16 * 1024 * 1024
/** The most regions one fingerprint request names. */
const MAX_REGIONS_PER_REQUEST = 4096

export interface PipelineEntry {
  readonly batch: RecordBatch
  /** the pool buffer the batch is a view of */
  readonly buf: Buffer
  /** the distinct regions of its RESYNC records, in order */
  readonly regions: number[]
  /** fingerprints are needed before it is scanned (RESYNC records, MicroScan on) */
  readonly compares: boolean
  /** the replies of the current request, one map per part; null until all are in */
  replies: ReplicaFingerprints[] | null
  /** the initial copy asked only about some regions: the others read as zeroes */
  zeroFill: boolean
  /** the current request, to ignore the settling of one a reconnect replaced */
  ask: Promise<void> | null
  error: Error | null
  /** [first sector, count] pairs written by batches ahead of it after its request went out */
  stale: number[]
}

export interface PipelineStats {
  fingerprintRequests: number
  /** the most fingerprint requests ever waiting for replies at once */
  fingerprintsInFlightMax: number
}

export class ResyncPipeline {
  private readonly entries: PipelineEntry[] = []
  private readonly free: Buffer[] = []
  private buffers = 0
  private held = 0
  private fpId = 0
  private inFlight = 0
  readonly st: PipelineStats = { fingerprintRequests: 0, fingerprintsInFlightMax: 0 }

  /** bufferBytes: one pull at its largest, plus the one record a pull may add past it */
  constructor(
    private readonly ms: MicroScan,
    private readonly copy: InitialCopy,
    private readonly bufferBytes: number
  ) {}

  get length(): number {
    return this.entries.length
  }

  /** Bytes of pulled batches held. */
  get bytes(): number {
    return this.held
  }

  get head(): PipelineEntry | undefined {
    return this.entries[0]
  }

  /** Another batch may be pulled (one always may, while none is held). */
  get hasRoom(): boolean {
    return this.entries.length < PIPELINE_DEPTH && this.held < PIPELINE_BYTES
  }

  /** A pull buffer: the caller pulls into it and adds the batch, or gives it back. */
  buffer(): Buffer {
    const b = this.free.pop()
    if (b) return b
    if (this.buffers >= PIPELINE_DEPTH) throw new Error(`resync pipeline: more than ${PIPELINE_DEPTH} pull buffers in use`)
    this.buffers++
    return Buffer.allocUnsafeSlow(this.bufferBytes)
  }

  giveBack(buf: Buffer): void {
    this.free.push(buf)
  }

  /** Holds a pulled batch (a view of buf) and asks for its fingerprints at once. */
  add(s: Session, batch: RecordBatch, buf: Buffer, hasResync: boolean): void {
    const regions = hasResync ? this.ms.resyncRegions(batch) : []
    const e: PipelineEntry = {
      batch,
      buf,
      regions,
      compares: hasResync && this.ms.enabled,
      replies: null,
      zeroFill: false,
      ask: null,
      error: null,
      stale: [],
    }
    this.entries.push(e)
    this.held += batch.buffer.length
    if (e.compares) this.request(s, e)
  }

  /** After a reconnect (and the window sent again): every held batch asks again, in order. */
  askAgain(s: Session): void {
    for (const e of this.entries) if (e.compares) this.request(s, e)
  }

  /** The head's fingerprints are in (or it needs none). */
  ready(e: PipelineEntry): boolean {
    return !e.compares || e.replies !== null
  }

  /** Resolves when the head's request settles; throws what failed it. */
  async wait(e: PipelineEntry): Promise<void> {
    await e.ask
    if (e.error) throw e.error
  }

  /**
   * The replica's fingerprints for a ready batch: the replies, the copy's
   * zeroes, and 0 (unknown) for the sectors the batches ahead of it changed
   * since its request. Null: it compares nothing.
   */
  replica(e: PipelineEntry): ReplicaFingerprints | null {
    if (!e.compares) return null
    const replica: ReplicaFingerprints = new Map()
    for (const part of e.replies!) for (const [g, fp] of part) replica.set(g, fp)
    if (e.zeroFill) this.copy.fillZeroes(e.regions, replica)
    if (e.stale.length) forgetSectors(replica, e.stale)
    return replica
  }

  /** The head is encoded and in the send window: its writes make the replies behind it stale there; its buffer is free. */
  done(e: PipelineEntry): void {
    if (this.entries[0] !== e) throw new Error('resync pipeline: a batch left out of order')
    this.entries.shift()
    this.held -= e.batch.buffer.length
    const behind = this.entries.filter((b) => b.compares)
    if (behind.length) {
      e.batch.forEach((r) => {
        if (!changesSectors(r.kind) || r.count === 0) return
        for (const b of behind) b.stale.push(r.sector, r.count)
      })
    }
    this.giveBack(e.buf)
  }

  private request(s: Session, e: PipelineEntry): void {
    // A copy to a replica of zeroes asks only about regions written since it began.
    const only = this.copy.regionsToAsk(e.regions)
    const regions = only ?? e.regions
    e.zeroFill = only !== null
    e.replies = null
    e.error = null
    // Everything sent before this request is in its replies.
    e.stale.length = 0
    if (!regions.length) {
      e.replies = []
      e.ask = null
      return
    }
    const parts: Array<Promise<ReplicaFingerprints>> = []
    for (let i = 0; i < regions.length; i += MAX_REGIONS_PER_REQUEST) parts.push(this.requestPart(s, regions.slice(i, i + MAX_REGIONS_PER_REQUEST)))
    const ask: Promise<void> = Promise.all(parts).then(
      (replies) => {
        if (e.ask === ask) e.replies = replies
      },
      (err: Error) => {
        if (e.ask === ask) e.error = err
      }
    )
    e.ask = ask
  }

  private async requestPart(s: Session, regions: number[]): Promise<ReplicaFingerprints> {
    this.st.fingerprintRequests++
    this.inFlight++
    if (this.inFlight > this.st.fingerprintsInFlightMax) this.st.fingerprintsInFlightMax = this.inFlight
    try {
      return this.ms.parseFingerprints(regions, await s.fingerprints(++this.fpId, regions))
    } finally {
      this.inFlight--
    }
  }
}

/** Sets the fingerprints of the given [first, count] sector ranges to 0 (unknown), copying each region's array once. */
function forgetSectors(replica: ReplicaFingerprints, ranges: number[]): void {
  const copied = new Set<number>()
  const forget = (g: number, first: number, end: number): void => {
    let fp = replica.get(g)
    if (!fp) return
    // Replies and the copy's zero page may be shared views: write to a copy.
    if (!copied.has(g)) {
      fp = fp.slice()
      replica.set(g, fp)
      copied.add(g)
    }
    const base = g * SECTORS_PER_REGION
    fp.fill(0n, Math.max(first, base) - base, Math.min(end, base + fp.length) - base)
  }
  for (let i = 0; i < ranges.length; i += 2) {
    const first = ranges[i]
    const end = first + ranges[i + 1]
    const g0 = Math.floor(first / SECTORS_PER_REGION)
    const g1 = Math.floor((end - 1) / SECTORS_PER_REGION)
    // A trim of the whole device names millions of regions; the batch asked about a few.
    if (g1 - g0 + 1 > replica.size) {
      for (const g of [...replica.keys()]) if (g >= g0 && g <= g1) forget(g, first, end)
    } else for (let g = g0; g <= g1; g++) forget(g, first, end)
  }
}
