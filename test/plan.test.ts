// Recovery plans through real processes: an appliance serving NBD on a unix
// socket, an agent protecting a volume that holds a small Linux guest's root
// (test/lib/guest.ts), a TimeMark; then `tidemark plan validate` on good and
// bad plan files, and `tidemark plan test` booting the guest from a writable
// view inside a network namespace under qemu (TCG), passing and failing,
// each torn down to nothing (no view, no namespace, no qemu) with the
// appliance's journal exactly as before.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { NETNS_DIR } from '../client/plans/netns'
import type { PlanRunReport } from '../client/plans/runner'
import { freePort, tidemark, tidemarkJson, volumeStats, waitFor } from './claims-helpers'
import { type Guest, planGuestOrWhy, processRuns } from './lib/guest'
import { BIN, makeImage, must, nbdUri, run, startAgent, startAppliance, tmpdir } from './helpers'

// (the host's busybox wget crashes on a static glibc build: GNU wget for the web check)

async function netnsList(): Promise<string> {
  return (await must('ip', ['netns', 'list'])).toString()
}

const built = planGuestOrWhy({ tools: ['wget'] })
// virtio_net and an address from the kernel command line: the two-machine plan's guest
const builtNet = typeof built === 'string' ? built : planGuestOrWhy({ network: true, tools: ['wget'] })

t.test('recovery plans: validate and an isolated test failover of a real VM', { skip: typeof built === 'string' ? built : false }, async (t) => {
  const guest = built as Guest
  const dir = tmpdir(t, 'tidemark-plan-')

  // Production: an appliance with NBD on a unix socket, an agent protecting a volume holding the guest's root.
  const img = path.join(dir, 'prod.img')
  makeImage(img, guest.rootSize, null)
  const exportsSock = path.join(dir, 'appliance-nbd.sock')
  let app = await startAppliance(t, { data: path.join(dir, 'data'), extra: ['--nbd', `unix:${exportsSock}`] })
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await app.waitForLog(/initial copy complete/, 120_000)
  await must('nbdcopy', [guest.rootImage, nbdUri(sock, 'vol')])
  const mark = await tidemarkJson<{ seq: number; durable: boolean }>(['timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'plan-mark'])
  t.ok(mark.durable, 'a TimeMark after the guest root was written, durable at the appliance')

  const writePlan = (name: string, text: string): string => {
    const f = path.join(dir, name)
    fs.writeFileSync(f, text)
    return f
  }
  const goodPlan = (opts: { check?: string; point?: string; append?: string } = {}): string => `name: shop
point: ${opts.point ?? 'mark=plan-mark'}
machines:
  - name: db
    boot: 1
    cpus: 1
    memory: 256M
    disks: [vol]
    kernel: ${guest.kernel}
    initrd: ${guest.initrd}
    append: ${opts.append ?? 'console=ttyS0 panic=-1 tm.role=db'}
    check: ${opts.check ?? "{ console: 'tm-boot role=db lines=\\d+', timeout: 120 }"}
`

  await t.test('plan validate accepts a good plan and resolves its disks at the mark', async (t) => {
    const f = writePlan('good.yaml', goodPlan())
    const r = await tidemark(['plan', 'validate', '--appliance', app.address, '--plan', f, '--json'])
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const out = JSON.parse(r.stdout) as { valid: boolean; disks: Array<{ volume: string; seq: number; point: string }> }
    t.equal(out.valid, true)
    t.match(out.disks, [{ volume: 'vol', seq: mark.seq, point: /TimeMark .*plan-mark/ }], 'the disk resolves to the TimeMark\'s seq')
    const human = await tidemark(['plan', 'validate', '--appliance', app.address, '--plan', f, '--seq', 'latest'])
    t.equal(human.code, 0, `--seq latest overrides the plan's point ${human.stderr}`)
    t.match(human.stdout, /^plan shop: valid: 1 machine, 1 disk at seq \d+/)
  })

  await t.test('plan validate refuses bad plans, one line per problem with its line', async (t) => {
    const cases: Array<{ what: string; text: string; line: RegExp }> = [
      { what: 'an unknown volume', text: goodPlan().replace('disks: [vol]', 'disks: [nope]'), line: /plan \S+, line 8: machines\[0\]\.disks\[0\]: volume nope is not on this appliance/ },
      {
        what: 'a duplicate machine',
        text: `${goodPlan()}  - name: db\n    boot: 2\n    disks: [other]\n`,
        line: /plan \S+, line 13: machines\[1\]\.name: machine db is named twice/,
      },
      { what: 'a missing kernel', text: goodPlan().replace(guest.kernel, path.join(dir, 'no-such-vmlinuz')), line: /plan \S+, line 9: machines\[0\]\.kernel: \S+no-such-vmlinuz: no such file/ },
      { what: 'a seq that does not exist', text: goodPlan({ point: 'seq=99999999' }), line: /plan \S+, line 2: machines\[0\]\.disks\[0\]: volume vol at the plan's point: seq 99999999 of volume vol is not durable here yet/ },
      { what: 'a point before the volume\'s history', text: goodPlan({ point: 'at=2001-01-01T00:00:00Z' }), line: /plan \S+, line 2: .*holds nothing recorded at or before 2001-01-01/ },
      {
        what: 'an unknown network',
        text: goodPlan().replace('    check:', '    network: { name: lan, address: 10.77.0.2/24 }\n    check:') + 'networks:\n  app: { test: isolated }\n',
        line: /plan \S+, line 12: machines\[0\]\.network\.name: network lan is not declared under networks: \(declared: app\)/,
      },
      { what: 'a boot group that is not a positive integer', text: goodPlan().replace('boot: 1', 'boot: 0'), line: /plan \S+, line 5: machines\[0\]\.boot: must be a positive integer/ },
      { what: 'an accelerator qemu is not given here', text: goodPlan().replace('boot: 1', 'boot: 1\n    accel: warp'), line: /plan \S+, line 6: machines\[0\]\.accel: must be tcg, kvm or auto/ },
    ]
    for (const [i, c] of cases.entries()) {
      const f = writePlan(`bad-${i}.yaml`, c.text)
      const r = await tidemark(['plan', 'validate', '--appliance', app.address, '--plan', f])
      t.equal(r.code, 1, `${c.what}: exits 1`)
      t.match(r.stderr, c.line, `${c.what}: ${r.stderr.trim()}`)
      t.equal(r.stderr.trim().split('\n').length, 1, `${c.what}: one line`)
    }
  })

  const journal = async (): Promise<{ durableSeq: number; journalBytes: unknown; segments: number }> => {
    const s = await volumeStats(app.address, 'vol')
    return { durableSeq: s.durableSeq, journalBytes: s.journalBytes, segments: s.segments }
  }
  const tornDown = async (t: Test, report: PlanRunReport): Promise<void> => {
    const views = await tidemarkJson<unknown[]>(['timeview', 'list', '--appliance', app.address])
    t.same(views, [], 'no views are left on the appliance')
    t.notMatch(await netnsList(), report.netns, `no network namespace ${report.netns} is left`)
    for (const m of report.machines) if (m.pid !== null) t.notOk(processRuns(m.pid), `qemu of ${m.name} (pid ${m.pid}) is gone`)
  }

  await t.test('plan test boots the machine from a view of the mark and tears everything down', async (t) => {
    const before = await journal()
    const f = writePlan('test.yaml', goodPlan())
    const r = await tidemark(['plan', 'test', '--appliance', app.address, '--plan', f, '--json'], { timeoutMs: 300_000 })
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.match(report, { plan: 'shop', action: 'test', result: 'passed' }, 'the test passed')
    t.ok(report.rtoSeconds !== null && report.rtoSeconds > 0, `an RTO is measured (${report.rtoSeconds} s)`)
    const db = report.machines[0]
    t.match(db, { name: 'db', check: { kind: 'console', result: 'green', detail: /tm-boot role=db lines=0/ } }, 'its console check is green')
    t.ok(db.bootSeconds !== null && db.bootSeconds > 0 && db.bootSeconds <= report.rtoSeconds!, `boot seconds are reported (${db.bootSeconds})`)
    t.match(db.disks, [{ volume: 'vol', seq: mark.seq, view: new RegExp(`^plan-shop-test-db-vol-${report.runId}$`) }], 'the disk was a view at the mark')
    t.equal(db.consoleTail, undefined, 'no console tail when the check is green')
    t.same(report.teardownProblems, [])
    await tornDown(t, report)
    t.same(await journal(), before, 'the journal is as before: durable seq, bytes and segments (the VM wrote to its view only)')
  })

  await t.test('without --json, plan test reports in lines', async (t) => {
    const f = writePlan('lines.yaml', goodPlan())
    const r = await tidemark(['plan', 'test', '--appliance', app.address, '--plan', f], { timeoutMs: 300_000 })
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    t.match(r.stdout, /^plan shop: test passed: RTO [\d.]+ s\n  point: TimeMark \d+ 'plan-mark'/, 'the result and the RTO first, then the point')
    t.match(r.stdout, /\n  db \(boot 1\): green after [\d.]+ s: console matched: tm-boot role=db lines=0/, 'a line per machine')
    t.match(r.stdout, /\n  torn down: 1 VM stopped, namespace tidemark-plan-shop-[0-9a-f]+ deleted, views deleted\n  recorded in the appliance's audit trail: entry \d+, by \(unidentified\)\n$/, 'and the teardown, and the audit entry')
    t.equal(r.stderr, '', 'no progress lines when stderr is not a terminal')
  })

  await t.test('a check that fails fails the run with the console tail, and tears down', async (t) => {
    const before = await journal()
    const f = writePlan('failing.yaml', goodPlan({ check: "{ console: 'never-says-this', timeout: 15 }" }))
    const r = await tidemark(['plan', 'test', '--appliance', app.address, '--plan', f, '--json'], { timeoutMs: 300_000 })
    t.equal(r.code, 1, 'exits 1')
    t.match(r.stderr, /^tidemark plan test: plan shop failed: boot group 1: the check of db failed\n$/, 'one line says why')
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.match(report, { result: 'failed', rtoSeconds: null })
    const db = report.machines[0]
    t.match(db, { check: { result: 'failed', detail: /did not match \/never-says-this\/ within 15 s/ }, bootSeconds: null })
    t.ok(db.consoleTail && db.consoleTail.length > 0, 'the console tail is in the report', { tail: db.consoleTail })
    await tornDown(t, report)
    t.same(await journal(), before, 'the journal is as before')
  })

  await t.test('an interrupted plan test (SIGINT) still tears everything down', async (t) => {
    // A plan name of its own: the namespace it looks for is this run's even when another test runs plans.
    const f = writePlan('interrupted.yaml', goodPlan({ check: "{ console: 'never-says-this', timeout: 300 }" }).replace('name: shop', 'name: sigint'))
    const p = spawn(process.execPath, [BIN, 'plan', 'test', '--appliance', app.address, '--plan', f, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    const exited = new Promise<number | null>((resolve) => p.on('close', (code) => resolve(code)))
    t.teardown(async () => {
      if (p.exitCode === null) p.kill('SIGKILL')
      await exited
    })
    // Interrupted once its VM runs: the namespace is there and qemu has written to the console.
    const ns = await waitFor('the run\'s network namespace', async () => /tidemark-plan-sigint-[0-9a-f]+/.exec(await netnsList())?.[0], 120_000)
    const console = (): string | undefined => {
      const d = fs.readdirSync(os.tmpdir()).find((x) => x.startsWith(`${ns}-`))
      return d && path.join(os.tmpdir(), d, 'db.console')
    }
    await waitFor('the VM\'s console', () => {
      const c = console()
      return c !== undefined && fs.existsSync(c) && fs.statSync(c).size > 0
    }, 120_000)
    p.kill('SIGINT')
    t.equal(await exited, 1, 'exits 1')
    t.match(err, /^tidemark plan test: plan sigint failed: interrupted/m, 'and says it was interrupted')
    const report = JSON.parse(out) as PlanRunReport
    t.match(report, { result: 'failed', machines: [{ check: { result: 'failed' } }] })
    t.same(report.teardownProblems, [])
    await tornDown(t, report)
  })

  await t.test('two machines in boot order on an isolated network: web reaches db, nothing reaches out (--keep)', { skip: typeof builtNet === 'string' ? builtNet : false }, async (t) => {
    const net = builtNet as Guest
    // A second agent: db and web in one consistency group, each disk the network guest's root.
    const imgs = { db: path.join(dir, 'db.img'), web: path.join(dir, 'web.img') }
    for (const f of Object.values(imgs)) makeImage(f, net.rootSize, null)
    const sock2 = path.join(dir, 'nbd2.sock')
    const control2 = path.join(dir, 'control2.sock')
    await startAgent(t, { state: path.join(dir, 'state2'), sock: sock2, volumes: imgs, extra: ['--appliance', app.address, '--control', `unix:${control2}`, '--group', 'shop'] })
    for (const v of ['db', 'web']) {
      await waitFor(`the initial copy of ${v}`, async () => (await volumeStats(app.address, v).catch(() => undefined))?.fullSyncDone, 120_000)
      await must('nbdcopy', [net.rootImage, nbdUri(sock2, v)])
    }
    await tidemarkJson(['timemark', 'create', '--control', `unix:${control2}`, '--group', 'shop', '--label', 'net-mark'])

    const f = writePlan('net.yaml', `name: net
point: mark=net-mark
machines:
  - name: db
    boot: 1
    disks: [db]
    kernel: ${net.kernel}
    initrd: ${net.initrd}
    append: console=ttyS0 panic=-1 tm.role=db
    network: { name: app, address: 10.77.0.2/24 }
    check: { console: 'tm-net 10.77.0.2/24', timeout: 120 }
  - name: web
    boot: 2
    disks: [web]
    kernel: ${net.kernel}
    initrd: ${net.initrd}
    append: console=ttyS0 panic=-1 tm.role=web tm.peer=10.77.0.2
    network: { name: app, address: 10.77.0.3/24 }
    check: { command: 'wget -q -T 2 -t 1 -O- http://10.77.0.3/health', timeout: 120 }
networks:
  app: { test: isolated, failover: br-prod }
`)
    const validated = await tidemarkJson<{ disks: Array<{ volume: string; seq: number; group: string }> }>(['plan', 'validate', '--appliance', app.address, '--plan', f])
    t.equal(new Set(validated.disks.map((d) => d.seq)).size, 1, 'the two volumes of the group resolve to one seq')
    t.same(validated.disks.map((d) => d.group), ['shop', 'shop'])

    const before = await Promise.all(['db', 'web'].map((v) => volumeStats(app.address, v).then((s) => [s.durableSeq, s.journalBytes])))
    const r = await tidemark(['plan', 'test', '--appliance', app.address, '--plan', f, '--keep', '--json'], { timeoutMs: 400_000 })
    const report = JSON.parse(r.stdout) as PlanRunReport
    // Whatever happens below, what was kept goes at the end.
    const removeKept = async (): Promise<void> => {
      for (const c of report.kept?.remove ?? []) await run('sh', ['-c', c.replace(/^tidemark /, `'${process.execPath}' '${BIN}' `)])
      for (const v of report.kept?.vms ?? []) await waitFor(`qemu ${v.pid} to exit`, () => !processRuns(v.pid), 30_000)
    }
    t.teardown(removeKept)
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    t.match(report, { result: 'passed', networks: [{ network: 'app', bridge: /^tmbr/, address: '10.77.0.254/24' }] })
    const [db, web] = report.machines
    t.match(db, { name: 'db', check: { result: 'green', detail: /tm-net 10\.77\.0\.2\/24/ } })
    t.match(web, { name: 'web', check: { result: 'green', detail: /peer 10\.77\.0\.2 ok/ } }, 'web served its health page after it pinged db over the isolated network')
    t.ok(web.startedAtSeconds! >= db.greenAtSeconds!, `web (boot 2) started once db (boot 1) was green (at ${web.startedAtSeconds} s; db green at ${db.greenAtSeconds} s)`)
    t.ok(report.routes!.length > 0 && report.routes!.every((l) => /^10\.77\.0\.0\/24 dev tmbr0 /.test(l)), `the namespace's only route is the plan's subnet (${report.routes!.join('; ')})`)

    // Kept: look inside the namespace while the VMs run.
    t.match(report.kept, { netns: report.netns, views: [/^plan-net-test-db-db-/, /^plan-net-test-web-web-/] })
    t.equal(report.kept!.vms.length, 2)
    const ns = (pid: number | 'self', kind: 'net' | 'mnt') => fs.readlinkSync(`/proc/${pid}/ns/${kind}`)
    const netnsInode = `net:[${fs.statSync(path.join(NETNS_DIR, report.netns!)).ino}]`
    for (const v of report.kept!.vms) {
      t.ok(processRuns(v.pid), `${v.machine}'s qemu runs on (pid ${v.pid})`)
      t.equal(ns(v.pid, 'net'), netnsInode, `${v.machine}'s qemu is in the run's network namespace`)
      // A mount namespace of its own would hold a copy of every host mount, busy until the VM ends.
      t.equal(ns(v.pid, 'mnt'), ns('self', 'mnt'), `${v.machine}'s qemu shares the host's mounts, pinning none`)
    }
    const inside = (cmd: string) => run('nsenter', [`--net=${path.join(NETNS_DIR, report.netns!)}`, 'sh', '-c', cmd], { timeoutMs: 30_000 })
    const pingDb = await inside('busybox ping -c 1 -W 5 10.77.0.2')
    t.equal(pingDb.code, 0, `db answers a ping inside the namespace ${pingDb.stderr}`)
    const hostRoute = await run('ip', ['-4', '-o', 'route', 'get', '1.1.1.1'])
    const hostAddr = /\bsrc (\S+)/.exec(hostRoute.stdout)?.[1]
    if (hostAddr) {
      const out = await inside(`busybox ping -c 1 -W 2 ${hostAddr}`)
      t.match(out.stderr, /Network is unreachable/, `the host's address ${hostAddr} is unreachable from the namespace: ${out.stderr.trim()}`)
    }
    const outside = await inside('busybox ping -c 1 -W 2 1.1.1.1')
    t.match(outside.stderr, /Network is unreachable/, `nothing outside is reachable from the namespace: ${outside.stderr.trim()}`)

    await removeKept()
    t.same(await tidemarkJson<unknown[]>(['timeview', 'list', '--appliance', app.address]), [], 'the printed commands remove the views')
    t.notMatch(await netnsList(), report.netns, 'and the namespace')
    const after = await Promise.all(['db', 'web'].map((v) => volumeStats(app.address, v).then((s) => [s.durableSeq, s.journalBytes])))
    t.same(after, before, 'the journals of db and web are as before')

    await t.test('a machine whose check fails stops the checks of its boot group at once', async (t) => {
      const g = writePlan('group-fails.yaml', `name: net
point: mark=net-mark
machines:
  - name: db
    boot: 1
    disks: [db]
    kernel: ${net.kernel}
    initrd: ${net.initrd}
    check: { console: 'never-says-this', timeout: 10 }
  - name: web
    boot: 1
    disks: [web]
    kernel: ${net.kernel}
    initrd: ${net.initrd}
    check: { console: 'never-says-this-either', timeout: 600 }
`)
      const started = Date.now()
      const r = await tidemark(['plan', 'test', '--appliance', app.address, '--plan', g, '--json'], { timeoutMs: 400_000 })
      t.equal(r.code, 1, 'exits 1')
      t.ok(Date.now() - started < 300_000, 'long before web\'s own timeout')
      const report = JSON.parse(r.stdout) as PlanRunReport
      t.match(report, { error: 'boot group 1: the check of db failed' })
      t.match(report.machines, [{ name: 'db', check: { result: 'failed' } }, { name: 'web', check: { result: 'stopped' } }])
      await tornDown(t, report)
    })
  })

  await t.test('an appliance serving NBD on TCP only: the run relays its disks into the namespace', async (t) => {
    // The namespace has no route to the host's TCP: the run relays a unix socket of its own.
    const port = app.port
    await app.stop()
    const nbdPort = await freePort()
    app = await startAppliance(t, { data: path.join(dir, 'data'), port, extra: ['--nbd', `tcp:127.0.0.1:${nbdPort}`] })
    const before = await journal()
    const f = writePlan('tcp.yaml', goodPlan())
    const r = await tidemark(['plan', 'test', '--appliance', app.address, '--plan', f, '--json'], { timeoutMs: 300_000 })
    t.equal(r.code, 0, `exits 0 ${r.stderr}`)
    const report = JSON.parse(r.stdout) as PlanRunReport
    t.match(report, { nbd: new RegExp(`^tcp:127\\.0\\.0\\.1:${nbdPort}, relayed from unix:`) }, 'the disks went through the relay')
    t.match(report, { result: 'passed', machines: [{ check: { result: 'green', detail: /tm-boot role=db lines=0/ } }] }, 'the VM booted from the view over the relay')
    await tornDown(t, report)
    t.same(await journal(), before, 'the journal is as before')
  })
})
