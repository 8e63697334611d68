// tidemark plan validate | test: recovery plans (client/plans/). validate
// checks a plan file and then the appliance and host it would run on; test
// runs it as an isolated test failover of real VMs and tears it down.
// audit reads the appliance's trail of plan actions (plan-audit-command.ts);
// failover, commit, rollback, failback and status are plan-failover-command.ts.
import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import { checkPlan, parsePlanPoint, problemLine, type Plan, type PlanProblem, type PlanSource } from '../client/plans/plan'
import { resolvePlan, type ResolvedPlan } from '../client/plans/resolve'
import { runPlanTest, type PlanRunReport } from '../client/plans/runner'
import { TidemarkError } from '../proto/errors'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { PointInTime } from '../proto/generated/tidemark/v1/PointInTime'
import { usage } from './args'
import { adminFromFlags, clientOptions, helpOption, pointOptions, tlsFiles } from './common-options'
import { readConfigFile } from './config-file'
import { command, flag, helpText, parseCommand, text, type Command, type Options } from './definition'

// The point flags override the plan's point, so none of them is required here.
const { oneOf: _required, ...timemarkOption } = pointOptions.timemark
export const overridePoint = { ...pointOptions, timemark: timemarkOption }

export const common = {
  ...helpOption,
  plan: text({ label: '--plan FILE', help: 'the plan: YAML or JSON (see README, "Recovery plans")', required: '--plan FILE is required', value: z.string() }),
  ...overridePoint,
  json: flag({ label: '--json', help: 'the result as one JSON object on stdout' }),
  ...clientOptions,
}

export const POINT_HELP = `The point is the plan's (point: latest | mark=LABEL|ID | at=ISO-TIME | seq=N),
or one of these instead:`

export const PLAN_VALIDATE = command({
  name: 'plan validate',
  requiredFirst: true,
  options: common,
  help: (rows) => `Usage:
  tidemark plan validate --appliance HOST:PORT --plan FILE [--timemark ID|LABEL | --at ISO-TIME | --seq N|latest]
                         [--json] [--tls-cert F --tls-key F --tls-ca F]

Checks the plan file (one line per problem: the key's path, why, and its line),
then against the appliance: every volume exists, the point resolves for every
disk, volumes of one consistency group resolve to one seq, the point is within
retention, the appliance serves NBD; and on this host: kernel and initrd files
exist (relative to the plan file). Exits 1 when anything is wrong.
${POINT_HELP}
${rows(23, 'timemark', 'at', 'seq')}
${rows(23, 'plan', 'json')}
`,
})

export const PLAN_TEST = command({
  name: 'plan test',
  requiredFirst: true,
  options: {
    ...common,
    keep: flag({ label: '--keep', help: 'leave the VMs, the network namespace and the views in place\n(and print how to remove them)' }),
  },
  help: (rows) => `Usage:
  tidemark plan test --appliance HOST:PORT --plan FILE [--timemark ID|LABEL | --at ISO-TIME | --seq N|latest]
                     [--keep] [--json] [--tls-cert F --tls-key F --tls-ca F]

An isolated test failover: validates the plan (as plan validate), makes a
writable copy-on-write view of every disk at the point (the journal and
replication are untouched), creates a network namespace with a bridge per plan
network and no route out, and boots the machines in boot order under
qemu-system-x86_64 -accel tcg, their disks over the appliance's NBD (where
it requires TLS, with this command's --tls-* certificate). A boot group
starts when every check of the one before is green. Reports each
machine's boot seconds and check (the console's tail when it failed) and the
plan's RTO: start to every check green. Then everything is torn down.
Exits 1 when a check fails. Needs root (network namespaces, tap devices).
${POINT_HELP}
${rows(23, 'timemark', 'at', 'seq')}
${rows(23, 'plan', 'keep', 'json')}
`,
})

const FAILOVER_ACTIONS = ['failover', 'commit', 'rollback', 'failback', 'status', 'watch']

const HELP = `Usage: tidemark plan validate|test|failover --appliance HOST:PORT --plan FILE ...   (tidemark plan ACTION --help)
       tidemark plan commit|rollback --plan FILE [--state DIR]
       tidemark plan failback --appliance HOST:PORT --plan FILE [--state DIR]
       tidemark plan status [--state DIR]
       tidemark plan audit --appliance HOST:PORT [--verify] [--json]

Recovery plans: the machines to boot from protected volumes, in which order,
on which isolated networks, and how to tell each one is up.
  validate   check a plan file, and the appliance and host it would run on
  test       an isolated test failover of the plan's real VMs, torn down after
  failover   the real thing, for when production is gone: the plan's VMs on
             recovered disks at this site, on the failover network
  commit     keep a failover: its volumes replicate to the reverse appliance
  rollback   discard a failover that was not committed: everything as before
  failback   bring production back to a final point of the recovery site
  status     the failed-over plans here: phase, deadline, agent, VMs
  watch      (started by plan failover --at-deadline): acts at the deadline
  audit      the appliance's trail of plan actions (--verify: its hash chain)
`

/** The plan file as a PlanSource: read, parsed, lines for errors said of "plan FILE". */
export function readPlan(file: string, cmd: string): PlanSource {
  try {
    const c = readConfigFile(file)
    return { file, data: c.data, at: (keys) => c.at(keys).replace(/^config /, 'plan ') }
  } catch (err) {
    // "config FILE: YAML syntax error at line 3, ...": the file is a plan here.
    throw new TidemarkError('BAD_PLAN', `tidemark ${cmd}: ${(err as Error).message.replace(/^(cannot read )?config /, (_m, r: string | undefined) => `${r ?? ''}plan `)}`)
  }
}

export interface Checked {
  plan: Plan | null
  resolved: ResolvedPlan | null
  problems: PlanProblem[]
}

/** The schema, then the appliance and host; every problem found, at once. */
export async function validate(client: AdminClient, src: PlanSource, override: { point: PointInTime; from: string } | null, clientTls: boolean): Promise<Checked> {
  const c = checkPlan(src)
  if (!c.plan) return { plan: null, resolved: null, problems: c.problems }
  const point = override?.point ?? parsePlanPoint(c.plan.point)!
  const r = await resolvePlan(client, c.plan, src, point, override?.from ?? null, clientTls)
  return { plan: c.plan, resolved: r.resolved, problems: r.problems }
}

export function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => {
    try {
      fs.accessSync(path.join(d, cmd), fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/** The flag a point came from, for messages: "--timemark nightly", "--seq 12". */
export function pointFlag(p: PointInTime): string {
  if (p.timemark !== undefined) return `--timemark ${p.timemark}`
  if (p.atMs !== undefined) return `--at ${new Date(Number(p.atMs)).toISOString()}`
  return `--seq ${p.latest ? 'latest' : p.seq}`
}

function humanReport(r: PlanRunReport): string {
  const out = [`plan ${r.plan}: test ${r.result}${r.rtoSeconds !== null ? `: RTO ${r.rtoSeconds} s` : r.error ? `: ${r.error}` : ''}`, `  point: ${r.point}`]
  for (const m of r.machines) {
    const result = m.check.result === 'green' && m.bootSeconds !== null ? `green after ${m.bootSeconds} s` : m.check.result
    out.push(`  ${m.name} (boot ${m.boot}): ${result}${m.check.detail ? `: ${m.check.detail}` : ''}`)
    if (m.consoleTail !== undefined) out.push('    console tail:', ...(m.consoleTail ? m.consoleTail.split('\n').map((l) => `    | ${l}`) : ['    (the console was empty)']))
  }
  if (r.kept) {
    out.push('  kept (--keep):')
    for (const v of r.kept.vms) out.push(`    VM ${v.machine}: pid ${v.pid}, console ${v.console}`)
    if (r.kept.netns) out.push(`    network namespace ${r.kept.netns}`)
    for (const v of r.kept.views) out.push(`    view ${v}`)
    if (r.kept.note) out.push(`    note: ${r.kept.note}`)
    out.push('  remove them with:', ...r.kept.remove.map((c) => `    ${c}`))
  } else {
    const n = r.machines.filter((m) => m.pid !== null).length
    out.push(`  torn down: ${n} VM${n === 1 ? '' : 's'} stopped, namespace ${r.netns} deleted, views deleted`)
    for (const p of r.teardownProblems) out.push(`  teardown problem: ${p}`)
  }
  if (r.audit && 'seq' in r.audit) out.push(`  recorded in the appliance's audit trail: entry ${r.audit.seq}, by ${r.audit.who}`)
  return `${out.join('\n')}\n`
}

export async function runPlan(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  if (!action || action === '--help' || action === '-h') {
    process.stdout.write(HELP)
    return action ? 0 : 2
  }
  if (action === 'audit') return (await import('./plan-audit-command')).runPlanAudit(rest)
  if (FAILOVER_ACTIONS.includes(action)) return (await import('./plan-failover-command')).runPlanFailoverAction(action, rest)
  if (action !== 'validate' && action !== 'test') throw usage('plan', `unknown action '${action}' (validate, test, failover, commit, rollback, failback, status or audit)`)
  const def = (action === 'validate' ? PLAN_VALIDATE : PLAN_TEST) as unknown as Command<typeof PLAN_TEST.options & Options>
  const p = parseCommand(def, rest)
  if (p.help) {
    process.stdout.write(helpText(def))
    return 0
  }
  const a = p.values
  const flags = (['timemark', 'at', 'seq'] as const).filter((k) => a[k] !== undefined)
  if (flags.length > 1) throw usage(def.name, `give one point, not ${flags.map((f) => `--${f}`).join(' and ')}`)
  const override = flags.length ? { point: a[flags[0]] as PointInTime, from: pointFlag(a[flags[0]] as PointInTime) } : null
  if (action === 'test') {
    for (const tool of ['qemu-system-x86_64', 'ip']) {
      if (!onPath(tool)) throw new TidemarkError('MISSING_TOOL', `tidemark plan test: ${tool} is not installed (apt-get install ${tool === 'ip' ? 'iproute2' : 'qemu-system-x86'})`)
    }
  }
  const src = readPlan(a.plan!, def.name)
  const client = adminFromFlags(a, def.name)
  // (the VMs read their disks with this certificate when the appliance's NBD requires TLS)
  const tls = tlsFiles(a, def.name)
  try {
    const checked = await validate(client, src, override, tls !== undefined)
    if (checked.problems.length) {
      if (a.json) process.stdout.write(`${JSON.stringify({ plan: checked.plan?.name ?? null, valid: false, problems: checked.problems.map((x) => ({ ...x, line: problemLine(x) })) })}\n`)
      for (const x of checked.problems) process.stderr.write(`tidemark ${def.name}: ${problemLine(x)}\n`)
      return 1
    }
    const plan = checked.plan!
    const resolved = checked.resolved!
    if (action === 'validate') {
      if (a.json) {
        process.stdout.write(`${JSON.stringify({ plan: plan.name, valid: true, problems: [], disks: resolved.disks })}\n`)
      } else {
        const seqs = [...new Set(resolved.disks.map((d) => d.seq))]
        process.stdout.write(
          `plan ${plan.name}: valid: ${plan.machines.length} machine${plan.machines.length === 1 ? '' : 's'}, ${resolved.disks.length} disk${resolved.disks.length === 1 ? '' : 's'} at ${seqs.length === 1 ? 'seq' : 'seqs'} ${seqs.join(', ')}\n` +
            resolved.disks.map((d) => `  ${d.machine}: ${d.volume} at ${d.point}${d.group ? ` (group ${d.group})` : ''}\n`).join('')
        )
      }
      return 0
    }

    // An interrupted test still tears down: the signal ends the waits, not the process.
    const abort = new AbortController()
    const stop = (): void => abort.abort()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    let report: PlanRunReport
    try {
      const tty = process.stderr.isTTY
      report = await runPlanTest({
        client,
        appliance: a.appliance!.unix ? `unix:${a.appliance!.unix}` : `${a.appliance!.host}:${a.appliance!.port}`,
        plan,
        resolved,
        keep: a.keep === true,
        json: a.json === true,
        progress: (line) => {
          if (tty) process.stderr.write(`${line}\n`)
        },
        signal: abort.signal,
        // (with TLS the appliance is reached over TCP: --appliance unix:PATH takes no certificate)
        tls: tls && { ...tls, hostname: a.appliance!.host },
      })
    } finally {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
    }
    if (!a.json) process.stdout.write(humanReport(report))
    if (report.result !== 'passed') process.stderr.write(`tidemark plan test: plan ${plan.name} failed: ${report.error ?? 'a check failed'}\n`)
    return report.result === 'passed' ? 0 : 1
  } finally {
    client.close()
  }
}
