// A volume's base image: the history that retention expired, folded into one
// sparse image of the volume at one seq (the base seq). Reads at a later seq
// start from the base and apply the journal above it (image.ts); points below
// it are gone.
//
// Files in DIR/volumes/NAME/:
//   base.json            the commit point of a compaction (replaced atomically):
//                        { seq, timeMs, file, map, throughSegment, marks, windows }
//   base-<seq>.img       the image at seq, sparse (holes read as zeroes)
//   base-<seq>.map       one bit per 64 KiB chunk: the chunk holds data in the image
// A compaction writes the new .img and .map completely (fsynced) before it
// replaces base.json (so does a seed, Admin.SeedVolume, adopting an image it
// copied from a disk: the volume's first point); anything base.json does not name is a leftover of a
// compaction that did not commit and is deleted at open. Segments up to
// throughSegment were folded into the base and are deleted at open if a
// crash left them behind.
import fs from 'node:fs'
import path from 'node:path'
import type { FileHandle } from 'node:fs/promises'
import type { CatalogEntry, InexactWindow } from './chunk-index'
import { syncDir } from './segment'
import { crashPoint } from './crash-points'

/** Bytes read at once while mapping an adopted image (a multiple of every chunk size). */
const ADOPT_READ_BYTES = 4 * 1024 * 1024

export interface BaseState {
  seq: number
  /** Capture time of the newest change at or below seq (0 if unknown). */
  timeMs: number
  file: string
  map: string
  /** Segments numbered up to this one are folded in. */
  throughSegment: number
  /** Retained TimeMarks at or below seq (the journal no longer holds their MARK records). */
  marks: CatalogEntry[]
  /** Inexact windows that end above seq (or are open). */
  windows: InexactWindow[]
}

export class BaseImage {
  private constructor(
    readonly state: BaseState,
    private readonly fh: FileHandle,
    /** One bit per chunk. */
    readonly map: Uint8Array,
    readonly path: string
  ) {}

  get seq(): number {
    return this.state.seq
  }

  /** The open file descriptor (batched native reads). */
  get fd(): number {
    return this.fh.fd
  }

  hasChunk(chunk: number): boolean {
    return (this.map[chunk >>> 3] & (1 << (chunk & 7))) !== 0
  }

  close(): Promise<void> {
    return this.fh.close()
  }

  /** The committed base of a volume (null: none yet); removes leftovers of uncommitted compactions. */
  static async open(dir: string): Promise<BaseImage | null> {
    let state: BaseState | null = null
    try {
      state = JSON.parse(await fs.promises.readFile(path.join(dir, 'base.json'), 'utf8')) as BaseState
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    }
    for (const f of await fs.promises.readdir(dir)) {
      if (/^base[-.]/.test(f) && f !== 'base.json' && f !== state?.file && f !== state?.map) {
        await fs.promises.rm(path.join(dir, f), { force: true })
      }
    }
    if (!state) return null
    const fh = await fs.promises.open(path.join(dir, state.file), 'r')
    const map = new Uint8Array(await fs.promises.readFile(path.join(dir, state.map)))
    return new BaseImage(state, fh, map, path.join(dir, state.file))
  }

  /**
   * Makes an image written by someone else (Admin.SeedVolume's copy of a
   * disk, already complete and fsynced as DIR/base-SEQ.img) the base: its
   * chunk map from what the image holds (a chunk of zeroes reads as a hole),
   * then base.json. The same commit order as write(): until base.json names
   * it, the image is a leftover.
   */
  static async adopt(dir: string, sizeBytes: number, chunkBytes: number, state: Omit<BaseState, 'file' | 'map'>): Promise<void> {
    const file = `base-${state.seq}.img`
    const mapFile = `base-${state.seq}.map`
    const map = new Uint8Array(Math.ceil(Math.ceil(sizeBytes / chunkBytes) / 8))
    const fh = await fs.promises.open(path.join(dir, file), 'r')
    try {
      const st = await fh.stat()
      if (st.size !== sizeBytes) throw new Error(`${file} holds ${st.size} bytes, not the volume's ${sizeBytes}`)
      const buf = Buffer.alloc(ADOPT_READ_BYTES)
      const zero = Buffer.alloc(chunkBytes)
      for (let at = 0; at < sizeBytes; at += ADOPT_READ_BYTES) {
        const n = Math.min(ADOPT_READ_BYTES, sizeBytes - at)
        const { bytesRead } = await fh.read(buf, 0, n, at)
        if (bytesRead !== n) throw new Error(`${file}: short read at offset ${at}`)
        for (let o = 0; o < n; o += chunkBytes) {
          const end = Math.min(n, o + chunkBytes)
          if (buf.compare(zero, 0, end - o, o, end) !== 0) {
            const c = (at + o) / chunkBytes
            map[c >>> 3] |= 1 << (c & 7)
          }
        }
      }
    } finally {
      await fh.close()
    }
    await writeDurable(path.join(dir, mapFile), Buffer.from(map))
    const full: BaseState = { ...state, file, map: mapFile }
    await writeDurable(path.join(dir, 'base.json'), Buffer.from(JSON.stringify(full, null, 1)))
    await syncDir(dir)
  }

  /**
   * Writes a new base: the image from `extents` (non-zero runs in offset
   * order), its chunk map, then base.json. Returns the opened base. A crash
   * before base.json is replaced leaves the old base in force.
   */
  static async write(
    dir: string,
    sizeBytes: number,
    chunkBytes: number,
    state: Omit<BaseState, 'file' | 'map'>,
    extents: AsyncIterable<{ offset: number; data: Buffer }>
  ): Promise<BaseImage> {
    const file = `base-${state.seq}.img`
    const mapFile = `base-${state.seq}.map`
    const p = path.join(dir, file)
    const map = new Uint8Array(Math.ceil(Math.ceil(sizeBytes / chunkBytes) / 8))
    const fh = await fs.promises.open(p, 'w+')
    try {
      await fh.truncate(sizeBytes)
      for await (const e of extents) {
        await fh.write(e.data, 0, e.data.length, e.offset)
        const c1 = Math.floor((e.offset + e.data.length - 1) / chunkBytes)
        for (let c = Math.floor(e.offset / chunkBytes); c <= c1; c++) map[c >>> 3] |= 1 << (c & 7)
      }
      await fh.sync()
    } catch (e) {
      await fh.close()
      await fs.promises.rm(p, { force: true })
      throw e
    }
    await writeDurable(path.join(dir, mapFile), Buffer.from(map))
    crashPoint('compact:before-commit')
    const full: BaseState = { ...state, file, map: mapFile }
    await writeDurable(path.join(dir, 'base.json'), Buffer.from(JSON.stringify(full, null, 1)))
    await syncDir(dir)
    return new BaseImage(full, fh, map, p)
  }
}

/** temp file, fsync, rename: the file is either old or new, never torn. */
async function writeDurable(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp`
  const fh = await fs.promises.open(tmp, 'w')
  try {
    await fh.write(data, 0, data.length, 0)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fs.promises.rename(tmp, file)
}
