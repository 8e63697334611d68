// The agent's end of a data channel (proto/data-frame.ts): one TCP
// connection (TLS with the agent's certificate when the Replicate stream uses
// TLS) to the port the Welcome named, on the host the stream reached, that
// carries the stream's messages as frames. A batch's payload goes to the
// socket as it is (one writev with the frame's head): no protobuf copy, no
// HTTP/2 framing in JavaScript.
import net from 'node:net'
import tls from 'node:tls'
import fs from 'node:fs'
import { encodeFrame } from '../proto/data-frame'
import { TidemarkError } from '../proto/errors'
import type { AgentMessage } from '../proto/generated/tidemark/v1/AgentMessage'
import type { TlsFiles } from './replication-session'

/** How long connecting and the TLS handshake may take before the stream carries the batches itself. */
export const DATA_CONNECT_TIMEOUT_MS = 5_000

/** "HOST:PORT" (or "[V6]:PORT") -> the host. */
export function addressHost(address: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address)
  return m ? m[1] : address
}

export class DataChannel {
  /** Once, with what ended the connection (not called after end() or destroy()). */
  onClose: (err: Error) => void = () => {}
  private over = false

  private constructor(private readonly socket: net.Socket) {
    socket.on('error', (err) => this.closed(new TidemarkError('DATA_CHANNEL', `the data channel broke: ${err.message}`)))
    socket.on('close', () => this.closed(new TidemarkError('DATA_CHANNEL', 'the appliance closed the data channel')))
    // The appliance sends nothing on it: a read is only ever its end.
    socket.on('data', () => this.closed(new TidemarkError('PROTOCOL', 'the appliance wrote on the data channel')))
  }

  /** Connects, says which stream this is, and resolves once the connection is up (TLS: verified). */
  static connect(host: string, port: number, token: Buffer, tlsFiles: TlsFiles | undefined): Promise<DataChannel> {
    return new Promise((resolve, reject) => {
      const ready = tlsFiles ? 'secureConnect' : 'connect'
      const socket = tlsFiles
        ? tls.connect({
            host,
            port,
            servername: net.isIP(host) ? undefined : host,
            ca: fs.readFileSync(tlsFiles.ca),
            cert: fs.readFileSync(tlsFiles.cert),
            key: fs.readFileSync(tlsFiles.key),
          })
        : net.connect({ host, port, noDelay: true })
      const timer = setTimeout(() => fail(new Error(`no connection within ${DATA_CONNECT_TIMEOUT_MS / 1000} s`)), DATA_CONNECT_TIMEOUT_MS)
      const fail = (err: Error): void => {
        clearTimeout(timer)
        socket.destroy()
        reject(new TidemarkError('DATA_CHANNEL', `cannot open the data channel to ${host}:${port}: ${err.message}`))
      }
      socket.once('error', fail)
      socket.once(ready, () => {
        clearTimeout(timer)
        socket.off('error', fail)
        socket.setNoDelay(true)
        const d = new DataChannel(socket)
        d.write({ dataHello: { token } })
        resolve(d)
      })
    })
  }

  /**
   * Writes one message as a frame; false: wait for 'drain' (onDrain) before
   * the next. `written`: called once the socket is done with the bytes
   * (handed to the kernel, or the socket destroyed).
   */
  write(m: AgentMessage, written?: () => void): boolean {
    const { head, payload } = encodeFrame(m)
    if (!payload) return this.socket.write(head, written)
    this.socket.cork()
    this.socket.write(head)
    const ok = this.socket.write(payload, written)
    this.socket.uncork()
    return ok
  }

  onDrain(fn: () => void): () => void {
    this.socket.on('drain', fn)
    return () => this.socket.off('drain', fn)
  }

  /** Ends the connection after what was written (the agent is stopping). */
  end(): void {
    this.over = true
    this.socket.end()
  }

  destroy(): void {
    this.over = true
    this.socket.destroy()
  }

  private closed(err: Error): void {
    if (this.over) return
    this.over = true
    this.socket.destroy()
    this.onClose(err)
  }
}
