// Copying an NBD export into a file, a block device or another NBD export
// with the native copier (native/src/nbd_copy.h): several connections,
// several requests in flight on each, zero blocks left as holes or zeroed,
// all on native threads. This side validates the options, holds the handle
// and turns its failures into TidemarkErrors; progress is read when asked.
import { TidemarkError } from '../proto/errors'
import { native } from './index'

export type NbdEndpoint = { unix: string; export: string } | { host: string; port: number; export: string }

export interface NbdCopyOptions {
  source: NbdEndpoint
  /** a path (a block device is written in place; anything else is created or truncated) or an NBD export */
  target: string | NbdEndpoint
  /** connections to the source (and to an NBD target); 1 when the source does not advertise multi-conn (default 4) */
  connections?: number
  /** READs in flight per connection (default 8) */
  requests?: number
  /** bytes per READ, capped at the servers' maximum block size (default 256 KiB) */
  requestBytes?: number
  /** the device or NBD target already reads as zeroes: zero blocks are skipped (a file's always are) */
  targetZeroed?: boolean
  /** fdatasync the file or device, FLUSH the NBD target, before the copy is done (default true) */
  sync?: boolean
  /** PEM files for NBD TLS: STARTTLS over TCP always, over a unix socket when the server requires it */
  tls?: { cert: string; key: string; ca: string }
  /**
   * Over a unix socket without TLS, into a file or a device: the server copies the point into the
   * target itself, file to file in the kernel (NBD_OPT_TIDEMARK_COPY; default true). A server that
   * does not is read instead.
   */
  serverCopy?: boolean
  /** connections copying 64 MiB ranges when the server copies (default 2) */
  serverCopyConnections?: number
}

export interface NbdCopyResult {
  size: number
  /** bytes written as data */
  dataBytes: number
  /** in this many runs (maximal non-zero stretches of a request) */
  dataRuns: number
  /** zero blocks: holes, skipped, or zeroed on the target */
  zeroBytes: number
  connections: number
  requestBytes: number
  targetKind: 'file' | 'device' | 'nbd'
  /** the server copied it (NBD_OPT_TIDEMARK_COPY) */
  serverCopy: boolean
  /** why the server did not, when asked (it was read instead) */
  serverCopySkipped: string | null
}

interface NativeCopyHandle {
  start(): Promise<NbdCopyResult>
  progress(): [number, number]
  cancel(): void
}
type NativeCopyCtor = new (config: Record<string, unknown>) => NativeCopyHandle

function nativeCtor(): NativeCopyCtor {
  return (native as unknown as { NativeNbdCopy: NativeCopyCtor }).NativeNbdCopy
}

/** One copy: started at construction, awaited through `done`. */
export class NbdCopy {
  readonly done: Promise<NbdCopyResult>
  private readonly handle: NativeCopyHandle

  constructor(opts: NbdCopyOptions) {
    for (const k of ['connections', 'requests', 'requestBytes', 'serverCopyConnections'] as const) {
      const v = opts[k]
      if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0)) throw new TidemarkError('COPY_INVALID_ARGUMENT', `NbdCopy: ${k} must be a positive integer (got ${v})`)
    }
    try {
      this.handle = new (nativeCtor())({ ...opts })
    } catch (err) {
      throw asTidemark(err)
    }
    this.done = this.handle.start().catch((err: unknown) => {
      throw asTidemark(err)
    })
  }

  /** Bytes of the source written to the target so far, and the source's size (0 until connected). */
  progress(): { done: number; size: number } {
    const [done, size] = this.handle.progress()
    return { done, size }
  }

  /** Stops the copy: `done` rejects with COPY_CANCELLED. */
  cancel(): void {
    this.handle.cancel()
  }
}

function asTidemark(err: unknown): TidemarkError {
  if (err instanceof TidemarkError) return err
  const e = err as { code?: string; message?: string }
  return new TidemarkError(e.code ?? 'COPY_FAILED', e.message ?? String(err))
}
