// Small state files replaced atomically, shared by the agent and the
// appliance (both depend on native/, never on each other).
//
// LevelDB's CURRENT discipline: write a temp file in the same directory,
// fsync it, rename it over the target, then fsync the directory so the rename
// itself survives a crash. A reader after a crash sees either the old file or
// the new one, never a mix, and never neither. Everything here is async: the
// agent writes these on every acknowledgement, and its event loop also serves
// the replication stream and the control socket.
import fs from 'node:fs'
import path from 'node:path'

/** fsyncs a directory, making renames and creations inside it durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

let tmpCounter = 0

/** Writes a small file atomically: temp file, fsync, rename, fsync the directory. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${++tmpCounter}`
  const fh = await fs.promises.open(tmp, 'w', mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (e) {
    await fh.close().catch(() => {})
    await fs.promises.rm(tmp, { force: true })
    throw e
  }
  await fh.close()
  try {
    await fs.promises.rename(tmp, file)
  } catch (e) {
    await fs.promises.rm(tmp, { force: true })
    throw e
  }
  await syncDir(path.dirname(file))
}

/**
 * Serializes the writes of one file and coalesces bursts: while a write is in
 * flight, later values replace each other and only the newest is written next.
 * `flush()` resolves when the newest value given so far is durable. The agent
 * updates NAME.acked on every acknowledgement; this keeps that to at most one
 * write in flight and one queued, whatever the ack rate.
 */
export class AtomicFileWriter {
  private pending: string | Buffer | null = null
  private running: Promise<void> | null = null
  private lastError: Error | null = null
  /** flush() wants the newest value now: no pause between writes until the drain ends */
  private urgent = false
  /** ends a pause under way */
  private hurry: (() => void) | null = null

  /**
   * onError: told of every failed write (the next set() tries again).
   * minIntervalMs: a write starts at least this long after the one before
   * (values set meanwhile coalesce); flush() does not wait for it. Each write
   * is two fsyncs and a rename, which on the volume's own disk the journal's
   * fdatasyncs wait behind: the agent's NAME.acked, written on every ack,
   * kept one in flight all the time at a few hundred acks a second.
   */
  constructor(
    readonly file: string,
    private readonly onError: (e: Error) => void = () => {},
    private readonly mode = 0o644,
    private readonly minIntervalMs = 0
  ) {}

  /** Queues `data` to be the file's contents; returns at once. */
  set(data: string | Buffer): void {
    this.pending = data
    if (!this.running) this.running = this.drain()
  }

  /** Resolves once every value set so far is on disk; rejects with the last write's error. */
  async flush(): Promise<void> {
    if (this.running) {
      this.urgent = true
      this.hurry?.()
    }
    while (this.running) await this.running
    if (this.lastError) {
      const e = this.lastError
      this.lastError = null
      throw e
    }
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending !== null) {
        const data = this.pending
        this.pending = null
        const t0 = performance.now()
        try {
          await writeFileAtomic(this.file, data, this.mode)
          this.lastError = null
        } catch (e) {
          this.lastError = e as Error
          this.onError(this.lastError)
        }
        const rest = this.minIntervalMs - (performance.now() - t0)
        if (this.pending !== null && rest > 0 && !this.urgent) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              this.hurry = null
              resolve()
            }, rest)
            this.hurry = () => {
              clearTimeout(timer)
              this.hurry = null
              resolve()
            }
          })
        }
      }
    } finally {
      this.running = null
      this.urgent = false
    }
  }
}
