// Instant recovery of a real VM, through real processes: a small Linux guest
// (test/lib/guest.ts, built offline from the host's packages) boots under
// qemu-system-x86_64 with its root disk on a volume the agent protects; its
// workload appends and syncs numbered lines. A TimeMark is taken with the VM
// paused through QMP (quiesce `stop`, thaw `cont`), and while production
// keeps running a second VM boots from a writable view of that mark. It must
// find exactly the mark's data, its writes must stay in the view, and the
// mark and the production volume must be untouched by them. It does so twice:
// from a client-side `tidemark timeview --writable`, and from a writable view
// the appliance serves itself (`timeview create`), which must also keep what
// the guest synced across a kill -9 of the appliance and boot again from it.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import type { TimeMarkResult } from '../agent/timemarks'
import { tidemarkJson } from './claims-helpers'
import { buildGuest, guestLog, qmpShell, syncedLines, Vm, type Guest } from './lib/guest'
import {
  BIN,
  have,
  makeImage,
  must,
  nbdUri,
  restore,
  run,
  sha256,
  startAgent,
  startAppliance,
  startTimeview,
  tmpdir,
  type ApplianceProcess,
} from './helpers'

const TOOLS = ['qemu-system-x86_64', 'busybox', 'cpio', 'modinfo', 'mkfs.ext4', 'debugfs', 'e2fsck', 'nbdcopy']

/** Boots a guest and kills it (waiting for qemu to exit) when the test ends, before its files go. */
function boot(t: Test, guest: Guest, opts: ConstructorParameters<typeof Vm>[1]): Vm {
  const vm = new Vm(guest, opts)
  t.teardown(() => vm.kill())
  return vm
}

/** A way to serve a writable view of the mark for a recovery VM. */
interface ViewKind {
  what: string
  open(t: Test): Promise<{ uri: string; close(): Promise<void>; crash?(): Promise<void> }>
}

/** `tidemark restore --timemark vm-mark`. */
async function restoreMark(appliance: string, out: string): Promise<void> {
  await must(process.execPath, [BIN, 'restore', '--appliance', appliance, '--volume', 'vol', '--timemark', 'vm-mark', '--out', out])
}

/** "ROLE 1" .. "ROLE N", the file the workload writes. */
function numbered(role: string, from: number, to: number): string[] {
  const out: string[] = []
  for (let i = from; i <= to; i++) out.push(`${role} ${i}`)
  return out
}

t.test('a VM boots from a writable view of an app-consistent TimeMark while production runs on', async (t) => {
  const missing = TOOLS.filter((c) => !have(c))
  if (missing.length) return t.fail(`missing ${missing.join(', ')} (scripts/test-deps.sh installs them)`)
  const guest = buildGuest()
  const dir = tmpdir(t, 'tidemark-vm-')
  const scratch = path.join(dir, 'scratch')
  fs.mkdirSync(scratch)

  // Production: an appliance, an agent protecting a volume the size of the guest's disk.
  const img = path.join(dir, 'prod.img')
  makeImage(img, guest.rootSize, null)
  const exportsSock = path.join(dir, 'appliance-nbd.sock')
  const startApp = (port = 0): Promise<ApplianceProcess> => startAppliance(t, { data: path.join(dir, 'data'), port, extra: ['--nbd', `unix:${exportsSock}`] })
  let app = await startApp()
  const sock = path.join(dir, 'nbd.sock')
  const control = path.join(dir, 'control.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await app.waitForLog(/initial copy complete/, 120_000)
  // The guest's disk is written through the tap, so the appliance has it.
  await must('nbdcopy', [guest.rootImage, nbdUri(sock, 'vol')])

  const prod = boot(t, guest, { disk: nbdUri(sock, 'vol'), role: 'prod', console: path.join(dir, 'prod.console'), qmp: path.join(dir, 'prod.qmp') })
  t.same(await prod.until(() => prod.boot(), 'boot report'), { role: 'prod', lines: 0, last: '' }, 'production boots from the tap and finds an empty log')
  await prod.until(() => prod.lines().length >= 10, '10 synced lines')

  // The mark, with the VM paused: quiesce stops it (qemu drains and flushes
  // the guest's requests first), notes how much the console had said, and
  // copies the disk as the paused VM left it; thaw lets it run again.
  const atStop = path.join(dir, 'at-stop.img')
  const said = path.join(dir, 'console-at-stop')
  const quiesce = `${qmpShell(prod.opts.qmp!, 'stop')} && wc -c < '${prod.opts.console}' > '${said}' && nbdcopy '${nbdUri(sock, 'vol')}' '${atStop}'`
  const r = await run(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'vm-mark',
    '--quiesce', quiesce, '--thaw', qmpShell(prod.opts.qmp!, 'cont'), '--json'])
  t.equal(r.code, 0, `timemark create exits 0 ${r.stderr}`)
  const mark = JSON.parse(r.stdout) as TimeMarkResult
  t.match(mark, { label: 'vm-mark', consistency: 'app', durable: true }, 'an app-consistent mark, durable at the appliance')
  const linesAtStop = Math.max(0, ...syncedLines(fs.readFileSync(prod.opts.console, 'utf8').slice(0, Number(fs.readFileSync(said, 'utf8')))))
  const resumedFrom = prod.lines().length
  await prod.until(() => prod.lines().length > resumedFrom + 5, 'lines after the thaw')
  t.pass('production runs on after the thaw')

  // The mark is the disk as the paused VM left it, and holds every line the guest had synced.
  const markImg = path.join(dir, 'mark.img')
  await restoreMark(app.address, markImg)
  const markSha = sha256(markImg)
  t.equal(markSha, sha256(atStop), 'the mark restores byte-exact to the disk as the paused VM left it')
  const atMark = guestLog(markImg, scratch)
  t.ok(atMark.fsckClean, 'ext4 of the mark is clean after its journal replays', { fsck: atMark.fsck })
  const m = atMark.lines.length
  t.same(atMark.lines, numbered('prod', 1, m), `the mark's log is production's lines 1..${m}, whole and in order`)
  t.ok(m >= linesAtStop, `the mark holds every line the console had reported synced at the pause (${linesAtStop})`)

  // Recovery VMs, each on a writable view of the mark, booted while production goes on.
  const overlays = path.join(dir, 'overlays')
  fs.mkdirSync(overlays)
  const views: ViewKind[] = [
    {
      what: 'a client-side writable TimeView (tidemark timeview --writable)',
      async open(t) {
        const viewSock = path.join(dir, 'view.sock')
        const view = await startTimeview(t, ['--appliance', app.address, '--volume', 'vol', '--timemark', 'vm-mark', '--writable', '--nbd', `unix:${viewSock}`],
          { env: { ...process.env, TMPDIR: overlays } })
        return { uri: nbdUri(viewSock, 'vol'), close: async () => void t.equal(await view.stop(), 0, 'the view stops cleanly') }
      },
    },
    {
      what: 'a writable view the appliance serves (tidemark timeview create --writable)',
      async open(t) {
        const view = await tidemarkJson<{ name: string; seq: number; writable: boolean; uris: string[] }>(['timeview', 'create', '--appliance', app.address, '--volume', 'vol',
          '--timemark', 'vm-mark', '--writable', '--name', 'recovery'])
        t.match(view, { name: 'recovery', seq: mark.seq, writable: true }, 'the appliance serves a writable view at the mark\'s seq')
        const uri = nbdUri(exportsSock, 'recovery')
        t.ok(view.uris.includes(uri), `it names its URI (${view.uris.join(', ')})`)
        return {
          uri,
          crash: async () => {
            const port = app.port
            await app.kill9()
            app = await startApp(port)
          },
          close: async () => {
            await tidemarkJson(['timeview', 'delete', '--appliance', app.address, '--name', 'recovery'])
            const left = await tidemarkJson<unknown[]>(['timeview', 'list', '--appliance', app.address])
            t.same(left, [], 'deleted, the view is gone')
          },
        }
      },
    },
  ]
  for (const [k, kind] of views.entries()) {
    await t.test(`from ${kind.what}`, async (t) => {
      const view = await kind.open(t)
      const prodBefore = prod.lines().length
      const clone = boot(t, guest, { disk: view.uri, role: 'clone', console: path.join(dir, `clone-${k}.console`) })
      t.same(await clone.until(() => clone.boot(), 'boot report'), { role: 'clone', lines: m, last: `prod ${m}` }, 'the recovery VM finds exactly the mark\'s lines')
      await clone.until(() => clone.lines().length >= 10, '10 synced lines')
      t.ok(prod.lines().length > prodBefore, 'production kept writing while the recovery VM booted and ran')
      prod.check()
      await clone.kill()

      // The recovery VM's writes are in the view, on top of the mark.
      const viewImg = path.join(dir, `view-${k}.img`)
      await must('nbdcopy', [view.uri, viewImg])
      const inView = guestLog(viewImg, scratch)
      fs.rmSync(viewImg)
      const c = clone.lines().at(-1)!
      const n = inView.lines.length
      t.same(inView.lines, [...numbered('prod', 1, m), ...numbered('clone', m + 1, n)], 'the view holds the mark\'s lines, then the recovery VM\'s, whole and in order')
      t.ok(n >= c, `with every line the recovery VM reported synced (${c} lines, ${n} on the disk)`)

      if (view.crash) {
        // The whole recovery site crashes (the VM is gone already): what the
        // guest synced was flushed, so it is there when the appliance is back,
        // and the recovery VM boots from it again.
        await view.crash()
        const afterImg = path.join(dir, `view-${k}-after-crash.img`)
        await must('nbdcopy', [view.uri, afterImg])
        const after = guestLog(afterImg, scratch)
        fs.rmSync(afterImg)
        const n2 = after.lines.length
        t.ok(after.fsckClean, 'after kill -9 of the appliance, ext4 on the view is clean once its journal replays', { fsck: after.fsck })
        t.same(after.lines, [...numbered('prod', 1, m), ...numbered('clone', m + 1, n2)], 'and its log is whole and in order')
        t.ok(n2 >= c, `with every line the recovery VM had synced (${c}; ${n2} on the disk)`)
        const rebooted = boot(t, guest, { disk: view.uri, role: 'clone', console: path.join(dir, `clone-${k}-again.console`) })
        t.same(await rebooted.until(() => rebooted.boot(), 'boot report'), { role: 'clone', lines: n2, last: `clone ${n2}` }, 'the recovery VM boots again from the view and finds it')
        await rebooted.until(() => rebooted.lines().length >= 3, '3 synced lines')
        await rebooted.kill()
      }
      await view.close()

      // The mark did not see them.
      const again = path.join(dir, `mark-again-${k}.img`)
      await restoreMark(app.address, again)
      t.equal(sha256(again), markSha, 'the mark restores unchanged after the recovery VM wrote to its view')
      fs.rmSync(again)
    })
  }

  // Nor did production.
  await prod.kill()
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
  t.notMatch(agent.out, /stopping before the appliance acknowledged everything/, 'after the appliance acknowledged everything')
  const latest = path.join(dir, 'latest.img')
  await restore(app.address, 'vol', 'latest', latest)
  t.equal(sha256(latest), sha256(img), 'the newest point is the production volume')
  const prodLog = guestLog(img, scratch)
  t.same(prodLog.lines, numbered('prod', 1, prodLog.lines.length), 'production\'s log holds its own lines only')
  t.ok(prodLog.lines.length >= prod.lines().at(-1)!, 'every line production synced')
})
