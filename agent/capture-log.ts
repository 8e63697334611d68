// The capture log: a local, append-only, checksummed file of captured change
// records, one per volume. It is where `tidemark agent --capture-log DIR`
// makes records durable before acknowledging them to the tap, while no
// appliance is configured, and what `replayCaptureLog` applies to an image.
//
// Layout (little-endian):
//   file header  8 bytes "TMCAPLG1", u32 version (1), u32 reserved
//   frame        u32 magic 0x46434d54 ("TMCF"), u32 payload length,
//                u32 xxh32(payload), u32 reserved, payload
// The payload is a record batch exactly as the tap produced it
// (agent/record-batch.ts). As in LevelDB's log reader, a frame cut short at
// the end of the file is a crash during writing (a clean end); a complete
// frame whose checksum does not match is corruption, reported with its offset.
import fs from 'node:fs'
import { writeFileAtomic } from '../native/atomic-file'
import xxhash from 'xxhash-wasm'
import { TidemarkError } from '../proto/errors'
import { RecordBatch, RecordKind, SECTOR_SIZE } from '../native/record-batch'

const FILE_MAGIC = Buffer.from('TMCAPLG1')
const FILE_HEADER = 16
const FRAME_MAGIC = 0x46434d54
const FRAME_HEADER = 16
const VERSION = 1

let hasher: Promise<Awaited<ReturnType<typeof xxhash>>> | null = null
function xxh(): Promise<Awaited<ReturnType<typeof xxhash>>> {
  hasher ??= xxhash()
  return hasher
}

export interface ScanResult {
  /** offset just past the last good frame */
  end: number
  frames: number
  records: number
  firstSeq: number
  lastSeq: number
  /** bytes after `end` that belong to a torn frame */
  tornBytes: number
}

/** Walks the frames of a capture log; calls onBatch for each good one. */
export async function scanCaptureLog(file: string, onBatch?: (b: RecordBatch, at: number) => void): Promise<ScanResult> {
  const { h32Raw } = await xxh()
  const fd = fs.openSync(file, 'r')
  try {
    const size = fs.fstatSync(fd).size
    const head = Buffer.alloc(FILE_HEADER)
    if (size < FILE_HEADER || fs.readSync(fd, head, 0, FILE_HEADER, 0) !== FILE_HEADER || !head.subarray(0, 8).equals(FILE_MAGIC)) {
      throw new TidemarkError('CAPTURE_LOG_CORRUPT', `${file} is not a tidemark capture log (bad file header)`)
    }
    if (head.readUInt32LE(8) !== VERSION) {
      throw new TidemarkError('CAPTURE_LOG_CORRUPT', `${file}: unsupported capture log version ${head.readUInt32LE(8)}`)
    }
    const res: ScanResult = { end: FILE_HEADER, frames: 0, records: 0, firstSeq: 0, lastSeq: 0, tornBytes: 0 }
    const fh = Buffer.alloc(FRAME_HEADER)
    let off = FILE_HEADER
    while (off < size) {
      if (size - off < FRAME_HEADER) break
      fs.readSync(fd, fh, 0, FRAME_HEADER, off)
      const len = fh.readUInt32LE(4)
      if (fh.readUInt32LE(0) !== FRAME_MAGIC) {
        throw new TidemarkError('CAPTURE_LOG_CORRUPT', `${file}: bad frame magic at byte ${off}`)
      }
      if (off + FRAME_HEADER + len > size) break
      const payload = Buffer.alloc(len)
      fs.readSync(fd, payload, 0, len, off + FRAME_HEADER)
      if (h32Raw(payload, 0) >>> 0 !== fh.readUInt32LE(8)) {
        if (off + FRAME_HEADER + len === size) break // the last frame: torn by a crash
        throw new TidemarkError('CAPTURE_LOG_CORRUPT', `${file}: checksum mismatch in the frame at byte ${off}`)
      }
      const batch = new RecordBatch(payload)
      if (res.frames > 0 && batch.firstSeq <= res.lastSeq) {
        throw new TidemarkError('CAPTURE_LOG_CORRUPT', `${file}: seq ${batch.firstSeq} at byte ${off} does not follow ${res.lastSeq}`)
      }
      if (res.frames === 0) res.firstSeq = batch.firstSeq
      res.lastSeq = batch.lastSeq
      res.frames++
      res.records += batch.count
      onBatch?.(batch, off)
      off += FRAME_HEADER + len
      res.end = off
    }
    res.tornBytes = size - res.end
    return res
  } finally {
    fs.closeSync(fd)
  }
}

export class CaptureLogWriter {
  readonly file: string
  private readonly fd: number
  private readonly h32: (b: Uint8Array, seed?: number) => number
  private pos: number
  lastSeq: number

  private constructor(file: string, fd: number, h32: (b: Uint8Array, seed?: number) => number, pos: number, lastSeq: number) {
    this.file = file
    this.fd = fd
    this.h32 = h32
    this.pos = pos
    this.lastSeq = lastSeq
  }

  /** Opens (or creates) a log; a torn tail left by a crash is cut off. */
  static async open(file: string): Promise<CaptureLogWriter> {
    const { h32Raw } = await xxh()
    if (!fs.existsSync(file) || fs.statSync(file).size === 0) {
      const head = Buffer.alloc(FILE_HEADER)
      FILE_MAGIC.copy(head, 0)
      head.writeUInt32LE(VERSION, 8)
      // Atomically and with the directory fsynced: the appended batches'
      // fdatasyncs do not make the file's name durable, and once they are
      // acknowledged the dirty map forgets them.
      await writeFileAtomic(file, head)
    }
    const scan = await scanCaptureLog(file)
    const fd = fs.openSync(file, 'r+')
    if (scan.tornBytes > 0) {
      fs.ftruncateSync(fd, scan.end)
      fs.fdatasyncSync(fd)
    }
    return new CaptureLogWriter(file, fd, h32Raw, scan.end, scan.lastSeq)
  }

  /** Appends a batch and makes it durable. */
  append(batch: RecordBatch): void {
    if (batch.count === 0) return
    if (batch.firstSeq <= this.lastSeq) {
      throw new TidemarkError('CAPTURE_LOG_ORDER', `batch seq ${batch.firstSeq} does not follow ${this.lastSeq} in ${this.file}`)
    }
    const head = Buffer.alloc(FRAME_HEADER)
    head.writeUInt32LE(FRAME_MAGIC, 0)
    head.writeUInt32LE(batch.buffer.length, 4)
    head.writeUInt32LE(this.h32(batch.buffer, 0) >>> 0, 8)
    fs.writevSync(this.fd, [head, batch.buffer], this.pos)
    this.pos += FRAME_HEADER + batch.buffer.length
    this.lastSeq = batch.lastSeq
  }

  sync(): void {
    fs.fdatasyncSync(this.fd)
  }

  close(): void {
    fs.closeSync(this.fd)
  }
}

export interface ReplayResult extends ScanResult {
  applied: number
  appliedBytes: number
}

/**
 * Applies the records of a capture log, in seq order, to an image file that
 * starts as the volume's initial contents. uptoSeq stops after that seq.
 */
export async function replayCaptureLog(file: string, image: string, uptoSeq = Infinity): Promise<ReplayResult> {
  const fd = fs.openSync(image, 'r+')
  const zero = Buffer.alloc(1024 * 1024)
  let applied = 0
  let appliedBytes = 0
  try {
    const scan = await scanCaptureLog(file, (batch) => {
      batch.forEach((r) => {
        if (r.seq > uptoSeq) return
        const off = r.sector * SECTOR_SIZE
        switch (r.kind) {
          case RecordKind.Write:
          case RecordKind.Resync: {
            const d = r.data()
            fs.writeSync(fd, d, 0, d.length, off)
            appliedBytes += d.length
            break
          }
          case RecordKind.Trim:
          case RecordKind.Zero: {
            let left = r.count * SECTOR_SIZE
            let at = off
            while (left > 0) {
              const n = Math.min(left, zero.length)
              fs.writeSync(fd, zero, 0, n, at)
              at += n
              left -= n
            }
            break
          }
          default:
            break
        }
        applied++
      })
    })
    return { ...scan, applied, appliedBytes }
  } finally {
    fs.closeSync(fd)
  }
}
