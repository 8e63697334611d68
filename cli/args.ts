// Command-line parsing shared by every tidemark command: --flag VALUE,
// --flag=VALUE, repeatable flags, booleans; one clear line on any mistake.
import { TidemarkError } from '../proto/errors'

export interface FlagSpec {
  /** takes a value (else boolean) */
  value?: boolean
  repeat?: boolean
}

export type Parsed = Map<string, string[]>

export function parseArgs(argv: string[], spec: Record<string, FlagSpec>, command: string): Parsed {
  const out: Parsed = new Map()
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) throw usage(command, `unexpected argument '${a}'`)
    const eq = a.indexOf('=')
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2)
    const s = spec[name]
    if (!s) throw usage(command, `unknown option --${name}`)
    let value = 'true'
    if (s.value) {
      if (eq > 0) value = a.slice(eq + 1)
      else {
        if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) throw usage(command, `--${name} needs a value`)
        value = argv[++i]
      }
    } else if (eq > 0) {
      throw usage(command, `--${name} takes no value`)
    }
    const prev = out.get(name)
    if (prev && !s.repeat) throw usage(command, `--${name} is given twice`)
    out.set(name, [...(prev ?? []), value])
  }
  return out
}

export function usage(command: string, msg: string): TidemarkError {
  return new TidemarkError('USAGE', `tidemark ${command}: ${msg} (see tidemark ${command} --help)`)
}

/** "64M", "1G", "1048576" -> bytes */
export function parseSize(s: string, what: string, command: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(s.trim())
  if (!m) throw usage(command, `${what} '${s}' is not a size (examples: 64M, 1G, 1048576)`)
  const unit = (m[2] ?? '').charAt(0).toUpperCase()
  const mult = unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1
  return Number(m[1]) * mult
}

export type Endpoint = { unix: string } | { tcp: { host: string; port: number } }

/** unix:PATH | tcp:HOST:PORT (HOST may be [v6]) */
export function parseEndpoint(s: string, what: string, command: string): Endpoint {
  if (s.startsWith('unix:') && s.length > 5) return { unix: s.slice(5) }
  const m = /^tcp:(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(s)
  if (m) {
    const port = Number(m[2])
    if (port > 65535) throw usage(command, `${what} port ${port} is out of range`)
    return { tcp: { host: m[1].replace(/^\[|\]$/g, ''), port } }
  }
  throw usage(command, `${what} '${s}' must be unix:PATH or tcp:HOST:PORT`)
}

/** HOST:PORT ([v6]:PORT too) */
export function parseHostPort(s: string, what: string, command: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:\s]+):(\d{1,5})$/.exec(s)
  if (!m || Number(m[2]) > 65535) throw usage(command, `${what} '${s}' must be HOST:PORT`)
  return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}

/** The three TLS flags: all or none. */
export function parseTlsFlags(
  get: (name: string) => string | undefined,
  command: string
): { cert: string; key: string; ca: string } | undefined {
  const cert = get('tls-cert')
  const key = get('tls-key')
  const ca = get('tls-ca')
  if (!cert && !key && !ca) return undefined
  if (!cert || !key || !ca) throw usage(command, 'mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca')
  return { cert, key, ca }
}
