// Reverse protection without a full copy (plan commit): before the failover
// agent starts replicating to the reverse appliance B, B is asked to seed
// each recovered volume from the old production disk (Admin.SeedVolume),
// which sits at the production site next to B and still holds the point the
// failover restored (plus whatever production wrote after it). The agent
// then continues the seed's generation (agent --seeded) and its initial
// copy sends only the sectors whose fingerprints differ from it: what the
// recovery VMs wrote, not the whole disk, crosses the WAN.
//
// The source is the machine's production.nbd (the production agent's NBD
// endpoint, exports named after the volumes) as B sees it: B connects to it
// itself, so a unix:PATH must be a socket on B's host and a tcp:HOST:PORT an
// address B can reach. A volume whose machine names no production endpoint,
// or whose source B cannot read (production really gone), is not seeded: the
// agent copies it whole, as before. Each volume's outcome is in the commit's
// report.
//
// STATE/PLAN/reverse-seed.json remembers the generation of every volume B
// seeded (replaced atomically): a commit retried after a failed agent
// restart must announce the generation B holds, not a new one (which B
// would refuse until an admin accepted it).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { fromStatus } from '../../proto/status'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import type { SeedVolumeReply__Output } from '../../proto/generated/tidemark/v1/SeedVolumeReply'
import type { StatsReply__Output } from '../../proto/generated/tidemark/v1/StatsReply'
import { writeFileAtomic } from '../../native/atomic-file'
import { unary } from '../admin-client'
import type { FailoverState, RunPaths } from './failover-state'
import type { Plan } from './plan'

/** A seed reads the whole disk: as long as that takes, within reason. */
const SEED_DEADLINE_MS = 6 * 3600_000

export interface SeedOutcome {
  volume: string
  seeded: boolean
  /** the NBD URI B read (null: the machine names no production endpoint) */
  source: string | null
  /** the generation B holds the seed under, which the agent continues */
  generation: string | null
  /** seeded by an earlier attempt of this commit */
  reused?: boolean
  /** bytes of the production disk that were not zero */
  dataBytes?: number
  seconds?: number
  /** why the volume is copied whole */
  why?: string
}

/** The NBD URI of `volume` on a production agent's endpoint (unix:PATH, tcp:HOST:PORT). */
export function productionUri(endpoint: string, volume: string): string {
  if (endpoint.startsWith('unix:')) return `nbd+unix:///${encodeURIComponent(volume)}?socket=${path.resolve(endpoint.slice(5))}`
  return `nbd://${endpoint.slice(4)}/${encodeURIComponent(volume)}`
}

function seedFile(p: RunPaths): string {
  return path.join(p.dir, 'reverse-seed.json')
}

/** What an earlier attempt seeded on this reverse appliance, by volume. */
function readSeeded(p: RunPaths, appliance: string): Record<string, string> {
  try {
    const j = JSON.parse(fs.readFileSync(seedFile(p), 'utf8')) as { appliance: string; generations: Record<string, string> }
    return j.appliance === appliance ? j.generations : {}
  } catch {
    return {}
  }
}

/**
 * Asks B to seed every disk of the run whose machine names a production
 * endpoint; returns each volume's outcome. Never throws for one volume: a
 * volume not seeded is copied whole.
 */
export async function seedReverse(
  b: AdminClient,
  appliance: string,
  plan: Plan,
  s: FailoverState,
  p: RunPaths,
  progress: (line: string) => void
): Promise<SeedOutcome[]> {
  const done = readSeeded(p, appliance)
  const out: SeedOutcome[] = []
  for (const d of s.disks) {
    const endpoint = plan.machines.find((m) => m.name === d.machine)?.production?.nbd
    if (!endpoint) {
      out.push({ volume: d.volume, seeded: false, source: null, generation: null, why: `machine ${d.machine} names no production NBD endpoint (production: { nbd: ... })` })
      continue
    }
    const source = productionUri(endpoint, d.volume)
    if (done[d.volume]) {
      out.push({ volume: d.volume, seeded: true, source, generation: done[d.volume], reused: true })
      continue
    }
    const generation = crypto.randomUUID()
    progress(`plan ${s.plan}: ${appliance} seeds volume ${d.volume} from the old production disk (${source})`)
    try {
      const r = await new Promise<SeedVolumeReply__Output>((resolve, reject) =>
        b.seedVolume(
          { volume: d.volume, generation, source, size: fs.statSync(p.disk(d.volume)).size },
          { deadline: Date.now() + SEED_DEADLINE_MS },
          (err: grpc.ServiceError | null, res?: SeedVolumeReply__Output) => (err ? reject(err) : resolve(res!))
        )
      )
      done[d.volume] = generation
      await writeFileAtomic(seedFile(p), `${JSON.stringify({ appliance, generations: done })}\n`, 0o600)
      out.push({ volume: d.volume, seeded: true, source, generation, dataBytes: r.dataBytes, seconds: r.seconds })
    } catch (err) {
      const why = fromStatus(err).message
      progress(`plan ${s.plan}: volume ${d.volume} is not seeded (${why}): it is copied whole`)
      out.push({ volume: d.volume, seeded: false, source, generation: null, why })
    }
  }
  return out
}

/** Per volume, the sectors B has taken from the agent (its changed bytes / 512) and the bytes that crossed the wire. */
export async function reverseSent(b: AdminClient, volumes: string[]): Promise<Record<string, { sectors: number; wireBytes: number } | null>> {
  const out: Record<string, { sectors: number; wireBytes: number } | null> = {}
  for (const v of volumes) {
    try {
      const r = await unary<{ volume: string }, StatsReply__Output>(b.stats.bind(b), { volume: v })
      const st = r.volumes.find((x) => x.name === v || x.volume === v)
      out[v] = st ? { sectors: Number(st.changedBytes) / 512, wireBytes: Number(st.wireBytes) } : null
    } catch {
      out[v] = null
    }
  }
  return out
}
