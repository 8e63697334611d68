// tidemark timeview: serve one volume at one point in time over NBD.
//
// The point is resolved once (Admin.Resolve), so the view is of one seq
// while the volume's history grows; every byte is then read from the
// appliance on demand through the native TimeView export, which caches what
// it fetched and reads ahead: from the appliance's own NBD export of the
// point (VOLUME@seq=N, native/src/nbd_source.h) when the appliance serves
// one reachable from here, natively and in parallel, else with Admin.Read. Nothing is materialized. --writable adds a
// copy-on-write overlay for DR tests: writes stay in an unnamed temporary
// file that disappears when the view closes and never reach the appliance.
import path from 'node:path'
import { z } from 'zod'
import { clientError, unary } from '../client/admin-client'
import { applianceNbdEndpoint } from '../client/restore'
import { exportName } from '../proto/export-name'
import { describePoint, resolvePoint } from '../client/point'
import { TidemarkError } from '../proto/errors'
import type { ReadReply__Output } from '../proto/generated/tidemark/v1/ReadReply'
import type { ReadRequest } from '../proto/generated/tidemark/v1/ReadRequest'
import { TimeView, type TimeViewStats } from '../native/view'
import { parseEndpoint } from './args'
import { adminFromFlags, clientOptions, parseAppliance, helpOption, logLevel, pointOf, pointOptions, seconds, size, tlsFiles, transportOption } from './common-options'
import { command, convert, flag, helpText, parseCommand, text } from './definition'
import { LOG_FORMAT_HELP, createLogger, logFormat } from './logger'
import { nbdExposure, nbdExposureOptions } from './nbd-exposure'
import { isViewAction, runTimeviewAction } from './timeview-views-command'

export const TIMEVIEW = command({
  name: 'timeview',
  options: {
    ...helpOption,
    volume: text({ required: '--volume NAME is required' }),
    ...pointOptions,
    nbd: text({
      label: '--nbd ENDPOINT',
      help: 'where NBD clients connect: unix:PATH or tcp:HOST:PORT',
      required: '--nbd unix:PATH|tcp:HOST:PORT is required',
      value: convert(z.string(), (s) => parseEndpoint(s, '--nbd')),
    }),
    ...nbdExposureOptions,
    writable: flag({
      label: '--writable',
      help: 'add a copy-on-write overlay (for DR tests): writes, trims and zeroes\ngo to an unnamed temporary file in $TMPDIR, reads see them, and it\nis discarded when the TimeView stops; the appliance never sees them',
    }),
    transport: transportOption(
      "how misses reach the appliance: nbd, from its NBD server (appliance --nbd,\nVOLUME@seq=N) natively; grpc, with Admin.Read; auto (the default): nbd\nwhen the appliance's endpoint is reachable from here"
    ),
    cache: text({ label: '--cache SIZE', help: 'cache of bytes read from the appliance (default 64M, 0 = none)', default: '64M', value: size('--cache') }),
    'stats-interval': text({
      label: '--stats-interval S',
      help: 'log read counts every S seconds while they change (default 10, 0 = never)',
      default: '10',
      value: seconds('--stats-interval'),
    }),
    json: flag({ label: '--json', help: 'print what is served as one JSON object instead of a line' }),
    'log-level': text({ label: '--log-level LEVEL', help: 'trace, debug, info (default), warn, error (pino lines on stderr)', default: 'info', value: logLevel() }),
    'log-format': text({ label: '--log-format F', help: LOG_FORMAT_HELP, default: 'auto', value: logFormat() }),
    ...clientOptions,
  },
  help: (rows) => `Usage:
  tidemark timeview --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                    --nbd unix:PATH|tcp:HOST:PORT [--writable] [--cache SIZE] [--stats-interval SECONDS]
                    [--nbd-tls-cert F --nbd-tls-key F --nbd-tls-ca F | --insecure-nbd]
                    [--nbd-max-connections N] [--nbd-handshake-timeout SECONDS]
                    [--tls-cert F --tls-key F --tls-ca F] [--json] [--log-level LEVEL] [--log-format auto|json|pretty]
  tidemark timeview create --appliance HOST:PORT --volume NAME (point) --name NAME [--writable] [--json]
  tidemark timeview list   --appliance HOST:PORT [--volume NAME] [--json]
  tidemark timeview delete --appliance HOST:PORT --name NAME [--json]
  (create, list and delete: named views the appliance serves itself; see
  tidemark timeview create --help)

Serves the volume as it was at the point given, read-only, as an NBD export
named after the volume, until SIGINT or SIGTERM. Nothing is copied first:
bytes are read from the appliance when a client asks for them (and cached).
Replication continues meanwhile; several TimeViews may run at once.
${rows(23, 'timemark', 'at', 'seq', 'nbd', 'nbd-tls-cert', 'nbd-tls-key', 'nbd-tls-ca', 'insecure-nbd', 'nbd-max-connections',
  'nbd-handshake-timeout', 'writable', 'transport', 'cache', 'stats-interval', 'json', 'log-level', 'log-format')}

Attach it:  nbd-client -unix PATH -N NAME /dev/nbd0
            nbdfuse DIR/disk 'nbd+unix:///NAME?socket=PATH'
`,
})

function statsLine(s: TimeViewStats): Record<string, number> {
  const chunks = s.chunkHits + s.chunkMisses
  return {
    reads: s.reads,
    bytesRead: s.bytesRead,
    cacheHitPercent: chunks ? Math.round((1000 * s.chunkHits) / chunks) / 10 : 0,
    fetches: s.fetches,
    fetchBytes: s.fetchBytes,
    fetchErrors: s.fetchErrors,
    fetchMs: s.fetchMs,
    fetchMaxMs: s.fetchMaxMs,
    fetchWaits: s.fetchWaits,
    fetchesInFlightMax: s.fetchesInFlightMax,
    readAheadBytes: s.readAheadBytes,
    cacheBytes: s.cacheBytes,
    writes: s.writes,
    bytesWritten: s.bytesWritten,
    trims: s.trims,
    zeroes: s.zeroes,
    overlayBytes: s.overlayBytes,
    rejected: s.rejected,
    connections: s.connections,
    connectionsTotal: s.connectionsTotal,
  }
}

export async function runTimeview(argv: string[]): Promise<number> {
  if (isViewAction(argv[0])) return runTimeviewAction(argv)
  const p = parseCommand(TIMEVIEW, argv)
  if (p.help) {
    process.stdout.write(helpText(TIMEVIEW))
    return 0
  }
  const a = p.values
  const volume = a.volume!
  const point = pointOf(a)
  const ep = a.nbd!
  const endpoint = 'unix' in ep ? { unix: path.resolve(ep.unix) } : ep
  const exposure = nbdExposure(a, ep, 'timeview')
  const cacheBytes = a.cache!
  const interval = a['stats-interval']!
  const logLevel = a['log-level']!
  const writable = a.writable === true
  const client = adminFromFlags(a, 'timeview')
  if (exposure.warning) process.stderr.write(`${exposure.warning}\n`)

  let resolved
  try {
    resolved = await resolvePoint(client, volume, point, 'timeview')
  } catch (err) {
    client.close()
    throw err
  }
  const seq = resolved.seq
  const size = resolved.volumeSize
  const what = describePoint(resolved)
  // The appliance's own NBD export of the point, when it can be reached.
  const transport = a.transport ?? 'auto'
  let upstream
  let via = 'Admin.Read over gRPC'
  if (transport !== 'grpc') {
    const applianceHost = typeof a.appliance === 'string' ? parseAppliance(a.appliance).host : a.appliance!.host
    let ep
    try {
      ep = await applianceNbdEndpoint(client, applianceHost, 'timeview')
    } catch (err) {
      client.close()
      throw err
    }
    if ('none' in ep) {
      if (transport === 'nbd') {
        client.close()
        throw new TidemarkError('VIEW_NO_NBD', `tidemark timeview: --transport nbd, but ${ep.none}`)
      }
      via = `Admin.Read over gRPC (${ep.none})`
    } else {
      upstream = { ...ep, export: exportName(volume, { seq }), tls: tlsFiles(a, 'timeview') }
      via = `the appliance's NBD export ${upstream.export} on ${'unix' in ep ? ep.unix : `${ep.host}:${ep.port}`}`
    }
  }
  // stdout carries the one line (or JSON object) saying what is served; the
  // pino lines go to stderr so a script can read stdout alone.
  const logger = createLogger({ level: logLevel, format: a['log-format']!, base: { pid: process.pid, component: 'timeview', volume, seq }, fd: 2 })

  const read = async (offset: number, length: number): Promise<Buffer> => {
    try {
      const r = await unary<ReadRequest, ReadReply__Output>(client.read.bind(client), { volume, seq, offset, length })
      return r.data
    } catch (err) {
      throw clientError('timeview', err)
    }
  }
  let view: TimeView
  try {
    view = TimeView.open({
      volume,
      size,
      description: `tidemark TimeView of ${volume} at ${what}, ${writable ? 'writable (copy-on-write overlay)' : 'read-only'}`,
      writable,
      endpoint,
      listener: exposure.listener,
      cacheBytes,
      upstream,
      read,
      log: (level, message) => {
        if (level >= 50) logger.error(message)
        else if (level >= 40) logger.warn(message)
        else if (level >= 30) logger.info(message)
        else logger.debug(message)
      },
    })
  } catch (err) {
    client.close()
    const e = err as TidemarkError
    throw new TidemarkError(e.code === 'VIEW_INVALID_ARGUMENT' ? 'USAGE' : e.code ?? 'VIEW_OPEN_FAILED', `tidemark timeview: ${e.message}`)
  }

  const uri = 'unix' in endpoint
    ? `nbd+unix:///${volume}?socket=${endpoint.unix}`
    : `${exposure.listener.tls ? 'nbds' : 'nbd'}://${endpoint.tcp.host.includes(':') ? `[${endpoint.tcp.host}]` : endpoint.tcp.host}:${view.tcpPort}/${volume}`
  const mode = writable ? 'writable' : 'read-only'
  const served = {
    volume,
    seq,
    point: what,
    timemark: resolved.timemark ?? null,
    timeMs: resolved.timeMs || null,
    size,
    mode,
    writable,
    nbd: 'unix' in endpoint ? `unix:${endpoint.unix}` : `tcp:${endpoint.tcp.host}:${view.tcpPort}`,
    uri,
    source: via,
  }
  if (a.json) process.stdout.write(`${JSON.stringify(served)}\n`)
  else process.stdout.write(`tidemark timeview: serving ${volume} at ${what}, ${size} bytes, ${mode}, on ${uri}\n`)
  logger.info({ point: what, size, mode, uri, source: via }, 'serving')

  let lastReads = -1
  const timer = interval > 0
    ? setInterval(() => {
        const s = view.stats()
        if (s.reads + s.writes === lastReads) return
        lastReads = s.reads + s.writes
        logger.info(statsLine(s), 'stats')
      }, interval * 1000)
    : undefined
  timer?.unref()

  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      logger.info({ signal: sig }, 'stopping')
      if (timer) clearInterval(timer)
      view.close().then(resolve, (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'close failed')
        resolve()
      })
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  client.close()
  logger.info(statsLine(view.stats()), writable ? 'stopped; the overlay is discarded' : 'stopped')
  logger.flush()
  return 0
}
