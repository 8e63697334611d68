// The appliance's data channel: a listener beside the gRPC one where agents
// send their batches as frames (proto/data-frame.ts) instead of on their
// Replicate streams.
//
// Each Replicate stream gets a token in its Welcome (issue); an agent opens a
// connection and sends a DataHello with it first; the connection then belongs
// to that stream and feeds it the stream's messages in order (attach). With
// TLS the connection is mutual TLS with the appliance's certificates, and its
// certificate identity must be the stream's. A token is used once and dies
// with its stream. A connection that names no live token, sends anything but
// a DataHello first, or says nothing for HELLO_TIMEOUT_MS is closed, counted
// by code and logged.
//
// A plain connection is read straight into the frame reader's buffers
// (readInPlace): Node hands 'data' listeners a new 64 KiB buffer per read,
// and that garbage (a gigabyte per gigabyte received) made V8 run a full
// collection every 16 MiB, most of the appliance's main-thread time.
import crypto from 'node:crypto'
import net from 'node:net'
import tls from 'node:tls'
import type { Logger } from 'pino'
import { FrameReader } from '../proto/data-frame'
import { TidemarkError } from '../proto/errors'
import type { AgentMessage__Output } from '../proto/generated/tidemark/v1/AgentMessage'
import { certificateIdentity } from './authorizer'

const HELLO_TIMEOUT_MS = 10_000

/** What a Replicate stream offers its data connection. */
export interface DataStream {
  /** The stream's certificate identity (null without TLS). */
  identity: string | null
  /** The connection is the stream's from now on: its messages come through `conn.onMessage`. */
  attach(conn: DataConnection): void
}

/** One attached data connection, as its stream sees it. */
export class DataConnection {
  /** Each message in order; the payload of a batch is valid only during the call. */
  onMessage: (m: AgentMessage__Output) => void = () => {}
  /** Once: null when the agent ended the connection between frames, else what broke it. */
  onClose: (err: Error | null) => void = () => {}
  private closed = false

  constructor(
    readonly socket: net.Socket,
    private readonly reader: FrameReader
  ) {}

  /** A batch payload this connection delivered is no longer read (its check settled): its buffer is reused. */
  release(payload: Buffer): void {
    this.reader.release(payload)
  }

  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  /** Closes the connection (the stream ended or failed); onClose is not called. */
  destroy(): void {
    this.closed = true
    this.socket.destroy()
  }

  /** @internal the server reports the connection's end once. */
  ended(err: Error | null): void {
    if (this.closed) return
    this.closed = true
    this.onClose(err)
  }
}

export class DataChannelServer {
  /** Connections refused, by code (the replication service shares its own record). */
  rejected: Record<string, number> = {}
  private readonly tokens = new Map<string, DataStream>()
  private readonly sockets = new Set<net.Socket>()

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly log: Logger
  ) {}

  /** Listens on host:port (0: any free port), with mutual TLS when `tlsOptions` are given. */
  static async listen(host: string, port: number, tlsOptions: tls.TlsOptions | null, log: Logger): Promise<DataChannelServer> {
    let self: DataChannelServer | null = null
    const onSocket = (s: net.Socket): void => self?.accept(s)
    const server = tlsOptions
      ? tls.createServer({ ...tlsOptions, requestCert: true, rejectUnauthorized: true }, onSocket)
      : net.createServer({ noDelay: true, pauseOnConnect: true }, onSocket)
    server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => {
      self?.refuse(s, new TidemarkError('UNAUTHENTICATED', `data channel TLS handshake failed: ${err.message}`))
    })
    const bound = await new Promise<number>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve((server.address() as net.AddressInfo).port)
      })
    }).catch((err: Error) => {
      throw new TidemarkError('LISTEN_FAILED', `cannot listen for the data channel on ${host}:${port}: ${err.message}`)
    })
    self = new DataChannelServer(server, bound, log)
    return self
  }

  /** A token for one stream's Welcome, valid until revoked or used. */
  issue(stream: DataStream): Buffer {
    const token = crypto.randomBytes(16)
    this.tokens.set(token.toString('hex'), stream)
    return token
  }

  revoke(token: Buffer): void {
    this.tokens.delete(token.toString('hex'))
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private refuse(s: net.Socket, err: TidemarkError): void {
    this.rejected[err.code] = (this.rejected[err.code] ?? 0) + 1
    this.log.warn({ peer: `${s.remoteAddress}:${s.remotePort}`, code: err.code }, `data channel connection refused: ${err.message}`)
    s.destroy()
  }

  private accept(accepted: net.Socket): void {
    let s = accepted
    let conn: DataConnection | null = null
    const timer = setTimeout(() => this.refuse(s, new TidemarkError('PROTOCOL', `no DataHello within ${HELLO_TIMEOUT_MS / 1000} s`)), HELLO_TIMEOUT_MS)
    const reader = new FrameReader((m) => {
      if (conn) return conn.onMessage(m)
      clearTimeout(timer)
      if (m.body !== 'dataHello' || !m.dataHello) {
        throw new TidemarkError('PROTOCOL', `data channel: a ${m.body ?? 'empty message'} before the DataHello`)
      }
      const key = Buffer.from(m.dataHello.token).toString('hex')
      const stream = this.tokens.get(key)
      if (!stream) throw new TidemarkError('PERMISSION_DENIED', 'data channel: the DataHello names no live Replicate stream')
      const who = s instanceof tls.TLSSocket ? certificateIdentity(s.getPeerCertificate()) : null
      if (stream.identity !== who) {
        throw new TidemarkError('PERMISSION_DENIED', `data channel: certificate identity "${who}" is not the stream's ("${stream.identity}")`)
      }
      this.tokens.delete(key)
      conn = new DataConnection(s, reader)
      stream.attach(conn)
    })
    const failed = (err: unknown): void => {
      const e = err instanceof TidemarkError ? err : new TidemarkError('INTERNAL', (err as Error).message)
      clearTimeout(timer)
      // An attached connection's errors are its stream's to report (and end it).
      if (conn) conn.ended(e)
      else this.refuse(s, e)
      s.destroy()
    }
    const inPlace = accepted instanceof tls.TLSSocket ? null : readInPlace(accepted, reader, failed)
    if (inPlace) s = inPlace
    else {
      s.on('data', (chunk: Buffer) => {
        try {
          reader.push(chunk)
        } catch (err) {
          failed(err)
        }
      })
    }
    this.sockets.add(s)
    s.setNoDelay(true)
    s.on('end', () => {
      clearTimeout(timer)
      conn?.ended(reader.atBoundary ? null : new TidemarkError('PROTOCOL', 'data channel: the connection ended inside a frame'))
      s.end()
    })
    s.on('error', (err) => conn?.ended(new TidemarkError('DATA_CHANNEL', `the data channel broke: ${err.message}`)))
    s.on('close', () => {
      clearTimeout(timer)
      this.sockets.delete(s)
      conn?.ended(new TidemarkError('DATA_CHANNEL', 'the data channel closed'))
    })
    s.resume()
  }
}

/**
 * The accepted (paused) socket's connection as a socket that reads into
 * `reader.target()` (net.Socket's `onread`), or null if that cannot be done.
 * Node 20 offers `onread` only to sockets it creates for a handle, not to a
 * server's sockets, so this takes the accepted socket's handle (`_handle`,
 * an internal field that cluster and child_process use the same way) and
 * closes the now empty socket so the server stops counting it. Where the
 * field is missing, the caller reads with 'data' events, copying.
 */
function readInPlace(accepted: net.Socket, reader: FrameReader, failed: (err: unknown) => void): net.Socket | null {
  const holder = accepted as unknown as { _handle?: object | null }
  const handle = holder._handle
  if (!handle) return null
  holder._handle = null
  accepted.destroy()
  const opts = {
    handle,
    onread: {
      buffer: () => reader.target(),
      callback: (n: number): boolean => {
        try {
          reader.filled(n)
          return true
        } catch (err) {
          failed(err)
          return false
        }
      },
    },
  }
  return new net.Socket(opts as net.SocketConstructorOpts)
}
