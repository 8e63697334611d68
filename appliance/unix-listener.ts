// The appliance's unix-socket listener (`--listen unix:PATH`): the same gRPC
// services as the TCP listener, for operators and tools on the appliance
// host, each caller identified by the uid the kernel reports for the
// connecting process ("uid:N" in the allow-list).
//
// Why tidemark accepts these connections itself: grpc-js serves unix:
// addresses but never shows a call's socket, so a handler cannot ask the
// kernel who is on the other end. Here a net.Server accepts, reads the peer's
// credentials with getsockopt(SO_PEERCRED) on the accepted fd (a native
// helper: Node has no API for it), and hands the connection to the gRPC
// server through its connection injector (grpc-js createConnectionInjector,
// which emits it as an http2 'connection'). The socket's remoteAddress is
// set to a tag that names this connection; grpc-js reports it as the call's
// peer, and uidOf() maps it back. A TCP peer's string is always
// ADDRESS:PORT, so no network caller can produce a tag, and a tag is
// forgotten when its connection closes.
//
// The socket is bound inside a fresh 0700 directory beside PATH (nobody can
// connect to it, or swap it, before its mode is set), given its mode, then
// renamed to PATH: it appears there complete. With an allow-list its mode is
// 0666 — the allow-list decides, per uid, what each caller may do, and an
// unlisted uid may do nothing; without one, 0600: without roles every caller
// may do everything, so only the appliance's own user may connect. Only a
// stale socket at PATH is replaced, never a file, a link or a live socket.
import fs from 'node:fs'
import net from 'node:net'
import type * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { native } from '../native'
import { clearSocketPath, publishSocket } from '../native/unix-socket-path'
import { TidemarkError } from '../proto/errors'
import type { UnixPeers } from './authorizer'

export class UnixListener implements UnixPeers {
  private readonly peers = new Map<string, number>()
  private readonly sockets = new Set<net.Socket>()
  private next = 0
  /** Connections refused because their credentials could not be read. */
  refused = 0

  private constructor(
    private readonly server: net.Server,
    readonly file: string,
    private readonly ino: number,
    private readonly log: Logger
  ) {}

  static async listen(file: string, grpcServer: grpc.Server, insecure: grpc.ServerCredentials, open: boolean, log: Logger): Promise<UnixListener> {
    await clearSocketPath(file, 'LISTEN_FAILED', `--listen unix:${file}`, 'another process')
    const injector = grpcServer.createConnectionInjector(insecure)
    let self: UnixListener | null = null
    const server = net.createServer((s) => (self ? self.accept(s, injector) : s.destroy()))
    let ino: number
    try {
      ino = await publishSocket(file, open ? 0o666 : 0o600, (at) =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject)
          server.listen(at, () => {
            server.off('error', reject)
            resolve()
          })
        })
      )
    } catch (err) {
      server.close()
      throw new TidemarkError('LISTEN_FAILED', `cannot listen on unix:${file}: ${(err as Error).message}`)
    }
    self = new UnixListener(server, file, ino, log)
    log.info({ listen: `unix:${file}`, mode: open ? '0666' : '0600' }, 'unix listener: callers identified by uid')
    return self
  }

  uidOf(peer: string): number | undefined {
    return this.peers.get(peer)
  }

  private accept(s: net.Socket, injector: { injectConnection(c: net.Socket): void }): void {
    const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd
    let uid: number
    try {
      if (typeof fd !== 'number' || fd < 0) throw new Error('the accepted socket has no file descriptor')
      uid = native.peerCredentials(fd).uid
    } catch (err) {
      this.refused++
      this.log.warn({ err: (err as Error).message }, `unix listener: a connection refused, its peer credentials cannot be read: ${(err as Error).message}`)
      s.destroy()
      return
    }
    const tag = `unix:${this.file}#${++this.next}/uid=${uid}`
    this.peers.set(tag, uid)
    this.sockets.add(s)
    // grpc-js reports socket.remoteAddress (with no port, for a unix socket) as the call's peer.
    Object.defineProperty(s, 'remoteAddress', { value: tag, configurable: true })
    s.once('close', () => {
      this.peers.delete(tag)
      this.sockets.delete(s)
    })
    injector.injectConnection(s)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
    // Ours only: not whatever another process put at the path since.
    try {
      if (fs.lstatSync(this.file).ino === this.ino) fs.rmSync(this.file)
    } catch {
      // gone already
    }
  }
}
