// Whether a daemon answers on a unix socket yet: what a command that started
// one (plan failover's agent), a test and a benchmark wait for.
import net from 'node:net'

/** Does something accept connections on the unix socket `sock`? */
export function connectable(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock)
    c.on('connect', () => {
      c.destroy()
      resolve(true)
    })
    c.on('error', () => resolve(false))
  })
}
