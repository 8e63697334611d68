// A failover that cannot be half-done, and a commit deadline that acts by
// itself, through real processes: appliance A (the recovery site) holding a
// small Linux guest's root at a TimeMark, reverse appliances B and C, the
// failover bridge br-prod in a network namespace of the test's own, every
// plan command run in it (as test/plan-failover.test.ts does).
//
// - a `plan failover` SIGKILLed once its VM is in the run: plan status says
//   interrupted, commit refuses it, its watcher exits by itself, plan
//   rollback leaves no VM, agent, tap or run;
// - two failovers started together: one runs, the other is refused naming
//   its pid; the one that ran is rolled back by its watcher at the deadline;
// - --at-deadline commit: committed by the watcher, replicating to B;
// - a manual commit before the deadline stops the watcher; nothing happens
//   at the deadline;
// - reverse TLS files are relative to the plan file, and validate says when
//   one is missing.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { FailoverState } from '../client/plans/failover-state'
import type { PlanRunReport } from '../client/plans/runner'
import type { PlanStatus } from '../client/plans/status'
import { tidemark, tidemarkJson, waitFor } from './claims-helpers'
import { type Guest, planGuestOrWhy, processRuns, guestPlanYaml } from './lib/guest'
import { BIN, exitOf, have, makeImage, must, nbdUri, run, startAgent, startAppliance, tmpdir } from './helpers'
import { failoverNetwork, killPid } from './lib/plan-site'

const built = planGuestOrWhy()

const oneLine = (stderr: string): string[] => stderr.split('\n').filter(Boolean)

t.test('failover guards: interrupted runs, one failover at a time, the deadline enforced', { skip: typeof built === 'string' ? built : false }, async (t) => {
  const guest = built as Guest
  const dir = tmpdir(t, 'tidemark-guard-')
  // The failover network: br-prod in a namespace of the test's own, deleted at the end.
  const ns = await failoverNetwork(t, 'tmfg')

  const stateDirs: string[] = []
  const readState = (stateDir: string): FailoverState | null => {
    const f = path.join(stateDir, 'shop', 'failover.json')
    return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as FailoverState) : null
  }
  // Whatever a run left (detached VMs, agents, watchers), killed at the end: its state says which.
  t.teardown(async () => {
    for (const d of stateDirs) {
      const s = readState(d)
      if (!s) continue
      for (const pid of [...s.vms.map((v) => v.pid), ...(s.agent ? [s.agent.pid] : []), ...(s.watcher ? [s.watcher.pid] : [])]) await killPid(pid)
    }
  })

  const aSock = path.join(dir, 'a.sock')
  const A = await startAppliance(t, { data: path.join(dir, 'a'), extra: ['--listen', `unix:${aSock}`, '--nbd', `unix:${path.join(dir, 'a-nbd.sock')}`] })
  const reverse: Record<string, string> = {}
  for (const name of ['b', 'c']) {
    reverse[name] = path.join(dir, `${name}.sock`)
    await startAppliance(t, { data: path.join(dir, name), extra: ['--listen', `unix:${reverse[name]}`, '--nbd', `unix:${path.join(dir, `${name}-nbd.sock`)}`] })
  }

  // The guest's root on A at a TimeMark; then production is gone.
  const img = path.join(dir, 'prod.img')
  makeImage(img, guest.rootSize, null)
  const prodSock = path.join(dir, 'prod-nbd.sock')
  const prodControl = path.join(dir, 'prod-control.sock')
  const prod = await startAgent(t, { state: path.join(dir, 'prod-state'), sock: prodSock, volumes: { vol: img }, extra: ['--appliance', A.address, '--control', `unix:${prodControl}`] })
  await A.waitForLog(/initial copy complete/, 120_000)
  await must('nbdcopy', [guest.rootImage, nbdUri(prodSock, 'vol')])
  const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${prodControl}`, '--volume', 'vol', '--label', 'before-failover'])
  t.ok(mark.durable, 'a durable TimeMark of the guest at A')
  prod.proc.kill('SIGKILL')
  await prod.exited

  const writePlan = (name: string, reverseBlock: string): string => {
    const f = path.join(dir, name)
    fs.writeFileSync(
      f,
      guestPlanYaml(guest, { mark: 'before-failover', role: 'rec', timeout: 240, failover: 'br-prod', plan: `reverse: ${reverseBlock}
` })
    )
    return f
  }
  const toB = writePlan('shop-b.yaml', `{ appliance: 'unix:${reverse.b}' }`)
  const toC = writePlan('shop-c.yaml', `{ appliance: 'unix:${reverse.c}' }`)
  const argvOf = (action: string, planFile: string, stateDir: string, args: string[]): string[] => [
    'netns',
    'exec',
    ns,
    process.execPath,
    BIN,
    'plan',
    action,
    ...(action === 'failover' || action === 'failback' ? ['--appliance', `unix:${aSock}`] : []),
    '--plan',
    planFile,
    '--state',
    stateDir,
    ...args,
  ]
  const plan = (action: string, planFile: string, stateDir: string, args: string[] = []) => run('ip', argvOf(action, planFile, stateDir, args), { timeoutMs: 600_000 })
  const newStateDir = (name: string): string => {
    const d = path.join(dir, name)
    stateDirs.push(d)
    return d
  }
  const taps = async (): Promise<string> => must('ip', ['-n', ns, '-o', 'link', 'show', 'master', 'br-prod'])
  const status = async (stateDir: string) => (await tidemarkJson<{ plans: PlanStatus[] }>(['plan', 'status', '--state', stateDir])).plans
  const audit = async () =>
    (await tidemarkJson<{ entries: Array<{ action: string; result: string; plan: string; details: Record<string, unknown> }> }>(['plan', 'audit', '--appliance', A.address])).entries

  await t.test('a failover SIGKILLed half way is interrupted, and rollback removes everything it started', async (t) => {
    const stateDir = newStateDir('killed')
    const child = spawn('ip', argvOf('failover', toB, stateDir, ['--commit-within', '1h', '--at-deadline', 'rollback']), { stdio: 'ignore' })
    const exited = exitOf(child)
    const s = await waitFor('the run to name a VM', () => {
      const st = readState(stateDir)
      return st && st.vms.length === 1 ? st : undefined
    }, 300_000)
    t.equal(s.phase, 'failing-over', 'the run is failing-over while the VM boots')
    t.equal(s.failover.pid, child.pid, 'owned by the failover process (ip netns exec execs it)')
    t.ok(s.agent && processRuns(s.agent.pid), 'the agent was recorded before the VM started')
    t.ok(s.watcher && processRuns(s.watcher.pid), 'and the watcher')
    t.same(s.taps, [s.vms[0].tap], 'and the tap, before it was made')
    child.kill('SIGKILL')
    await exited
    t.ok(processRuns(s.vms[0].pid), 'the VM runs on without the failover')

    const st = await status(stateDir)
    t.match(st, [{ plan: 'shop', phase: 'failing-over', interrupted: true, failoverPid: child.pid }])
    const human = await tidemark(['plan', 'status', '--state', stateDir])
    t.match(human.stdout, /^plan shop: interrupted: plan rollback removes it \(run [0-9a-f]+, failover pid \d+ gone/, human.stdout)
    const commit = await plan('commit', toB, stateDir)
    t.equal(commit.code, 1, 'commit of an interrupted failover exits 1')
    t.match(oneLine(commit.stderr), [/^tidemark plan commit: plan shop's failover \(run [0-9a-f]+, pid \d+\) was interrupted before it finished: .*plan rollback removes it$/], commit.stderr)
    const fb = await plan('failback', toB, stateDir)
    t.equal(fb.code, 1, 'failback of an interrupted failover exits 1')
    t.match(oneLine(fb.stderr), [/^tidemark plan failback: plan shop's failover \(run [0-9a-f]+, pid \d+\) was interrupted before it finished: .*plan rollback removes it$/], fb.stderr)
    const again = await plan('failover', toB, stateDir)
    t.equal(again.code, 1, 'a new failover over it exits 1')
    t.match(oneLine(again.stderr), [/^tidemark plan failover: plan shop has an interrupted failover .*: plan rollback removes it$/], again.stderr)
    await waitFor('the watcher to see the failover gone and exit', () => !processRuns(s.watcher!.pid), 30_000)

    const rb = await plan('rollback', toB, stateDir, ['--json'])
    t.equal(rb.code, 0, `rollback exits 0 ${rb.stderr}`)
    t.match(JSON.parse(rb.stdout), { action: 'rollback', result: 'passed', details: { interrupted: /was gone/ } })
    t.notOk(processRuns(s.vms[0].pid), 'no qemu')
    t.notOk(processRuns(s.agent!.pid), 'no agent')
    t.notOk((await taps()).includes(s.vms[0].tap), `no tap ${s.vms[0].tap} on br-prod`)
    t.same(fs.readdirSync(path.join(stateDir, 'shop')), ['history'], 'no run, no disks: only the history')
  })

  await t.test('two failovers started together: one runs, the other is refused naming it; the deadline rolls it back', async (t) => {
    const stateDir = newStateDir('race')
    const args = ['--json', '--commit-within', '15s', '--at-deadline', 'rollback']
    const both = Promise.all([plan('failover', toB, stateDir, args), plan('failover', toB, stateDir, args)])
    const claimed = await waitFor('one failover to claim the run', () => readState(stateDir) ?? undefined, 120_000)
    const results = await both
    const won = results.filter((r) => r.code === 0)
    const lost = results.filter((r) => r.code !== 0)
    t.equal(won.length, 1, 'exactly one ran')
    t.equal(lost.length, 1, 'exactly one was refused')
    t.match(oneLine(lost[0].stderr), [new RegExp(`^tidemark plan failover: plan shop is being failed over by pid ${claimed.failover.pid} \\(run ${claimed.runId}, `)], lost[0].stderr)
    const report = JSON.parse(won[0].stdout) as PlanRunReport
    t.match(report, { result: 'passed', runId: claimed.runId, details: { atDeadline: 'rollback' } })
    const s = readState(stateDir)!
    t.equal(s.phase, 'failed-over')
    t.ok(s.watcher && processRuns(s.watcher.pid), `its watcher runs (pid ${s.watcher?.pid})`)

    await waitFor('the watcher to roll back at the deadline', () => !readState(stateDir), 120_000)
    t.ok(Date.now() >= Date.parse(s.commitDeadline), 'not before the deadline')
    t.notOk(processRuns(s.vms[0].pid), 'the VM is gone')
    t.notOk(processRuns(s.agent!.pid), 'the agent is gone')
    await waitFor('the watcher to exit', () => !processRuns(s.watcher!.pid), 30_000)
    t.notOk((await taps()).includes(s.vms[0].tap), 'the tap is gone')
    t.ok(fs.readdirSync(path.join(stateDir, 'shop', 'history')).some((f) => f.endsWith('-rollback.json')), 'its report is in history/')
    const entry = (await audit()).find((e) => e.action === 'plan rollback' && e.details.runId === s.runId)
    t.match(entry, { result: 'passed', details: { trigger: /^at the deadline .*--at-deadline rollback; by the watcher, pid \d+/ } }, 'the audit trail says it was the deadline')
  })

  await t.test('--at-deadline commit: the watcher commits and reverse replication starts', async (t) => {
    const stateDir = newStateDir('commit')
    const r = await plan('failover', toB, stateDir, ['--json', '--commit-within', '15s', '--at-deadline', 'commit'])
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const s0 = readState(stateDir)!
    const s = await waitFor('the watcher to commit', () => {
      const st = readState(stateDir)
      return st?.phase === 'committed' ? st : undefined
    }, 120_000)
    t.ok(Date.parse(s.reverse!.committedAt) >= Date.parse(s0.commitDeadline), 'at the deadline, not before')
    t.ok(s.agent!.argv.includes('--appliance') && s.agent!.argv.includes(`unix:${reverse.b}`), 'the agent replicates to B')
    t.notOk(s.watcher, 'the run names no watcher once committed')
    await waitFor('the watcher to exit', () => !processRuns(s0.watcher!.pid), 60_000)
    t.ok(processRuns(s.vms[0].pid), 'the VM runs on')
    await waitFor('the initial copy to B', async () => (await status(stateDir))[0].agent?.initialCopy?.vol === 'complete', 180_000)
    const entry = (await audit()).find((e) => e.action === 'plan commit' && e.details.runId === s.runId)
    t.match(entry, { result: 'passed', details: { trigger: /^at the deadline .*--at-deadline commit/, reverse: `unix:${reverse.b}` } })
  })

  await t.test('a manual commit before the deadline stops the watcher; nothing happens at the deadline', async (t) => {
    const stateDir = newStateDir('manual')
    const r = await plan('failover', toC, stateDir, ['--commit-within', '30s', '--at-deadline', 'rollback'])
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const s0 = readState(stateDir)!
    const human = await tidemark(['plan', 'status', '--state', stateDir])
    t.match(human.stdout, new RegExp(`\\n  at the deadline: roll back \\(watcher pid ${s0.watcher!.pid} running\\)\\n`), human.stdout)
    const c = await plan('commit', toC, stateDir, ['--json'])
    t.equal(c.code, 0, `commit exits 0 ${c.stderr}`)
    t.notOk(processRuns(s0.watcher!.pid), 'the watcher has exited when commit returns')
    t.match(fs.readFileSync(path.join(stateDir, 'shop', 'watcher.log'), 'utf8'), /nothing to do/, 'it did nothing')
    // Past the deadline the watcher would have acted: the run is as commit left it.
    await waitFor('the deadline to pass', () => Date.now() > Date.parse(s0.commitDeadline) + 2000, 60_000)
    const s = readState(stateDir)!
    t.match(s, { phase: 'committed', runId: s0.runId })
    t.ok(processRuns(s.vms[0].pid), 'the VM runs')
    t.same(
      (await audit()).filter((e) => e.details.runId === s0.runId).map((e) => `${e.action} ${e.result}`),
      ['plan failover passed', 'plan commit passed'],
      'the audit trail has the failover and the commit only'
    )
  })

  await t.test('reverse TLS files are relative to the plan file; validate names a missing one', async (t) => {
    const sub = path.join(dir, 'plans')
    fs.mkdirSync(path.join(sub, 'pki'), { recursive: true })
    const f = path.join(sub, 'tls.yaml')
    fs.writeFileSync(f, fs.readFileSync(toB, 'utf8').replace(/^reverse: .*$/m, "reverse: { appliance: '127.0.0.1:7400', tlsCert: pki/agent.pem, tlsKey: pki/agent.key, tlsCa: pki/ca.pem }"))
    fs.writeFileSync(path.join(sub, 'pki', 'agent.pem'), 'x')
    fs.writeFileSync(path.join(sub, 'pki', 'ca.pem'), 'x')
    // Run from another directory: the paths are the plan file's, not the working directory's.
    const bad = await run(process.execPath, [BIN, 'plan', 'validate', '--appliance', `unix:${aSock}`, '--plan', f], { cwd: dir })
    t.equal(bad.code, 1, 'a missing reverse TLS file is a problem')
    t.match(oneLine(bad.stderr), [new RegExp(`reverse\\.tlsKey: ${path.join(sub, 'pki', 'agent.key').replace(/[.]/g, '\\.')}: no such file`)], bad.stderr)
    fs.writeFileSync(path.join(sub, 'pki', 'agent.key'), 'x')
    const good = await run(process.execPath, [BIN, 'plan', 'validate', '--appliance', `unix:${aSock}`, '--plan', f], { cwd: dir })
    t.equal(good.code, 0, `valid once it exists ${good.stderr}`)
  })
})
