// A plan's real failover and its way back, through real processes: appliance
// A (the recovery site, unix listener and NBD), a production agent protecting
// a volume that holds a small Linux guest's root (test/lib/guest.ts),
// replicating to A, a TimeMark; appliance B, the reverse site. The failover
// network is a bridge br-prod inside a network namespace this test makes,
// and every plan command runs in it (`ip netns exec NS tidemark plan ...`:
// unix sockets reach A, B and the agents across namespaces).
//
// failover with production's agent killed -> commit (reverse protection to
// B) -> failback (production byte-exact at the final mark, only the changed
// sectors written, A protecting it on) -> a second failover rolled back
// (A exactly as before); the refusals on the way; the audit trail of it all.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { FailoverState } from '../client/plans/failover-state'
import type { PlanRunReport } from '../client/plans/runner'
import type { PlanStatus } from '../client/plans/status'
import { tidemark, tidemarkJson, volumeStats, waitFor } from './claims-helpers'
import { guestLog, qmp, type Guest, planGuestOrWhy, processRuns, guestPlanYaml } from './lib/guest'
import { BIN, differingSectors, makeImage, must, nbdUri, restore, run, sha256, startAgent, startAppliance, tmpdir } from './helpers'
import { failoverNetwork, killPid, killRunLeftovers } from './lib/plan-site'

const built = planGuestOrWhy()

t.test('plan failover, commit, failback and rollback of a real VM', { skip: typeof built === 'string' ? built : false }, async (t) => {
  const guest = built as Guest
  const dir = tmpdir(t, 'tidemark-failover-')
  const stateDir = path.join(dir, 'plans')
  const runDir = path.join(stateDir, 'shop')

  // The failover network: br-prod in a namespace of the test's own, deleted at the end.
  const ns = await failoverNetwork(t, 'tmft')

  // Whatever a run left (detached VMs, agents), killed at the end: the state says which.
  killRunLeftovers(t, runDir)

  // A: the recovery appliance; B: the reverse one.
  const aSock = path.join(dir, 'a.sock')
  const A = await startAppliance(t, { data: path.join(dir, 'a'), extra: ['--listen', `unix:${aSock}`, '--nbd', `unix:${path.join(dir, 'a-nbd.sock')}`] })
  const bSock = path.join(dir, 'b.sock')
  const B = await startAppliance(t, { data: path.join(dir, 'b'), extra: ['--listen', `unix:${bSock}`, '--nbd', `unix:${path.join(dir, 'b-nbd.sock')}`] })

  // Production: the guest's root on an agent replicating to A, and a TimeMark.
  const img = path.join(dir, 'prod.img')
  makeImage(img, guest.rootSize, null)
  const prodSock = path.join(dir, 'prod-nbd.sock')
  const prodControl = path.join(dir, 'prod-control.sock')
  const prodArgs = { state: path.join(dir, 'prod-state'), sock: prodSock, volumes: { vol: img }, extra: ['--appliance', A.address, '--control', `unix:${prodControl}`] }
  let prod = await startAgent(t, prodArgs)
  await A.waitForLog(/initial copy complete/, 120_000)
  await must('nbdcopy', [guest.rootImage, nbdUri(prodSock, 'vol')])
  const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${prodControl}`, '--volume', 'vol', '--label', 'before-failover'])
  t.ok(mark.durable, 'a TimeMark of production, durable at A')

  const writePlan = (name: string, bridge = 'br-prod'): string => {
    const f = path.join(dir, name)
    fs.writeFileSync(
      f,
      guestPlanYaml(guest, {
        mark: 'before-failover',
        role: 'rec',
        timeout: 240,
        failover: bridge,
        machine: `    production: { nbd: 'unix:${prodSock}', control: 'unix:${prodControl}' }
`,
        plan: `reverse: { appliance: 'unix:${bSock}' }
`,
      })
    )
    return f
  }
  const planFile = writePlan('shop.yaml')
  /** `tidemark plan ACTION ...` inside the failover network. */
  const plan = (action: string, args: string[], withAppliance = false) =>
    run('ip', ['netns', 'exec', ns, process.execPath, BIN, 'plan', action, ...(withAppliance ? ['--appliance', `unix:${aSock}`] : []), '--plan', planFile, '--state', stateDir, ...args], {
      timeoutMs: 600_000,
    })
  const readJson = <T>(f: string): T | null => (fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as T) : null)
  const readState = (): FailoverState | null => readJson<FailoverState>(path.join(runDir, 'failover.json'))
  const journal = async () => {
    const s = await volumeStats(A.address, 'vol')
    return { durableSeq: s.durableSeq, journalBytes: s.journalBytes, segments: s.segments, timemarks: s.timemarks }
  }
  const oneLine = (stderr: string): string[] => stderr.split('\n').filter(Boolean)

  await t.test('refusals before any failover: commit, failback, a missing failover bridge', async (t) => {
    const commit = await plan('commit', [])
    t.equal(commit.code, 1, 'commit without a failover exits 1')
    t.match(oneLine(commit.stderr), [/^tidemark plan commit: plan shop has no failover in .*: nothing to commit/], commit.stderr)
    const fb = await plan('failback', [], true)
    t.equal(fb.code, 1, 'failback without a failover exits 1')
    t.match(oneLine(fb.stderr), [/^tidemark plan failback: plan shop has no failover/], fb.stderr)
    const noBridge = await run('ip', ['netns', 'exec', ns, process.execPath, BIN, 'plan', 'failover', '--appliance', `unix:${aSock}`, '--plan', writePlan('nobridge.yaml', 'br-nope'), '--state', stateDir])
    t.equal(noBridge.code, 1, 'a failover onto a missing bridge exits 1')
    t.match(oneLine(noBridge.stderr), [/networks\.app\.failover: bridge br-nope does not exist on this host/], noBridge.stderr)
    t.notOk(fs.existsSync(runDir), 'and leaves no run')
  })

  // Production is gone.
  prod.proc.kill('SIGKILL')
  await prod.exited
  const before = await journal()

  let failover: PlanRunReport
  await t.test('failover boots the VM from the point on the failover bridge, A untouched', async (t) => {
    const r = await plan('failover', ['--json', '--commit-within', '2h'], true)
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    failover = JSON.parse(r.stdout) as PlanRunReport
    t.match(failover, { plan: 'shop', action: 'failover', result: 'passed', machines: [{ name: 'db', check: { result: 'green', detail: /tm-boot role=rec lines=0/ }, disks: [{ volume: 'vol', seq: mark.seq }] }] })
    t.ok(failover.rtoSeconds! > 0, `an RTO (${failover.rtoSeconds} s)`)
    const s = readState()!
    t.match(s, { plan: 'shop', phase: 'failed-over', runId: failover.runId, disks: [{ volume: 'vol', seq: mark.seq, image: path.join(runDir, 'disks', 'vol.img') }] })
    t.ok(Date.parse(s.commitDeadline) - Date.parse(s.failedOverAt) === 2 * 3600_000, 'the commit deadline is --commit-within after the failover')
    t.ok(processRuns(s.agent!.pid), `the failover agent runs (pid ${s.agent!.pid})`)
    t.notOk(s.agent!.argv.includes('--appliance'), 'and replicates nowhere')
    t.ok(processRuns(s.vms[0].pid), `the VM runs on after the command exited (pid ${s.vms[0].pid})`)
    const link = await must('ip', ['-n', ns, '-o', 'link', 'show', 'master', 'br-prod'])
    t.match(link, s.vms[0].tap, `its tap ${s.vms[0].tap} is on br-prod`)
    t.same(await journal(), before, "A's journal is untouched")
  })

  await t.test('refusals while it runs: a second failover, failback before commit; status', async (t) => {
    const again = await plan('failover', [], true)
    t.equal(again.code, 1)
    t.match(oneLine(again.stderr), [/^tidemark plan failover: plan shop is failed-over already/], again.stderr)
    const fb = await plan('failback', [], true)
    t.equal(fb.code, 1)
    t.match(oneLine(fb.stderr), [/^tidemark plan failback: plan shop is failed-over, not committed/], fb.stderr)
    const st = await tidemarkJson<{ plans: PlanStatus[] }>(['plan', 'status', '--state', stateDir])
    t.match(st.plans, [{ plan: 'shop', phase: 'failed-over', rollbackDue: false, agent: { alive: true, replicatingTo: null }, vms: [{ machine: 'db', alive: true }] }])
    t.ok(st.plans[0].deadlineLeftSeconds! > 7000, 'most of the deadline is left')
  })

  await t.test('commit: the VM survives the agent restart and its writes reach B', async (t) => {
    const s0 = readState()!
    const consoleLines = (): number => (fs.readFileSync(s0.vms[0].console, 'utf8').match(/tm-line /g) ?? []).length
    const r = await plan('commit', ['--wait', '--json'])
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.match(report, { action: 'commit', result: 'passed', details: { initialCopy: { vol: 'complete' } } })
    const s = readState()!
    t.match(s, { phase: 'committed', reverse: { appliance: `unix:${bSock}` } })
    t.not(s.agent!.pid, s0.agent!.pid, 'a new agent')
    t.ok(s.agent!.argv.includes('--appliance'), 'replicating to B')
    t.ok(processRuns(s.vms[0].pid), 'the VM is the same process')
    const n = consoleLines()
    await waitFor('the VM to write after the agent restart', () => consoleLines() > n + 5, 120_000)
    // The recovered disk against B: the VM paused, a mark through the failover agent.
    await qmp(s.vms[0].qmp, 'stop')
    const m = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${path.join(runDir, 'control.sock')}`, '--group', 'shop', '--label', 'reverse-check'])
    t.ok(m.durable, 'a mark through the failover agent, durable on B')
    const fromB = path.join(dir, 'from-b.img')
    await restore(B.address, 'vol', m.seq, fromB)
    t.equal(sha256(fromB), sha256(path.join(runDir, 'disks', 'vol.img')), 'B at the mark equals the recovered disk')
    await qmp(s.vms[0].qmp, 'cont')
    const st = await tidemarkJson<{ plans: PlanStatus[] }>(['plan', 'status', '--state', stateDir])
    t.match(st.plans, [{ phase: 'committed', deadlineLeftSeconds: null, agent: { alive: true, replicatingTo: `unix:${bSock}`, initialCopy: { vol: 'complete' } } }])
  })

  await t.test('failback: production byte-exact at the final mark, only changed sectors written, A protecting on', async (t) => {
    // Production's agent is back (it protects the production disk for A again).
    prod = await startAgent(t, prodArgs)
    const beforeImg = path.join(dir, 'before-failback.img')
    fs.copyFileSync(img, beforeImg)
    const s = readState()!
    const r = await plan('failback', ['--json'], true)
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.match(report, { action: 'failback', result: 'passed', machines: [{ name: 'db', check: { result: 'green' } }] })
    const d = report.details as { mark: { seq: number }; disks: Array<{ volume: string; sectorsCompared: number; sectorsDiffering: number; sectorsWritten: number; productionMark: { seq: number; durable: boolean } }>; production: Array<{ pid: number }> }
    const markImg = path.join(dir, 'final-mark.img')
    await restore(B.address, 'vol', d.mark.seq, markImg)
    const changed = differingSectors(beforeImg, markImg)
    t.ok(changed.length > 0, `the recovery VM changed ${changed.length} sectors`)
    t.match(d.disks, [{ volume: 'vol', sectorsCompared: guest.rootSize / 512, sectorsDiffering: changed.length, sectorsWritten: changed.length }], 'only the changed sectors were written')
    t.ok(d.disks[0].productionMark.durable, 'the point production was written to is a TimeMark on A')
    const atA = path.join(dir, 'a-after.img')
    await restore(A.address, 'vol', d.disks[0].productionMark.seq, atA)
    t.equal(sha256(atA), sha256(markImg), "A, at the failback's mark, equals B's final mark: production was byte-exact there, and A has it without a reseed")
    const recovered = guestLog(markImg, dir)
    const bootLine = /tm-boot role=rec lines=(\d+)/.exec(report.machines[0].check.detail)
    t.equal(Number(bootLine?.[1]), recovered.lines.length, `production booted finding the recovery VM's ${recovered.lines.length} lines`)
    for (const v of s.vms) t.notOk(processRuns(v.pid), `the recovery VM ${v.machine} is gone`)
    t.notOk(processRuns(s.agent!.pid), 'the failover agent is gone')
    t.notOk(fs.existsSync(path.join(runDir, 'disks')), 'the recovered disks are gone')
    t.notOk(readState(), 'the run is gone')
    t.ok(fs.readdirSync(path.join(runDir, 'history')).some((f) => f.endsWith('-failback.json')), 'its report is in history/')
    const st = await tidemarkJson<{ plans: PlanStatus[] }>(['plan', 'status', '--state', stateDir])
    t.match(st.plans, [{ plan: 'shop', phase: null, production: { vms: [{ machine: 'db', pid: d.production[0].pid, alive: true }] } }], 'status shows the production VM')
    // Production is gone again, for the rollback below.
    await killPid(d.production[0].pid)
    prod.proc.kill('SIGKILL')
    await prod.exited
  })

  await t.test('rollback after a second failover: everything as before', async (t) => {
    const beforeAgain = await journal()
    // A deadline of a second: past by the time the VM is up.
    const r = await plan('failover', ['--json', '--seq', 'latest', '--commit-within', '1s'], true)
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const s = readState()!
    const due = await waitFor('the commit deadline to pass', async () => {
      const st = await tidemarkJson<{ plans: PlanStatus[] }>(['plan', 'status', '--state', stateDir])
      return st.plans[0].rollbackDue ? st.plans[0] : undefined
    }, 30_000)
    t.ok(due.deadlineLeftSeconds! < 0, 'plan status says rollback due')
    const human = await tidemark(['plan', 'status', '--state', stateDir])
    t.match(human.stdout, /^plan shop: failed-over \(run [0-9a-f]+\) .*; rollback due \(the deadline passed .* ago\)\n  failover agent: pid \d+ running, replicating nowhere/, human.stdout)
    const late = await plan('commit', [])
    t.equal(late.code, 1, 'commit past the deadline exits 1')
    t.match(oneLine(late.stderr), [/^tidemark plan commit: the commit deadline of plan shop passed at .*: roll back \(plan rollback\), then fail over again$/], late.stderr)
    t.equal(readState()!.phase, 'failed-over', 'and changes nothing')
    const rb = await plan('rollback', ['--json'])
    t.equal(rb.code, 0, `exits 0 ${rb.stderr}`)
    t.match(JSON.parse(rb.stdout), { action: 'rollback', result: 'passed' })
    for (const v of s.vms) t.notOk(processRuns(v.pid), `VM ${v.machine} is gone`)
    t.notOk(processRuns(s.agent!.pid), 'the agent is gone')
    t.same(fs.readdirSync(runDir).sort(), ['history', 'production', 'production.json'], 'no run is left: only the history and the production record')
    // (production's tap stays: its VM is production's, which no plan command stops)
    const taps = (await must('ip', ['-n', ns, '-o', 'link', 'show', 'master', 'br-prod'])).split('\n').filter((l) => l.includes(s.vms[0].tap))
    t.same(taps, [], `the failover's tap ${s.vms[0].tap} is gone from br-prod`)
    t.same(await journal(), beforeAgain, "A's journal is as before the failover")
  })

  await t.test('the audit trail lists every action', async (t) => {
    const a = await tidemarkJson<{ entries: Array<{ action: string; result: string; plan: string }> }>(['plan', 'audit', '--appliance', A.address])
    t.same(
      a.entries.filter((e) => e.plan === 'shop').map((e) => `${e.action} ${e.result}`),
      ['plan failover passed', 'plan commit passed', 'plan failback passed', 'plan failover passed', 'plan rollback passed']
    )
  })
})
