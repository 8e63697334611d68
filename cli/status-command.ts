// tidemark status: the appliance's state at a glance, read from its HTTP API
// (`tidemark appliance --http HOST:PORT`; client/status-api.ts), not from
// gRPC: it shows exactly what the dashboard and Prometheus see, and needs
// only the read-only listener.
//
// --json prints the API's own answers, {volumes, store, alerts}, untouched.
// --watch S refreshes every S seconds: on a terminal each block replaces the
// last (ANSI home + clear), piped each block follows the last after a blank
// line, so `| tee` or a log keeps a readable history. SIGINT (or SIGTERM) ends
// a watch with exit 0; an appliance that stops answering mid-watch shows the
// error in its block and the watch goes on.
import fs from 'node:fs'
import { z } from 'zod'
import { getAlerts, getStore, getVolume, getVolumes, StatusApiError, type FetchOptions } from '../client/status-api'
import { usage } from './args'
import { helpOption, tlsFiles } from './common-options'
import { check, command, flag, helpText, parseCommand, text } from './definition'
import { renderStatus, SyncTracker, type StatusData } from './status-view'
import { TidemarkError } from '../proto/errors'

export const STATUS = command({
  name: 'status',
  options: {
    ...helpOption,
    appliance: text({
      label: '--appliance URL|HOST:PORT',
      help: "the appliance's --http address (http://HOST:PORT, https://HOST:PORT,\nor HOST:PORT: HTTPS with the TLS files, else HTTP)",
      required: "--appliance is required (the appliance's --http address)",
    }),
    volume: text({ label: '--volume NAME', help: 'only this volume (and the store)' }),
    watch: text({
      label: '--watch SECONDS',
      help: 'refresh every SECONDS until interrupted: in place on a terminal,\none block after another when piped',
      value: check(z.string(), (s) => Number.isFinite(Number(s)) && Number(s) >= 0.1, (s) => `--watch '${s}' must be a number of seconds (at least 0.1)`).transform(Number),
    }),
    json: flag({ label: '--json', help: "print the API's data as it is: {volumes, store, alerts}" }),
    'tls-cert': text({ label: '--tls-cert/-key/-ca', help: 'a client certificate for an appliance whose --http is HTTPS' }),
    'tls-key': text({}),
    'tls-ca': text({}),
  },
  help: (rows) => `Usage:
  tidemark status --appliance URL|HOST:PORT [--volume NAME] [--watch SECONDS] [--json] [--tls-cert F --tls-key F --tls-ca F]

Per volume: state, RPO / target, history / target, backlog, application ->
changed -> wire MB/s with the two reductions (MicroScan, LZ4: over the last
~10 s, or since the volume's creation when idle), journal size, the newest
TimeMark and its age, and overall: ok, or the worst severity of its alerts
with their names. Under a volume with a resync or the initial copy, a progress
bar with rate and ETA. Then the store's free space and its alerts.

${rows(30, 'appliance', 'volume', 'watch', 'json', 'tls-cert')}
`,
})

/** The API's base URL from --appliance, and what to fetch with. */
function target(appliance: string, files: { cert: string; key: string; ca: string } | undefined): { base: string; opts: FetchOptions } {
  let base: string
  if (/^https?:\/\//.test(appliance)) {
    let u: URL
    try {
      u = new URL(appliance)
    } catch {
      throw usage('status', `--appliance '${appliance}' is not a URL`)
    }
    base = u.origin
    if (u.protocol === 'http:' && files) throw usage('status', `--appliance ${appliance} is plain HTTP: the TLS files are for https://`)
    if (u.protocol === 'https:' && !files) throw usage('status', `--appliance ${appliance} is HTTPS: give --tls-cert, --tls-key and --tls-ca (its client certificate)`)
  } else {
    if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:/]+):\d{1,5}$/.test(appliance)) {
      throw usage('status', `--appliance '${appliance}' must be the appliance's --http address: HOST:PORT or http(s)://HOST:PORT`)
    }
    base = `${files ? 'https' : 'http'}://${appliance}`
  }
  const read = (f: string): Buffer => {
    try {
      return fs.readFileSync(f)
    } catch (err) {
      throw usage('status', `cannot read ${f}: ${(err as Error).message}`)
    }
  }
  return { base, opts: files ? { tls: { cert: read(files.cert), key: read(files.key), ca: read(files.ca) } } : {} }
}

async function fetchStatus(base: string, opts: FetchOptions, volume: string | undefined): Promise<StatusData> {
  const [volumes, store, alerts] = await Promise.all([
    volume ? getVolume(base, volume, opts).then((v) => [v]) : getVolumes(base, opts).then((r) => r.volumes),
    getStore(base, opts),
    getAlerts(base, opts).then((r) => r.alerts),
  ])
  return { volumes, store, alerts: volume ? alerts.filter((a) => a.volume === null || a.volume === volume) : alerts }
}

/** One line saying why the API could not be read. */
function why(base: string, err: unknown): string {
  if (err instanceof StatusApiError) return `tidemark status: ${base} answered ${err.message}`
  const e = err as Error & { code?: string }
  if (e.code === 'ECONNREFUSED') return `tidemark status: nothing answers at ${base}: is the appliance running with --http at that address?`
  return `tidemark status: cannot read ${base}: ${e.message}`
}

export async function runStatus(argv: string[]): Promise<number> {
  const p = parseCommand(STATUS, argv)
  if (p.help) {
    process.stdout.write(helpText(STATUS))
    return 0
  }
  const a = p.values
  const { base, opts } = target(a.appliance!, tlsFiles(a, 'status'))
  const sync = new SyncTracker()
  const block = async (): Promise<string> => {
    const d = await fetchStatus(base, opts, a.volume)
    return a.json ? JSON.stringify(d) : renderStatus(d, sync)
  }
  if (a.watch === undefined) {
    let out: string
    try {
      out = await block()
    } catch (err) {
      throw new TidemarkError(err instanceof StatusApiError && err.status === 404 ? 'UNKNOWN_VOLUME' : 'UNAVAILABLE', why(base, err))
    }
    process.stdout.write(`${out}\n`)
    return 0
  }

  const tty = process.stdout.isTTY === true && !a.json
  let stop: () => void = () => undefined
  const stopped = new Promise<void>((resolve) => (stop = resolve))
  let done = false
  const end = (): void => {
    done = true
    stop()
  }
  process.once('SIGINT', end)
  process.once('SIGTERM', end)
  for (let first = true; !done; first = false) {
    const started = Date.now()
    let out: string
    try {
      out = await block()
    } catch (err) {
      out = why(base, err)
    }
    if (done) break
    if (a.json) process.stdout.write(`${out}\n`)
    else if (tty) process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}  ${base}  every ${a.watch} s\n\n${out}\n`)
    else process.stdout.write(`${first ? '' : '\n'}${new Date().toISOString()}  ${base}\n${out}\n`)
    const wait = Math.max(0, a.watch * 1000 - (Date.now() - started))
    let timer: NodeJS.Timeout | undefined
    await Promise.race([stopped, new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))])
    clearTimeout(timer)
  }
  return 0
}
