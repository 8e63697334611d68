// The one NBD client: enough of the protocol to read, write and flush an
// export (failback writes a production volume through it; tests and
// benchmarks drive the agent through it, and tests that send malformed NBD
// on purpose use its encoders for the framing).
//
// There is no maintained NBD client library for Node (libnbd has no Node
// binding), so this speaks the wire protocol itself, as described in
// doc/proto.md of NetworkBlockDevice/nbd:
// - fixed newstyle handshake, one NBD_OPT_GO naming the export and asking for
//   NBD_INFO_BLOCK_SIZE; NBD_REP_INFO is read, NBD_REP_ERR_* become errors
//   that say what the server refused;
// - simple replies only (structured replies are never negotiated), so a READ
//   reply carries its payload only when its error is zero;
// - many requests in flight on one connection, matched to replies by handle;
// - READ/WRITE longer than the server's maximum block size (NBD_INFO_BLOCK_SIZE,
//   else 32 MiB) are split into several requests;
// - a server that closes the connection fails every request in flight.
import net from 'node:net'
import { TidemarkError } from '../proto/errors'

export const NBD_MAGIC = 0x4e42444d41474943n // "NBDMAGIC"
export const OPT_MAGIC = 0x49484156454f5054n // "IHAVEOPT"
export const OLDSTYLE_MAGIC = 0x00420281861253n
export const OPT_REPLY_MAGIC = 0x3e889045565a9n
export const REQUEST_MAGIC = 0x25609513
export const SIMPLE_REPLY_MAGIC = 0x67446698
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef

export const FLAG_FIXED_NEWSTYLE = 1
export const FLAG_NO_ZEROES = 2
export const OPT_ABORT = 2
export const OPT_LIST = 3
export const OPT_INFO = 6
export const OPT_GO = 7
export const REP_ACK = 1
export const REP_SERVER = 2
export const REP_INFO = 3
export const REP_ERR = 0x80000000
export const INFO_EXPORT = 0
export const INFO_DESCRIPTION = 2
export const INFO_BLOCK_SIZE = 3

export const TX_READ_ONLY = 1 << 1
export const TX_SEND_FLUSH = 1 << 2

export const CMD_READ = 0
export const CMD_WRITE = 1
export const CMD_DISC = 2
export const CMD_FLUSH = 3
const CMD_NAMES = ['READ', 'WRITE', 'DISC', 'FLUSH']

// ---- the wire encoders and decoders, exported for tests that send malformed
// NBD on purpose (the malformed bytes are theirs, the framing is this one's).

/** The client's 4 handshake flags after the greeting. */
export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(flags >>> 0, 0)
  return b
}

/** An option request: IHAVEOPT, option, length, data (magic and length may be overridden to test a server). */
export function encodeOption(opt: number, data: Uint8Array, over: { magic?: Buffer; length?: number } = {}): Buffer {
  const h = Buffer.alloc(16)
  if (over.magic) over.magic.copy(h, 0, 0, 8)
  else h.writeBigUInt64BE(OPT_MAGIC, 0)
  h.writeUInt32BE(opt, 8)
  h.writeUInt32BE(over.length ?? data.length, 12)
  return Buffer.concat([h, data])
}

/** NBD_OPT_GO / NBD_OPT_INFO data: the export name and the information requests. */
export function encodeGoData(name: string, infos: number[] = []): Buffer {
  const nameBytes = Buffer.from(name, 'utf8')
  const data = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infos.length)
  data.writeUInt32BE(nameBytes.length, 0)
  nameBytes.copy(data, 4)
  data.writeUInt16BE(infos.length, 4 + nameBytes.length)
  infos.forEach((it, i) => data.writeUInt16BE(it, 6 + nameBytes.length + 2 * i))
  return data
}

/** An option reply's 20-byte header. */
export function decodeOptionReply(h: Buffer): { magic: bigint; opt: number; type: number; length: number } {
  return { magic: h.readBigUInt64BE(0), opt: h.readUInt32BE(8), type: h.readUInt32BE(12), length: h.readUInt32BE(16) }
}

/** A transmission request's 28-byte header (magic may be overridden to test a server). */
export function encodeRequest(cmd: number, offset: number | bigint, length: number, opts: { flags?: number; handle?: number | bigint; magic?: number } = {}): Buffer {
  const h = Buffer.allocUnsafe(28)
  h.writeUInt32BE(opts.magic ?? REQUEST_MAGIC, 0)
  h.writeUInt16BE(opts.flags ?? 0, 4)
  h.writeUInt16BE(cmd, 6)
  h.writeBigUInt64BE(BigInt(opts.handle ?? 0), 8)
  h.writeBigUInt64BE(BigInt(offset), 16)
  h.writeUInt32BE(length, 24)
  return h
}

/** A simple reply's 16-byte header. */
export function decodeSimpleReply(h: Buffer): { magic: number; error: number; handle: number } {
  return { magic: h.readUInt32BE(0), error: h.readUInt32BE(4), handle: h.readUInt32BE(8) * 2 ** 32 + h.readUInt32BE(12) }
}

/** Used when the server does not say (the protocol's own suggestion). */
export const DEFAULT_MAX_BLOCK = 32 * 1024 * 1024

const REP_ERRORS: Record<number, string> = {
  1: 'does not support NBD_OPT_GO (NBD_REP_ERR_UNSUP)',
  2: 'refuses it by policy (NBD_REP_ERR_POLICY)',
  3: 'calls the request invalid (NBD_REP_ERR_INVALID)',
  4: 'does not support it on this platform (NBD_REP_ERR_PLATFORM)',
  5: 'requires TLS, which this client does not speak (NBD_REP_ERR_TLS_REQD)',
  6: 'has no such export (NBD_REP_ERR_UNKNOWN)',
  7: 'is shutting down (NBD_REP_ERR_SHUTDOWN)',
  8: 'requires block size negotiation (NBD_REP_ERR_BLOCK_SIZE_REQD)',
  9: 'finds the request too big (NBD_REP_ERR_TOO_BIG)',
  10: 'requires extended headers (NBD_REP_ERR_EXT_HEADER_REQD)',
}

const ERRNO: Record<number, string> = {
  1: 'EPERM (operation not permitted)',
  5: 'EIO (input/output error)',
  12: 'ENOMEM (out of memory)',
  22: 'EINVAL (invalid argument)',
  28: 'ENOSPC (no space left on the device)',
  75: 'EOVERFLOW (value too large)',
  95: 'ENOTSUP (operation not supported)',
  108: 'ESHUTDOWN (the server is shutting down)',
}

// The URI forms live with the appliance's (proto/nbd-uri.ts): one parser for both.
export { describeAddress, parseNbdUri, type NbdAddress } from '../proto/nbd-uri'
import { describeAddress, type NbdAddress } from '../proto/nbd-uri'

interface Pending {
  handle: number
  cmd: number
  offset: number
  length: number
  /** READ: where the payload goes, and how much of it has arrived. */
  dest: Buffer | null
  filled: number
  resolve(b: Buffer | null): void
  reject(e: Error): void
}

/** Reads exact byte counts from a socket during the handshake. */
class HandshakeReader {
  private chunks: Buffer[] = []
  private have = 0
  private wake: (() => void) | null = null
  private failure: Error | null = null

  constructor(private readonly sock: net.Socket, private readonly what: string) {
    sock.on('data', this.onData)
    sock.on('close', this.onClose)
  }

  private onData = (b: Buffer): void => {
    this.chunks.push(b)
    this.have += b.length
    this.wake?.()
  }

  private onClose = (): void => {
    this.failure ??= new TidemarkError('NBD_CLOSED', `the NBD server closed the connection during the handshake for ${this.what}`)
    this.wake?.()
  }

  async read(n: number): Promise<Buffer> {
    while (this.have < n) {
      if (this.failure) throw this.failure
      await new Promise<void>((r) => (this.wake = r))
      this.wake = null
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks)
    this.chunks = all.length > n ? [all.subarray(n)] : []
    this.have -= n
    return all.subarray(0, n)
  }

  /** Stops reading; returns whatever arrived beyond the handshake. */
  detach(): Buffer {
    this.sock.off('data', this.onData)
    this.sock.off('close', this.onClose)
    return Buffer.concat(this.chunks)
  }
}

export interface NbdConnectOptions {
  /** Give up on connecting and the handshake after this long (default 30 s). */
  timeoutMs?: number
}

export class NbdClient {
  readonly size: number
  readonly flags: number
  readonly minBlock: number
  readonly preferredBlock: number
  readonly maxBlock: number
  /** NBD_INFO_DESCRIPTION, when the server sent one ("" otherwise). */
  readonly description: string
  readonly what: string

  private pending = new Map<number, Pending>()
  private nextHandle = 1
  private header = Buffer.alloc(16)
  private headerLen = 0
  private reading: Pending | null = null
  private failure: Error | null = null
  private closed: Promise<void>
  private idle: (() => void) | null = null

  private constructor(
    private readonly sock: net.Socket,
    info: { size: number; flags: number; min: number; preferred: number; max: number; description: string },
    what: string,
    leftover: Buffer
  ) {
    this.size = info.size
    this.flags = info.flags
    this.minBlock = info.min
    this.preferredBlock = info.preferred
    this.maxBlock = info.max
    this.description = info.description
    this.what = what
    this.closed = new Promise((r) => sock.once('close', () => r()))
    sock.on('data', (b: Buffer) => this.onData(b))
    sock.on('error', (e) => this.fail(this.closedError(e.message)))
    sock.on('close', () => this.fail(this.closedError()))
    if (leftover.length) this.onData(leftover)
  }

  static async connect(addr: NbdAddress, opts: NbdConnectOptions = {}): Promise<NbdClient> {
    const what = describeAddress(addr)
    const sock = 'unix' in addr ? net.connect(addr.unix) : net.connect(addr.port, addr.host)
    sock.setNoDelay(true)
    const timeoutMs = opts.timeoutMs ?? 30_000
    let timer: NodeJS.Timeout | undefined
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve)
        sock.once('error', (e) => reject(new TidemarkError('NBD_CONNECT', `cannot connect to the NBD server for ${what}: ${e.message}`)))
        timer = setTimeout(() => reject(new TidemarkError('NBD_CONNECT', `cannot connect to the NBD server for ${what}: no answer within ${timeoutMs / 1000} s`)), timeoutMs)
      })
      const handshake = NbdClient.handshake(sock, addr.export, what)
      handshake.catch(() => undefined) // when the timeout wins, the handshake's own failure is moot
      const timeout = new Promise<never>((_, reject) => {
        clearTimeout(timer)
        timer = setTimeout(() => reject(new TidemarkError('NBD_HANDSHAKE', `the NBD server for ${what} did not finish the handshake within ${timeoutMs / 1000} s`)), timeoutMs)
      })
      const { info, leftover } = await Promise.race([handshake, timeout])
      return new NbdClient(sock, info, what, leftover)
    } catch (err) {
      sock.destroy()
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  private static async handshake(sock: net.Socket, name: string, what: string) {
    const r = new HandshakeReader(sock, what)
    sock.on('error', () => undefined) // surfaced through 'close' as a clear line
    const hello = await r.read(16)
    if (hello.readBigUInt64BE(0) !== NBD_MAGIC) throw new TidemarkError('NBD_PROTOCOL', `${what}: the server is not an NBD server (no NBDMAGIC greeting)`)
    const style = hello.readBigUInt64BE(8)
    if (style === OLDSTYLE_MAGIC) throw new TidemarkError('NBD_PROTOCOL', `${what}: the server speaks only the oldstyle handshake, which has no export names`)
    if (style !== OPT_MAGIC) throw new TidemarkError('NBD_PROTOCOL', `${what}: the server sent an unknown handshake magic`)
    const hflags = (await r.read(2)).readUInt16BE(0)
    if (!(hflags & FLAG_FIXED_NEWSTYLE)) throw new TidemarkError('NBD_PROTOCOL', `${what}: the server does not offer the fixed newstyle handshake`)
    const noZeroes = hflags & FLAG_NO_ZEROES
    if (Buffer.byteLength(name, 'utf8') > 4096) throw new TidemarkError('NBD_PROTOCOL', `${what}: the export name is over 4096 bytes`)
    // information requests: the block sizes, and what the export is (the appliance names its point)
    sock.write(Buffer.concat([encodeClientFlags(FLAG_FIXED_NEWSTYLE | noZeroes), encodeOption(OPT_GO, encodeGoData(name, [INFO_BLOCK_SIZE, INFO_DESCRIPTION]))]))

    const info = { size: -1, flags: 0, min: 1, preferred: 4096, max: DEFAULT_MAX_BLOCK, description: '' }
    for (;;) {
      const { magic, opt, type, length: len } = decodeOptionReply(await r.read(20))
      if (magic !== OPT_REPLY_MAGIC) throw new TidemarkError('NBD_PROTOCOL', `${what}: bad option reply magic from the server`)
      if (opt !== OPT_GO) throw new TidemarkError('NBD_PROTOCOL', `${what}: the server replied to an option that was not asked`)
      if (len > 64 * 1024) throw new TidemarkError('NBD_PROTOCOL', `${what}: an option reply of ${len} bytes is not plausible`)
      const body = len ? await r.read(len) : Buffer.alloc(0)
      if (type & REP_ERR) {
        const why = REP_ERRORS[type & 0x7fffffff] ?? `refuses it (error reply 0x${type.toString(16)})`
        const msg = body.length ? `: ${body.toString('utf8').replace(/\s+/g, ' ').trim()}` : ''
        throw new TidemarkError('NBD_REFUSED', `${what}: the NBD server ${why}${msg}`)
      }
      if (type === REP_ACK) break
      if (type !== REP_INFO || body.length < 2) continue // unknown replies are skipped
      const it = body.readUInt16BE(0)
      if (it === INFO_EXPORT && body.length >= 12) {
        info.size = Number(body.readBigUInt64BE(2))
        info.flags = body.readUInt16BE(10)
      } else if (it === INFO_DESCRIPTION) {
        info.description = body.subarray(2).toString('utf8')
      } else if (it === INFO_BLOCK_SIZE && body.length >= 14) {
        info.min = body.readUInt32BE(2) || 1
        info.preferred = body.readUInt32BE(6) || 4096
        info.max = body.readUInt32BE(10) || DEFAULT_MAX_BLOCK
      }
    }
    if (info.size < 0) throw new TidemarkError('NBD_PROTOCOL', `${what}: the server ended NBD_OPT_GO without saying the export's size`)
    return { info, leftover: r.detach() }
  }

  get readOnly(): boolean {
    return (this.flags & TX_READ_ONLY) !== 0
  }

  get canFlush(): boolean {
    return (this.flags & TX_SEND_FLUSH) !== 0
  }

  get inFlight(): number {
    return this.pending.size
  }

  /** `length` bytes at `offset`, in requests of at most maxBlock bytes. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange('READ', offset, length)
    const out = Buffer.allocUnsafe(length)
    const parts: Array<Promise<Buffer | null>> = []
    for (let at = 0; at < length; at += this.maxBlock) {
      const n = Math.min(this.maxBlock, length - at)
      parts.push(this.request(CMD_READ, offset + at, n, null, out.subarray(at, at + n)))
    }
    await Promise.all(parts)
    return out
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkRange('WRITE', offset, data.length)
    if (this.readOnly) throw new TidemarkError('NBD_READ_ONLY', `NBD ${this.what} is read-only: the server refuses writes`)
    const parts: Array<Promise<Buffer | null>> = []
    for (let at = 0; at < data.length; at += this.maxBlock) {
      const n = Math.min(this.maxBlock, data.length - at)
      parts.push(this.request(CMD_WRITE, offset + at, n, data.subarray(at, at + n), null))
    }
    await Promise.all(parts)
  }

  /**
   * NBD_CMD_FLUSH. Returns false, sending nothing, when the server does not
   * take FLUSH (it then has no volatile cache to flush: the protocol forbids
   * sending it).
   */
  async flush(): Promise<boolean> {
    if (!this.canFlush) return false
    await this.request(CMD_FLUSH, 0, 0, null, null)
    return true
  }

  /** Waits for requests in flight, sends NBD_CMD_DISC and closes. */
  async close(): Promise<void> {
    if (!this.failure) {
      while (this.pending.size) await new Promise<void>((r) => (this.idle = r))
      const req = encodeRequest(CMD_DISC, 0, 0)
      this.failure = new TidemarkError('NBD_CLOSED', `NBD ${this.what}: the client has closed the connection`)
      this.sock.end(req)
    }
    const timer = setTimeout(() => this.sock.destroy(), 5000)
    await this.closed
    clearTimeout(timer)
  }

  /** Drops the connection at once (requests in flight fail). */
  destroy(): void {
    this.sock.destroy()
  }

  private checkRange(op: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > this.size) {
      throw new TidemarkError('NBD_RANGE', `NBD ${op} of ${length} bytes at ${offset} is outside the ${this.size}-byte ${this.what}`)
    }
  }

  private request(cmd: number, offset: number, length: number, data: Uint8Array | null, dest: Buffer | null): Promise<Buffer | null> {
    if (this.failure) return Promise.reject(this.failure)
    const handle = this.nextHandle++
    const h = encodeRequest(cmd, offset, length, { handle })
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { handle, cmd, offset, length, dest, filled: 0, resolve, reject })
      if (data) {
        this.sock.cork()
        this.sock.write(h)
        this.sock.write(data)
        this.sock.uncork()
      } else {
        this.sock.write(h)
      }
    })
  }

  private onData(b: Buffer): void {
    let p = 0
    while (p < b.length && !this.failure) {
      const r = this.reading
      if (r) {
        const n = Math.min(r.length - r.filled, b.length - p)
        b.copy(r.dest!, r.filled, p, p + n)
        r.filled += n
        p += n
        if (r.filled === r.length) {
          this.reading = null
          this.done(r, null)
        }
        continue
      }
      const n = Math.min(16 - this.headerLen, b.length - p)
      b.copy(this.header, this.headerLen, p, p + n)
      this.headerLen += n
      p += n
      if (this.headerLen < 16) break
      this.headerLen = 0
      const { magic, error, handle } = decodeSimpleReply(this.header)
      if (magic !== SIMPLE_REPLY_MAGIC) {
        const why = magic === STRUCTURED_REPLY_MAGIC ? 'a structured reply, which was never negotiated' : `bad reply magic 0x${magic.toString(16)}`
        this.protocolError(`NBD ${this.what}: the server sent ${why}`)
        return
      }
      const req = this.pending.get(handle)
      if (!req) {
        this.protocolError(`NBD ${this.what}: the server replied to handle ${handle}, which is not in flight`)
        return
      }
      if (error) {
        this.done(req, new TidemarkError('NBD_ERROR', `NBD ${CMD_NAMES[req.cmd]} of ${req.length} bytes at ${req.offset} on ${this.what} failed: ${ERRNO[error] ?? `error ${error}`}`))
      } else if (req.cmd === CMD_READ) {
        this.reading = req
      } else {
        this.done(req, null)
      }
    }
  }

  private done(req: Pending, err: Error | null): void {
    this.pending.delete(req.handle)
    if (err) req.reject(err)
    else req.resolve(req.dest)
    if (this.pending.size === 0) this.idle?.()
  }

  private protocolError(msg: string): void {
    this.fail(new TidemarkError('NBD_PROTOCOL', msg))
    this.sock.destroy()
  }

  /** "the NBD server ... closed the connection (read ECONNRESET) with 3 requests in flight (READ of ...)" */
  private closedError(cause?: string): Error {
    const n = this.pending.size
    const how = `the NBD server for ${this.what} closed the connection${cause ? ` (${cause})` : ''}`
    if (!n) return new TidemarkError('NBD_CLOSED', how)
    const first = this.pending.values().next().value as Pending
    return new TidemarkError(
      'NBD_CLOSED',
      `${how} with ${n} request${n === 1 ? '' : 's'} in flight (${CMD_NAMES[first.cmd]} of ${first.length} bytes at ${first.offset}${n > 1 ? ', ...' : ''})`
    )
  }

  private fail(err: Error): void {
    this.failure ??= err
    const all = [...this.pending.values()]
    this.pending.clear()
    this.reading = null
    for (const r of all) r.reject(this.failure)
    this.idle?.()
  }
}
