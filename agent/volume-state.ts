// A volume's state files in the agent's --state DIR (next to the tap's own
// NAME.dirty and sequence lease), and the order they reach the disk in:
//
//   NAME.gen     the generation id, made the first time the volume is protected
//                (text, one line). Durable before the first Hello names it.
//   NAME.acked   the highest durable seq this generation has seen: 8 bytes, u64
//                little-endian. Told to the appliance in every Hello, so a
//                rolled-back appliance (it holds less than it acknowledged) is
//                noticed and the volume copied again.
//   NAME.sync    an unfinished initial copy: {generation, nextRegion, regions}
//                (JSON, one line), so a restart resumes it instead of starting
//                at zero. Removed once the appliance holds a complete copy.
//
// A seeded volume (`agent --seeded NAME=GENERATION`: the appliance made the
// volume from another copy of the disk under GENERATION, Admin.SeedVolume)
// takes that generation instead of its own, NAME.acked 0 and NAME.sync
// "copy from region 0", so the copy compares every region's fingerprints
// with the seed and sends only the sectors that differ. Written in that
// order, NAME.gen last: a crash before it leaves the old generation, and the
// next start adopts the seed again; once NAME.gen names it, a start with the
// same flag changes nothing.
//
// Every write goes through native/atomic-file.ts (temp file, fsync, rename,
// fsync of the directory: a crash leaves the old file or the new one), and
// none blocks the event loop, which also serves the replication stream and
// the tap's consumers. Reads happen once, when the volume's replicator is
// made at startup; after that this room answers from memory what the files hold.
//
// Crash semantics. NAME.acked is written behind the acks: the tap is told at
// once and the file follows (at most one write in flight and one queued,
// whatever the ack rate, and at most one every ACKED_WRITE_EVERY_MS). After a
// crash it may hold a lower seq than the agent had seen. That is safe: the file only ever holds seqs the appliance
// really acknowledged as durable, so a lower one never raises a false alarm
// and never loses a record (the tap's dirty map, not this file, is what
// resends unacknowledged regions after a restart). All it can miss is an
// appliance that loses acknowledged data in the same quarter second as the
// agent crashes, the double fault; before, the value was written in place
// without fsync and a host crash could lose it too.
// The one write that must not lag is a *lower* acked seq (the copy starts
// over because the replica lost data): if it reached the disk before NAME.sync
// said the copy restarts at region 0, a restart would resume the old copy's
// progress against a replica that lost it. So a lowered value, and every
// value after it, waits until the new copy's NAME.sync (or a later one) is
// durable; until then a crash leaves the old, higher value, and the next
// Hello finds the loss again.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { AtomicFileWriter, syncDir, writeFileAtomic } from '../native/atomic-file'
import { TidemarkError } from '../proto/errors'

/** What NAME.sync holds. */
export interface SyncRecord {
  generation: string
  nextRegion: number
  regions: number
}

const ACKED_BYTES = 8
/** NAME.acked is written at most this often (values in between coalesce): see "Crash semantics" above. */
const ACKED_WRITE_EVERY_MS = 250
/** A failing NAME.acked write is logged at most this often (acks keep coming). */
const ACK_ERROR_LOG_MS = 60_000

function ackedBytes(seq: number): Buffer {
  const b = Buffer.alloc(ACKED_BYTES)
  b.writeBigUInt64LE(BigInt(seq))
  return b
}

function readOrNull(file: string): Buffer | null {
  try {
    return fs.readFileSync(file)
  } catch {
    return null
  }
}

/**
 * Removes the temp files of writes a crash interrupted before their rename
 * (native/atomic-file.ts names them FILE.tmp-PID-N, older agents FILE.tmp):
 * each crash would leave its own otherwise. Only this volume's state files'.
 */
function removeTempFiles(dir: string, files: string[]): void {
  const prefixes = files.map((f) => `${path.basename(f)}.tmp`)
  let names: string[] = []
  try {
    names = fs.readdirSync(dir)
  } catch {
    return
  }
  for (const n of names) if (prefixes.some((p) => n === p || n.startsWith(`${p}-`))) fs.rmSync(path.join(dir, n), { force: true })
}

export class VolumeState {
  readonly generation: string
  private acked: number
  /** NAME.sync as last queued (null: no file) */
  private sync: SyncRecord | null = null
  private readonly genFile: string
  private readonly syncFile: string
  private readonly ackWriter: AtomicFileWriter
  /** NAME.gen's contents until they are durable (the first protection of the volume, or a seed adopted) */
  private genPending: string | null = null
  /** A seed adopted: NAME.sync is written before NAME.gen (see above). */
  private seedSync: SyncRecord | null = null
  private genWrite: Promise<void> | null = null
  /** NAME.sync writes and removals, in the order they were asked for */
  private syncChain: Promise<void> = Promise.resolve()
  private syncQueued = 0
  /** set while a lowered acked seq waits for the NAME.sync write numbered here (see above) */
  private ackHeldUntil = 0
  private lastAckErrorAt = -Infinity

  /**
   * Reads the volume's state files. The agent holds the state directory's
   * lease (Tap.open took it), and this runs once at startup, before the agent
   * installs its signal handlers, so the reads are synchronous: an await here
   * would let a SIGTERM right after start kill the agent undrained.
   * The first time the volume is protected it makes a generation, written by
   * durable().
   */
  constructor(
    stateDir: string,
    volume: string,
    private readonly log: Logger,
    /** the appliance holds a seed of this volume under this generation (agent --seeded) */
    seed?: { generation: string; regions: number }
  ) {
    this.genFile = path.join(stateDir, `${volume}.gen`)
    this.syncFile = path.join(stateDir, `${volume}.sync`)
    const ackFile = path.join(stateDir, `${volume}.acked`)
    removeTempFiles(stateDir, [this.genFile, ackFile, this.syncFile])
    this.ackWriter = new AtomicFileWriter(ackFile, (err) => {
      const now = performance.now()
      if (now - this.lastAckErrorAt < ACK_ERROR_LOG_MS) return
      this.lastAckErrorAt = now
      this.log.error({ err, file: ackFile }, 'cannot save the highest acknowledged seq; a restart may not notice an appliance that lost data')
    }, 0o644, ACKED_WRITE_EVERY_MS)
    const gen = readOrNull(this.genFile)?.toString('utf8').trim()
    this.acked = 0
    if (seed && gen !== seed.generation) {
      this.generation = seed.generation
      this.genPending = `${this.generation}\n`
      this.ackWriter.set(ackedBytes(0))
      this.seedSync = { generation: seed.generation, nextRegion: 0, regions: seed.regions }
      log.info({ generation: this.generation, previous: gen ?? null }, 'the appliance holds a seed of this volume: continuing its generation, copying every region by fingerprint compare')
    } else if (!gen) {
      this.generation = crypto.randomUUID()
      this.genPending = `${this.generation}\n`
      // NAME.acked first (durable() flushes it before NAME.gen): a new
      // generation never pairs with an older one's seq.
      this.ackWriter.set(ackedBytes(0))
      log.info({ generation: this.generation }, 'first protection of this volume: new generation')
    } else {
      this.generation = gen
      const b = readOrNull(ackFile)
      if (b && b.length >= ACKED_BYTES) this.acked = Number(b.readBigUInt64LE(0))
      else this.ackWriter.set(ackedBytes(0))
    }
    const text = this.seedSync ? null : readOrNull(this.syncFile)
    if (this.seedSync) this.sync = this.seedSync
    else if (text !== null) {
      try {
        this.sync = JSON.parse(text.toString('utf8')) as SyncRecord
      } catch {
        this.sync = { generation: '', nextRegion: 0, regions: 0 }
      }
    }
  }

  /**
   * Resolves once NAME.gen (and the NAME.acked made with it) is durable:
   * await it before a Hello names the generation. Rejects if it cannot be
   * written; the next call tries again.
   */
  async durable(): Promise<void> {
    if (!this.genPending) return
    this.genWrite ??= (async () => {
      this.ackWriter.set(ackedBytes(this.acked))
      try {
        await this.ackWriter.flush()
        if (this.seedSync) await writeFileAtomic(this.syncFile, `${JSON.stringify(this.seedSync)}\n`)
        await writeFileAtomic(this.genFile, this.genPending!)
      } catch (e) {
        throw new TidemarkError('STATE_WRITE', `cannot save the volume's new generation in ${this.genFile}: ${(e as Error).message}`)
      }
      this.genPending = null
      this.seedSync = null
    })().finally(() => (this.genWrite = null))
    await this.genWrite
  }

  /** The highest durable seq this generation has seen (the value NAME.acked is on its way to). */
  get ackedSeq(): number {
    return this.acked
  }

  /** A higher durable seq was acknowledged: noted now, written behind (see the crash semantics above). */
  raiseAcked(seq: number): void {
    if (seq <= this.acked) return
    this.acked = seq
    if (!this.ackHeldUntil) this.ackWriter.set(ackedBytes(seq))
  }

  /**
   * The copy starts over at what the appliance holds: call right after the
   * new copy's NAME.sync was queued. The value is written once that is durable.
   */
  resetAcked(seq: number): void {
    this.acked = seq
    this.ackHeldUntil = Math.max(1, this.syncQueued)
  }

  /**
   * Where an unfinished initial copy of this generation resumes (0: from the
   * start), as NAME.sync says.
   */
  copyResumeRegion(regions: number): number {
    const j = this.sync
    if (!j || j.generation !== this.generation || !Number.isSafeInteger(j.nextRegion) || j.nextRegion < 0) return 0
    return Math.min(j.nextRegion, regions)
  }

  /** Queues NAME.sync's new contents; resolves once durable. */
  saveCopy(rec: SyncRecord): Promise<void> {
    this.sync = rec
    return this.queueSync(() => writeFileAtomic(this.syncFile, `${JSON.stringify(rec)}\n`))
  }

  /** Queues NAME.sync's removal (the appliance holds a complete copy). */
  removeCopy(): Promise<void> {
    this.sync = null
    return this.queueSync(async () => {
      await fs.promises.rm(this.syncFile, { force: true })
      await syncDir(path.dirname(this.syncFile))
    })
  }

  /** Resolves once every write asked for so far has been tried (failures were reported where they were asked for). */
  async flush(): Promise<void> {
    await this.syncChain
    await this.ackWriter.flush().catch(() => undefined)
  }

  private queueSync(op: () => Promise<void>): Promise<void> {
    const n = ++this.syncQueued
    const done = this.syncChain.then(op).then(() => {
      if (this.ackHeldUntil && n >= this.ackHeldUntil) {
        this.ackHeldUntil = 0
        this.ackWriter.set(ackedBytes(this.acked))
      }
    })
    this.syncChain = done.catch(() => undefined)
    return done
  }
}
