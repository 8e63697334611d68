// Value forms the commands share (sizes, endpoints, HOST:PORT) and the one
// usage error. Each parser throws an Error whose message is the line a user
// sees after "tidemark COMMAND: " (cli/definition.ts adds that and exit 2).
import { TidemarkError } from '../proto/errors'

export function usage(command: string, msg: string): TidemarkError {
  return new TidemarkError('USAGE', `tidemark ${command}: ${msg} (see tidemark ${command} --help)`)
}

/** "64M", "1G", "1048576" -> bytes */
export function parseSize(s: string, what: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(s.trim())
  if (!m) throw new Error(`${what} '${s}' is not a size (examples: 64M, 1G, 1048576)`)
  const unit = (m[2] ?? '').charAt(0).toUpperCase()
  const mult = unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1
  return Number(m[1]) * mult
}

export type Endpoint = { unix: string } | { tcp: { host: string; port: number } }

/** unix:PATH | tcp:HOST:PORT (HOST may be [v6]) */
export function parseEndpoint(s: string, what: string): Endpoint {
  if (s.startsWith('unix:') && s.length > 5) return { unix: s.slice(5) }
  const m = /^tcp:(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(s)
  if (m) {
    const port = Number(m[2])
    if (port > 65535) throw new Error(`${what} port ${port} is out of range`)
    return { tcp: { host: m[1].replace(/^\[|\]$/g, ''), port } }
  }
  throw new Error(`${what} '${s}' must be unix:PATH or tcp:HOST:PORT`)
}

/** HOST:PORT ([v6]:PORT too) */
export function parseHostPort(s: string, what: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:\s]+):(\d{1,5})$/.exec(s)
  if (!m || Number(m[2]) > 65535) throw new Error(`${what} '${s}' must be HOST:PORT`)
  return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}
