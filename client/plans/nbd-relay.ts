// A VM in the run's network namespace cannot reach the appliance's NBD over
// TCP: the namespace has no route out, on purpose. A unix socket is a file,
// and files are not namespaced, so when the appliance serves NBD on TCP only,
// the run relays a unix socket of its own to it, byte for byte (the NBD
// handshake, export names included, passes through untouched).
import net from 'node:net'

export class NbdRelay {
  private readonly sockets = new Set<net.Socket>()
  private constructor(
    readonly path: string,
    private readonly server: net.Server
  ) {}

  static listen(path: string, host: string, port: number): Promise<NbdRelay> {
    return new Promise((resolve, reject) => {
      let relay: NbdRelay
      const server = net.createServer((inner) => {
        const outer = net.connect({ host, port })
        for (const s of [inner, outer]) {
          relay.sockets.add(s)
          s.on('close', () => relay.sockets.delete(s))
          // One side gone: the other goes too, as if the client were connected directly.
          s.on('error', () => undefined)
        }
        inner.pipe(outer)
        outer.pipe(inner)
        inner.on('close', () => outer.destroy())
        outer.on('close', () => inner.destroy())
      })
      relay = new NbdRelay(path, server)
      server.once('error', reject)
      server.listen(path, () => resolve(relay))
    })
  }

  /** Stops listening and closes every relayed connection. */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}
