// Continuous recoverability proof: the appliance tests its recovery plans on
// a schedule (`plans: [{file, every}]` in its config, or --plan FILE=EVERY).
// A DR plan that is never tested does not work; here every plan is booted in
// its isolated network, checked and torn down every day without anyone
// asking, and the result is a metric, an alert when it fails or is overdue,
// and an entry in the audit trail.
//
// Each run is `tidemark plan test --plan FILE --json` as a child process
// against this appliance (its unix listener when it has one, else its TCP
// listener with its own TLS files): the very command an operator runs, so
// the proof covers what they would do, and the plan test records itself in
// the audit trail under the identity it connected with. With an allow-list,
// that identity (the appliance's own uid on the unix listener, or its
// certificate's) needs admin on the plan's volumes; a run refused for it is
// a failed proof, logged with the refusal.
//
// One run per plan at a time; a run that outlives RUN_TIMEOUT_MS is killed
// (and failed). The appliance stopping ends a run (SIGTERM: plan test tears
// down its VMs, namespace and views, and records itself as interrupted) and
// waits for it; such a run proves nothing, so it is not a failed proof. The first run of each plan comes FIRST_RUN_MS after the start
// (or its period, if shorter), then one per period.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'

const FIRST_RUN_MS = 60_000
const MIN_EVERY_MS = 10_000
const RUN_TIMEOUT_MS = 30 * 60_000
/** What the child printed last, kept for the log when it fails. */
const TAIL_BYTES = 4096

export interface ScheduledPlan {
  /** the plan file, as the appliance sees it */
  file: string
  everyMs: number
  /** how it was given, for messages ("24h") */
  every: string
}

export interface PlanProofStatus {
  plan: string
  file: string
  everyMs: number
  running: boolean
  lastRun: number | null
  lastResult: 'passed' | 'failed' | null
  lastSuccess: number | null
  rtoSeconds: number | null
  lastError: string | null
  runs: number
  /** when the schedule began (the appliance started): an overdue test counts from here until one passes */
  scheduledSince: number
}

/** How the child reaches this appliance: `--appliance` and the TLS flags. */
export interface SelfAddress {
  appliance: string
  tls?: { cert: string; key: string; ca: string }
}

/** `every` as milliseconds: 30m, 12h, 1d (at least MIN_EVERY_MS: a lab proves a plan every few seconds). */
export function parsePlanSchedule(spec: string): ScheduledPlan {
  const eq = spec.lastIndexOf('=')
  if (eq <= 0 || eq === spec.length - 1) throw new TidemarkError('USAGE', `--plan '${spec}' must be FILE=EVERY (e.g. shop.yaml=24h)`)
  const file = spec.slice(0, eq)
  const every = spec.slice(eq + 1)
  const m = /^(\d+)(s|m|h|d)$/.exec(every)
  if (!m) throw new TidemarkError('USAGE', `--plan ${file}: '${every}' is not a period (30m, 12h, 1d)`)
  const everyMs = Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd']
  if (everyMs < MIN_EVERY_MS) throw new TidemarkError('USAGE', `--plan ${file}: every '${every}' is under ${MIN_EVERY_MS / 1000} s`)
  return { file: path.resolve(file), everyMs, every }
}

class PlanProof {
  readonly st: PlanProofStatus
  timer: NodeJS.Timeout | null = null
  child: ChildProcess | null = null
  exited: Promise<void> | null = null

  constructor(readonly plan: ScheduledPlan) {
    this.st = {
      plan: path.basename(plan.file).replace(/\.(ya?ml|json)$/, ''),
      file: plan.file,
      everyMs: plan.everyMs,
      running: false,
      lastRun: null,
      lastResult: null,
      lastSuccess: null,
      rtoSeconds: null,
      lastError: null,
      runs: 0,
      scheduledSince: Date.now(),
    }
  }
}

export class PlanSchedule {
  private readonly proofs: PlanProof[]
  private closed = false

  constructor(
    plans: ScheduledPlan[],
    private readonly self: () => SelfAddress,
    private readonly log: Logger,
    /** the tidemark CLI (bin/tidemark.js) */
    private readonly bin = path.join(__dirname, '..', '..', 'bin', 'tidemark.js')
  ) {
    this.proofs = plans.map((p) => new PlanProof(p))
  }

  start(firstRunMs = FIRST_RUN_MS): void {
    for (const p of this.proofs) this.arm(p, Math.min(firstRunMs, p.plan.everyMs))
    if (this.proofs.length) {
      this.log.info({ plans: this.proofs.map((p) => ({ file: p.plan.file, every: p.plan.every })) }, 'recovery plans are tested on a schedule')
    }
  }

  status(): PlanProofStatus[] {
    return this.proofs.map((p) => ({ ...p.st }))
  }

  /** Runs every plan now and waits for them (tests). */
  async runAll(): Promise<PlanProofStatus[]> {
    await Promise.all(this.proofs.map((p) => this.run(p)))
    return this.status()
  }

  async close(): Promise<void> {
    this.closed = true
    for (const p of this.proofs) {
      if (p.timer) clearTimeout(p.timer)
      p.child?.kill('SIGTERM')
    }
    await Promise.all(this.proofs.map((p) => p.exited))
  }

  private arm(p: PlanProof, ms: number): void {
    if (this.closed) return
    p.timer = setTimeout(() => {
      p.timer = null
      void this.run(p).finally(() => this.arm(p, p.plan.everyMs))
    }, ms)
    p.timer.unref()
  }

  private run(p: PlanProof): Promise<void> {
    if (p.exited || this.closed) return p.exited ?? Promise.resolve()
    const self = this.self()
    const args = [this.bin, 'plan', 'test', '--appliance', self.appliance, '--plan', p.plan.file, '--json']
    if (self.tls) args.push('--tls-cert', self.tls.cert, '--tls-key', self.tls.key, '--tls-ca', self.tls.ca)
    const started = Date.now()
    p.st.running = true
    p.st.lastRun = started
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    p.child = child
    let out = ''
    let err = ''
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-TAIL_BYTES)))
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS)
    p.exited = new Promise<void>((resolve) => {
      child.once('error', (e) => {
        err += e.message
      })
      child.once('close', (code, signal) => {
        clearTimeout(timer)
        this.finish(p, code, signal, out, err, started)
        p.child = null
        p.exited = null
        resolve()
      })
    })
    return p.exited
  }

  private finish(p: PlanProof, code: number | null, signal: NodeJS.Signals | null, out: string, err: string, started: number): void {
    p.st.running = false
    if (this.closed) {
      // Cut short by the appliance stopping (close()): no proof either way, so no failure to alert on.
      this.log.info({ plan: p.st.plan, code, signal }, `scheduled test of plan ${p.st.plan} stopped with the appliance`)
      return
    }
    p.st.runs++
    let report: { result?: string; rtoSeconds?: number | null } | null = null
    for (const text of [out.trim(), out.trim().split('\n').pop() ?? '']) {
      try {
        report = JSON.parse(text) as { result?: string; rtoSeconds?: number | null }
        break
      } catch {
        report = null
      }
    }
    const passed = code === 0 && report?.result === 'passed'
    p.st.lastResult = passed ? 'passed' : 'failed'
    const seconds = Math.round((Date.now() - started) / 100) / 10
    if (passed) {
      p.st.lastSuccess = Date.now()
      p.st.rtoSeconds = typeof report?.rtoSeconds === 'number' ? report.rtoSeconds : null
      p.st.lastError = null
      this.log.info({ plan: p.st.plan, rtoSeconds: p.st.rtoSeconds, seconds }, `scheduled test of plan ${p.st.plan} passed: RTO ${p.st.rtoSeconds} s`)
      return
    }
    const why = signal ? `killed by ${signal}${signal === 'SIGKILL' ? ` (over ${RUN_TIMEOUT_MS / 60_000} min)` : ''}` : err.trim().split('\n').pop() || `exit status ${code}`
    p.st.lastError = why
    this.log.warn({ plan: p.st.plan, file: p.st.file, code, seconds, err: why }, `scheduled test of plan ${p.st.plan} failed: ${why}`)
  }
}
