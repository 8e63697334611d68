// The operator plane's HTTP listener (`--http HOST:PORT` on `tidemark agent`
// and `tidemark appliance`): node:http, no framework, read-only.
//
// Exposure follows the gRPC listener's rules (appliance/appliance.ts):
//   - without the process's TLS files, loopback only: anything else is
//     refused at start (checkHttpExposure), since /metrics and the API tell
//     anyone who can reach them the volumes' names, sizes and activity;
//   - with them (--tls-cert/--tls-key/--tls-ca), HTTPS with client
//     certificates checked against the same CA, and on the appliance the same
//     allow-list and roles as gRPC: `read` (the Stats operation) on the
//     volumes shown. Plain loopback HTTP with an allow-list is refused at
//     start too: nobody could be identified on it.
// Only GET and HEAD are served; anything else is 405 with an Allow header.
// Every answer that is not 200 carries {"error": "..."}, one line saying why.
//
// The routes are the caller's (a Router): this module knows transports, not
// metrics or volumes.
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { isLoopback } from './nbd-exposure'
import { certificateIdentity } from '../appliance/authorizer'
import { TidemarkError } from '../proto/errors'

export interface HttpReply {
  status: number
  /** JSON unless `type` says otherwise */
  body: unknown
  type?: string
}

/** Who is asking: the certificate's identity over HTTPS, null on plain loopback HTTP. */
export interface HttpCaller {
  identity: string | null
  tls: boolean
}

/** `path` is decoded; `query` is the URL's search parameters (the series API reads its range there). */
export type Router = (path: string, caller: HttpCaller, query: URLSearchParams) => Promise<HttpReply>

export interface HttpServerOptions {
  host: string
  port: number
  tls?: { cert: string; key: string; ca: string }
  /** 'tidemark agent' or 'tidemark appliance': how the listening line names the process */
  name: string
  router: Router
  log: Logger
}

/** Refuses what would serve callers it cannot identify or should not trust; the message names the fix. */
export function checkHttpExposure(o: { host: string; port: number; tls?: unknown; allowList?: boolean }): void {
  if (o.tls) return
  const where = `${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`
  if (!isLoopback(o.host)) {
    throw new TidemarkError('USAGE', `refusing --http ${where} without TLS: metrics and status would be open to the network; give --tls-cert, --tls-key and --tls-ca (HTTPS with client certificates) or a loopback address`)
  }
  if (o.allowList) {
    throw new TidemarkError('USAGE', `refusing --http ${where} without TLS with an allow-list: plain HTTP identifies nobody; give --tls-cert, --tls-key and --tls-ca`)
  }
}

export class HttpServer {
  private constructor(
    private readonly server: http.Server,
    readonly url: string
  ) {}

  static async start(o: HttpServerOptions): Promise<HttpServer> {
    checkHttpExposure(o)
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const send = (r: HttpReply): void => {
        // A Buffer (a static file of the dashboard) goes out as its bytes.
        const text = r.type ? (Buffer.isBuffer(r.body) ? r.body : String(r.body)) : `${JSON.stringify(r.body, null, 2)}\n`
        res.writeHead(r.status, { 'content-type': r.type ?? 'application/json; charset=utf-8', 'cache-control': 'no-store' })
        res.end(text)
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD')
        send({ status: 405, body: { error: `${req.method} is not allowed: this endpoint is read-only (GET, HEAD)` } })
        return
      }
      let path: string
      let query: URLSearchParams
      try {
        const url = new URL(req.url ?? '/', 'http://x')
        path = decodeURIComponent(url.pathname)
        query = url.searchParams
      } catch {
        send({ status: 400, body: { error: `the path ${JSON.stringify(req.url)} is not valid` } })
        return
      }
      const caller: HttpCaller = o.tls
        ? { identity: certificateIdentity((req.socket as TLSSocket).getPeerCertificate?.()), tls: true }
        : { identity: null, tls: false }
      o.router(path, caller, query).then(send, (err: unknown) => {
        if (err instanceof TidemarkError && err.code === 'PERMISSION_DENIED') return send({ status: 403, body: { error: err.message } })
        if (err instanceof TidemarkError && err.code.startsWith('UNKNOWN')) return send({ status: 404, body: { error: err.message } })
        if (err instanceof TidemarkError && err.code === 'INVALID_ARGUMENT') return send({ status: 400, body: { error: err.message } })
        o.log.error({ err, path }, `http ${path} failed: ${(err as Error).message}`)
        send({ status: 500, body: { error: (err as Error).message } })
      })
    }
    let server: http.Server
    if (o.tls) {
      const read = (f: string, what: string): Buffer => {
        try {
          return fs.readFileSync(f)
        } catch (err) {
          throw new TidemarkError('USAGE', `cannot read ${what} ${f}: ${(err as Error).message}`)
        }
      }
      server = https.createServer(
        { cert: read(o.tls.cert, '--tls-cert'), key: read(o.tls.key, '--tls-key'), ca: read(o.tls.ca, '--tls-ca'), requestCert: true, rejectUnauthorized: true },
        handler
      )
    } else {
      server = http.createServer(handler)
    }
    // A scraper that keeps its connection open must not hold the process at stop.
    server.keepAliveTimeout = 5000
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', (err) => reject(new TidemarkError('LISTEN_FAILED', `cannot listen on --http ${o.host}:${o.port}: ${err.message}`)))
      server.listen(o.port, o.host, () => resolve((server.address() as { port: number }).port))
    })
    const host = o.host.includes(':') ? `[${o.host}]` : o.host
    const s = new HttpServer(server, `${o.tls ? 'https' : 'http'}://${host}:${port}`)
    // Tests and scripts find the bound port in this line (with --http HOST:0).
    process.stderr.write(`${o.name}: http listening on ${s.url}\n`)
    o.log.info({ http: s.url, tls: !!o.tls }, 'http listening')
    return s
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }
}

/** The exposition text of a Prometheus registry as an answer. */
export function metricsReply(text: string): HttpReply {
  return { status: 200, body: text, type: 'text/plain; version=0.0.4; charset=utf-8' }
}

export function notFound(path: string, known: string): HttpReply {
  return { status: 404, body: { error: `no such endpoint ${path} (this server has ${known})` } }
}
