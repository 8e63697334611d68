// Restoring a volume at a resolved seq into a file, a block device or an NBD
// export.
//
// Two ways to read the point. The fast one: the appliance serves every point
// over NBD itself (`appliance --nbd`, export VOLUME@seq=N, native preads over
// a point map), and the native copier (native/nbd-copy.ts) reads it with
// several connections and requests in flight and writes it on native
// threads, so a restore runs at the speed of the disks and the link. It is
// taken when Admin.ServerInfo names an endpoint reachable from here: a unix
// socket that exists on this host, or a TCP port (a wildcard address is the
// appliance's own host; a loopback one only when the appliance is on this
// host). On the appliance's own host (its unix socket, no TLS) the copier
// hands the open target over the socket and the appliance copies the point
// into it itself, file to file in the kernel, as `cp` does: no byte crosses
// the socket (NBD_OPT_TIDEMARK_COPY). With --tls-* files the copier speaks NBD TLS (STARTTLS, the same
// certificates as gRPC). The other: Admin.Restore, the extents streamed over
// gRPC, for an appliance without an NBD endpoint, one that cannot be
// reached, or one whose NBD and this side disagree on TLS.
//
// A file is written to FILE.partial and renamed to FILE when complete, so a
// restore that fails half way never leaves something that looks like an
// image; zero blocks are holes. A block device or an NBD export is written
// in place, zero ranges zeroed (BLKZEROOUT, NBD_CMD_WRITE_ZEROES).
import fs from 'node:fs'
import { NbdCopy, type NbdEndpoint } from '../native/nbd-copy'
import { TidemarkError } from '../proto/errors'
import { exportName } from '../proto/export-name'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { ImageChunk__Output } from '../proto/generated/tidemark/v1/ImageChunk'
import type { ServerInfoReply__Output } from '../proto/generated/tidemark/v1/ServerInfoReply'
import { clientError, unary } from './admin-client'
import { NbdClient, describeAddress, parseNbdUri, type NbdAddress } from './nbd-client'

export interface RestoreProgress {
  size: number
  /** how far the volume has been read */
  scanned: number
  written: number
}

export type RestoreTransport = 'auto' | 'nbd' | 'grpc'

export interface RestoreResult {
  size: number
  seq: number
  /** bytes written as data (the rest was zero: holes or zeroed ranges) */
  written: number
  /** runs of data written */
  extents: number
  /** how the point was read */
  transport: 'nbd' | 'grpc'
  /** the appliance's NBD export read (transport nbd) */
  source: string | null
  /** why the NBD endpoint was not used (transport grpc under auto) */
  nbdSkipped: string | null
  target: 'file' | 'device' | 'nbd'
  /**
   * The appliance copied the point into the target itself, file to file (its NBD unix socket on
   * this host: NBD_OPT_TIDEMARK_COPY, native/src/nbd_proto.h), rather than sending it.
   */
  serverCopy: boolean
}

export interface RestoreOptions {
  volume: string
  seq: number
  /** a file, a block device, or an NBD URI (nbd+unix:///EXPORT?socket=PATH, nbd://HOST:PORT/EXPORT) */
  out: string
  /** names the caller in error lines */
  command: string
  /** the appliance's gRPC host as the user gave it (where its wildcard NBD address is) */
  applianceHost: string
  /** auto (default): NBD when the appliance offers a reachable endpoint, else gRPC */
  transport?: RestoreTransport
  /** the PEM files the gRPC channel uses, for NBD TLS (STARTTLS) with the appliance */
  tls?: { cert: string; key: string; ca: string }
  onProgress?: (p: RestoreProgress) => void
  signal?: AbortSignal
}

type Target = { kind: 'file'; path: string } | { kind: 'device'; path: string } | { kind: 'nbd'; addr: NbdAddress }

function targetOf(out: string, command: string): Target {
  const addr = parseNbdUri(out)
  if (addr) return { kind: 'nbd', addr }
  const st = fs.statSync(out, { throwIfNoEntry: false })
  if (st?.isBlockDevice()) return { kind: 'device', path: out }
  if (st && !st.isFile()) throw new TidemarkError('COPY_TARGET', `tidemark ${command}: --out ${out} is neither a regular file nor a block device`)
  return { kind: 'file', path: out }
}

const LOOPBACK = /^(127\.|::1$|localhost$|::ffff:127\.)/
const WILDCARD = /^(0\.0\.0\.0|::|\[::\]|)$/

/**
 * The appliance's NBD endpoint as reachable from this host, or the reason
 * there is none (an appliance from before ServerInfo answers UNIMPLEMENTED).
 */
export async function applianceNbdEndpoint(client: AdminClient, applianceHost: string, command: string): Promise<{ unix: string } | { host: string; port: number } | { none: string }> {
  let info: ServerInfoReply__Output
  try {
    info = await unary<{ volume: string }, ServerInfoReply__Output>(client.serverInfo.bind(client), { volume: '' })
  } catch (err) {
    const e = clientError(command, err)
    if ((err as { code?: number }).code === 12 /* UNIMPLEMENTED */) return { none: 'the appliance does not serve NBD (no ServerInfo)' }
    throw e
  }
  if (info.nbdUnix) {
    try {
      if (fs.statSync(info.nbdUnix).isSocket()) return { unix: info.nbdUnix }
    } catch {
      // another host's path: try TCP
    }
  }
  if (info.nbdTcp) {
    const m = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(info.nbdTcp)
    if (m) {
      const host = m[1].replace(/^\[|\]$/g, '')
      if (WILDCARD.test(host)) return { host: applianceHost, port: Number(m[2]) }
      if (!LOOPBACK.test(host) || LOOPBACK.test(applianceHost)) return { host, port: Number(m[2]) }
    }
  }
  if (info.nbdUnix || info.nbdTcp) {
    return { none: `the appliance's NBD endpoint (${[info.nbdUnix, info.nbdTcp].filter(Boolean).join(', ')}) is not reachable from this host` }
  }
  return { none: 'the appliance serves no NBD endpoint (appliance --nbd)' }
}

/** Writes `volume` at `seq` to `out`, over the appliance's NBD endpoint when it can, else over gRPC. */
export async function restorePoint(client: AdminClient, opts: RestoreOptions): Promise<RestoreResult> {
  const transport = opts.transport ?? 'auto'
  const target = targetOf(opts.out, opts.command)
  let skipped: string | null = null
  if (transport !== 'grpc') {
    const ep = await applianceNbdEndpoint(client, opts.applianceHost, opts.command)
    if ('none' in ep) skipped = ep.none
    else {
      const source: NbdEndpoint = { ...ep, export: exportName(opts.volume, { seq: opts.seq }) }
      try {
        return await restoreOverNbd(source, target, opts)
      } catch (err) {
        // Unreachable or TLS-only NBD: gRPC still gets there. Anything else
        // (a refused point, a full target) is the answer.
        const code = (err as TidemarkError).code
        if (code !== 'NBD_CONNECT' && code !== 'NBD_TLS_REQUIRED') throw prefixed(opts.command, err)
        skipped = (err as Error).message
      }
    }
    if (transport === 'nbd') throw new TidemarkError('RESTORE_NO_NBD', `tidemark ${opts.command}: --transport nbd, but ${skipped}`)
  }
  const r = await restoreOverGrpc(client, target, opts)
  return { ...r, nbdSkipped: skipped }
}

function prefixed(command: string, err: unknown): Error {
  if (!(err instanceof TidemarkError) || err.message.startsWith('tidemark ')) return err as Error
  return new TidemarkError(err.code, `tidemark ${command}: ${err.message}`)
}

async function restoreOverNbd(source: NbdEndpoint, target: Target, opts: RestoreOptions): Promise<RestoreResult> {
  const path = target.kind === 'file' ? `${target.path}.partial` : target.kind === 'device' ? target.path : null
  // Ours from here on (the native copy opens it again, O_NOFOLLOW, to write).
  if (target.kind === 'file') await (await createPartial(path!, opts.command)).close()
  const copy = new NbdCopy({ source, target: target.kind === 'nbd' ? target.addr : path!, tls: opts.tls })
  const onAbort = (): void => copy.cancel()
  opts.signal?.addEventListener('abort', onAbort)
  const timer = opts.onProgress
    ? setInterval(() => {
        const p = copy.progress()
        if (p.size) opts.onProgress!({ size: p.size, scanned: p.done, written: p.done })
      }, 250)
    : undefined
  try {
    const r = await copy.done
    if (target.kind === 'file') fs.renameSync(path!, target.path)
    return {
      size: r.size,
      seq: opts.seq,
      written: r.dataBytes,
      extents: r.dataRuns,
      transport: 'nbd',
      source: describeAddress(source),
      nbdSkipped: null,
      target: target.kind,
      serverCopy: r.serverCopy,
    }
  } catch (err) {
    if (target.kind === 'file') fs.rmSync(path!, { force: true })
    throw err
  } finally {
    clearInterval(timer)
    opts.signal?.removeEventListener('abort', onAbort)
  }
}

/** Where the gRPC stream's extents go: positional writes and zeroing. */
interface Sink {
  size(bytes: number): Promise<void>
  write(offset: number, data: Buffer): Promise<void>
  /** [offset, offset+length) reads as zeroes afterwards */
  zero(offset: number, length: number): Promise<void>
  finish(): Promise<void>
  abandon(): Promise<void>
}

const ZEROES = Buffer.alloc(4 << 20)

/**
 * FILE.partial, created by us and nobody else: O_EXCL refuses anything
 * already at the path (a symbolic link planted to make a restore write, as
 * its user, wherever it points, or a file someone else could read), and
 * O_NOFOLLOW a link there; mode 0600 whatever the umask. Nothing found at
 * the path is followed, truncated or removed.
 */
async function createPartial(path: string, command: string): Promise<fs.promises.FileHandle> {
  const c = fs.constants
  try {
    return await fs.promises.open(path, c.O_WRONLY | c.O_CREAT | c.O_EXCL | c.O_NOFOLLOW, 0o600)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code !== 'EEXIST' && e.code !== 'ELOOP') {
      // As the native copy says it: "No such file or directory (ENOENT)".
      const why = /^\w+: ([^,]+),/.exec(e.message)?.[1] ?? e.message
      throw new TidemarkError('RESTORE_TARGET', `tidemark ${command}: cannot open ${path} for writing: ${why.charAt(0).toUpperCase()}${why.slice(1)} (${e.code})`)
    }
    let what = 'a file'
    try {
      what = fs.lstatSync(path).isSymbolicLink() ? 'a symbolic link' : 'a file'
    } catch {
      // gone meanwhile: still refused, the user runs again
    }
    throw new TidemarkError(
      'RESTORE_PARTIAL_EXISTS',
      `tidemark ${command}: ${path} already exists (${what}: from an interrupted restore, or put there by someone else) and was neither followed nor overwritten; remove it and run again`
    )
  }
}

async function fileSink(target: Target & { kind: 'file' | 'device' }, command: string): Promise<Sink> {
  const isDevice = target.kind === 'device'
  const path = isDevice ? target.path : `${target.path}.partial`
  const fh = isDevice ? await fs.promises.open(path, 'r+') : await createPartial(path, command)
  return {
    size: async (bytes) => {
      if (!isDevice) await fh.truncate(bytes)
    },
    write: async (offset, data) => {
      await fh.write(data, 0, data.length, offset)
    },
    // A new file is a hole already; a device may hold anything.
    zero: async (offset, length) => {
      if (!isDevice) return
      for (let at = 0; at < length; at += ZEROES.length) await fh.write(ZEROES, 0, Math.min(ZEROES.length, length - at), offset + at)
    },
    finish: async () => {
      await fh.sync()
      await fh.close()
      if (!isDevice) fs.renameSync(path, target.path)
    },
    abandon: async () => {
      await fh.close()
      if (!isDevice) fs.rmSync(path, { force: true })
    },
  }
}

async function nbdSink(addr: NbdAddress, command: string): Promise<Sink> {
  const nbd = await NbdClient.connect(addr)
  if (nbd.readOnly) {
    nbd.destroy()
    throw new TidemarkError('COPY_TARGET', `tidemark ${command}: the NBD target ${nbd.what} is read-only`)
  }
  const zero = async (offset: number, length: number): Promise<void> => {
    const parts: Array<Promise<void>> = []
    for (let at = 0; at < length; at += ZEROES.length) parts.push(nbd.write(offset + at, ZEROES.subarray(0, Math.min(ZEROES.length, length - at))))
    await Promise.all(parts)
  }
  return {
    size: async (bytes) => {
      if (nbd.size < bytes) throw new TidemarkError('COPY_TARGET', `tidemark ${command}: the NBD target ${nbd.what} holds ${nbd.size} bytes, fewer than the volume's ${bytes}`)
    },
    write: (offset, data) => nbd.write(offset, data),
    zero,
    finish: async () => {
      await nbd.flush()
      await nbd.close()
    },
    abandon: async () => nbd.destroy(),
  }
}

async function restoreOverGrpc(client: AdminClient, target: Target, opts: RestoreOptions): Promise<RestoreResult> {
  const sink = target.kind === 'nbd' ? await nbdSink(target.addr, opts.command) : await fileSink(target, opts.command)
  let size = 0
  let seq = 0
  let written = 0
  let extents = 0
  let end = 0 // the image is complete up to here: gaps before an extent are zeroed
  const call = client.restore({ volume: opts.volume, point: { seq: opts.seq } })
  const onAbort = (): void => call.cancel()
  opts.signal?.addEventListener('abort', onAbort)
  try {
    try {
      for await (const c of call as AsyncIterable<ImageChunk__Output>) {
        if (c.volumeSize) {
          size = c.volumeSize
          seq = c.seq
          await sink.size(size)
          continue
        }
        if (c.offset + c.data.length > size) {
          throw new TidemarkError('RESTORE_FAILED', `the appliance sent an extent past the end of the volume (${c.offset}+${c.data.length} > ${size})`)
        }
        if (c.offset > end) await sink.zero(end, c.offset - end)
        await sink.write(c.offset, c.data)
        end = Math.max(end, c.offset + c.data.length)
        written += c.data.length
        extents++
        opts.onProgress?.({ size, scanned: c.scanned, written })
      }
    } catch (err) {
      if (opts.signal?.aborted) throw new TidemarkError('COPY_CANCELLED', `tidemark ${opts.command}: the restore was cancelled`)
      if (err instanceof TidemarkError) throw err
      throw clientError(opts.command, err)
    }
    if (!size) throw new TidemarkError('RESTORE_FAILED', `tidemark ${opts.command}: the appliance ended the restore without sending the volume size`)
    if (size > end) await sink.zero(end, size - end)
    await sink.finish()
  } catch (err) {
    await sink.abandon().catch(() => undefined)
    throw err
  } finally {
    opts.signal?.removeEventListener('abort', onAbort)
  }
  return { size, seq, written, extents, transport: 'grpc', source: null, nbdSkipped: null, target: target.kind, serverCopy: false }
}
