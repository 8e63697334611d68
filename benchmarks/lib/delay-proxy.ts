// A TCP proxy that delays every byte by a fixed time in each direction: a
// link with latency between an agent and an appliance on one machine. Chunks
// leave in the order they came (timers of one duration fire in order); the
// target can change (an appliance restarted on another port) for the
// connections that follow.
import net from 'node:net'

export class DelayProxy {
  target: { host: string; port: number }
  private readonly server: net.Server
  private readonly sockets = new Set<net.Socket>()

  private constructor(target: string, private readonly oneWayMs: number) {
    this.target = DelayProxy.parse(target)
    this.server = net.createServer((client) => this.connection(client))
  }

  /** Listens on a free loopback port; `address()` is what the agent dials. */
  static async start(target: string, oneWayMs: number): Promise<DelayProxy> {
    const p = new DelayProxy(target, oneWayMs)
    await new Promise<void>((resolve) => p.server.listen(0, '127.0.0.1', resolve))
    return p
  }

  address(): string {
    return `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`
  }

  retarget(target: string): void {
    this.target = DelayProxy.parse(target)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise((resolve) => this.server.close(resolve))
  }

  private static parse(target: string): { host: string; port: number } {
    const i = target.lastIndexOf(':')
    return { host: target.slice(0, i), port: Number(target.slice(i + 1)) }
  }

  private connection(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host)
    for (const s of [client, upstream]) {
      this.sockets.add(s)
      s.setNoDelay(true)
      s.on('close', () => this.sockets.delete(s))
      s.on('error', () => undefined)
    }
    this.pipe(client, upstream)
    this.pipe(upstream, client)
  }

  private pipe(from: net.Socket, to: net.Socket): void {
    const delay = (fn: () => void): void => void (this.oneWayMs > 0 ? setTimeout(fn, this.oneWayMs) : setImmediate(fn))
    from.on('data', (chunk) => delay(() => to.destroyed || to.write(chunk)))
    from.on('close', () => delay(() => to.destroy()))
  }
}
