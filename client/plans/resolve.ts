// A checked plan against the world it will run in: the appliance (every
// volume exists, the point resolves for every disk, volumes of one
// consistency group land on one seq, the appliance serves NBD) and this host
// (kernel and initrd files exist). Everything found wrong is one line each,
// like the schema's problems, so `plan validate` reports all of it at once.
//
// Consistency groups: the volumes of a group share one seq space, so one seq
// is one instant for all of them. A TimeMark or a seq names the same seq in
// each; latest and at=TIME are answered per volume, from that volume's own
// records, and a volume that saw no write lately answers lower:
// - at=TIME: the group's instant at TIME is the highest answer (no volume of
//   the group wrote between a lower answer and it: that seq was handed out
//   before TIME). The lowest answer would drop the writes the other volumes
//   made before TIME.
// - but a volume can be read only up to its newest exact seq (its stream is
//   its own; a seq past it may still be on the way), so the group's seq is at
//   most the lowest of those; latest is exactly that.
// The plan's disks of one group then all go to that seq, each checked there.
import fs from 'node:fs'
import path from 'node:path'
import type { AdminClient } from '../../proto/generated/tidemark/v1/Admin'
import type { PointInTime } from '../../proto/generated/tidemark/v1/PointInTime'
import type { ResolveReply__Output } from '../../proto/generated/tidemark/v1/ResolveReply'
import type { ServerInfoReply__Output } from '../../proto/generated/tidemark/v1/ServerInfoReply'
import type { StatsReply__Output } from '../../proto/generated/tidemark/v1/StatsReply'
import type { StatsRequest } from '../../proto/generated/tidemark/v1/StatsRequest'
import { fromStatus } from '../../proto/status'
import { unary } from '../admin-client'
import { describePoint } from '../point'
import { REVERSE_TLS_KEYS, type Plan, type PlanProblem, type PlanSource } from './plan'

export interface ResolvedDisk {
  machine: string
  volume: string
  /** the seq every view of this disk is made at */
  seq: number
  size: number
  /** consistency group ("" when none) */
  group: string
  /** what the point named, said for a person */
  point: string
}

export interface ResolvedPlan {
  disks: ResolvedDisk[]
  /** the appliance's NBD endpoints the views are served on; tls: they require STARTTLS with a client certificate */
  nbd: { unix: string; tcp: string; tls: boolean }
  /** kernel and initrd paths, made absolute (relative ones are relative to the plan file) */
  files: Map<string, { kernel?: string; initrd?: string }>
}

/** The appliance's message without the "CODE: " gRPC carries it with. */
function reason(err: unknown): string {
  // (grpc-js ends a refused connection's message with an empty "Resolution note:")
  return fromStatus(err).message.replace(/^[A-Z][A-Z0-9_]*: /, '').replace(/\s*Resolution note:\s*$/, '')
}

function resolve(client: AdminClient, volume: string, point: PointInTime): Promise<ResolveReply__Output> {
  return unary<{ volume: string; point: PointInTime }, ResolveReply__Output>(client.resolve.bind(client), { volume, point })
}

/**
 * Checks the plan against the appliance and the files it names; `point` is
 * the point to use (the plan's, or the command line's), `pointKey` where a
 * problem with it is blamed (['point'] for the plan's, null for a flag's).
 */
export async function resolvePlan(
  client: AdminClient,
  plan: Plan,
  src: PlanSource,
  point: PointInTime,
  pointFrom: string | null,
  /** whether the command was given a certificate (--tls-*) its VMs can show the appliance's NBD; undefined: not asked */
  clientTls?: boolean
): Promise<{ resolved: ResolvedPlan; problems: PlanProblem[] }> {
  const problems: PlanProblem[] = []
  const add = (keys: Array<string | number>, pathText: string, message: string): void => {
    problems.push({ path: pathText, message, where: keys.length ? src.at(keys) : `plan ${src.file}` })
  }
  const files = new Map<string, { kernel?: string; initrd?: string }>()
  const base = path.dirname(path.resolve(src.file))
  for (const [i, m] of plan.machines.entries()) {
    const f: { kernel?: string; initrd?: string } = {}
    for (const key of ['kernel', 'initrd'] as const) {
      const given = m[key]
      if (given === undefined) continue
      const file = path.resolve(base, given)
      try {
        if (!fs.statSync(file).isFile()) throw new Error('not a regular file')
        fs.accessSync(file, fs.constants.R_OK)
        f[key] = file
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'not readable' : e.message
        add(['machines', i, key], `machines[${i}].${key}`, `${file}: ${why}`)
      }
    }
    files.set(m.name, f)
    if (m.accel === 'kvm') {
      try {
        fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK)
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        add(['machines', i, 'accel'], `machines[${i}].accel`, `kvm: /dev/kvm ${e.code === 'ENOENT' ? 'does not exist here' : `cannot be opened for reading and writing (${e.code})`}: use tcg, or auto (KVM when it starts, else TCG)`)
      }
    }
  }
  // The reverse appliance's TLS files (checkPlan made them absolute, relative to the plan file): commit reads them.
  for (const key of REVERSE_TLS_KEYS) {
    const file = plan.reverse?.[key]
    if (file === undefined) continue
    try {
      if (!fs.statSync(file).isFile()) throw new Error('not a regular file')
      fs.accessSync(file, fs.constants.R_OK)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'not readable' : e.message
      add(['reverse', key], `reverse.${key}`, `${file}: ${why}`)
    }
  }

  let nbd = { unix: '', tcp: '', tls: false }
  try {
    const info = await unary<{ volume: string }, ServerInfoReply__Output>(client.serverInfo.bind(client), { volume: '' })
    nbd = { unix: info.nbdUnix, tcp: info.nbdTcp, tls: info.nbdTls }
    if (!nbd.unix && !nbd.tcp) add([], '', 'the appliance serves no NBD: start it with --nbd unix:PATH or --nbd tcp:HOST:PORT, the VMs read their disks there')
    else if (nbd.tls && clientTls === false) {
      add([], '', "the appliance's NBD requires TLS and the VMs read their disks there with this command's certificate: reach the appliance over TCP with --tls-cert, --tls-key and --tls-ca")
    }
  } catch (err) {
    // Nothing else can be asked of an appliance that does not answer: one line, not one per disk.
    add([], '', `the appliance did not answer: ${reason(err)}`)
    return { resolved: { disks: [], nbd, files }, problems }
  }

  let stats: StatsReply__Output
  try {
    stats = await unary<StatsRequest, StatsReply__Output>(client.stats.bind(client), { volume: '' })
  } catch (err) {
    add([], '', `the appliance did not list its volumes: ${reason(err)}`)
    return { resolved: { disks: [], nbd, files }, problems }
  }
  const known = new Map(stats.volumes.map((v) => [v.name, v]))

  const disks: ResolvedDisk[] = []
  const keysOf = new Map<ResolvedDisk, Array<string | number>>()
  const blamePoint = (i: number, j: number): { keys: Array<string | number>; text: string } =>
    pointFrom === null ? { keys: ['point'], text: `machines[${i}].disks[${j}]` } : { keys: ['machines', i, 'disks', j], text: `machines[${i}].disks[${j}]` }
  for (const [i, m] of plan.machines.entries()) {
    for (const [j, volume] of m.disks.entries()) {
      const v = known.get(volume)
      if (!v) {
        add(['machines', i, 'disks', j], `machines[${i}].disks[${j}]`, `volume ${volume} is not on this appliance (it has ${known.size ? [...known.keys()].join(', ') : 'none'})`)
        continue
      }
      try {
        const r = await resolve(client, volume, point)
        const d: ResolvedDisk = { machine: m.name, volume, seq: r.seq, size: r.volumeSize, group: v.group, point: describePoint(r) }
        disks.push(d)
        keysOf.set(d, ['machines', i, 'disks', j])
      } catch (err) {
        const b = blamePoint(i, j)
        add(b.keys, b.text, `volume ${volume} at ${pointFrom ?? 'the plan\'s point'}: ${reason(err)}`)
      }
    }
  }

  // One seq per consistency group.
  const groups = new Map<string, ResolvedDisk[]>()
  for (const d of disks) if (d.group) groups.set(d.group, [...(groups.get(d.group) ?? []), d])
  for (const [group, members] of groups) {
    const seqs = new Set(members.map((d) => d.seq))
    if (seqs.size === 1) continue
    const exact = point.timemark !== undefined || point.seq !== undefined
    if (exact) {
      const keys = keysOf.get(members[0])!
      add(keys, `machines[${keys[1]}].disks[${keys[3]}]`, `consistency group ${group}: the point names different seqs (${members.map((d) => `${d.volume} ${d.seq}`).join(', ')}): the group's volumes must share one seq space`)
      continue
    }
    // latest answered each volume's newest exact seq; at=TIME answered at most that.
    const readable = Math.min(...members.map((d) => (point.atMs !== undefined ? (known.get(d.volume)?.exactSeq ?? d.seq) : d.seq)))
    const seq = point.atMs !== undefined ? Math.min(Math.max(...seqs), readable) : readable
    for (const d of members) {
      if (d.seq === seq) continue
      try {
        const r = await resolve(client, d.volume, { seq })
        d.seq = r.seq
        d.point = `${describePoint(r)}, the instant every volume of group ${group} has`
      } catch (err) {
        const keys = keysOf.get(d)!
        add(keys, `machines[${keys[1]}].disks[${keys[3]}]`, `consistency group ${group}: volume ${d.volume} cannot be read at seq ${seq}, where its group's other volumes are: ${reason(err)}`)
      }
    }
  }
  return { resolved: { disks, nbd, files }, problems }
}
