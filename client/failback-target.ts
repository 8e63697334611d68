// The production volume a failback writes: an NBD export (through the
// TypeScript NBD client) or a local file or block device. One small interface
// so the failback pipeline never cares which.
import fs from 'node:fs'
import { TidemarkError } from '../proto/errors'
import { describeAddress, NbdClient, parseNbdUri } from './nbd-client'

export interface FailbackTarget {
  /** For messages: "export 'vol' on /run/tidemark.sock", "file /dev/sdb". */
  readonly what: string
  readonly size: number
  /** Writes must be aligned to this (bytes). */
  readonly minBlock: number
  /** Largest read worth issuing as one request. */
  readonly maxRead: number
  read(offset: number, length: number): Promise<Buffer>
  write(offset: number, data: Uint8Array): Promise<void>
  /** Makes the writes durable; false when the target has nothing to flush. */
  flush(): Promise<boolean>
  close(): Promise<void>
}

export type TargetSpec = { kind: 'nbd'; uri: string } | { kind: 'file'; path: string }

/** Checks the --target string's form (before anything is contacted). */
export function parseTarget(s: string): TargetSpec {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s) || /^nbds?(\+[a-z]+)?:/i.test(s)) {
    const addr = parseNbdUri(s)
    if (!addr) throw new TidemarkError('BAD_TARGET', `'${s}' is neither an NBD URI (nbd+unix:///EXPORT?socket=PATH, nbd://HOST:PORT/EXPORT) nor a file`)
    return { kind: 'nbd', uri: s }
  }
  if (!s) throw new TidemarkError('BAD_TARGET', 'the target is empty')
  return { kind: 'file', path: s }
}

export async function openTarget(spec: TargetSpec, opts: { write: boolean }): Promise<FailbackTarget> {
  if (spec.kind === 'nbd') {
    const addr = parseNbdUri(spec.uri)!
    const c = await NbdClient.connect(addr)
    if (opts.write && c.readOnly) {
      await c.close()
      throw new TidemarkError('TARGET_READ_ONLY', `${describeAddress(addr)} is exported read-only: nothing can be written to it`)
    }
    return {
      what: c.what,
      size: c.size,
      minBlock: c.minBlock,
      maxRead: Math.min(c.maxBlock, 4 * 1024 * 1024),
      read: (o, n) => c.read(o, n),
      write: (o, d) => c.write(o, d),
      flush: () => c.flush(),
      close: () => c.close(),
    }
  }
  return openFile(spec.path, opts.write)
}

async function openFile(file: string, write: boolean): Promise<FailbackTarget> {
  let fh: fs.promises.FileHandle
  try {
    // Never created: a failback target is an existing volume.
    fh = await fs.promises.open(file, write ? 'r+' : 'r')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const why = e.code === 'ENOENT' ? 'it does not exist' : e.code === 'EACCES' || e.code === 'EPERM' ? 'permission denied' : e.message
    throw new TidemarkError('TARGET_OPEN', `cannot open target ${file}: ${why}`)
  }
  try {
    const st = await fh.stat()
    let size: number
    if (st.isFile()) size = st.size
    else if (st.isBlockDevice()) size = blockDeviceSize(file, st.rdev)
    else throw new TidemarkError('TARGET_OPEN', `target ${file} is neither a regular file nor a block device`)
    return {
      what: `file ${file}`,
      size,
      minBlock: 512,
      maxRead: 4 * 1024 * 1024,
      read: async (o, n) => {
        const b = Buffer.allocUnsafe(n)
        let got = 0
        while (got < n) {
          const { bytesRead } = await fh.read(b, got, n - got, o + got)
          if (bytesRead === 0) throw new TidemarkError('TARGET_IO', `target ${file} ended at ${o + got}, inside its ${size} bytes`)
          got += bytesRead
        }
        return b
      },
      write: async (o, d) => {
        let put = 0
        while (put < d.length) {
          const { bytesWritten } = await fh.write(d, put, d.length - put, o + put)
          put += bytesWritten
        }
      },
      flush: async () => {
        await fh.sync()
        return true
      },
      close: () => fh.close(),
    }
  } catch (err) {
    await fh.close()
    throw err
  }
}

/** A block device's size from sysfs (stat says 0 for devices). */
function blockDeviceSize(file: string, rdev: number): number {
  const major = Math.floor(rdev / 256) & 0xfff
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 2 ** 20) & 0xfff) << 8)
  try {
    return Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512
  } catch (err) {
    throw new TidemarkError('TARGET_OPEN', `cannot find the size of block device ${file}: ${(err as Error).message}`)
  }
}
