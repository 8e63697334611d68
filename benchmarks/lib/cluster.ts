// The tidemark processes a benchmark runs, as the CLI runs them: an
// appliance on a free loopback port (its Stats read through the Admin RPC
// without a process per call) and agents whose periodic stats lines say
// when everything captured is durable. Shared by replication.ts and churn.ts.
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { statsJson } from '../../client/inspect-json'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import { adminProto, MAX_MESSAGE_BYTES } from '../../proto/load'
import { AGENT_NODE_FLAGS, APPLIANCE_NODE_FLAGS, BIN } from './env'
import { Proc, sleep, type Log } from './process'

export class Appliance extends Proc {
  address = ''
  private client: AdminClient | null = null

  static async start(data: string, extra: string[] = []): Promise<Appliance> {
    const a = new Appliance('appliance', process.execPath, [...APPLIANCE_NODE_FLAGS, BIN, 'appliance', '--data', data, '--listen', '127.0.0.1:0', '--stats-interval', '0', ...extra])
    const listening = /listening on [^\s]+:(\d+)/
    await a.waitFor(() => listening.test(a.err), 'listening', 30_000)
    a.address = `127.0.0.1:${listening.exec(a.err)![1]}`
    return a
  }

  /** What `tidemark stats --json` prints (the same Admin RPC, without a process per call). */
  stats(): Promise<{ volumes: Log[] }> {
    this.client ??= new adminProto.Admin(this.address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    }) as unknown as AdminClient
    const c = this.client
    return new Promise((resolve, reject) =>
      c.stats({ volume: '' }, { deadline: Date.now() + 30_000 }, (err, res) => (err ? reject(err) : resolve(statsJson(res!) as { volumes: Log[] })))
    )
  }

  async volume(name: string): Promise<Log> {
    const v = (await this.stats()).volumes.find((x) => x.name === name)
    if (!v) throw new Error(`the appliance has no volume ${name}`)
    return v
  }

  override async stop(): Promise<number | null> {
    this.client?.close()
    this.client = null
    return super.stop()
  }
}

export class Agent extends Proc {
  sock = ''
  volumes: string[] = []

  static async start(dir: string, tag: string, volumes: Record<string, string>, appliance: string, extra: string[] = []): Promise<Agent> {
    const sock = path.join(dir, `${tag}.sock`)
    const argv = ['agent', '--state', path.join(dir, `${tag}-state`), '--nbd', `unix:${sock}`, '--appliance', appliance, '--agent-id', tag]
    if (!extra.includes('--stats-interval')) argv.push('--stats-interval', '0.25')
    for (const [n, p] of Object.entries(volumes)) argv.push('--volume', `${n}=${p}`)
    argv.push(...extra)
    const a = new Agent(`agent ${tag}`, process.execPath, [...AGENT_NODE_FLAGS, BIN, ...argv])
    a.sock = sock
    a.volumes = Object.keys(volumes)
    await a.listening(sock, 30_000)
    return a
  }

  uri(volume: string): string {
    return `nbd+unix:///${volume}?socket=${this.sock}`
  }

  /** A 'stats' line logged at or after `since` (ms since the epoch) for the volume, satisfying pred. */
  statsLine(volume: string, since: number, pred: (l: Log) => boolean, what: string, timeoutMs = 300_000): Promise<Log> {
    return this.waitLog((l) => l.msg === 'stats' && l.volume === volume && l.time >= since && pred(l), `${what} (${volume})`, timeoutMs)
  }

  /** Waits until every captured change of every volume is durable at the appliance (and any initial copy complete). */
  async caughtUp(since = Date.now(), timeoutMs = 300_000): Promise<Log[]> {
    const out: Log[] = []
    for (const v of this.volumes) {
      out.push(
        await this.statsLine(
          v,
          since,
          // lastSeq is the seq high-water mark: after a restart it starts at the
          // leased value, above anything durable, until a write takes a seq.
          (l) =>
            l.connected === true &&
            l.mode === 'normal' &&
            l.windowBytes === 0 &&
            (l.durableSeq >= l.lastSeq || (l.records === 0 && l.resyncRecords === 0)) &&
            !(l.syncProgress && !l.syncProgress.complete),
          'caught up',
          timeoutMs
        )
      )
    }
    return out
  }

  finalStats(): Log[] {
    return this.logs().filter((l) => l.msg === 'final stats')
  }
}

export async function applianceHasFullCopy(app: Appliance, volumes: string[], timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const s = await app.stats()
    if (volumes.every((n) => s.volumes.find((v) => v.name === n)?.fullSyncDone === true)) return
    if (Date.now() > end) throw new Error(`the appliance did not record a complete initial copy of ${volumes.join(', ')} within ${timeoutMs / 1000} s`)
    await sleep(100)
  }
}
