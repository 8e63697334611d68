// A volume's state files in the agent's --state DIR (next to the tap's own
// NAME.dirty and sequence lease), and the order they reach the disk in:
//
//   NAME.gen     the generation id, made the first time the volume is protected
//                (text, one line). Written once, before the first Hello.
//   NAME.acked   the highest durable seq this generation has seen: 8 bytes, u64
//                little-endian. Told to the appliance in every Hello, so a
//                rolled-back appliance (it holds less than it acknowledged) is
//                noticed and the volume copied again.
//   NAME.sync    an unfinished initial copy: {generation, nextRegion, regions}
//                (JSON, one line), so a restart resumes it instead of starting
//                at zero. Removed once the appliance holds a complete copy.
//
// Every write goes through native/atomic-file.ts (temp file, fsync, rename,
// fsync of the directory: a crash leaves the old file or the new one), and
// none blocks the event loop, which also serves the replication stream and
// the tap's consumers. Reads happen once, when the volume's replicator opens;
// after that this room answers from memory what the files hold.
//
// Crash semantics. NAME.acked is written behind the acks: the tap is told at
// once and the file follows (at most one write in flight and one queued,
// whatever the ack rate). After a crash it may hold a lower seq than the
// agent had seen. That is safe: the file only ever holds seqs the appliance
// really acknowledged as durable, so a lower one never raises a false alarm
// and never loses a record (the tap's dirty map, not this file, is what
// resends unacknowledged regions after a restart). All it can miss is an
// appliance that loses acknowledged data in the same few milliseconds as the
// agent crashes, the double fault; before, the value was written in place
// without fsync and a host crash could lose it too.
// The one write that must not lag is a *lower* acked seq (the copy starts
// over because the replica lost data): if it reached the disk before NAME.sync
// said the copy restarts at region 0, a restart would resume the old copy's
// progress against a replica that lost it. So a lowered value, and every
// value after it, waits until a NAME.sync write queued after it is durable;
// until then a crash leaves the old, higher value, and the next Hello finds
// the loss again.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { AtomicFileWriter, writeFileAtomic } from '../native/atomic-file'

/** What NAME.sync holds. */
export interface SyncRecord {
  generation: string
  nextRegion: number
  regions: number
}

const ACKED_BYTES = 8
/** A failing NAME.acked write is logged at most this often (acks keep coming). */
const ACK_ERROR_LOG_MS = 60_000

function ackedBytes(seq: number): Buffer {
  const b = Buffer.alloc(ACKED_BYTES)
  b.writeBigUInt64LE(BigInt(seq))
  return b
}

async function readOrNull(file: string, encoding?: 'utf8'): Promise<Buffer | string | null> {
  try {
    return await fs.promises.readFile(file, encoding)
  } catch {
    return null
  }
}

/**
 * Removes the temp files of writes a crash interrupted before their rename
 * (native/atomic-file.ts names them FILE.tmp-PID-N, older agents FILE.tmp):
 * each crash would leave its own otherwise. Only this volume's state files'.
 */
async function removeTempFiles(dir: string, files: string[]): Promise<void> {
  const prefixes = files.map((f) => `${path.basename(f)}.tmp`)
  const names = await fs.promises.readdir(dir).catch(() => [] as string[])
  const stale = names.filter((n) => prefixes.some((p) => n === p || n.startsWith(`${p}-`)))
  await Promise.all(stale.map((n) => fs.promises.rm(path.join(dir, n), { force: true })))
}

export class VolumeState {
  private acked: number
  /** NAME.sync as last queued (null: no file) */
  private sync: SyncRecord | null
  private readonly ackWriter: AtomicFileWriter
  /** NAME.sync writes and removals, in the order they were asked for */
  private syncChain: Promise<void> = Promise.resolve()
  private syncQueued = 0
  /** set while a lowered acked seq waits for the NAME.sync write numbered here (see above) */
  private ackHeldUntil = 0
  private lastAckErrorAt = -Infinity

  private constructor(
    readonly generation: string,
    acked: number,
    sync: SyncRecord | null,
    private readonly syncFile: string,
    ackFile: string,
    private readonly log: Logger
  ) {
    this.acked = acked
    this.sync = sync
    this.ackWriter = new AtomicFileWriter(ackFile, (err) => {
      const now = performance.now()
      if (now - this.lastAckErrorAt < ACK_ERROR_LOG_MS) return
      this.lastAckErrorAt = now
      this.log.error({ err, file: ackFile }, 'cannot save the highest acknowledged seq; a restart may not notice an appliance that lost data')
    })
  }

  /**
   * Reads the volume's state files, making NAME.gen (and a zero NAME.acked)
   * the first time; both are durable when this resolves, before any Hello
   * names the generation.
   */
  static async open(stateDir: string, volume: string, log: Logger): Promise<VolumeState> {
    const genFile = path.join(stateDir, `${volume}.gen`)
    const ackFile = path.join(stateDir, `${volume}.acked`)
    const syncFile = path.join(stateDir, `${volume}.sync`)
    await removeTempFiles(stateDir, [genFile, ackFile, syncFile])
    let gen = ((await readOrNull(genFile, 'utf8')) as string | null)?.trim() || null
    let acked = 0
    if (!gen) {
      gen = crypto.randomUUID()
      // NAME.acked first: a new generation never pairs with an older one's seq.
      await writeFileAtomic(ackFile, ackedBytes(0))
      await writeFileAtomic(genFile, `${gen}\n`)
      log.info({ generation: gen }, 'first protection of this volume: new generation')
    } else {
      const b = (await readOrNull(ackFile)) as Buffer | null
      if (b && b.length >= ACKED_BYTES) acked = Number(b.readBigUInt64LE(0))
      else await writeFileAtomic(ackFile, ackedBytes(0))
    }
    let sync: SyncRecord | null = null
    const text = (await readOrNull(syncFile, 'utf8')) as string | null
    if (text !== null) {
      try {
        sync = JSON.parse(text) as SyncRecord
      } catch {
        sync = { generation: '', nextRegion: 0, regions: 0 }
      }
    }
    return new VolumeState(gen, acked, sync, syncFile, ackFile, log)
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
    return this.queueSync(() => fs.promises.rm(this.syncFile, { force: true }))
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
