// tidemark appliance: parse, start, run until SIGTERM/SIGINT.
import path from 'node:path'
import { z } from 'zod'
import { Appliance, trustNote, type ApplianceOptions } from '../appliance/appliance'
import { parseAllowList } from '../appliance/access-policy'
import { parsePlanSchedule } from '../appliance/plan-schedule'
import { DEFAULT_MARK_RATE, firstMatch, parseDuration, parseMarkRate, parseRetentionRule } from '../appliance/retention'
import { parseHistoryTarget, parseRpoTarget, type VolumeTargets } from '../appliance/volume-targets'
import { AlertCommand } from '../appliance/alert-command'
import { AlertRules } from '../appliance/alert-rules'
import { AlertEngine } from '../appliance/alerts'
import { VolumeStatusSource } from '../appliance/volume-status'
import { startApplianceHttp } from './appliance-http'
import { checkHttpExposure } from './http-server'
import { TidemarkError } from '../proto/errors'
import { parseEndpoint, parseHostPort, parseSize, usage } from './args'
import { helpOption, logLevel, seconds, tlsFiles } from './common-options'
import { check, command, convert, flag, helpText, list, parseCommand, text } from './definition'
import { LOG_FORMAT_HELP, createLogger, logFormat } from './logger'
import { nbdLimitOptions } from './nbd-exposure'

const APPLIANCE_NBD_MAX_CONNECTIONS = 64

/** A cap per identity: a whole number, 0 (the default) for none. */
function cap(flagName: string) {
  return check(z.string(), (s) => /^\d+$/.test(s.trim()), (s) => `${flagName} '${s}' is not a whole number (0: no limit)`).transform((s) => Number(s) || undefined)
}

/** A duration (30s, 10m, 2h) or plain seconds, as seconds above 0. */
function duration(flagName: string) {
  return convert(z.string(), (s) => {
    const t = s.trim()
    const ms = /^\d+(\.\d+)?$/.test(t) ? Number(t) * 1000 : parseDuration(t)
    if (ms === null || !(ms > 0)) throw new Error(`${flagName} '${s}' is not a duration (30s, 10m, 2h or seconds)`)
    return ms / 1000
  })
}

/** A JSON object whose values become "KEY=VALUE" strings, as the repeated flag gives them. */
function objectOf(message: string) {
  return z.record(z.unknown(), { errorMap: () => ({ message }) })
}

export const APPLIANCE = command({
  name: 'appliance',
  options: {
    ...helpOption,
    http: text({
      label: '--http HOST:PORT',
      help: 'serve Prometheus metrics at /metrics and the read-only JSON status at\n/api/v1/volumes[/NAME], /api/v1/store and /api/v1/alerts (port 0:\nany; the bound address is printed). Loopback only unless --tls-cert/-key/-ca: then\n' +
        'HTTPS with client certificates, and with --allow the read role on\nthe volumes shown',
      key: 'http',
      value: convert(z.string(), (s) => (s ? parseHostPort(s, '--http') : undefined)),
    }),
    'rpo-target': list({
      label: '--rpo-target PAT=WARN[,ERROR]',
      help: 'the RPO the volumes PAT names should keep (NAME, PREFIX* or *; the\nfirst matching rule applies): a warning and an optional error\nthreshold (30s, 5m or seconds); repeatable',
      key: 'rpoTarget',
      config: objectOf('"rpoTarget" must map volume patterns to WARN[,ERROR] durations').transform((o) => Object.entries(o).map(([k, v]) => `${k}=${String(v)}`)),
      value: convert(z.array(z.string()), (l) => l.map(parseRpoTarget)),
    }),
    'history-target': list({
      label: '--history-target PAT=DUR',
      help: 'how far back the journal of the volumes PAT names should reach\n(7d, 12h); repeatable',
      key: 'historyTarget',
      config: objectOf('"historyTarget" must map volume patterns to durations').transform((o) => Object.entries(o).map(([k, v]) => `${k}=${String(v)}`)),
      value: convert(z.array(z.string()), (l) => l.map(parseHistoryTarget)),
    }),
    'alert-command': text({
      label: '--alert-command CMD',
      help: 'run CMD (with /bin/sh -c) when an alert starts, changes severity or\nends, with the alert as JSON on its stdin (GET /api/v1/alerts\'s\nshape plus "state": "firing" or "resolved"); one at a time, in order',
      key: 'alertCommand',
    }),
    'alert-command-timeout': text({
      label: '--alert-command-timeout D',
      help: 'kill an --alert-command still running after D (default 10s)',
      key: 'alertCommandTimeout',
      default: '10s',
      value: duration('--alert-command-timeout'),
    }),
    'alert-behind-after': text({
      label: '--alert-behind-after D',
      help: 'the Behind alert fires for a volume behind for longer than D\n(default 10m)',
      key: 'alertBehindAfter',
      default: '10m',
      value: duration('--alert-behind-after'),
    }),
    'alert-stall-after': text({
      label: '--alert-stall-after D',
      help: 'ResyncWithoutProgress fires for a resync or initial copy whose\nremaining bytes did not shrink for D (default 5m)',
      key: 'alertStallAfter',
      default: '5m',
      value: duration('--alert-stall-after'),
    }),
    config: text({
      label: '--config FILE',
      help:
        'the same settings in YAML (.yaml, .yml) or JSON: data, listen,\ntls: {cert, key, ca}, allow: {ID: [ROLE:PAT, ...]}, insecure,\nretain: {PAT: SPEC}, retainLock, compactEvery, scrubEvery, segmentSize,\nplans: [{file, every}], ' +
        'replicaImage, journalIo, dataPort, statsInterval, logLevel, logFormat,\nnbd, nbdMaxConnections, nbdHandshakeTimeout, limits: {streams, volumes,\nvolumeSize, retired, markRate}, http, rpoTarget: {PAT: WARN[,ERROR]},\nhistoryTarget: {PAT: DURATION}, alertCommand, alertCommandTimeout,\nalertBehindAfter, alertStallAfter (contrib/appliance.yaml)',
      alone: true,
    }),
    'tls-cert': text({ label: '--tls-cert/-key/-ca', help: 'require mutual TLS: agents present certificates signed by the CA', key: 'tls.cert' }),
    'tls-key': text({ key: 'tls.key' }),
    'tls-ca': text({ key: 'tls.ca' }),
    allow: list({
      label: '--allow ID=ROLE:PAT,...',
      help:
        'identity ID (a certificate CN, or uid:N for local user N on the\nunix listener) holds ROLE on the volumes PAT names (NAME, PREFIX*\nor *); repeatable. write: replicate them; read: restore, TimeViews,\n' +
        'NBD exports, stats, journal, TimeMarks; admin: everything, with\npins, compaction, verify, accept-generation. ID=VOL,VOL is write.\nWith --allow every caller is identified (TLS or the unix listener);\n' +
        'without it every caller may do everything (and it says so at start)',
      key: 'allow',
      config: objectOf('"allow" must map identities to lists of ROLE:PATTERN grants'),
      value: convert(z.union([z.array(z.string()), z.record(z.unknown())]), (v) => parseAllowList(v)),
    }),
    insecure: flag({
      label: '--insecure',
      help: 'allow listening beyond loopback without TLS (never with --allow)',
      key: 'insecure',
      // as it always was: anything but true is false
      config: z.unknown().transform((v) => (v === true ? true : undefined)),
    }),
    plan: list({
      label: '--plan FILE=EVERY',
      help:
        'test the recovery plan FILE (as tidemark plan test does) every EVERY\n(30m, 12h, 1d), first a minute after start: the result goes to the\naudit trail and the plan metrics, and a failed or overdue test is an\n' +
        "alert. Runs against this appliance's unix listener (else its TCP one\nwith its own TLS files): with --allow, grant that identity admin on\nthe plan's volumes. Repeatable",
      key: 'plans',
      config: z
        .array(z.object({ file: z.string(), every: z.string() }).strict(), { errorMap: () => ({ message: '"plans" must be a list of {file, every}' }) })
        .transform((l) => l.map((x) => `${x.file}=${x.every}`)),
      value: convert(z.array(z.string()), (l) => l.map(parsePlanSchedule)),
    }),
    retain: list({
      label: '--retain PAT=SPEC',
      help:
        'retention for the volumes PAT names (NAME, PREFIX* or *; the first\nmatching rule applies); SPEC is a comma-separated list of a window\n(7d, 12h, 30m), a number of TimeMarks (100marks) and a journal cap\n' +
        '(20G: past it history is given up early, and stats warns). A point\nis kept if the window or the marks rule keeps it; pinned TimeMarks\nand everything after them are always kept. Expired history is\nfolded into the volume\'s base image and its segments deleted.',
      key: 'retain',
      config: objectOf('"retain" must map volume patterns to retention specs').transform((o) => Object.entries(o).map(([k, v]) => `${k}=${String(v)}`)),
      value: convert(z.array(z.string()), (l) => l.map(parseRetentionRule)),
    }),
    'retain-lock': text({
      label: '--retain-lock DURATION',
      help:
        'no point younger than DURATION (30d, 12h) is given up, whatever the\nrules, the journal cap, disk pressure, an unpin or an admin ask;\nkept in DATA/retain-lock.json: it only grows (a shorter one is\nrefused at start, and a start without it keeps it)',
      key: 'retainLock',
      value: convert(z.string(), (s) => {
        const ms = parseDuration(s)
        if (!ms) throw new Error(`--retain-lock '${s}' must be a duration (30d, 12h, 90m)`)
        return { ms, text: s }
      }),
    }),
    // Limits per identity (appliance/identity-limits.ts): unlimited unless given, see LIMITS_HELP.
    'limit-streams': text({
      label: '--limit-streams N',
      help: 'replication streams one identity may have open at once (one per\nvolume it replicates)',
      key: 'limits.streams',
      default: '0',
      value: cap('--limit-streams'),
    }),
    'limit-volumes': text({
      label: '--limit-volumes N',
      help: 'volumes one identity may create (each remembers its creator; a new\ngeneration of a volume it created is not a new one)',
      key: 'limits.volumes',
      default: '0',
      value: cap('--limit-volumes'),
    }),
    'limit-volume-size': text({
      label: '--limit-volume-size SZ',
      help: 'the largest volume a hello may announce, a size (500G, 2048G)',
      key: 'limits.volumeSize',
      default: '0',
      value: convert(z.string(), (s) => parseSize(s, '--limit-volume-size') || undefined),
    }),
    'limit-retired': text({
      label: '--limit-retired N',
      help: "retired histories (NAME.retired-N) kept per volume: past it a new\ngeneration is refused (accept-generation says why); history is never\ndeleted to make room.\n" +
        'Each limit is off (0) unless given: the right numbers depend on the\nfleet, and a cap an existing setup hits would stop protecting a real\nserver. A refusal is RESOURCE_EXHAUSTED naming identity, limit, value',
      key: 'limits.retired',
      default: '0',
      value: cap('--limit-retired'),
    }),
    'limit-mark-rate': text({
      label: '--limit-mark-rate R',
      help: `R is COUNT/PERIOD (12/h, 10/30m) or off; default ${DEFAULT_MARK_RATE}. An "N marks"\nrule never gives up a point younger than N x PERIOD / COUNT, so a\n` +
        'flood of TimeMarks from an agent cannot push older history out.\nMarks are never refused; slower marking loses nothing',
      key: 'limits.markRate',
      default: DEFAULT_MARK_RATE,
      value: convert(z.string(), (s) => parseMarkRate(s)),
    }),
    'compact-every': text({
      label: '--compact-every S',
      help: 'apply retention every S seconds (default 60; 0 = only on\ntidemark journal compact)',
      key: 'compactEvery',
      default: '60',
      value: seconds('--compact-every'),
    }),
    nbd: text({
      label: '--nbd ENDPOINT',
      help: 'serve every point over NBD: unix:PATH or tcp:HOST:PORT (port 0:\nany). Exports VOLUME@latest, VOLUME@seq=N, VOLUME@mark=ID|LABEL,\nVOLUME@at=ISO-TIME (read-only) and the views timeview create makes;\nTCP is loopback only unless --insecure. With --allow and no TLS,\nunix:PATH clients are their uid (uid:N) and the socket is 0666',
      key: 'nbd',
      value: convert(z.string(), (s) => (s ? parseEndpoint(s, '--nbd') : undefined)),
    }),
    // Restores and TimeViews open several connections each: a higher cap than the agent's.
    ...nbdLimitOptions(APPLIANCE_NBD_MAX_CONNECTIONS),
    'scrub-every': text({
      label: '--scrub-every S',
      help: 're-read every journal and check its checksums every S seconds\n(default 86400; the first scrub runs min(S, 300) s after start;\n0 = never): damage at rest is found, and points after it refused',
      key: 'scrubEvery',
      default: '86400',
      value: seconds('--scrub-every'),
    }),
    'replica-image': text({
      label: '--replica-image on|off',
      help: "keep each volume's newest point in volume order beside its journal\n(DATA/volumes/NAME/replica.img: sparse, the volume's size), brought\nup to date when the volume is quiet, so restores, exports and views\nof recent points read the disk in order (default on)",
      key: 'replicaImage',
      default: 'on',
      value: check(z.string(), (s) => s === 'on' || s === 'off', () => '--replica-image must be on or off'),
    }),
    'journal-io': text({
      label: '--journal-io direct|buffered',
      help: 'how journal segments are written: direct (O_DIRECT, no copy into\nthe page cache; where the file system refuses it, buffered) or\nbuffered (default direct)',
      key: 'journalIo',
      default: 'direct',
      value: check(z.string(), (s) => s === 'direct' || s === 'buffered', () => '--journal-io must be direct or buffered'),
    }),
    data: text({ label: '--data DIR', help: 'journals, indexes and volume metadata; created if missing', key: 'data', required: '--data DIR is required' }),
    listen: list({
      label: '--listen ADDR',
      help:
        'the gRPC listener for agents and for the tidemark CLI: HOST:PORT\n(port 0: any) and/or unix:PATH, where callers are identified by\ntheir uid (uid:N in --allow); give it twice for both',
      key: 'listen',
      required: '--listen HOST:PORT is required (or --listen unix:PATH)',
      config: z
        .union([z.string(), z.array(z.string())], { errorMap: () => ({ message: '"listen" must be an address or a list of them' }) })
        .transform((v) => (Array.isArray(v) ? v : [v])),
    }),
    'data-port': text({
      label: '--data-port PORT|off',
      help: "where agents send their batches, on the --listen host, beside the\ngRPC streams (TLS with the same certificates): 0 (the default) is\nany free port, which agents learn when they connect; give a fixed\none to open it in a firewall. off: batches travel on the gRPC streams",
      key: 'dataPort',
      default: '0',
      value: convert(
        check(z.string(), (s) => s === 'off' || (/^\d+$/.test(s) && Number(s) <= 65535), () => '--data-port must be a port (0 to 65535) or off'),
        (s) => (s === 'off' ? null : Number(s))
      ),
    }),
    'stats-interval': text({
      label: '--stats-interval S',
      help: 'check the counts every S seconds and log them when they changed,\nor once a minute when idle (default 10, 0 = never)',
      key: 'statsInterval',
      default: '10',
      value: seconds('--stats-interval'),
    }),
    'log-level': text({ label: '--log-level LEVEL', help: 'trace, debug, info (default), warn, error', key: 'logLevel', default: 'info', value: logLevel() }),
    'log-format': text({ label: '--log-format F', help: LOG_FORMAT_HELP, key: 'logFormat', default: 'auto', value: logFormat() }),
    'segment-size': text({
      label: '--segment-size SIZE',
      help: 'journal segment size (default 256M)',
      key: 'segmentSize',
      value: check(
        convert(z.string(), (s) => (s ? parseSize(s, '--segment-size') : undefined)),
        (n) => n === undefined || n >= 1024 * 1024,
        () => '--segment-size must be at least 1M'
      ),
    }),
  },
  help: (rows) => `Usage:
  tidemark appliance --data DIR --listen HOST:PORT|unix:PATH ... [--nbd unix:PATH|tcp:HOST:PORT] [--tls-cert F --tls-key F --tls-ca F]
                     [--allow IDENTITY=ROLE:PATTERN[,...] ...] [--insecure] [--data-port PORT|off]
                     [--limit-streams N] [--limit-volumes N] [--limit-volume-size SIZE] [--limit-retired N] [--limit-mark-rate R]
                     [--segment-size SIZE] [--retain PATTERN=SPEC ...] [--retain-lock DURATION] [--compact-every SECONDS] [--scrub-every SECONDS]
                     [--replica-image on|off] [--journal-io direct|buffered] [--stats-interval SECONDS] [--log-level LEVEL]
                     [--http HOST:PORT] [--rpo-target PATTERN=WARN[,ERROR] ...] [--history-target PATTERN=DURATION ...] [--log-format auto|json|pretty]
                     [--alert-command CMD] [--alert-command-timeout D] [--alert-behind-after D] [--alert-stall-after D]
                     [--plan FILE=EVERY ...]
  tidemark appliance --config FILE

The recovery-site journal: agents stream every change of their volumes here;
each batch is checksummed, journaled and fsynced before it is acknowledged, and
indexed so that any durable point can be restored.

${rows(24, 'data', 'listen', 'data-port', 'nbd', 'nbd-max-connections', 'nbd-handshake-timeout', 'tls-cert', 'allow', 'insecure', 'limit-streams', 'limit-volumes', 'limit-volume-size', 'limit-retired', 'segment-size', 'retain', 'retain-lock', 'limit-mark-rate', 'compact-every', 'scrub-every', 'plan', 'replica-image', 'journal-io', 'http', 'rpo-target', 'history-target', 'alert-command', 'alert-command-timeout', 'alert-behind-after', 'alert-stall-after', 'stats-interval', 'log-level', 'log-format', 'config')}
`,
})

export const APPLIANCE_HELP = helpText(APPLIANCE)

/** The appliance's options, and the operator plane's, which the CLI serves beside it (appliance-http.ts). */
export type ApplianceArgs = ApplianceOptions & {
  http?: { host: string; port: number }
  targets: VolumeTargets
  alerts: { command: string | null; commandTimeoutSeconds: number; behindAfterSeconds: number; stallAfterSeconds: number }
}

export function parseApplianceArgs(argv: string[]): ApplianceArgs | 'help' {
  const p = parseCommand(APPLIANCE, argv)
  if (p.help) return 'help'
  const a = p.values
  const tls = tlsFiles(a, 'appliance')
  let hostPort: { host: string; port: number } | null = null
  let unixPath: string | undefined
  for (const l of a.listen!) {
    if (l.startsWith('unix:')) {
      if (l.length === 5) throw usage('appliance', "--listen 'unix:' names no socket path")
      if (unixPath !== undefined) throw usage('appliance', '--listen unix:PATH given twice (one unix listener)')
      unixPath = path.resolve(l.slice(5))
      continue
    }
    if (hostPort) throw usage('appliance', '--listen HOST:PORT given twice (one TCP listener, and one unix:PATH)')
    try {
      hostPort = parseHostPort(l, '--listen')
    } catch (err) {
      throw usage('appliance', (err as Error).message)
    }
  }
  if (a.http) {
    try {
      checkHttpExposure({ ...a.http, tls, allowList: !!a.allow })
    } catch (err) {
      throw usage('appliance', (err as Error).message)
    }
  }
  return {
    http: a.http,
    targets: { rpo: a['rpo-target'] ?? [], history: a['history-target'] ?? [] },
    alerts: {
      command: a['alert-command'] || null,
      commandTimeoutSeconds: a['alert-command-timeout']!,
      behindAfterSeconds: a['alert-behind-after']!,
      stallAfterSeconds: a['alert-stall-after']!,
    },
    dataDir: path.resolve(a.data!),
    listen: hostPort,
    listenUnix: unixPath,
    nbd: a.nbd ? ('unix' in a.nbd ? { unix: path.resolve(a.nbd.unix) } : a.nbd) : undefined,
    nbdListener: { maxConnections: a['nbd-max-connections'], handshakeTimeoutMs: a['nbd-handshake-timeout'] },
    tls,
    insecure: a.insecure === true,
    dataPort: a['data-port'],
    allow: a.allow ?? null,
    limits: { streams: a['limit-streams'], volumes: a['limit-volumes'], volumeSize: a['limit-volume-size'], retired: a['limit-retired'] },
    segmentBytes: a['segment-size'],
    replicaImages: a['replica-image'] !== 'off',
    journalIo: a['journal-io'] === 'buffered' ? 'buffered' : 'direct',
    retain: a.retain ?? [],
    plans: a.plan ?? [],
    retainLock: a['retain-lock'] ?? null,
    markRate: a['limit-mark-rate'] ?? null,
    compactEveryMs: a['compact-every']! * 1000,
    scrubEveryMs: a['scrub-every']! * 1000,
    statsIntervalMs: a['stats-interval']! * 1000,
    logger: createLogger({ level: a['log-level']!, format: a['log-format']!, base: { pid: process.pid, component: 'appliance' }, fd: 1 }),
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
  // One write: a reader that waits for "listening" sees the NBD line with it.
  const trust = trustNote(opts)
  process.stderr.write(
    (opts.listen ? `tidemark appliance: listening on ${opts.listen.host}:${appliance.port}\n` : '') +
      (appliance.unix ? `tidemark appliance: listening on unix:${appliance.unix.file}\n` : '') +
      (appliance.data && opts.listen ? `tidemark appliance: data channel on ${opts.listen.host}:${appliance.data.port}\n` : '') +
      (trust ? `tidemark appliance: trusting every caller: ${trust}\n` : '') +
      (appliance.nbd ? `tidemark appliance: serving NBD on ${appliance.nbd.address}\n` : '')
  )
  // Alerts run with or without --http: their log lines and --alert-command stand alone.
  // The HTTP routes read the same status (one sampler of the volumes' rates).
  const alertStatus = new VolumeStatusSource(appliance.store, appliance.replication, appliance.replication.reports, opts.targets, opts.dataDir)
  const alerts = new AlertEngine(
    alertStatus,
    new AlertRules({
      behindAfterSeconds: opts.alerts.behindAfterSeconds,
      stallAfterSeconds: opts.alerts.stallAfterSeconds,
      journalCap: (volume) => firstMatch(opts.retain ?? [], volume)?.spec.maxBytes ?? null,
      plans: () => appliance.plans?.status() ?? [],
    }),
    opts.logger,
    opts.alerts.command ? new AlertCommand(opts.alerts.command, opts.alerts.commandTimeoutSeconds * 1000, opts.logger) : null
  )
  alertStatus.start()
  alerts.start()
  const stopAlerts = async (): Promise<void> => {
    alertStatus.stop()
    await alerts.stop()
  }
  let http: Awaited<ReturnType<typeof startApplianceHttp>> | null = null
  if (opts.http) {
    try {
      http = await startApplianceHttp(appliance, { ...opts.http, tls: opts.tls, dataDir: opts.dataDir, log: opts.logger, alerts, status: alertStatus })
    } catch (err) {
      await stopAlerts()
      await appliance.stop()
      if (err instanceof TidemarkError) throw new TidemarkError(err.code, `tidemark appliance: ${err.message}`)
      throw err
    }
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      opts.logger.info({ signal: sig }, 'stopping')
      Promise.resolve(http?.close())
        .then(stopAlerts)
        .then(() => appliance.stop())
        .then(resolve, resolve)
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  return 0
}
