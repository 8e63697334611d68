// The appliance's storage: every volume under DIR/volumes/, one group commit
// shared by all of them (so concurrent batches of many volumes share
// fsyncs), and the generation rules a replication Hello needs.
//
// Layout:
//   DIR/volumes/NAME/         one VolumeStore (volume-store.ts)
//   DIR/volumes/.NAME.new-*   a volume being created; renamed into place once
//                             its meta.json and state.json are durable, so a
//                             crash never leaves a half-made volume under its
//                             name (leftovers are removed at open)
//   DIR/volumes/NAME.retired-N  an earlier history of NAME: when its agent
//                             announced a different disk (a new generation)
//                             or a new size, and an admin (or, without roles,
//                             the hello itself) accepted it. Served read-only
//                             under that name (meta.json servedAs); nothing
//                             an agent sends removes or hides it
//   (Admin.SeedVolume makes a volume the same way, its base image copied
//   from a disk into .NAME.new-* before the rename: volume-seed.ts)
//   DIR/archive/...           where older appliances moved such histories
//   DIR/volumes/NAME/pending-generation.json
//                             the new generation or size a refused hello
//                             announced, until an admin accepts it
//                             (pending-generation.ts): kept across restarts
//
// attach() and acceptGeneration() are serialised per volume name, so two
// hellos for one name cannot both create or retire it.
import type { JournalIo, JournalOptions } from './journal'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { initHash } from '../proto/hash'
import { MAX_NAME_BYTES, MAX_SEGMENT_BYTES, SEGMENT_HEADER_SIZE } from './journal-format'
import { GroupCommit } from './group-commit'
import { syncDir, writeFileAtomic } from '../native/atomic-file'
import { removeReplica, ReplicaRounds } from './replica-image'
import type { IdentityLimits } from './identity-limits'
import { loadPending, removePending, savePending, type PendingGeneration } from './pending-generation'
import { VolumeStore, type VolumeMeta } from './volume-store'
import { SEED_SEQ, writeSeed, type SeedResult, type SeedSource } from './volume-seed'

export type { VolumeMeta } from './volume-store'
export { VolumeStore } from './volume-store'

export const DEFAULT_SEGMENT_BYTES = 256 * 1024 * 1024
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

export interface AttachOptions {
  /** The caller may accept a new generation or size itself (an admin's hello, or no roles at all). */
  accept?: boolean
  /** Who sent the hello (null: unidentified), for the limits per identity. */
  identity?: string | null
}

export type { PendingGeneration } from './pending-generation'

export interface Hello {
  volume: string
  generation: string
  size: number
  group: string
  agentId: string
}

function checkName(what: string, v: string): void {
  if (typeof v !== 'string' || !NAME_RE.test(v) || Buffer.byteLength(v) > MAX_NAME_BYTES) {
    throw new TidemarkError(
      what === 'volume' ? 'BAD_VOLUME_NAME' : 'BAD_GENERATION',
      `${what} ${JSON.stringify(v)} is not valid: use 1-${MAX_NAME_BYTES} of A-Z a-z 0-9 . _ -, starting with a letter or digit`
    )
  }
}

export class ApplianceStore {
  /** Told when a volume runs out of space (retention may free some, as its rules allow). */
  onNoSpace: ((volume: string) => void) | null = null
  /** Caps on volumes created per identity and retired histories per volume (identity-limits.ts); null: none. */
  limits: IdentityLimits | null = null
  readonly commits = new GroupCommit()
  private readonly vols = new Map<string, VolumeStore>()
  private readonly locks = new Map<string, Promise<unknown>>()
  /** New generations refused, waiting for an admin (and kept in each volume's pending-generation.json). */
  private readonly pending = new Map<string, PendingGeneration>()
  /** Generations accepted, until their hello comes. */
  private readonly accepted = new Map<string, PendingGeneration>()
  private closed = false

  private constructor(
    readonly dataDir: string,
    private readonly log: Logger,
    readonly journal: JournalOptions,
    /** Each volume keeps a replica image (replica-image.ts). */
    readonly replicaImages: boolean
  ) {}

  /** The volumes' replica rounds, which give way to every volume's appends (replica-image.ts). */
  private readonly replicaRounds = new ReplicaRounds()

  /** What VolumeStore.open takes for a volume's replica image: the store's rounds, or none. */
  private get replicas(): ReplicaRounds | null {
    return this.replicaImages ? this.replicaRounds : null
  }

  static async open(dataDir: string, logger: Logger, opts: { segmentBytes?: number; replicaImages?: boolean; journalIo?: JournalIo } = {}): Promise<ApplianceStore> {
    const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES
    if (!Number.isInteger(segmentBytes) || segmentBytes < SEGMENT_HEADER_SIZE + 4096 || segmentBytes > MAX_SEGMENT_BYTES) {
      throw new TidemarkError('BAD_CONFIG', `segment size ${segmentBytes} must be between ${SEGMENT_HEADER_SIZE + 4096} and ${MAX_SEGMENT_BYTES} bytes`)
    }
    await initHash()
    const s = new ApplianceStore(dataDir, logger, { segmentBytes, io: opts.journalIo ?? 'direct' }, opts.replicaImages ?? true)
    const vdir = s.volumesDir()
    await fs.promises.mkdir(vdir, { recursive: true, mode: 0o700 })
    for (const name of (await fs.promises.readdir(vdir)).sort()) {
      const d = path.join(vdir, name)
      if (name.startsWith('.')) {
        logger.warn({ dir: d }, 'removing a volume directory left half-created by a crash')
        await fs.promises.rm(d, { recursive: true, force: true })
        continue
      }
      if (!fs.existsSync(path.join(d, 'meta.json'))) {
        logger.warn({ dir: d }, 'skipping a directory without meta.json')
        continue
      }
      try {
        const v = await VolumeStore.open(d, s.commits, logger, s.journal, (n) => s.onNoSpace?.(n), s.replicas)
        if (!s.replicaImages) await removeReplica(d)
        s.vols.set(v.name, v)
        const pending = v.retired ? undefined : await loadPending(d, logger)
        if (pending) s.pending.set(v.name, pending)
        logger.info({ volume: v.name, durableSeq: v.durableSeq, ...(pending ? { pendingGeneration: pending.generation, pendingSize: pending.size } : {}) }, 'volume opened')
      } catch (e) {
        // One damaged volume must not keep the appliance from serving the others.
        logger.error({ dir: d, err: (e as Error).message }, `volume ${name} cannot be opened`)
      }
    }
    return s
  }

  private volumesDir(): string {
    return path.join(this.dataDir, 'volumes')
  }

  volumes(): VolumeStore[] {
    return [...this.vols.values()]
  }

  get(name: string): VolumeStore | undefined {
    return this.vols.get(name)
  }

  /** A hello's volume: the one held, or a new one (see attachLocked for a new generation or size). */
  attach(hello: Hello, opts: AttachOptions = {}): Promise<{ volume: VolumeStore; fullSync: boolean }> {
    return this.locked(hello.volume, () => this.attachLocked(hello, opts))
  }

  /** Runs `fn` alone among the attaches and retirements of `volume`. */
  private locked<T>(volume: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(volume) ?? Promise.resolve()
    const p = prev.catch(() => {}).then(fn)
    const tail = p.catch(() => {})
    this.locks.set(volume, tail)
    void tail.then(() => {
      if (this.locks.get(volume) === tail) this.locks.delete(volume)
    })
    return p
  }

  /** The new generation or size a refused hello announced for `volume`, if any (kept across restarts). */
  pendingGeneration(volume: string): PendingGeneration | undefined {
    return this.pending.get(volume)
  }

  /**
   * An admin accepts the new generation or size an agent announced for
   * `volume` (and was refused): its history so far is retired beside it,
   * read-only under NAME.retired-N, and the agent's next hello starts the
   * new history. `generation` ("" for any) must be the one announced.
   * The caller has ended the volume's replication stream.
   */
  acceptGeneration(volume: string, generation: string, identity: string | null = null): Promise<{ retiredAs: string; old: VolumeMeta; pending: PendingGeneration }> {
    return this.locked(volume, async () => {
      const v = this.vols.get(volume)
      if (!v) throw new TidemarkError('UNKNOWN_VOLUME', `no volume named ${JSON.stringify(volume)} on this appliance`)
      if (v.retired) throw new TidemarkError('VOLUME_RETIRED', `volume ${volume} is a retired history already`)
      const pending = this.pending.get(volume)
      if (!pending) {
        throw new TidemarkError('NO_PENDING_GENERATION', `volume ${volume}: no agent has announced a new generation or size (generation ${v.meta.generation}, size ${v.meta.size})`)
      }
      if (generation && generation !== pending.generation) {
        throw new TidemarkError('NO_PENDING_GENERATION', `volume ${volume}: the agent announced generation ${pending.generation}, not ${generation}`)
      }
      this.limits?.beforeRetire(identity, volume, await this.retiredCount(volume))
      const old = { ...v.meta }
      const retiredAs = await this.retireLocked(volume, v, v.dir, old, pending)
      this.pending.delete(volume)
      this.accepted.set(volume, pending)
      return { retiredAs, old, pending }
    })
  }

  /** How many retired histories of `name` (NAME.retired-N) the store keeps. */
  private async retiredCount(name: string): Promise<number> {
    const prefix = `${name}.retired-`
    const n = (await fs.promises.readdir(this.volumesDir())).filter((d) => d.startsWith(prefix) && /^\d+$/.test(d.slice(prefix.length))).length
    return n
  }

  /** Is this hello the generation an admin accepted for its volume (which is then gone)? */
  private acceptedFor(h: Hello): boolean {
    const a = this.accepted.get(h.volume)
    return a !== undefined && a.generation === h.generation && a.size === h.size
  }

  /**
   * Retires the history in `dir` (volume `name`, open as `v` or not): its
   * meta.json says the name it is served under now, the directory moves to
   * volumes/NAME.retired-N, and it opens again there, read-only.
   */
  private async retireLocked(name: string, v: VolumeStore | undefined, dir: string, old: Partial<VolumeMeta> | undefined, next: { generation: string; size: number }): Promise<string> {
    if (v) await v.close()
    this.vols.delete(name)
    // The replica image is only a copy of its newest point: rebuilt on demand if ever needed.
    await removeReplica(dir)
    let n = 1
    while (this.vols.has(`${name}.retired-${n}`) || fs.existsSync(path.join(this.volumesDir(), `${name}.retired-${n}`))) n++
    const retiredAs = `${name}.retired-${n}`
    const to = path.join(this.volumesDir(), retiredAs)
    const metaFile = path.join(dir, 'meta.json')
    const meta = JSON.parse(await fs.promises.readFile(metaFile, 'utf8')) as VolumeMeta
    await writeFileAtomic(metaFile, JSON.stringify({ ...meta, servedAs: retiredAs, retiredAt: new Date().toISOString() }, null, 2) + '\n', 0o600)
    await fs.promises.rename(dir, to)
    await syncDir(this.volumesDir())
    // What was pending for it is accepted now; a retired history has nothing pending.
    await removePending(to)
    const r = await VolumeStore.open(to, this.commits, this.log, this.journal, (x) => this.onNoSpace?.(x), null)
    this.vols.set(retiredAs, r)
    this.log.warn(
      { volume: name, oldGeneration: old?.generation, oldSize: old?.size, generation: next.generation, size: next.size, retiredAs },
      `volume ${name}: generation ${next.generation} (size ${next.size}) accepted; the history of generation ${old?.generation} (size ${old?.size}) is kept read-only as volume ${retiredAs}`
    )
    return retiredAs
  }

  private async attachLocked(h: Hello, opts: AttachOptions): Promise<{ volume: VolumeStore; fullSync: boolean }> {
    if (this.closed) throw new TidemarkError('STORE_CLOSED', 'the appliance store is closed')
    checkName('volume', h.volume)
    checkName('generation', h.generation)
    if (!Number.isSafeInteger(h.size) || h.size <= 0 || h.size % 512 !== 0) {
      throw new TidemarkError('BAD_VOLUME_SIZE', `volume ${h.volume}: size ${h.size} must be a positive multiple of 512`)
    }
    const existing = this.vols.get(h.volume)
    if (existing?.retired) {
      throw new TidemarkError(
        'VOLUME_RETIRED',
        `volume ${h.volume} is a retired history of volume ${existing.meta.name}, kept read-only: no agent writes it`
      )
    }
    if (existing && existing.meta.generation === h.generation && existing.meta.size === h.size) {
      return { volume: existing, fullSync: !existing.fullSyncDone }
    }
    const dir = path.join(this.volumesDir(), h.volume)
    // Gives the creation back to the limits per identity if it fails (the volume is then not created).
    let undoCreate: (() => void) | undefined
    if (existing || fs.existsSync(dir)) {
      // A different disk under this name (a new generation) or a resized one.
      // Its history so far is never moved out of reach by an agent: without
      // an admin's acceptance the hello is refused, and with it the history
      // is retired beside the new one, restorable under NAME.retired-N.
      const old: Partial<VolumeMeta> | undefined =
        existing?.meta ??
        (await fs.promises
          .readFile(path.join(dir, 'meta.json'), 'utf8')
          .then((t) => JSON.parse(t) as VolumeMeta)
          .catch(() => undefined))
      if (!opts.accept) {
        const p = { generation: h.generation, size: h.size, agentId: h.agentId ?? '', at: new Date().toISOString() }
        const prev = this.pending.get(h.volume)
        this.pending.set(h.volume, p)
        // Kept on disk so an admin can accept after a restart; rewritten only when what is announced changes (agents retry every few seconds).
        if (!prev || prev.generation !== p.generation || prev.size !== p.size || prev.agentId !== p.agentId) {
          await savePending(dir, p).catch((err) =>
            this.log.warn({ volume: h.volume, err: (err as Error).message }, `volume ${h.volume}: the pending generation is not kept on disk (${(err as Error).message}); it is in memory until a restart`)
          )
        }
        throw new TidemarkError(
          'GENERATION_CHANGED',
          `volume ${h.volume}: the agent announces generation ${h.generation} (size ${h.size}), the appliance holds generation ${old?.generation} (size ${old?.size}); ` +
            `its history is kept, and nothing is written until an admin accepts the new one: tidemark volume accept-generation --volume ${h.volume}`
        )
      }
      // Refused here, before anything moves: a cap never leaves a history retired without its successor.
      this.limits?.beforeRetire(opts.identity ?? null, h.volume, await this.retiredCount(h.volume))
      undoCreate = this.limits?.beforeCreate(opts.identity ?? null, h.volume)
      await this.retireLocked(h.volume, existing, dir, old, h).catch((err) => {
        undoCreate?.()
        throw err
      })
    } else {
      const accepted = this.accepted.get(h.volume)
      if (accepted && !this.acceptedFor(h) && !opts.accept) {
        throw new TidemarkError(
          'GENERATION_CHANGED',
          `volume ${h.volume}: an admin accepted generation ${accepted.generation} (size ${accepted.size}), the agent announces ${h.generation} (size ${h.size}): tidemark volume accept-generation --volume ${h.volume} again`
        )
      }
      undoCreate = this.limits?.beforeCreate(opts.identity ?? null, h.volume)
    }
    this.pending.delete(h.volume)
    this.accepted.delete(h.volume)
    const meta: VolumeMeta = {
      name: h.volume,
      generation: h.generation,
      size: h.size,
      group: h.group ?? '',
      agentId: h.agentId ?? '',
      created: new Date().toISOString(),
      ...(opts.identity ? { createdBy: opts.identity } : {}),
    }
    let v: VolumeStore
    try {
      const tmp = path.join(this.volumesDir(), `.${h.volume}.new-${process.pid}-${Date.now()}`)
      await fs.promises.mkdir(tmp, { mode: 0o700 })
      await VolumeStore.create(tmp, meta)
      v = await this.commitNewVolume(tmp, dir)
    } catch (err) {
      // Not created (a crash leaves .NAME.new-*, removed at open; a renamed one counts again from its meta.json at start).
      undoCreate?.()
      throw err
    }
    this.vols.set(h.volume, v)
    this.log.info({ volume: h.volume, generation: h.generation, size: h.size }, 'new volume')
    return { volume: v, fullSync: true }
  }

  /** The commit of a new volume made whole in `tmp` (.NAME.new-*): from here on it exists, under `dir`. */
  private async commitNewVolume(tmp: string, dir: string): Promise<VolumeStore> {
    await fs.promises.rename(tmp, dir)
    await syncDir(this.volumesDir())
    return VolumeStore.open(dir, this.commits, this.log, this.journal, (n) => this.onNoSpace?.(n), this.replicas)
  }

  /**
   * A new volume whose first point is the disk at `source` (volume-seed.ts),
   * under the generation its agent will announce. Refused, creating nothing,
   * when the name is taken (by any generation, a retired history included)
   * or the source cannot be read whole.
   */
  seed(s: { volume: string; generation: string; source: SeedSource; size: number; group?: string }, identity: string | null = null): Promise<{ volume: VolumeStore; seed: SeedResult }> {
    return this.locked(s.volume, async () => {
      if (this.closed) throw new TidemarkError('STORE_CLOSED', 'the appliance store is closed')
      checkName('volume', s.volume)
      checkName('generation', s.generation)
      if (s.size && (!Number.isSafeInteger(s.size) || s.size % 512 !== 0)) {
        throw new TidemarkError('BAD_VOLUME_SIZE', `volume ${s.volume}: size ${s.size} must be a positive multiple of 512`)
      }
      const dir = path.join(this.volumesDir(), s.volume)
      const existing = this.vols.get(s.volume)
      if (existing || fs.existsSync(dir)) {
        throw new TidemarkError(
          'VOLUME_EXISTS',
          `cannot seed volume ${s.volume}: this appliance holds it already (generation ${existing?.meta.generation ?? 'unknown'}${existing?.retired ? `, a retired history of ${existing.meta.name}` : ''}); a seed only makes a new volume`
        )
      }
      const undoCreate = this.limits?.beforeCreate(identity, s.volume)
      const tmp = path.join(this.volumesDir(), `.${s.volume}.new-${process.pid}-${Date.now()}`)
      let v: VolumeStore
      let r: SeedResult
      try {
        await fs.promises.mkdir(tmp, { mode: 0o700 })
        try {
          r = await writeSeed(tmp, s.volume, s.source, s.size)
          const meta: VolumeMeta = {
            name: s.volume,
            generation: s.generation,
            size: r.size,
            group: s.group ?? '',
            agentId: '',
            created: new Date().toISOString(),
            ...(identity ? { createdBy: identity } : {}),
            seed: { source: s.source.uri, seq: SEED_SEQ, seededAt: new Date().toISOString(), dataBytes: r.dataBytes },
          }
          // state.json says the initial copy is not done: the agent's first hello copies, comparing fingerprints.
          await VolumeStore.create(tmp, meta)
        } catch (err) {
          await fs.promises.rm(tmp, { recursive: true, force: true })
          throw err
        }
        v = await this.commitNewVolume(tmp, dir)
      } catch (err) {
        undoCreate?.()
        throw err
      }
      this.vols.set(s.volume, v)
      this.pending.delete(s.volume)
      this.accepted.delete(s.volume)
      this.log.info({ volume: s.volume, generation: s.generation, size: r.size, source: s.source.uri, dataBytes: r.dataBytes, ms: r.ms }, `volume ${s.volume} seeded from ${s.source.uri}`)
      return { volume: v, seed: r }
    })
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.locks.values()])
    await Promise.all(this.volumes().map((v) => v.close()))
    await this.commits.idle()
    this.vols.clear()
  }
}
