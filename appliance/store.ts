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
//   DIR/archive/NAME.GEN.TIME old generations moved aside when an agent says
//                             the disk under that name is a different one;
//                             nothing is ever deleted
//
// attach() is serialised per volume name, so two hellos for one name cannot
// both create or archive it.
import type { JournalIo, JournalOptions } from './journal'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { initHash } from '../proto/hash'
import { MAX_NAME_BYTES, MAX_SEGMENT_BYTES, SEGMENT_HEADER_SIZE } from './journal-format'
import { GroupCommit } from './group-commit'
import { syncDir } from '../native/atomic-file'
import { removeReplica } from './replica-image'
import { VolumeStore, type VolumeMeta } from './volume-store'

export type { VolumeMeta } from './volume-store'
export { VolumeStore } from './volume-store'

export const DEFAULT_SEGMENT_BYTES = 256 * 1024 * 1024
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

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
  readonly commits = new GroupCommit()
  private readonly vols = new Map<string, VolumeStore>()
  private readonly locks = new Map<string, Promise<unknown>>()
  private closed = false

  private constructor(
    readonly dataDir: string,
    private readonly log: Logger,
    readonly journal: JournalOptions,
    /** Each volume keeps a replica image (replica-image.ts). */
    readonly replicaImages: boolean
  ) {}

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
        const v = await VolumeStore.open(d, s.commits, logger, s.journal, (n) => s.onNoSpace?.(n), s.replicaImages)
        if (!s.replicaImages) await removeReplica(d)
        s.vols.set(v.meta.name, v)
        logger.info({ volume: v.meta.name, durableSeq: v.durableSeq }, 'volume opened')
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

  attach(hello: Hello): Promise<{ volume: VolumeStore; fullSync: boolean }> {
    const prev = this.locks.get(hello.volume) ?? Promise.resolve()
    const p = prev.catch(() => {}).then(() => this.attachLocked(hello))
    const tail = p.catch(() => {})
    this.locks.set(hello.volume, tail)
    void tail.then(() => {
      if (this.locks.get(hello.volume) === tail) this.locks.delete(hello.volume)
    })
    return p
  }

  private async attachLocked(h: Hello): Promise<{ volume: VolumeStore; fullSync: boolean }> {
    if (this.closed) throw new TidemarkError('STORE_CLOSED', 'the appliance store is closed')
    checkName('volume', h.volume)
    checkName('generation', h.generation)
    if (!Number.isSafeInteger(h.size) || h.size <= 0 || h.size % 512 !== 0) {
      throw new TidemarkError('BAD_VOLUME_SIZE', `volume ${h.volume}: size ${h.size} must be a positive multiple of 512`)
    }
    const existing = this.vols.get(h.volume)
    if (existing && existing.meta.generation === h.generation && existing.meta.size === h.size) {
      return { volume: existing, fullSync: !existing.fullSyncDone }
    }
    const dir = path.join(this.volumesDir(), h.volume)
    if (existing || fs.existsSync(dir)) {
      const old: Partial<VolumeMeta> | undefined =
        existing?.meta ??
        (await fs.promises
          .readFile(path.join(dir, 'meta.json'), 'utf8')
          .then((t) => JSON.parse(t) as VolumeMeta)
          .catch(() => undefined))
      if (existing) await existing.close()
      this.vols.delete(h.volume)
      // The archive keeps the history; the replica image is only a copy of its newest point.
      await removeReplica(dir)
      const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
      const archive = path.join(this.dataDir, 'archive')
      await fs.promises.mkdir(archive, { recursive: true, mode: 0o700 })
      const to = path.join(archive, `${h.volume}.${NAME_RE.test(old?.generation ?? '') ? old!.generation : 'unknown'}.${stamp}`)
      await fs.promises.rename(dir, to)
      await syncDir(this.volumesDir())
      await syncDir(archive)
      this.log.warn(
        { volume: h.volume, oldGeneration: old?.generation, oldSize: old?.size, generation: h.generation, size: h.size, archivedTo: to },
        `volume ${h.volume}: the agent announces generation ${h.generation} (size ${h.size}), the appliance held ${old?.generation} (size ${old?.size}): old journal moved to ${to}, starting a new one`
      )
    }
    const meta: VolumeMeta = {
      name: h.volume,
      generation: h.generation,
      size: h.size,
      group: h.group ?? '',
      agentId: h.agentId ?? '',
      created: new Date().toISOString(),
    }
    const tmp = path.join(this.volumesDir(), `.${h.volume}.new-${process.pid}-${Date.now()}`)
    await fs.promises.mkdir(tmp, { mode: 0o700 })
    await VolumeStore.create(tmp, meta)
    await fs.promises.rename(tmp, dir)
    await syncDir(this.volumesDir())
    const v = await VolumeStore.open(dir, this.commits, this.log, this.journal, (n) => this.onNoSpace?.(n), this.replicaImages)
    this.vols.set(h.volume, v)
    this.log.info({ volume: h.volume, generation: h.generation, size: h.size }, 'new volume')
    return { volume: v, fullSync: true }
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.locks.values()])
    await Promise.all(this.volumes().map((v) => v.close()))
    await this.commits.idle()
    this.vols.clear()
  }
}
