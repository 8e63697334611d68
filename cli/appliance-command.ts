// tidemark appliance: parse, start, run until SIGTERM/SIGINT.
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import { Appliance, type ApplianceOptions } from '../appliance/appliance'
import { parseAllowList, type AllowList } from '../appliance/authorizer'
import { parseRetentionRule } from '../appliance/retention'
import { TidemarkError } from '../proto/errors'
import { parseArgs, parseHostPort, parseSize, parseTlsFlags, usage } from './args'

export const APPLIANCE_HELP = `Usage:
  tidemark appliance --data DIR --listen HOST:PORT [--tls-cert F --tls-key F --tls-ca F]
                     [--allow IDENTITY=VOLUME[,VOLUME...] ...] [--insecure]
                     [--segment-size SIZE] [--retain PATTERN=SPEC ...] [--compact-every SECONDS]
                     [--stats-interval SECONDS] [--log-level LEVEL]
  tidemark appliance --config FILE

The recovery-site journal: agents stream every change of their volumes here;
each batch is checksummed, journaled and fsynced before it is acknowledged, and
indexed so that any durable point can be restored.

  --data DIR            journals, indexes and volume metadata; created if missing
  --listen HOST:PORT    the gRPC listener for agents and for the tidemark CLI (port 0: any)
  --tls-cert/-key/-ca   require mutual TLS: agents present certificates signed by the CA
  --allow ID=VOLS       certificate identity (CN) ID may write the volumes VOLS (names,
                        PREFIX* patterns or *); repeatable. With TLS and no --allow, any
                        certificate the CA signed may write any volume
  --insecure            allow listening beyond loopback without TLS
  --segment-size SIZE   journal segment size (default 256M)
  --retain PAT=SPEC     retention for the volumes PAT names (NAME, PREFIX* or *; the first
                        matching rule applies); SPEC is a comma-separated list of a window
                        (7d, 12h, 30m), a number of TimeMarks (100marks) and a journal cap
                        (20G: past it history is given up early, and stats warns). A point
                        is kept if the window or the marks rule keeps it; pinned TimeMarks
                        and everything after them are always kept. Expired history is
                        folded into the volume's base image and its segments deleted.
  --compact-every S     apply retention every S seconds (default 60; 0 = only on
                        tidemark journal compact)
  --stats-interval S    log counts every S seconds (default 10, 0 = never)
  --config FILE         the same as JSON: {"data", "listen", "tls": {"cert", "key", "ca"},
                        "allow": {"ID": ["VOL", "PREFIX*"]}, "insecure", "segmentSize",
                        "statsInterval", "logLevel"}
`

const SPEC = {
  help: {},
  data: { value: true },
  listen: { value: true },
  http: { value: true },
  'tls-cert': { value: true },
  'tls-key': { value: true },
  'tls-ca': { value: true },
  allow: { value: true, repeat: true },
  insecure: {},
  'segment-size': { value: true },
  retain: { value: true, repeat: true },
  'compact-every': { value: true },
  'stats-interval': { value: true },
  'log-level': { value: true },
  config: { value: true },
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']

export function parseApplianceArgs(argv: string[]): ApplianceOptions | 'help' {
  const a = parseArgs(argv, SPEC, 'appliance')
  if (a.has('help')) return 'help'
  if (a.has('http')) throw usage('appliance', '--http (the dashboard) is not in this build yet')
  let data: string | undefined
  let listen: string | undefined
  let tls: { cert: string; key: string; ca: string } | undefined
  let allow: AllowList | null = null
  let insecure = false
  let segment: string | undefined
  let interval: string | undefined
  let level: string | undefined
  let retain: string[] = []
  let compactEvery: string | undefined
  if (a.has('config')) {
    if (a.size > 1) throw usage('appliance', '--config cannot be combined with other options')
    const file = a.get('config')![0]
    let j: Record<string, unknown>
    try {
      j = JSON.parse(fs.readFileSync(file, 'utf8'))
    } catch (err) {
      throw usage('appliance', `cannot read config ${file}: ${(err as Error).message}`)
    }
    if (!j || typeof j !== 'object' || Array.isArray(j)) throw usage('appliance', `config ${file} must be a JSON object`)
    const known = new Set(['data', 'listen', 'tls', 'allow', 'insecure', 'segmentSize', 'statsInterval', 'logLevel', 'retain', 'compactEvery'])
    for (const k of Object.keys(j)) if (!known.has(k)) throw usage('appliance', `config ${file}: unknown key "${k}"`)
    const str = (v: unknown, k: string): string | undefined => {
      if (v === undefined) return undefined
      if (typeof v !== 'string' && typeof v !== 'number') throw usage('appliance', `config ${file}: "${k}" must be a string`)
      return String(v)
    }
    data = str(j.data, 'data')
    listen = str(j.listen, 'listen')
    if (j.tls !== undefined) {
      const t = j.tls as Record<string, unknown>
      tls = parseTlsFlags((n) => str(t?.[n.slice(4)], `tls.${n.slice(4)}`), 'appliance')
    }
    if (j.allow !== undefined) {
      if (!j.allow || typeof j.allow !== 'object' || Array.isArray(j.allow)) {
        throw usage('appliance', `config ${file}: "allow" must map identities to lists of volumes`)
      }
      allow = wrap(() => parseAllowList(j.allow as Record<string, unknown>))
    }
    insecure = j.insecure === true
    segment = str(j.segmentSize, 'segmentSize')
    interval = str(j.statsInterval, 'statsInterval')
    level = str(j.logLevel, 'logLevel')
    if (j.retain !== undefined) {
      if (!j.retain || typeof j.retain !== 'object' || Array.isArray(j.retain)) throw usage('appliance', `config ${file}: "retain" must map volume patterns to retention specs`)
      retain = Object.entries(j.retain as Record<string, unknown>).map(([k, v]) => `${k}=${String(v)}`)
    }
    compactEvery = str(j.compactEvery, 'compactEvery')
  } else {
    data = a.get('data')?.[0]
    listen = a.get('listen')?.[0]
    tls = parseTlsFlags((n) => a.get(n)?.[0], 'appliance')
    if (a.has('allow')) allow = wrap(() => parseAllowList(a.get('allow')!))
    insecure = a.has('insecure')
    segment = a.get('segment-size')?.[0]
    interval = a.get('stats-interval')?.[0]
    level = a.get('log-level')?.[0]
    retain = a.get('retain') ?? []
    compactEvery = a.get('compact-every')?.[0]
  }
  const rules = retain.map((r) => wrap(() => parseRetentionRule(r)))
  const compactSeconds = compactEvery === undefined ? 60 : Number(compactEvery)
  if (!Number.isFinite(compactSeconds) || compactSeconds < 0) throw usage('appliance', `--compact-every '${compactEvery}' is not a number of seconds`)
  if (!data) throw usage('appliance', '--data DIR is required')
  if (!listen) throw usage('appliance', '--listen HOST:PORT is required')
  const seconds = interval === undefined ? 10 : Number(interval)
  if (!Number.isFinite(seconds) || seconds < 0) throw usage('appliance', `--stats-interval '${interval}' is not a number of seconds`)
  const logLevel = level ?? 'info'
  if (!LEVELS.includes(logLevel)) throw usage('appliance', `--log-level must be one of ${LEVELS.join(', ')}`)
  const segmentBytes = segment ? parseSize(segment, '--segment-size', 'appliance') : undefined
  if (segmentBytes !== undefined && segmentBytes < 1024 * 1024) throw usage('appliance', '--segment-size must be at least 1M')
  return {
    dataDir: path.resolve(data),
    listen: parseHostPort(listen, '--listen', 'appliance'),
    tls,
    insecure,
    allow,
    segmentBytes,
    retain: rules,
    compactEveryMs: compactSeconds * 1000,
    statsIntervalMs: seconds * 1000,
    logger: pino({ level: logLevel, base: { pid: process.pid, component: 'appliance' } }),
  }
}

function wrap<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw usage('appliance', (err as Error).message)
  }
}

export async function runAppliance(argv: string[]): Promise<number> {
  const opts = parseApplianceArgs(argv)
  if (opts === 'help') {
    process.stdout.write(APPLIANCE_HELP)
    return 0
  }
  let appliance: Appliance
  try {
    appliance = await Appliance.start(opts)
  } catch (err) {
    if (err instanceof TidemarkError) throw new TidemarkError(err.code, `tidemark appliance: ${err.message}`)
    throw err
  }
  // Tests and scripts read the bound port from this line (with --listen HOST:0).
  process.stderr.write(`tidemark appliance: listening on ${opts.listen.host}:${appliance.port}\n`)
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      opts.logger.info({ signal: sig }, 'stopping')
      appliance.stop().then(resolve, resolve)
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  return 0
}
