// A recovery plan: which machines to boot from which protected volumes, in
// which order, on which networks, and how to tell each one is up. The file
// (YAML or JSON, read by the caller: cli/config-file.ts) is checked here
// against the schema and then for what a schema cannot say (a disk used by
// two machines, a network no one declared, two machines with one address).
// Every problem is one line naming the key's path (machines[1].boot) and,
// when the file can say, its line; all problems are reported at once, so one
// edit fixes a plan rather than one edit per run.
//
// Boot order is a number per machine, not a list of dependencies: machines
// with the same number start together, a group starts when every check of
// the group before it is green. A cycle cannot be written that way.
import path from 'node:path'
import { z } from 'zod'
import type { PointInTime } from '../../proto/generated/tidemark/v1/PointInTime'
import { isoTimeMs } from '../point'

/** What the plan file held, and where a key of it sits ("plan FILE, line N"). */
export interface PlanSource {
  file: string
  data: Record<string, unknown>
  at(keys: Array<string | number>): string
}

export interface PlanProblem {
  /** machines[1].boot; "" for the whole plan */
  path: string
  message: string
  /** "plan FILE, line 7" (or "plan FILE" when the line is not known) */
  where: string
}

/** One line: where, the key's path, why. */
export function problemLine(p: PlanProblem): string {
  return `${p.where}: ${p.path ? `${p.path}: ` : ''}${p.message}`
}

// Names become parts of view names, netns names and file names: keep them plain.
const NAME = /^[A-Za-z0-9_-]{1,24}$/
const name = (what: string) =>
  z.string({ required_error: `${what} is required`, invalid_type_error: `${what} must be a string` }).regex(NAME, `${what} must be 1 to 24 of A-Z a-z 0-9 _ -`)

/** "latest" | "mark=LABEL|ID" | "at=ISO-TIME" | "seq=N" as the appliance's point; null when it is none of them. */
export function parsePlanPoint(s: string): PointInTime | null {
  if (s === 'latest') return { latest: true }
  const m = /^(mark|at|seq)=(.+)$/.exec(s)
  if (!m) return null
  if (m[1] === 'mark') return { timemark: m[2] }
  if (m[1] === 'at') {
    const ms = isoTimeMs(m[2])
    return ms === null ? null : { atMs: ms }
  }
  return /^\d+$/.test(m[2]) && Number.isSafeInteger(Number(m[2])) ? { seq: Number(m[2]) } : null
}

/** "256M", "1G", "512" (MiB when there is no unit) as MiB. */
function memoryMiB(v: string | number): number | null {
  const m = /^(\d+)\s*([MG])?i?B?$/i.exec(String(v).trim())
  if (!m) return null
  return Number(m[1]) * ((m[2] ?? 'M').toUpperCase() === 'G' ? 1024 : 1)
}

/** "10.77.0.2/24" as its parts; null when it is not an IPv4 host address with a prefix length. */
export function parseCidr(s: string): { address: string; ip: number; prefix: number } | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s)
  if (!m) return null
  const octets = m.slice(1, 5).map(Number)
  const prefix = Number(m[5])
  if (octets.some((o) => o > 255) || prefix < 8 || prefix > 30) return null
  const ip = ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0
  const host = ip & (2 ** (32 - prefix) - 1)
  // the network's own address and its broadcast address are not a machine's
  if (host === 0 || host === 2 ** (32 - prefix) - 1) return null
  return { address: octets.join('.'), ip, prefix }
}

export function ipString(ip: number): string {
  return [24, 16, 8, 0].map((s) => (ip >>> s) & 255).join('.')
}

const check = z
  .object(
    {
      console: z.string({ invalid_type_error: 'must be a regular expression (a string)' }).optional(),
      command: z.string({ invalid_type_error: 'must be a shell command (a string)' }).min(1, 'must not be empty').optional(),
      timeout: z
        .number({ invalid_type_error: 'must be a number of seconds' })
        .positive('must be a number of seconds above 0')
        .max(3600, 'must be at most 3600 seconds')
        .default(120),
    },
    { invalid_type_error: 'must be a mapping: { console: REGEX | command: CMD, timeout: SECONDS }' }
  )
  .strict()
  .superRefine((c, ctx) => {
    if ((c.console === undefined) === (c.command === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of console: REGEX (the serial console matches) or command: CMD (exits 0 inside the plan network)' })
    }
    if (c.console !== undefined) {
      try {
        new RegExp(c.console)
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['console'], message: `is not a regular expression: ${(err as Error).message}` })
      }
    }
  })

const machine = z
  .object(
    {
      name: name('the machine name'),
      boot: z
        .number({ required_error: 'is required: the boot group (1 boots first)', invalid_type_error: 'must be a positive integer (the boot group: 1 boots first)' })
        .int('must be a positive integer (the boot group: 1 boots first)')
        .positive('must be a positive integer (the boot group: 1 boots first)'),
      cpus: z.number({ invalid_type_error: 'must be a whole number of CPUs' }).int('must be a whole number of CPUs').min(1, 'must be at least 1').max(64, 'must be at most 64').default(1),
      memory: z
        .union([z.string(), z.number()], { invalid_type_error: 'must be a size such as 256M or 1G' })
        .default('256M')
        .transform((v, ctx) => {
          const mib = memoryMiB(v)
          if (mib === null || mib < 16) {
            ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a size of at least 16M (examples: 256M, 1G)` })
            return z.NEVER
          }
          return mib
        }),
      disks: z
        .array(z.string({ invalid_type_error: 'must be a volume name' }).min(1, 'must be a volume name'), {
          required_error: 'is required: the tidemark volumes of the machine, boot disk first',
          invalid_type_error: 'must be a list of volume names',
        })
        .min(1, 'must name at least one volume'),
      // tcg by default: it works on every host. KVM is much faster where it works, but on some
      // hosts /dev/kvm exists and hangs guests (nested virtualization): kvm or auto is the operator's
      // choice (auto: qemu tries KVM and falls back to TCG when KVM cannot start).
      accel: z
        .enum(['tcg', 'kvm', 'auto'], { errorMap: () => ({ message: 'must be tcg, kvm or auto (KVM, else TCG)' }) })
        .default('tcg'),
      kernel: z.string({ invalid_type_error: 'must be a file path' }).min(1, 'must be a file path').optional(),
      initrd: z.string({ invalid_type_error: 'must be a file path' }).min(1, 'must be a file path').optional(),
      append: z.string({ invalid_type_error: 'must be a kernel command line (a string)' }).optional(),
      network: z
        .object(
          {
            name: z.string({ required_error: 'is required: a network of networks:', invalid_type_error: 'must be a network name' }),
            address: z.string({ required_error: 'is required: the address of the machine, e.g. 10.77.0.2/24', invalid_type_error: 'must be an address such as 10.77.0.2/24' }),
          },
          { invalid_type_error: 'must be a mapping: { name: NETWORK, address: A.B.C.D/PREFIX }' }
        )
        .strict()
        .optional(),
      check: check.optional(),
      // Where the machine's production disks are after a failback: the production agent's NBD
      // endpoint, its exports named after the volumes (plan failback writes there, production boots there).
      production: z
        .object(
          {
            nbd: z
              .string({ required_error: 'is required: unix:PATH or tcp:HOST:PORT, the production agent\'s NBD endpoint', invalid_type_error: 'must be unix:PATH or tcp:HOST:PORT' })
              .regex(/^(unix:.+|tcp:[^:]+:\d{1,5})$/, 'must be unix:PATH or tcp:HOST:PORT (the production agent\'s NBD endpoint)'),
            // the production agent's control socket: failback marks the point it wrote (a TimeMark on the recovery appliance)
            control: z.string({ invalid_type_error: 'must be unix:PATH' }).regex(/^unix:.+$/, 'must be unix:PATH (the production agent\'s --control)').optional(),
          },
          { invalid_type_error: 'must be a mapping: { nbd: unix:PATH | tcp:HOST:PORT, control: unix:PATH }' }
        )
        .strict()
        .optional(),
    },
    { invalid_type_error: 'must be a mapping of the machine settings (name, boot, disks, ...)' }
  )
  .strict()

const planSchema = z
  .object({
    name: name('the plan name'),
    point: z.string({ invalid_type_error: 'must be latest, mark=LABEL|ID, at=ISO-TIME or seq=N' }).default('latest'),
    machines: z
      .array(machine, { required_error: 'is required: the machines to boot', invalid_type_error: 'must be a list of machines' })
      .min(1, 'must list at least one machine'),
    networks: z
      .record(
        z
          .object(
            {
              test: z.literal('isolated', { errorMap: () => ({ message: "must be 'isolated' (a bridge in a network namespace with no route out)" }) }),
              failover: z.string({ invalid_type_error: 'must be a host bridge name' }).optional(),
            },
            { invalid_type_error: 'must be a mapping: { test: isolated, failover: BRIDGE }' }
          )
          .strict(),
        { invalid_type_error: 'must be a mapping of network names' }
      )
      .default({}),
    // Where the recovered volumes replicate once a failover is committed (reverse protection).
    reverse: z
      .object(
        {
          appliance: z.string({ required_error: 'is required: HOST:PORT or unix:PATH', invalid_type_error: 'must be HOST:PORT or unix:PATH' }),
          tlsCert: z.string({ invalid_type_error: 'must be a file path' }).optional(),
          tlsKey: z.string({ invalid_type_error: 'must be a file path' }).optional(),
          tlsCa: z.string({ invalid_type_error: 'must be a file path' }).optional(),
        },
        { invalid_type_error: 'must be a mapping: { appliance: HOST:PORT, tlsCert: F, tlsKey: F, tlsCa: F }' }
      )
      .strict()
      .superRefine((r, ctx) => {
        const n = [r.tlsCert, r.tlsKey, r.tlsCa].filter((x) => x !== undefined).length
        if (n !== 0 && n !== 3) ctx.addIssue({ code: 'custom', message: 'tlsCert, tlsKey and tlsCa go together: give all three or none' })
        if (n && r.appliance.startsWith('unix:')) ctx.addIssue({ code: 'custom', path: ['appliance'], message: 'a unix:PATH appliance takes no TLS files (it knows the agent by its uid)' })
      })
      .optional(),
  })
  .strict()

export type Plan = z.output<typeof planSchema>
export type PlanMachine = Plan['machines'][number]

function pathString(p: Array<string | number>): string {
  let s = ''
  for (const k of p) s += typeof k === 'number' ? `[${k}]` : s ? `.${k}` : k
  return s
}

/** The plan as checked, or every problem found; the line of each comes from the source. */
export function checkPlan(src: PlanSource): { plan: Plan; problems: [] } | { plan: null; problems: PlanProblem[] } {
  const problems: PlanProblem[] = []
  const add = (keys: Array<string | number>, message: string): void => {
    problems.push({ path: pathString(keys), message, where: src.at(keys) })
  }
  const r = planSchema.safeParse(src.data)
  if (!r.success) {
    for (const issue of r.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const k of issue.keys) add([...issue.path, k], 'is not a setting of a plan here (a typo?)')
      } else if (issue.code === 'invalid_type' && issue.received === 'undefined') {
        add(issue.path, issue.message === 'Required' ? 'is required' : issue.message)
      } else {
        add(issue.path, issue.message)
      }
    }
    // zod reports unknown keys after the other problems of their object: the file's order reads better.
    const line = (x: PlanProblem): number => Number(/, line (\d+)$/.exec(x.where)?.[1] ?? Infinity)
    return { plan: null, problems: problems.map((x, i) => [x, i] as const).sort((a, b) => line(a[0]) - line(b[0]) || a[1] - b[1]).map(([x]) => x) }
  }
  const plan = r.data

  if (parsePlanPoint(plan.point) === null) add(['point'], `'${plan.point}' is not a point: latest, mark=LABEL|ID, at=ISO-TIME (2026-11-23T14:05:00Z) or seq=N`)
  const machines = new Map<string, number>()
  const disks = new Map<string, string>()
  const addresses = new Map<string, string>()
  const subnets = new Map<string, { net: number; prefix: number; first: string }>()
  for (const [i, m] of plan.machines.entries()) {
    const first = machines.get(m.name)
    if (first !== undefined) add(['machines', i, 'name'], `machine ${m.name} is named twice (machines[${first}] too)`)
    else machines.set(m.name, i)
    for (const [j, d] of m.disks.entries()) {
      const user = disks.get(d)
      if (user) add(['machines', i, 'disks', j], `volume ${d} is a disk of ${user} already: a volume can be one machine's disk only`)
      else disks.set(d, `machines[${i}] (${m.name})`)
      const view = testViewName(plan.name, m.name, d, 'x'.repeat(RUN_ID_CHARS))
      if (!/^[A-Za-z0-9._-]+$/.test(d)) add(['machines', i, 'disks', j], `'${d}' is not a volume name (A-Z a-z 0-9 . _ -)`)
      else if (view.length > 64) {
        add(['machines', i, 'disks', j], `the test view of this disk would be named with ${view.length} characters (${view}), over the appliance's 64: shorten the plan, machine or volume name`)
      }
    }
    if (!m.kernel && (m.initrd !== undefined || m.append !== undefined)) {
      add(['machines', i, m.initrd !== undefined ? 'initrd' : 'append'], 'needs kernel: initrd and append are for a direct kernel boot')
    }
    if (m.network) {
      if (!Object.hasOwn(plan.networks, m.network.name)) {
        const known = Object.keys(plan.networks)
        add(['machines', i, 'network', 'name'], `network ${m.network.name} is not declared under networks: (${known.length ? `declared: ${known.join(', ')}` : 'none are'})`)
      }
      const a = parseCidr(m.network.address)
      if (!a) {
        add(['machines', i, 'network', 'address'], `'${m.network.address}' is not an IPv4 host address with a prefix length from /8 to /30, such as 10.77.0.2/24`)
      } else {
        const other = addresses.get(`${m.network.name} ${a.address}`)
        if (other) add(['machines', i, 'network', 'address'], `${a.address} is the address of ${other} already`)
        addresses.set(`${m.network.name} ${a.address}`, `machines[${i}] (${m.name})`)
        const net = (a.ip & ~(2 ** (32 - a.prefix) - 1)) >>> 0
        const s = subnets.get(m.network.name)
        if (!s) subnets.set(m.network.name, { net, prefix: a.prefix, first: `machines[${i}]` })
        else if (s.net !== net || s.prefix !== a.prefix) {
          add(['machines', i, 'network', 'address'], `${m.network.address} is not in network ${m.network.name}'s subnet ${ipString(s.net)}/${s.prefix} (from ${s.first})`)
        }
      }
    }
  }
  if (problems.length) return { plan: null, problems }
  // The reverse appliance's TLS files, like kernel and initrd, are relative to the plan file: made absolute
  // here, once, for every command that reads the plan (commit and failback run from anywhere).
  const rev = plan.reverse
  if (rev) for (const key of REVERSE_TLS_KEYS) if (rev[key] !== undefined) rev[key] = path.resolve(path.dirname(path.resolve(src.file)), rev[key])
  return { plan, problems: [] }
}

/** The reverse appliance's TLS files in a plan: reverse.tlsCert, tlsKey, tlsCa. */
export const REVERSE_TLS_KEYS = ['tlsCert', 'tlsKey', 'tlsCa'] as const

/** Hex digits of a run's id, in the names of what the run creates. */
export const RUN_ID_CHARS = 6

/** plan-NAME-test-MACHINE-DISK-RUNID: the appliance view a test run boots a disk from. */
export function testViewName(plan: string, machine: string, disk: string, runId: string): string {
  return `plan-${plan}-test-${machine}-${disk}-${runId}`
}

/** The machines in boot groups, the first group first. */
export function bootGroups(plan: Plan): Array<{ boot: number; machines: PlanMachine[] }> {
  const groups = new Map<number, PlanMachine[]>()
  for (const m of plan.machines) groups.set(m.boot, [...(groups.get(m.boot) ?? []), m])
  return [...groups.entries()].sort((a, b) => a[0] - b[0]).map(([boot, machines]) => ({ boot, machines }))
}
