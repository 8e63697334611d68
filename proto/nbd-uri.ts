// NBD URIs (the NBD URI spec of NetworkBlockDevice/nbd, the forms tidemark
// takes): one parser for the client commands (restore and failback targets)
// and the appliance (Admin.SeedVolume's source), which must agree on them.
import { TidemarkError } from './errors'

export type NbdAddress = { unix: string; export: string } | { host: string; port: number; export: string }

/**
 * nbd+unix:///EXPORT?socket=PATH or nbd://HOST[:PORT]/EXPORT (port 10809 by
 * default); returns null for anything that is not an nbd URI, and throws on
 * an nbd URI that is malformed.
 */
export function parseNbdUri(s: string): NbdAddress | null {
  if (!/^nbd(\+unix|\+tcp)?:\/\//.test(s)) {
    if (/^nbds(\+unix)?:/.test(s)) throw new TidemarkError('BAD_NBD_URI', `'${s}': TLS NBD URIs (nbds://) are not supported`)
    return null
  }
  let u: URL
  try {
    u = new URL(s)
  } catch {
    throw new TidemarkError('BAD_NBD_URI', `'${s}' is not a valid NBD URI`)
  }
  const name = decodeURIComponent(u.pathname.replace(/^\//, ''))
  if (u.protocol === 'nbd+unix:') {
    const sock = u.searchParams.get('socket')
    if (u.host) throw new TidemarkError('BAD_NBD_URI', `'${s}': nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)`)
    if (!sock) throw new TidemarkError('BAD_NBD_URI', `'${s}' names no socket (nbd+unix:///EXPORT?socket=PATH)`)
    return { unix: sock, export: name }
  }
  if (!u.hostname) throw new TidemarkError('BAD_NBD_URI', `'${s}' names no host (nbd://HOST:PORT/EXPORT)`)
  const port = u.port ? Number(u.port) : 10809
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port, export: name }
}

export function describeAddress(a: NbdAddress): string {
  return 'unix' in a ? `export '${a.export}' on ${a.unix}` : `export '${a.export}' on ${a.host}:${a.port}`
}
