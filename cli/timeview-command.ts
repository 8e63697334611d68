// tidemark timeview: serve one volume at one point in time over NBD.
//
// The point is resolved once (Admin.Resolve), so the view is of one seq
// while the volume's history grows; every byte is then read from the
// appliance on demand (Admin.Read) through the native TimeView export, which
// caches what it fetched. Nothing is materialized. --writable adds a
// copy-on-write overlay for DR tests: writes stay in an unnamed temporary
// file that disappears when the view closes and never reach the appliance.
import path from 'node:path'
import pino from 'pino'
import { TidemarkError } from '../proto/errors'
import type { ReadReply__Output } from '../proto/generated/tidemark/v1/ReadReply'
import type { ReadRequest } from '../proto/generated/tidemark/v1/ReadRequest'
import { TimeView, type TimeViewStats } from '../native/view'
import { adminClient, clientError, CLIENT_FLAGS, unary } from './admin-client'
import { parseArgs, parseEndpoint, parseSize, usage } from './args'
import { describePoint, parsePoint, POINT_FLAGS, POINT_HELP, resolvePoint } from './point'

export const TIMEVIEW_HELP = `Usage:
  tidemark timeview --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                    --nbd unix:PATH|tcp:HOST:PORT [--writable] [--cache SIZE] [--stats-interval SECONDS]
                    [--tls-cert F --tls-key F --tls-ca F] [--json] [--log-level LEVEL]

Serves the volume as it was at the point given, read-only, as an NBD export
named after the volume, until SIGINT or SIGTERM. Nothing is copied first:
bytes are read from the appliance when a client asks for them (and cached).
Replication continues meanwhile; several TimeViews may run at once.
${POINT_HELP}
  --nbd ENDPOINT       where NBD clients connect: unix:PATH or tcp:HOST:PORT
  --writable           add a copy-on-write overlay (for DR tests): writes, trims and zeroes
                       go to an unnamed temporary file in $TMPDIR, reads see them, and it
                       is discarded when the TimeView stops; the appliance never sees them
  --cache SIZE         cache of bytes read from the appliance (default 64M, 0 = none)
  --stats-interval S   log read counts every S seconds while they change (default 10, 0 = never)
  --json               print what is served as one JSON object instead of a line
  --log-level LEVEL    trace, debug, info (default), warn, error (pino lines on stderr)

Attach it:  nbd-client -unix PATH -N NAME /dev/nbd0
            nbdfuse DIR/disk 'nbd+unix:///NAME?socket=PATH'
`

const SPEC = {
  help: {},
  ...CLIENT_FLAGS,
  ...POINT_FLAGS,
  volume: { value: true },
  nbd: { value: true },
  writable: {},
  cache: { value: true },
  'stats-interval': { value: true },
  json: {},
  'log-level': { value: true },
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']

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
  const a = parseArgs(argv, SPEC, 'timeview')
  if (a.has('help')) {
    process.stdout.write(TIMEVIEW_HELP)
    return 0
  }
  const volume = a.get('volume')?.[0]
  if (!volume) throw usage('timeview', '--volume NAME is required')
  const point = parsePoint(a, 'timeview')
  const nbd = a.get('nbd')?.[0]
  if (!nbd) throw usage('timeview', '--nbd unix:PATH|tcp:HOST:PORT is required')
  const ep = parseEndpoint(nbd, '--nbd', 'timeview')
  const endpoint = 'unix' in ep ? { unix: path.resolve(ep.unix) } : ep
  const cacheBytes = a.has('cache') ? parseSize(a.get('cache')![0], '--cache', 'timeview') : 64 * 1024 * 1024
  const interval = a.has('stats-interval') ? Number(a.get('stats-interval')![0]) : 10
  if (!Number.isFinite(interval) || interval < 0) throw usage('timeview', `--stats-interval '${a.get('stats-interval')![0]}' is not a number of seconds`)
  const logLevel = a.get('log-level')?.[0] ?? 'info'
  if (!LEVELS.includes(logLevel)) throw usage('timeview', `--log-level must be one of ${LEVELS.join(', ')}`)
  const writable = a.has('writable')
  const client = adminClient(a, 'timeview')

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
  // stdout carries the one line (or JSON object) saying what is served; the
  // pino lines go to stderr so a script can read stdout alone.
  const logger = pino({ level: logLevel, base: { pid: process.pid, component: 'timeview', volume, seq } }, pino.destination(2))

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
      cacheBytes,
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
    : `nbd://${endpoint.tcp.host.includes(':') ? `[${endpoint.tcp.host}]` : endpoint.tcp.host}:${view.tcpPort}/${volume}`
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
  }
  if (a.has('json')) process.stdout.write(`${JSON.stringify(served)}\n`)
  else process.stdout.write(`tidemark timeview: serving ${volume} at ${what}, ${size} bytes, ${mode}, on ${uri}\n`)
  logger.info({ point: what, size, mode, uri }, 'serving')

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
