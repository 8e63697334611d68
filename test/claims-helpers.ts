// Helpers for the claims-*.test.ts files (the README's promises, each tested
// through real processes): running the `tidemark` CLI, reading `stats
// --json`, and waiting on an event (a stats value, a file, a port) instead of
// sleeping a fixed time.
import net from 'node:net'
import { BIN, run, sleep, type AgentProcess, type ApplianceProcess, type RunResult } from './helpers'

/** `tidemark ARGS...` as a user runs it. */
export function tidemark(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [BIN, ...args], { timeoutMs: opts.timeoutMs ?? 180_000, cwd: opts.cwd })
}

/** `tidemark ARGS... --json`, parsed; throws with stderr on a non-zero exit. */
export async function tidemarkJson<T = Record<string, unknown>>(args: string[], opts: { cwd?: string } = {}): Promise<T> {
  const r = await tidemark([...args, '--json'], opts)
  if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

export interface InexactWindow {
  start: number
  end: number
}

export interface VolumeStats {
  name: string
  durableSeq: number
  exactSeq: number
  oldestExactSeq: number
  fullSyncDone: boolean
  timemarks: number
  segments: number
  inexactWindows: InexactWindow[]
  corrupt: Array<{ segment: string; offset: number; afterSeq: number; bytes: number; message: string }>
  [k: string]: unknown
}

/** One volume's entry of `tidemark stats --volume NAME --json`. */
export async function volumeStats(address: string, volume: string): Promise<VolumeStats> {
  const s = await tidemarkJson<{ volumes: VolumeStats[] }>(['stats', '--appliance', address, '--volume', volume])
  return s.volumes[0]
}

/** Polls `what` (about every 100 ms) until it returns a value other than undefined/false. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 120_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined && v !== false) return v
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

/**
 * Once the agent holds nothing the appliance lacks: the seq of that point,
 * from the agent's stats lines (start it with --stats-interval 0.2) and the
 * appliance's durable seq. With the volume quiet, the protected file holds
 * exactly that point.
 */
export async function replicatedSeq(agent: AgentProcess, app: ApplianceProcess | string, volume: string): Promise<number> {
  const address = typeof app === 'string' ? app : app.address
  const seen = agent.logs().length
  return waitFor(`the appliance to catch up with the agent on ${volume}`, async () => {
    const line = agent.logs().slice(seen).reverse().find((l) => l.volume === volume && typeof l.lastSeq === 'number')
    if (!line || !((line.lastSeq as number) > 0) || (line.ackedSeq as number) < (line.lastSeq as number)) return undefined
    const seq = line.lastSeq as number
    return (await volumeStats(address, volume)).durableSeq >= seq ? seq : undefined
  })
}

/** Whether something accepts TCP connections on host:port. */
export function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, host)
    c.on('connect', () => {
      c.destroy()
      resolve(true)
    })
    c.on('error', () => resolve(false))
  })
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

/** The non-empty lines of a command's stderr (a refusal must be exactly one). */
export function oneLine(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '')
}
