// README claim (Quick start): `tidemark agent --demo` starts an appliance of
// its own and an agent replicating a 1 GiB sparse volume `demo` served on
// unix:./.tidemark/nbd.sock; qemu-io writes to it with the README's own URI,
// `timemark create` names a point on ./.tidemark/control.sock, `stats` and
// `restore` talk to the appliance it announced; Ctrl-C stops both, the agent
// draining to the appliance first. Run as a user would, in a fresh directory.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, must, restore, ServiceProcess, sha256, startAppliance, tmpdir } from './helpers'
import { tcpOpen, tidemark, tidemarkJson, waitFor } from './claims-helpers'

const URI = 'nbd+unix:///demo?socket=.tidemark/nbd.sock'

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('agent --demo: the README walk-through, then Ctrl-C drains to the appliance and stops both', async (t) => {
  const dir = tmpdir(t)
  const proc = spawn(process.execPath, [BIN, 'agent', '--demo'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  const demo = new ServiceProcess(proc)
  t.teardown(() => demo.stop())

  const started = await demo.waitForLog(/^demo: replicating to an appliance of its own; its dashboard is http:\/\/127\.0\.0\.1:\d+\/$/, 60_000)
  const address = String(started.appliance)
  t.match(address, /^127\.0\.0\.1:\d+$/, `the demo's appliance listens on loopback (${address})`)
  t.match(demo.err, new RegExp(`listening on ${address}`), 'and says so on stderr, as the README tells the user to look for')
  t.equal(started.data, path.join(fs.realpathSync(dir), '.tidemark', 'appliance'), 'its data directory is ./.tidemark/appliance')
  const appPid = (demo.logs().find((l) => l.component === 'appliance') ?? {}).pid as number
  t.ok(appPid && appPid !== proc.pid, `the appliance is a process of its own (pid ${appPid})`)
  const img = path.join(dir, '.tidemark', 'demo.img')
  t.equal(fs.statSync(img).size, 1024 ** 3, 'the volume is 1 GiB')
  await demo.waitForLog(/^initial copy complete$/, 240_000)

  // The README's commands, from the same directory.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', URI], { cwd: dir })
  const mark = await tidemarkJson<{ durable: boolean; seq: number }>(
    ['timemark', 'create', '--control', 'unix:.tidemark/control.sock', '--volume', 'demo', '--label', 'before-upgrade'], { cwd: dir })
  t.ok(mark.durable, 'a TimeMark is taken through ./.tidemark/control.sock and held by the appliance')
  // The quick start's status view and dashboard, at the URL the demo printed.
  const dashboard = String(started.dashboard)
  t.match(dashboard, /^http:\/\/127\.0\.0\.1:\d+\/$/, `the demo prints its dashboard's URL (${dashboard})`)
  t.equal(started.status, `npx tidemark status --appliance ${dashboard.slice(0, -1)} --watch 2`, 'and the status command to watch it')
  const page = await fetch(dashboard)
  t.equal(page.status, 200, 'the dashboard answers')
  t.match(await page.text(), /<html/i, 'with its page')
  const status = await tidemark(['status', '--appliance', dashboard.slice(0, -1)], { cwd: dir })
  t.equal(status.code, 0, `tidemark status answers (${status.stderr.trim()})`)
  t.match(status.stdout, /demo/, 'and shows the demo volume')
  const stats = await tidemark(['stats', '--appliance', address], { cwd: dir })
  t.equal(stats.code, 0, 'stats answers')
  t.match(stats.stdout, /\| demo \| \d+ \|/, 'and lists the demo volume')
  const atMark = await tidemarkJson<{ seq: number }>(['restore', '--appliance', address, '--volume', 'demo', '--timemark', 'before-upgrade', '--out', 'demo-mark.img'], { cwd: dir })
  t.equal(atMark.seq, mark.seq, 'restore --timemark before-upgrade restores the mark')

  // After the mark: more writes, then Ctrl-C.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0xcd 1M 64k', '-c', 'write -P 0xef 100M 1M', '-c', 'write -z 0 4k', URI], { cwd: dir })
  await must('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 0 64k', '-c', 'read -P 0 1M 64k', '-c', 'read -P 0 100M 1M', path.join(dir, 'demo-mark.img')])
  t.pass('the image at the mark holds the writes before it and none after')

  proc.kill('SIGINT')
  t.equal(await demo.exited, 0, 'Ctrl-C: the agent exits 0')
  t.ok(demo.logs().some((l) => l.msg === 'stopping' && l.signal === 'SIGINT'), 'it logs that it stops on SIGINT')
  t.notOk(demo.logs().some((l) => /stopping before the appliance acknowledged everything/.test(String(l.msg))), 'it never gave up draining')
  // The agent's line: the demo's appliance logs final stats of its own on the same output.
  const final = demo.logs().find((l) => l.msg === 'final stats' && l.volume === 'demo' && l.component === 'agent')
  t.ok(final, 'it logs its final stats')
  t.ok((final?.lastSeq as number) > mark.seq, `it captured the writes after the mark (last seq ${final?.lastSeq})`)
  t.equal(final?.ackedSeq, final?.lastSeq, 'drained: the appliance acknowledged everything captured')
  t.equal(final?.dirtyRegions, 0, 'and the dirty map is clean')
  t.notOk(await tcpOpen('127.0.0.1', Number(address.split(':')[1])), "the demo's appliance no longer listens")
  await waitFor('the demo appliance process to be gone', () => !alive(appPid), 10_000)
  t.pass("the demo's appliance process has exited")

  // What the appliance held when it stopped: every write, byte-exact.
  const app = await startAppliance(t, { data: path.join(dir, '.tidemark', 'appliance') })
  const out = path.join(dir, 'demo-copy.img')
  const r = await restore(app.address, 'demo', 'latest', out)
  t.equal(r.seq, final?.lastSeq, 'the restarted appliance holds everything up to the last seq')
  t.equal(sha256(out), sha256(img), 'restore --seq latest equals the demo volume byte-exact')
  t.equal(await app.stop(), 0, 'the appliance stops cleanly')
})
