// The appliance's read-only JSON status API (served by cli/http-server.ts with
// `tidemark appliance --http HOST:PORT`): the one definition of its shape,
// for the appliance that builds it (appliance/volume-status.ts), for
// `tidemark status`, the dashboard and the alerts that read it, and a small
// fetch helper.
//
//   GET /api/v1/volumes        {"volumes": [VolumeStatus, ...]}   the volumes the caller may read
//   GET /api/v1/volumes/NAME   VolumeStatus                       404 if unknown (or not the caller's)
//   GET /api/v1/store          StoreStatus
//   GET /api/v1/alerts         {"alerts": [Alert, ...]}        the alerts firing now (appliance/alerts.ts)
//
// Units are in the names: bytes, seconds, bytes per second; times are ISO
// strings. null means "not known" (no agent has reported it since the
// appliance started, or no target is set), never zero.
import http from 'node:http'
import https from 'node:https'

export const STATUS_API = '/api/v1'

/** One per volume: what the metric tidemark_volume_state{state} names. */
export const VOLUME_STATES = ['normal', 'behind', 'resync', 'initial_copy', 'disconnected', 'no_space'] as const
export type VolumeState = (typeof VOLUME_STATES)[number]

export interface VolumeStatus {
  volume: string
  state: VolumeState
  agent: {
    /** the id the agent's hello named (not an identity: anyone may write any id) */
    id: string
    connected: boolean
    /** the caller's identity the appliance checked (certificate CN, uid:N; "" without one) */
    identity: string | null
    /** the agent's address, while connected */
    peer: string | null
    /** since when the current stream is attached */
    since: string | null
    /** the last message of any kind from the agent since the appliance started */
    lastHeard: string | null
  }
  rpo: {
    /** now minus the newest time before which every captured write is durable here */
    seconds: number | null
    /** that time */
    capturedBefore: string | null
    /** --rpo-target: the warning threshold, and the error threshold */
    targetSeconds: number | null
    errorSeconds: number | null
  }
  history: {
    /** how far back the journal reaches (its oldest point to now) */
    seconds: number
    since: string
    /** --history-target */
    targetSeconds: number | null
    /**
     * retention has given up the oldest history (the journal no longer reaches
     * back to the volume's creation): a history under its target is then
     * shrinking, not young
     */
    trimmed: boolean
  }
  journal: { bytes: number; segments: number; durableSeq: number }
  /** since the volume was created here: what the application wrote, what really changed, what crossed the wire */
  bytes: { app: number; changed: number; wire: number }
  /** the same over about the last 10 seconds */
  rates: { appBytesPerSecond: number; changedBytesPerSecond: number; wireBytesPerSecond: number }
  /** captured at the agent, not yet durable here (its last heartbeat) */
  backlogBytes: number | null
  timemarks: number
  lastTimeMark: { id: number; label: string; time: string; consistency: 'app' | 'crash' } | null
  /** a resync or the initial copy in progress */
  sync: {
    kind: 'initial_copy' | 'resync'
    remainingBytes: number | null
    /** 0..100 (the initial copy's regions), null for a resync */
    percent: number | null
    bytesPerSecond: number | null
  } | null
}

export interface VolumesReply {
  volumes: VolumeStatus[]
}

export interface StoreStatus {
  /** bytes the appliance's user may still write on the file system holding --data */
  freeBytes: number
  totalBytes: number
  /** every volume's journal together */
  journalBytes: number
  volumes: number
}

/** The alerts the appliance evaluates every second (appliance/alert-rules.ts says when each fires). */
export const ALERT_NAMES = [
  'RpoBreach',
  'ReplicationStale',
  'HistoryShrinking',
  'JournalNearLimit',
  'StoreNearlyFull',
  'Behind',
  'ResyncWithoutProgress',
  'AgentDisconnected',
  // the appliance's scheduled plan tests (appliance/plan-schedule.ts)
  'PlanTestFailed',
  'PlanTestOverdue',
] as const
export type AlertName = (typeof ALERT_NAMES)[number]
export type AlertSeverity = 'warning' | 'error'

/** One alert firing: one per name and volume, at its worst severity now. */
export interface Alert {
  name: AlertName
  severity: AlertSeverity
  /** null for the store's alerts and the plans' */
  volume: string | null
  /** the recovery plan, for PlanTestFailed and PlanTestOverdue */
  plan?: string
  /** when it started firing (a change of severity keeps it) */
  since: string
  /** what was measured, in the unit of `threshold` (seconds, bytes or percent: the summary says) */
  value: number
  /** the threshold of `severity` it crossed */
  threshold: number
  /** one line: what is wrong */
  summary: string
  /** what to do about it */
  action: string
}

export interface AlertsReply {
  alerts: Alert[]
}

/** An API answer that was not 200: the status and the server's one-line reason. */
export class StatusApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message)
  }
}

export interface FetchOptions {
  /** PEM contents for HTTPS with a client certificate */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer }
  timeoutMs?: number
}

/** GET base + path (base: http://HOST:PORT or https://HOST:PORT) and parse its JSON. */
export function getJson<T>(base: string, path: string, opts: FetchOptions = {}): Promise<T> {
  const url = new URL(path, base)
  const lib = url.protocol === 'https:' ? https : http
  return new Promise<T>((resolve, reject) => {
    const req = lib.get(url, { ...(opts.tls ?? {}), timeout: opts.timeoutMs ?? 10_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        if (res.statusCode !== 200) {
          let why = body.trim()
          try {
            why = (JSON.parse(body) as { error?: string }).error ?? why
          } catch {
            // not JSON: the text is the reason
          }
          return reject(new StatusApiError(res.statusCode ?? 0, `GET ${url.pathname}: ${res.statusCode} ${why}`))
        }
        try {
          resolve(JSON.parse(body) as T)
        } catch (err) {
          reject(new Error(`GET ${url.pathname}: the answer is not JSON: ${(err as Error).message}`))
        }
      })
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url.pathname}: no answer within ${opts.timeoutMs ?? 10_000} ms`)))
    req.on('error', reject)
  })
}

export function getVolumes(base: string, opts?: FetchOptions): Promise<VolumesReply> {
  return getJson<VolumesReply>(base, `${STATUS_API}/volumes`, opts)
}

export function getVolume(base: string, name: string, opts?: FetchOptions): Promise<VolumeStatus> {
  return getJson<VolumeStatus>(base, `${STATUS_API}/volumes/${encodeURIComponent(name)}`, opts)
}

export function getStore(base: string, opts?: FetchOptions): Promise<StoreStatus> {
  return getJson<StoreStatus>(base, `${STATUS_API}/store`, opts)
}

export function getAlerts(base: string, opts?: FetchOptions): Promise<AlertsReply> {
  return getJson<AlertsReply>(base, `${STATUS_API}/alerts`, opts)
}
