// The replica image of one volume (native/src/replica_image.h): the newest
// point copied in volume order into DIR/volumes/NAME/replica.img, like the
// replica disk Zerto and RecoverPoint keep beside their journals, so that a
// restore, an export or a VM booting from a recent point reads the disk in
// order instead of one journal record after another. Readers use it only
// where it holds their point's very version of a sector; everything else is
// read from the journal as before, so the image is a cache: losing it, or
// a round failing, costs speed, never data.
//
// Rounds run off the write path: once the volume has been quiet for
// IDLE_MS, or every MAX_WAIT_MS while it is written without a pause (a
// volume written at the disk's speed should not also pay for a second copy
// every few seconds; what its last minutes wrote is read from the journal,
// mostly still in the page cache), a round
// copies what was committed since the previous one (a full round for a new
// image or a new base image) and records in replica.json, after the image's
// fdatasync, the newest journal location it holds. A restart picks up from
// there; the image is not read from until the first round after the start
// has finished.
//
// A round started because the volume went quiet stops as soon as a batch
// commits again, to it or to any other volume of the store (ReplicaRounds;
// the next round, once the store is quiet, copies from the same place):
// its reads and writes compete with the journal's appends for the disk, and
// the appends come first. Only a round the volume has waited MAX_WAIT_MS for
// runs to its end whatever is written meanwhile; the native side writes a
// round's pages behind it a few MiB at a time, so even that one never
// queues the whole image ahead of an append.
//
// The journal comes first for space: no round runs while the volume refuses
// batches, or while its file system has less than a reserve free (5 % of
// it, at least 64 MiB); then the image is set aside and its blocks freed,
// and the first round after space returns is a full one. Logged once.
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../native/atomic-file'
import { openReplicaImage, type PointMapHandle, type ReplicaImageHandle } from '../native/appliance-nbd'
import type { VolumeLedger } from './volume-ledger'

/** Quiet time after the last commit before a round starts. */
export const IDLE_MS = 1000
/** Longest a volume written without a pause waits for a round. */
export const MAX_WAIT_MS = 300_000
/** After a failed or skipped round, the next one waits this long (and is a full one). */
const RETRY_MS = 60_000
/** Free space a round leaves for the journal: this share of the file system, and at least RESERVE_MIN. */
const RESERVE_SHARE = 0.05
const RESERVE_MIN = 64 * 1024 * 1024

const IMAGE = 'replica.img'
const STATE = 'replica.json'

/** replica.json: what the image holds, valid only for this generation, size and base. */
interface ReplicaState {
  generation: string
  size: number
  baseSeq: number
  /** The seq of the newest point the image equals. */
  seq: number
  /** The newest journal location the image holds: the next round copies what comes after it. */
  file: number
  pos: number
}

/** Deletes a volume directory's replica image (an appliance that keeps none, an archived generation). */
export async function removeReplica(dir: string): Promise<void> {
  await fs.promises.rm(path.join(dir, STATE), { force: true })
  await fs.promises.rm(path.join(dir, IMAGE), { force: true })
}

export interface ReplicaStatus {
  /** The seq the image equals (0 before the first round). */
  seq: number
  /** Readers use it now. */
  ready: boolean
  rounds: number
  bytesCopied: number
  bytesRead: number
  error: string | null
  /** rounds stopped because the volume was written again */
  roundsStopped: number
}

/** The newest point's live map and its seq, from point-maps.ts. */
export type NewestMap = () => Promise<{ seq: number; map: PointMapHandle }>
/** The state of a volume that refuses batches now (batch-writer.ts: no_space, io_error, read_only), or null. */
export type JournalFault = () => string | null

/**
 * The rounds of one store's volumes. Its volumes share its disks, so a round
 * competes with every volume's appends, not only its own volume's: a batch
 * committed to any volume stops every round that started because its volume
 * went quiet, and such a round starts only once the whole store has been
 * quiet for IDLE_MS (a volume that waited MAX_WAIT_MS runs its round
 * whatever is written, as before). Without it, the 1 GiB a burst left for
 * one volume's round was copied while another volume was replicating at
 * 100 MB/s: that volume's RPO p99 went from 5-6 ms to 151 ms (bench:churn's
 * apart rung, TIDEMARK_BENCH_REPLICA_IMAGE=off against on).
 */
export class ReplicaRounds {
  /** When a batch last committed to any of the store's volumes (ms since the epoch). */
  lastCommit = 0
  private readonly images = new Set<ReplicaImage>()

  add(r: ReplicaImage): void {
    this.images.add(r)
  }

  delete(r: ReplicaImage): void {
    this.images.delete(r)
  }

  /** A batch committed to one of the volumes: every yieldable round stops, its own volume's too. */
  committed(): void {
    this.lastCommit = Date.now()
    for (const r of this.images) r.giveWay()
  }
}

export class ReplicaImage {
  private saved: ReplicaState | null = null
  private ready = false
  private rounds = 0
  private bytesCopied = 0
  private error: string | null = null
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  /** The round under way stops when a batch commits (it started because the volume went quiet). */
  private runningYields = false
  /** settled(): rounds run to their end */
  private mustFinish = false
  /** Rounds stopped because the volume was written again. */
  private stopped = 0
  private dirtySince = 0
  private closed = false
  /** Bumped when the image is set aside: a round that started before keeps nothing. */
  private epoch = 0

  private constructor(
    private readonly l: VolumeLedger,
    readonly handle: ReplicaImageHandle,
    private readonly newest: NewestMap,
    private readonly journalFault: JournalFault,
    private readonly store: ReplicaRounds
  ) {
    store.add(this)
  }

  /**
   * Opens (or creates) the volume's replica image; a round to make it usable
   * follows at once. `store`: the rounds of the store's other volumes (a
   * volume alone gets its own).
   */
  static async open(l: VolumeLedger, newest: NewestMap, journalFault: JournalFault, store = new ReplicaRounds()): Promise<ReplicaImage> {
    const file = path.join(l.dir, IMAGE)
    let saved: ReplicaState | null = null
    try {
      saved = JSON.parse(await fs.promises.readFile(path.join(l.dir, STATE), 'utf8')) as ReplicaState
    } catch {
      saved = null
    }
    const fh = await fs.promises.open(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600)
    try {
      const st = await fh.stat()
      if (st.size !== l.meta.size) {
        // A new image (or one of another size): sparse, and everything in it is copied again.
        await fh.truncate(l.meta.size)
        saved = null
      }
      if (saved && (saved.generation !== l.meta.generation || saved.size !== l.meta.size)) saved = null
      const r = new ReplicaImage(l, openReplicaImage(fh.fd), newest, journalFault, store)
      r.saved = saved
      r.schedule(0)
      return r
    } finally {
      await fh.close()
    }
  }

  /** A batch committed: a round will follow once the store is quiet. */
  changed(): void {
    const now = Date.now()
    if (!this.dirtySince) this.dirtySince = now
    this.store.committed()
    if (!this.timer && !this.running) this.schedule(IDLE_MS)
  }

  /** A volume of the store committed a batch: a round that waits for quiet gives way. */
  giveWay(): void {
    if (this.running && this.runningYields) this.handle.yieldRound()
  }

  /** The base or the segments changed: not read from until the next round. */
  invalidate(): void {
    this.handle.invalidate()
    this.ready = false
    if (!this.dirtySince) this.dirtySince = Date.now()
    if (!this.timer && !this.running) this.schedule(IDLE_MS)
  }

  /**
   * The journal needs the space: not read from, its blocks freed, rounds
   * paused until the volume accepts batches and the reserve is free again.
   */
  async setAside(why: string): Promise<void> {
    this.epoch++
    this.handle.invalidate()
    this.ready = false
    this.saved = null
    if (!this.dirtySince) this.dirtySince = Date.now()
    const msg = `replica image of ${this.l.meta.name} set aside, its space left to the journal: ${why}`
    if (this.error?.startsWith(`replica image of ${this.l.meta.name} set aside`) !== true) this.l.log.warn(msg)
    this.error = msg
    try {
      await fs.promises.rm(path.join(this.l.dir, STATE), { force: true })
      // Truncating to nothing and back frees every block and keeps the file the volume's size.
      await fs.promises.truncate(path.join(this.l.dir, IMAGE), 0)
      await fs.promises.truncate(path.join(this.l.dir, IMAGE), this.l.meta.size)
    } catch (e) {
      this.l.log.warn({ err: (e as Error).message }, `replica image of ${this.l.meta.name}: its blocks could not be freed`)
    }
  }

  status(): ReplicaStatus {
    return { seq: this.saved?.seq ?? 0, ready: this.ready, rounds: this.rounds, bytesCopied: this.bytesCopied, bytesRead: this.handle.bytesRead(), error: this.error, roundsStopped: this.stopped }
  }

  /** Runs a round now if anything is left to copy, and waits for it (tests, benchmarks). */
  async settled(): Promise<void> {
    this.mustFinish = true
    try {
      if (this.running) await this.running
      if (!this.closed && (!this.ready || this.dirtySince)) {
        this.clearTimer()
        await this.run()
      }
    } finally {
      this.mustFinish = false
    }
  }

  async close(): Promise<void> {
    this.closed = true
    this.store.delete(this)
    this.clearTimer()
    await this.running
    this.handle.invalidate()
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }

  private schedule(ms: number): void {
    if (this.closed) return
    this.clearTimer()
    this.timer = setTimeout(() => {
      this.timer = null
      const now = Date.now()
      const quietFor = now - this.store.lastCommit
      if (this.dirtySince && quietFor < IDLE_MS && now - this.dirtySince < MAX_WAIT_MS) {
        this.schedule(IDLE_MS - quietFor)
        return
      }
      void this.run()
    }, ms)
    this.timer.unref()
  }

  private run(): Promise<void> {
    if (this.running) return this.running
    this.running = this.round().finally(() => {
      this.running = null
      if (this.dirtySince && !this.closed && !this.timer) this.schedule(this.error ? RETRY_MS : IDLE_MS)
    })
    return this.running
  }

  /** Why no round may run now, or null. */
  private async paused(): Promise<string | null> {
    const fault = this.journalFault()
    if (fault) return `the volume refuses batches (${fault})`
    const fsStat = await fs.promises.statfs(this.l.dir)
    const free = fsStat.bavail * fsStat.bsize
    const reserve = Math.max(RESERVE_MIN, fsStat.blocks * fsStat.bsize * RESERVE_SHARE)
    return free < reserve ? `${Math.floor(free / 1048576)} MiB free, under the ${Math.floor(reserve / 1048576)} MiB kept for the journal` : null
  }

  private async round(): Promise<void> {
    const dirtySince = this.dirtySince
    this.dirtySince = 0
    const epoch = this.epoch
    try {
      const pause = await this.paused()
      if (pause) {
        await this.setAside(pause)
        return
      }
      const live = await this.newest()
      if (this.closed || epoch !== this.epoch) return
      const baseSeq = this.l.base?.seq ?? 0
      const saved = this.saved
      const full = !saved || saved.baseSeq !== baseSeq || this.error !== null
      // The seq is read in the same turn as the native side takes its snapshot of the map.
      const seq = live.seq
      this.runningYields = !this.mustFinish && !(dirtySince && Date.now() - dirtySince >= MAX_WAIT_MS)
      const r = await this.handle.round(live.map, full, full ? -1 : saved.file, full ? 0 : saved.pos, this.runningYields)
      this.runningYields = false
      if (epoch !== this.epoch) {
        this.handle.invalidate() // set aside meanwhile: what this round copied is gone
        return
      }
      if (r.interrupted) {
        // Written again: the round waits for the next quiet moment, and the
        // time the volume has waited for one goes on counting.
        this.ready = false
        this.stopped++
        this.dirtySince = dirtySince || this.dirtySince || Date.now()
        this.l.log.debug({ copied: r.bytes, stopped: this.stopped }, `replica image of ${this.l.meta.name}: round stopped, the store's volumes are written again`)
        return
      }
      const state: ReplicaState = { generation: this.l.meta.generation, size: this.l.meta.size, baseSeq, seq, file: r.file, pos: r.pos }
      await writeFileAtomic(path.join(this.l.dir, STATE), JSON.stringify(state) + '\n', 0o600)
      this.saved = state
      this.rounds++
      this.bytesCopied += r.bytes
      this.ready = true
      if (this.error) this.l.log.info({ seq }, 'replica image usable again')
      this.error = null
    } catch (e) {
      this.runningYields = false
      if (epoch !== this.epoch) return
      const err = e as Error & { code?: string }
      if (err.code === 'ENOSPC' || /No space left/i.test(err.message)) {
        await this.setAside('its file system filled up during a round')
        return
      }
      const msg = `replica image of ${this.l.meta.name}: ${(e as Error).message}`
      // Logged once per fault, not once per retry; reads go to the journal meanwhile.
      if (this.error !== msg) this.l.log.warn({ err: (e as Error).message }, `${msg}; reads use the journal until a round succeeds`)
      this.error = msg
      this.ready = false
      if (!this.dirtySince) this.dirtySince = Date.now()
    }
  }
}
