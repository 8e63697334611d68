// `plan test` against an appliance with TLS, whose NBD therefore requires
// STARTTLS with a certificate its CA signed: the VMs read their views with the
// certificate the command was given (qemu's tls-creds-x509, from a 0700
// directory of the run that teardown removes), over the appliance's NBD unix
// socket, and over its TCP endpoint through the run's relay (which forwards
// the TLS bytes untouched). A real guest boots each time (console check).
// Without a certificate the plan is refused up front, in one line.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import type { PlanRunReport } from '../client/plans/runner'
import { freePort, tidemark, tidemarkJson, waitFor } from './claims-helpers'
import { type Guest, planGuestOrWhy, processRuns, guestPlanYaml } from './lib/guest'
import { makeImage, makePki, must, nbdUri, startAgent, startAppliance, tlsArgs, tmpdir } from './helpers'

const built = planGuestOrWhy({ tools: ['openssl'] })

t.test('plan test boots VMs from an appliance whose NBD requires TLS', { skip: typeof built === 'string' ? built : false }, async (t) => {
  const guest = built as Guest
  const dir = tmpdir(t, 'tidemark-plan-tls-')
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'planner'])
  const data = path.join(dir, 'data')
  const exportsSock = path.join(dir, 'appliance-nbd.sock')
  const unixListener = path.join(dir, 'app.sock')
  let app = await startAppliance(t, {
    data,
    extra: ['--nbd', `unix:${exportsSock}`, '--listen', `unix:${unixListener}`, ...tlsArgs(pki, 'appliance')],
  })
  const at = (): string => `localhost:${app.port}`
  const img = path.join(dir, 'prod.img')
  makeImage(img, guest.rootSize, null)
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', at(), '--control', `unix:${control}`, ...tlsArgs(pki, 'agent')] })
  await app.waitForLog(/initial copy complete/, 120_000)
  await must('nbdcopy', [guest.rootImage, nbdUri(sock, 'vol')])
  const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'tls-mark'])
  t.ok(mark.durable, 'a TimeMark of the guest root, durable at the appliance')

  const plan = path.join(dir, 'shop.yaml')
  fs.writeFileSync(
    plan,
    guestPlanYaml(guest, { mark: 'tls-mark', role: 'db', timeout: 120 })
  )

  /** A passing run over TLS, torn down to nothing (its certificate directory included). */
  const passes = async (t: Test, nbd: RegExp): Promise<void> => {
    const r = await tidemark(['plan', 'test', '--appliance', at(), '--plan', plan, '--json', ...tlsArgs(pki, 'planner')], { timeoutMs: 300_000 })
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.equal(r.code, 0, `exits 0 ${r.stderr}${report.machines.map((m) => `${m.name}: ${m.check.detail}`).join('; ')}`)
    t.match(report, { result: 'passed', nbd }, `the disks were read over TLS (${report.nbd})`)
    t.match(report.machines, [{ check: { result: 'green', detail: /tm-boot role=db lines=0/ }, disks: [{ seq: mark.seq }] }], 'the guest booted from the view of the mark')
    t.same(report.teardownProblems, [])
    t.same(await tidemarkJson<unknown[]>(['timeview', 'list', '--appliance', at(), ...tlsArgs(pki, 'planner')]), [], 'no views are left')
    t.notMatch((await must('ip', ['netns', 'list'])).toString(), report.netns, 'no namespace is left')
    for (const m of report.machines) if (m.pid !== null) t.notOk(processRuns(m.pid), `qemu (pid ${m.pid}) is gone`)
    t.notOk(
      fs.readdirSync(os.tmpdir()).some((d) => d.startsWith(`tidemark-plan-shop-${report.runId}-`)),
      "the run's directory, with its copy of the private key, is removed"
    )
  }

  await t.test('over the NBD unix socket', async (t) => {
    await passes(t, new RegExp(`^unix:${exportsSock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} with TLS$`))
  })

  await t.test('without a certificate the plan is refused before anything runs', async (t) => {
    // The appliance's unix listener takes no certificate: nothing the VMs could show.
    const r = await tidemark(['plan', 'test', '--appliance', `unix:${unixListener}`, '--plan', plan])
    t.equal(r.code, 1, 'exits 1')
    t.match(r.stderr, /^tidemark plan test: plan \S+: the appliance's NBD requires TLS and the VMs read their disks there with this command's certificate: reach the appliance over TCP with --tls-cert, --tls-key and --tls-ca\n$/, 'one line says why and what to do')
    t.same(await tidemarkJson<unknown[]>(['timeview', 'list', '--appliance', at(), ...tlsArgs(pki, 'planner')]), [], 'no view was made')
  })

  await t.test('over the NBD TCP endpoint, through the relay', async (t) => {
    const port = app.port
    await app.stop()
    const nbdPort = await freePort()
    app = await startAppliance(t, { data, port, extra: ['--nbd', `tcp:127.0.0.1:${nbdPort}`, ...tlsArgs(pki, 'appliance')] })
    await passes(t, new RegExp(`^tcp:127\\.0\\.0\\.1:${nbdPort} with TLS, relayed from unix:`))
  })

  await t.test('scheduled by an appliance with TLS and a unix listener: its runs go over TCP with its certificate, and pass', async (t) => {
    const port = app.port
    await app.stop()
    app = await startAppliance(t, {
      data,
      port,
      extra: ['--nbd', `unix:${exportsSock}`, '--listen', `unix:${unixListener}`, '--plan', `${plan}=10s`, ...tlsArgs(pki, 'appliance')],
    })
    const done = await waitFor('a scheduled run to finish', () => app.logs().find((l) => /^scheduled test of plan shop (passed|failed)/.test(String(l.msg))), 120_000)
    t.match(done, { msg: /^scheduled test of plan shop passed: RTO [\d.]+ s$/ }, `the scheduled test passed ${String(done.err ?? '')}`)
    const trail = await tidemarkJson<{ entries: Array<{ action: string; result: string; who: string }> }>(['plan', 'audit', '--appliance', at(), ...tlsArgs(pki, 'planner')])
    t.match(trail.entries.at(-1), { action: 'plan test', result: 'passed', who: 'appliance' }, "recorded under the appliance's certificate")
    t.equal(await app.stop(), 0)
  })
})
