// Options and value schemas several commands share: the appliance to talk
// to (and its TLS files), the point in time, seconds, sizes, log levels.
import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import { adminClient, grpcTarget } from '../client/admin-client'
import { isoTimeMs, seqPoint } from '../client/point'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { PointInTime } from '../proto/generated/tidemark/v1/PointInTime'
import { parseHostPort, parseSize, usage } from './args'
import { check, convert, flag, text } from './definition'

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']

export const helpOption = { help: flag({}) }

/** A number of seconds, at least 0 ("--stats-interval 'x' is not a number of seconds"). */
export function seconds(flagName: string) {
  return check(z.string(), (s) => Number.isFinite(Number(s)) && Number(s) >= 0, (s) => `${flagName} '${s}' is not a number of seconds`)
    .transform(Number)
}

/** --transport auto|nbd|grpc: how a command reads a point from the appliance. */
export function transportOption(help: string) {
  return text({
    label: '--transport auto|nbd|grpc',
    help,
    value: check(z.string(), (v) => ['auto', 'nbd', 'grpc'].includes(v), (v) => `--transport '${v}' must be auto, nbd or grpc`).transform(
      (v) => v as 'auto' | 'nbd' | 'grpc'
    ),
  })
}

/** "64M", "1G", "1048576" as bytes. */
export function size(flagName: string) {
  return convert(z.string(), (s) => parseSize(s, flagName))
}

export function logLevel(): z.ZodType<string, z.ZodTypeDef, string> {
  return check(z.string(), (s) => LOG_LEVELS.includes(s), () => `--log-level must be one of ${LOG_LEVELS.join(', ')}`)
}

/**
 * Where the appliance is: HOST:PORT, or unix:PATH for its unix listener on
 * this host (it identifies us by our uid). `host` is the host its NBD
 * endpoints are reached on: this host, for a unix socket.
 */
export interface ApplianceAddress {
  host: string
  port: number
  unix?: string
}

export function parseAppliance(s: string, what = '--appliance'): ApplianceAddress {
  if (s.startsWith('unix:')) {
    if (s.length === 5) throw new Error(`${what} 'unix:' names no socket path`)
    return { host: '127.0.0.1', port: 0, unix: path.resolve(s.slice(5)) }
  }
  return parseHostPort(s, what)
}

/** --appliance and the three TLS flags of the commands that talk to an appliance. */
export const clientOptions = {
  appliance: text({
    required: '--appliance HOST:PORT is required',
    value: convert(z.string(), (s) => parseAppliance(s)),
  }),
  'tls-cert': text({}),
  'tls-key': text({}),
  'tls-ca': text({}),
}

type ClientValues = { appliance?: string | ApplianceAddress; 'tls-cert'?: string; 'tls-key'?: string; 'tls-ca'?: string }

/** The three TLS flags: all or none. */
export function tlsFiles(v: Omit<ClientValues, 'appliance'>, command: string): { cert: string; key: string; ca: string } | undefined {
  const cert = v['tls-cert']
  const key = v['tls-key']
  const ca = v['tls-ca']
  if (!cert && !key && !ca) return undefined
  if (!cert || !key || !ca) throw usage(command, 'mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca')
  return { cert, key, ca }
}

/** A client of the appliance the flags name (their forms were checked by clientOptions). */
export function adminFromFlags(v: ClientValues, command: string): AdminClient {
  if (!v.appliance) throw usage(command, '--appliance HOST:PORT is required')
  let at = v.appliance
  if (typeof at === 'string') {
    try {
      at = parseAppliance(at)
    } catch (err) {
      throw usage(command, (err as Error).message)
    }
  }
  const files = tlsFiles(v, command)
  // Over the unix listener the kernel vouches for us: TLS there would add nothing the appliance checks.
  if (at.unix && files) throw usage(command, '--appliance unix:PATH takes no --tls-cert/-key/-ca: the appliance identifies you by your uid')
  const read = (f: string): Buffer => {
    try {
      return fs.readFileSync(f)
    } catch (err) {
      throw usage(command, `cannot read ${f}: ${(err as Error).message}`)
    }
  }
  let tls
  if (files) {
    // read in the order they always were: the CA first
    const ca = read(files.ca)
    const key = read(files.key)
    tls = { cert: read(files.cert), key, ca }
  }
  return adminClient({ address: at.unix ? `unix:${at.unix}` : grpcTarget(at.host, at.port), tls })
}

/** Exactly one of --timemark ID|LABEL, --at ISO-TIME, --seq N|latest. */
export const pointOptions = {
  timemark: text({
    label: '--timemark ID|LABEL',
    oneOf: { with: ['at', 'seq'], missing: 'give the point: --timemark ID|LABEL, --at ISO-TIME or --seq N|latest', many: (flags) => `give one point, not ${flags.join(' and ')}` },
    help: 'a TimeMark, by id (its seq) or by its label (tidemark timemark list)',
    value: check(z.string(), (v) => v !== '', () => '--timemark needs an id or a label').transform((v): PointInTime => ({ timemark: v })),
  }),
  at: text({
    label: '--at ISO-TIME',
    help: 'the newest point whose change was recorded at or before this time\n(2026-11-23T14:05:00Z; without a zone, the local time)',
    value: check(z.string(), (v) => isoTimeMs(v) !== null, (v) => `--at '${v}' is not an ISO time like 2026-11-23T14:05:00Z`).transform((v): PointInTime => ({ atMs: isoTimeMs(v)! })),
  }),
  seq: text({
    label: '--seq N|latest',
    help: 'every change up to and including seq N, or the newest exact point',
    value: check(z.string(), (v) => seqPoint(v) !== null, (v) => `--seq '${v}' must be a number or latest`).transform((v) => seqPoint(v)!),
  }),
}

/** The one point given (the options checked that there is exactly one). */
export function pointOf(v: { timemark?: PointInTime; at?: PointInTime; seq?: PointInTime }): PointInTime {
  return (v.timemark ?? v.at ?? v.seq)!
}
