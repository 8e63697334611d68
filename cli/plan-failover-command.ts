// tidemark plan failover | commit | rollback | failback | status | watch: a
// plan's real failover and its way back (client/plans/failover.ts, commit.ts,
// rollback.ts, failback-plan.ts, status.ts, deadline-watcher.ts). The run's
// state lives in --state DIR (failover-state.ts); commit and rollback find
// the recovery appliance there, so they take only the plan. `plan watch` is
// what `plan failover --at-deadline rollback|commit` starts, not an
// operator's command: it acts at the deadline through runRollback and
// runCommit, as the commands do.
import path from 'node:path'
import { z } from 'zod'
import { checkCommit, reverseOf, runCommit, runOf } from '../client/plans/commit'
import { checkFailback, runPlanFailback } from '../client/plans/failback-plan'
import { refuseRunning, runFailover } from '../client/plans/failover'
import { waitForDeadline } from '../client/plans/deadline-watcher'
import { DEFAULT_STATE_DIR, RunPaths, type AtDeadline } from '../client/plans/failover-state'
import { failoverNetworkProblems } from '../client/plans/host-network'
import { checkPlan, problemLine, type Plan } from '../client/plans/plan'
import { checkRollback, runRollback } from '../client/plans/rollback'
import type { PlanRunReport } from '../client/plans/runner'
import { planStatuses, statusLines } from '../client/plans/status'
import { parseDuration } from '../appliance/retention'
import { TidemarkError } from '../proto/errors'
import type { PointInTime } from '../proto/generated/tidemark/v1/PointInTime'
import { usage } from './args'
import { adminFromFlags, clientOptions, helpOption, tlsFiles } from './common-options'
import { check, command, flag, helpText, parseCommand, text, type Command, type Options } from './definition'
import { common, onPath, pointFlag, POINT_HELP, readPlan, validate } from './plan-command'

const state = {
  state: text({ label: '--state DIR', help: `where failed-over plans live (default ${DEFAULT_STATE_DIR}):\nDIR/PLAN/failover.json, its disks, agent and VM files`, default: DEFAULT_STATE_DIR }),
}
const planFile = { plan: common.plan }
const json = { json: flag({ label: '--json', help: 'the report as one JSON object on stdout' }) }

export const PLAN_FAILOVER = command({
  name: 'plan failover',
  requiredFirst: true,
  options: {
    ...common,
    ...state,
    'commit-within': text({
      label: '--commit-within DURATION',
      help: 'the commit deadline: plan commit is refused after it and plan status\nsays "rollback due" (30m, 4h, 2d; default 4h)',
      default: '4h',
      value: check(z.string(), (s) => (parseDuration(s) ?? 0) > 0, (s) => `--commit-within '${s}' is not a duration such as 30m, 4h or 2d`).transform((s) => parseDuration(s)!),
    }),
    'at-deadline': text({
      label: '--at-deadline ACTION',
      help: 'none (default): the operator decides; rollback or commit: a watcher\n(plan watch, detached) does it at the deadline unless the run was\ncommitted or rolled back before',
      default: 'none',
      value: check(z.string(), (s) => ['none', 'rollback', 'commit'].includes(s), (s) => `--at-deadline '${s}' is not none, rollback or commit`).transform((s) => s as AtDeadline),
    }),
  },
  help: (rows) => `Usage:
  tidemark plan failover --appliance HOST:PORT --plan FILE [--timemark ID|LABEL | --at ISO-TIME | --seq N|latest]
                         [--state DIR] [--commit-within DURATION] [--at-deadline none|rollback|commit]
                         [--json] [--tls-cert F --tls-key F --tls-ca F]

The real failover, for when production is gone. Validates the plan (as plan
validate; and every machine network's failover bridge exists here), restores
every disk at the point into DIR/PLAN/disks/VOLUME.img, starts a failover
agent serving them over NBD (every write captured, replicated nowhere until
plan commit) and boots the machines in boot order with their checks,
detached, each NIC a tap on its network's failover bridge. Reports each
machine's boot seconds and the RTO; the run stays in DIR/PLAN until plan
commit, rollback or failback. The run is written (phase failing-over) before
the first disk is restored and as each process starts, so a failover killed
half way is "interrupted" in plan status and plan rollback removes it; a
failure it sees tears down what it started. Refused while the plan has a run
in DIR (a second failover started at the same moment included: the one line
names the other's pid). With --at-deadline rollback|commit a detached watcher
(plan watch) rolls back or commits at the deadline. Needs root (taps).
${POINT_HELP}
${rows(27, 'timemark', 'at', 'seq')}
${rows(27, 'plan', 'state', 'commit-within', 'at-deadline', 'json')}
`,
})

export const PLAN_COMMIT = command({
  name: 'plan commit',
  options: {
    ...helpOption,
    ...planFile,
    ...state,
    wait: flag({ label: '--wait', help: "wait until the reverse appliance holds the initial copy of\nevery volume" }),
    ...json,
  },
  help: (rows) => `Usage:
  tidemark plan commit --plan FILE [--state DIR] [--wait] [--json]

Keeps a failover: the failover agent restarts replicating to the plan's
reverse appliance (reverse: { appliance: HOST:PORT }), with a control socket;
the VMs run on (their disks reconnect); the deadline's watcher, if any, is
stopped first. Refused past the commit deadline, when the plan is not
failed-over, or while its failover runs or was interrupted. Recorded in the recovery appliance's audit
trail (the one the failover read, as DIR/PLAN/failover.json names it).

${rows(23, 'plan', 'state', 'wait', 'json')}
`,
})

export const PLAN_ROLLBACK = command({
  name: 'plan rollback',
  options: { ...helpOption, ...planFile, ...state, ...json },
  help: (rows) => `Usage:
  tidemark plan rollback --plan FILE [--state DIR] [--json]

Discards a failover that was not committed: its VMs killed, their taps
deleted, the failover agent stopped, the recovered disks and the run removed
(the report is kept in DIR/PLAN/history/), the deadline's watcher stopped.
The recovery appliance was only read from: everything is as before the
failover. An interrupted failover (its process gone before it finished) is
rolled back the same way: every process and tap its run names.

${rows(23, 'plan', 'state', 'json')}
`,
})

export const PLAN_FAILBACK = command({
  name: 'plan failback',
  requiredFirst: true,
  options: { ...helpOption, ...planFile, ...state, ...json, ...clientOptions },
  help: (rows) => `Usage:
  tidemark plan failback --appliance HOST:PORT --plan FILE [--state DIR] [--json] [--tls-cert F --tls-key F --tls-ca F]

Brings production back after a committed failover: the recovery VMs paused,
a final TimeMark through the failover agent, durable on the reverse
appliance; each production disk (the production agent's NBD export named in
the plan: machines[].production.nbd) made equal to that mark, only the
differing sectors written (so the production agent replicates them, and
forward protection goes on without a reseed); the recovery VMs, agent and
disks retired; the production VMs started in boot order with their checks.
--appliance is the recovery appliance (the audit trail).

${rows(23, 'plan', 'state', 'json')}
`,
})

export const PLAN_STATUS = command({
  name: 'plan status',
  options: { ...helpOption, ...state, ...json },
  help: (rows) => `Usage:
  tidemark plan status [--state DIR] [--json]

Every failed-over plan in DIR: its phase, point, age, the time left to
commit (or "rollback due"), what happens at the deadline and its watcher,
a failover still running or "interrupted: plan rollback removes it", the
failover agent (alive, where it replicates,
the reverse initial copy) and each VM (alive, pid); and the production VMs
plan failback started.

${rows(23, 'state', 'json')}
`,
})

export const PLAN_WATCH = command({
  name: 'plan watch',
  options: { ...helpOption, ...planFile, ...state },
  help: (rows) => `Usage:
  tidemark plan watch --plan FILE [--state DIR]

Started (detached) by plan failover --at-deadline rollback|commit, not by
hand: waits for the commit deadline of the plan's run in DIR, then rolls it
back or commits it as plan rollback and plan commit do, the audit entry
saying it was done at the deadline. It exits doing nothing when the run ends
or changes first (committed, rolled back, another run, an interrupted
failover); plan commit and plan rollback stop it. Logs to DIR/PLAN/watcher.log.

${rows(23, 'plan', 'state')}
`,
})

const DEFS: Record<string, Command<Options>> = {
  failover: PLAN_FAILOVER as unknown as Command<Options>,
  commit: PLAN_COMMIT as unknown as Command<Options>,
  rollback: PLAN_ROLLBACK as unknown as Command<Options>,
  failback: PLAN_FAILBACK as unknown as Command<Options>,
  status: PLAN_STATUS as unknown as Command<Options>,
  watch: PLAN_WATCH as unknown as Command<Options>,
}

/** The plan file, schema-checked only (commit, rollback and failback ask no appliance about it). */
function schemaPlan(file: string, cmd: string): Plan {
  const c = checkPlan(readPlan(file, cmd))
  if (!c.plan) throw new TidemarkError('BAD_PLAN', `tidemark ${cmd}: ${problemLine(c.problems[0])}`)
  return c.plan
}

function progress(json: boolean): (line: string) => void {
  const tty = process.stderr.isTTY && !json
  return (line) => {
    if (tty) process.stderr.write(`${line}\n`)
  }
}

function humanReport(r: PlanRunReport): string {
  const out = [`plan ${r.plan}: ${r.action} ${r.result}${r.rtoSeconds !== null ? `: RTO ${r.rtoSeconds} s` : ''}${r.error ? `: ${r.error}` : ''}`, `  point: ${r.point}`]
  if (r.action === 'failover' || r.action === 'failback') {
    for (const m of r.machines) {
      const result = m.check.result === 'green' && m.bootSeconds !== null ? `green after ${m.bootSeconds} s` : m.check.result
      out.push(`  ${m.name} (boot ${m.boot}): ${result}${m.pid ? `, pid ${m.pid}` : ''}${m.check.detail ? `: ${m.check.detail}` : ''}`)
      if (m.consoleTail !== undefined) out.push('    console tail:', ...m.consoleTail.split('\n').map((l) => `    | ${l}`))
    }
  }
  const d = r.details ?? {}
  if (r.action === 'failover' && r.result === 'passed') out.push(`  commit (plan commit) or roll back (plan rollback) before ${d.commitDeadline as string}; the run is ${d.state as string}`)
  if (r.action === 'commit' && r.result === 'passed') out.push(`  replicating to ${d.reverse as string}: ${Object.entries(d.initialCopy as Record<string, string>).map(([v, s]) => `${v} initial copy ${s}`).join(', ')}`)
  if (r.action === 'failback') {
    for (const x of (d.disks as Array<Record<string, unknown>>) ?? []) out.push(`  ${x.volume as string}: ${x.sectorsCompared as number} sectors compared, ${x.sectorsWritten as number} written to ${x.target as string}`)
  }
  for (const p of r.teardownProblems) out.push(`  teardown problem: ${p}`)
  if (r.audit && 'seq' in r.audit) out.push(`  recorded in the appliance's audit trail: entry ${r.audit.seq}, by ${r.audit.who}`)
  return `${out.join('\n')}\n`
}

function finish(report: PlanRunReport, json: boolean): number {
  if (!json) process.stdout.write(humanReport(report))
  if (report.result !== 'passed') process.stderr.write(`tidemark plan ${report.action}: plan ${report.plan} failed: ${report.error ?? 'see the report'}\n`)
  return report.result === 'passed' ? 0 : 1
}

export async function runPlanFailoverAction(action: string, argv: string[]): Promise<number> {
  const def = DEFS[action]
  const p = parseCommand(def, argv)
  if (p.help) {
    process.stdout.write(helpText(def))
    return 0
  }
  const a = p.values as Record<string, unknown>
  const jsonOut = a.json === true
  const stateDir = path.resolve(a.state as string)
  if (action === 'status') {
    const all = planStatuses(stateDir)
    process.stdout.write(jsonOut ? `${JSON.stringify({ stateDir, plans: all })}\n` : statusLines(all, stateDir))
    return 0
  }
  const cmd = def.name
  const planArg = path.resolve(a.plan as string)

  if (action === 'failover') return failover(a, planArg, stateDir)
  if (action === 'watch') return watch(planArg, stateDir)

  const plan = schemaPlan(planArg, cmd)
  const paths = new RunPaths(stateDir, plan.name)
  if (action === 'failback') {
    checkFailback(paths, plan)
    const reverse = reverseOf(plan, cmd)
    const client = adminFromFlags(a as never, cmd)
    const reverseClient = adminFromFlags({ appliance: reverse.appliance, 'tls-cert': reverse.tls?.cert, 'tls-key': reverse.tls?.key, 'tls-ca': reverse.tls?.ca }, cmd)
    const base = path.dirname(planArg)
    const files = new Map(plan.machines.map((m) => [m.name, { kernel: m.kernel && path.resolve(base, m.kernel), initrd: m.initrd && path.resolve(base, m.initrd) }]))
    try {
      return finish(await runPlanFailback({ client, reverse: reverseClient, plan, files, paths, json: jsonOut, progress: progress(jsonOut) }), jsonOut)
    } finally {
      client.close()
      reverseClient.close()
    }
  }
  // commit and rollback: refused before anything is contacted; the audit goes to the appliance the failover read.
  const s = action === 'commit' ? checkCommit(paths, plan).state : action === 'rollback' ? checkRollback(paths) : runOf(paths, cmd, action)
  const client = adminFromFlags({ appliance: s.appliance, 'tls-cert': s.applianceTls?.cert, 'tls-key': s.applianceTls?.key, 'tls-ca': s.applianceTls?.ca }, cmd)
  try {
    const report =
      action === 'commit'
        ? await runCommit({ client, plan, paths, wait: a.wait === true, json: jsonOut, progress: progress(jsonOut) })
        : await runRollback({ client, plan, paths, json: jsonOut, progress: progress(jsonOut) })
    return finish(report, jsonOut)
  } finally {
    client.close()
  }
}

async function failover(a: Record<string, unknown>, planArg: string, stateDir: string): Promise<number> {
  const cmd = 'plan failover'
  const flags = (['timemark', 'at', 'seq'] as const).filter((k) => a[k] !== undefined)
  if (flags.length > 1) throw usage(cmd, `give one point, not ${flags.map((f) => `--${f}`).join(' and ')}`)
  const override = flags.length ? { point: a[flags[0]] as PointInTime, from: pointFlag(a[flags[0]] as PointInTime) } : null
  for (const tool of ['qemu-system-x86_64', 'ip']) {
    if (!onPath(tool)) throw new TidemarkError('MISSING_TOOL', `tidemark ${cmd}: ${tool} is not installed (apt-get install ${tool === 'ip' ? 'iproute2' : 'qemu-system-x86'})`)
  }
  const src = readPlan(planArg, cmd)
  const early = checkPlan(src)
  if (early.plan) refuseRunning(new RunPaths(stateDir, early.plan.name), cmd)
  if (early.plan && a['at-deadline'] === 'commit') reverseOf(early.plan, `${cmd} --at-deadline commit`)
  const client = adminFromFlags(a as never, cmd)
  try {
    const tls = tlsFiles(a as never, cmd)
    const checked = await validate(client, src, override, tls !== undefined)
    if (checked.plan) checked.problems.push(...(await failoverNetworkProblems(checked.plan, src)))
    if (checked.problems.length) {
      if (a.json) process.stdout.write(`${JSON.stringify({ plan: checked.plan?.name ?? null, valid: false, problems: checked.problems.map((x) => ({ ...x, line: problemLine(x) })) })}\n`)
      for (const x of checked.problems) process.stderr.write(`tidemark ${cmd}: ${problemLine(x)}\n`)
      return 1
    }
    const appliance = a.appliance as { host: string; port: number; unix?: string }
    const abort = new AbortController()
    const stop = (): void => abort.abort()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    try {
      const report = await runFailover({
        client,
        appliance: appliance.unix ? `unix:${appliance.unix}` : `${appliance.host}:${appliance.port}`,
        applianceHost: appliance.host,
        ...(tls ? { applianceTls: { cert: path.resolve(tls.cert), key: path.resolve(tls.key), ca: path.resolve(tls.ca) } } : {}),
        plan: checked.plan!,
        planFile: planArg,
        resolved: checked.resolved!,
        stateDir,
        commitWithinMs: a['commit-within'] as number,
        atDeadline: a['at-deadline'] as AtDeadline,
        json: a.json === true,
        progress: progress(a.json === true),
        signal: abort.signal,
      })
      return finish(report, a.json === true)
    } finally {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
    }
  } finally {
    client.close()
  }
}

/** `plan watch`: the deadline's watcher. Its log lines go to DIR/PLAN/watcher.log (its stdout). */
async function watch(planArg: string, stateDir: string): Promise<number> {
  const cmd = 'plan watch'
  const plan = schemaPlan(planArg, cmd)
  const paths = new RunPaths(stateDir, plan.name)
  const s0 = runOf(paths, cmd, 'watch')
  const log = (line: string): void => void process.stdout.write(`${new Date().toISOString()} ${line}\n`)
  if (s0.atDeadline === 'none') throw new TidemarkError('NO_DEADLINE_ACTION', `tidemark ${cmd}: run ${s0.runId} of plan ${plan.name} was failed over with --at-deadline none: nothing to do at its deadline`)
  log(`pid ${process.pid} watching run ${s0.runId} of plan ${plan.name}: ${s0.atDeadline} at its commit deadline`)
  // SIGTERM (plan commit, plan rollback) while waiting: exit doing nothing.
  const abort = new AbortController()
  process.once('SIGTERM', () => abort.abort())
  const end = await waitForDeadline(paths, s0.runId, abort.signal)
  if (!end.act) {
    log(`nothing to do: ${end.why}`)
    return 0
  }
  const s = end.state
  log(`the commit deadline ${s.commitDeadline} is here: ${s.atDeadline === 'commit' ? 'committing' : 'rolling back'} run ${s.runId}`)
  const client = adminFromFlags({ appliance: s.appliance, 'tls-cert': s.applianceTls?.cert, 'tls-key': s.applianceTls?.key, 'tls-ca': s.applianceTls?.ca }, cmd)
  try {
    const report =
      s.atDeadline === 'commit'
        ? await runCommit({ client, plan, paths, wait: false, json: false, progress: log, atDeadline: true })
        : await runRollback({ client, plan, paths, json: false, progress: log, atDeadline: true })
    log(`${report.action} ${report.result}${report.error ? `: ${report.error}` : ''}${report.audit && 'seq' in report.audit ? ` (audit entry ${report.audit.seq}, by ${report.audit.who})` : ''}`)
    return report.result === 'passed' ? 0 : 1
  } finally {
    client.close()
  }
}
