// What contrib/ ships works as shipped: the example configs start a real
// appliance and agent through --config (their paths moved into a temp
// directory, nothing else changed) and replicate; the systemd units pass
// systemd-analyze verify where it is installed.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makeImage, makePki, nbdUri, must, ROOT, run, ServiceProcess, tmpdir, waitFor } from './helpers'

const CONTRIB = path.join(ROOT, 'contrib')
const MiB = 1024 * 1024

/** The example's text with its host paths and addresses replaced (each must occur: the example still says what the test assumes). */
function moved(t: { ok(v: unknown, msg: string): unknown }, file: string, replace: Array<[string, string]>): string {
  let text = fs.readFileSync(path.join(CONTRIB, file), 'utf8')
  for (const [from, to] of replace) {
    t.ok(text.includes(from), `${file} mentions ${from}`)
    text = text.split(from).join(to)
  }
  return text
}

t.test('contrib/appliance.yaml and contrib/agent.yaml: a TLS appliance and a two-volume agent that replicate', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'tls')
  await makePki(pki, ['appliance', 'db01'])
  fs.mkdirSync(path.join(dir, 'run-appliance'))
  fs.mkdirSync(path.join(dir, 'run-agent'))
  const common: Array<[string, string]> = [
    ['/var/lib/tidemark/', `${dir}/lib/`],
    ['/etc/tidemark/tls/', `${pki}/`],
  ]
  const appConfig = path.join(dir, 'appliance.yaml')
  fs.writeFileSync(appConfig, moved(t, 'appliance.yaml', [...common, ['0.0.0.0:7400', '127.0.0.1:0'], ['dataPort: 7401', 'dataPort: 0'], ['/run/tidemark-appliance/', `${dir}/run-appliance/`]]))
  const app = new ServiceProcess(spawn(process.execPath, [BIN, 'appliance', '--config', appConfig], { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.teardown(() => app.stop())
  const port = await waitFor(() => /listening on 127\.0\.0\.1:(\d+)/.exec(app.err)?.[1] ?? (app.proc.exitCode !== null && 'exited'), 'the appliance to listen')
  t.not(port, 'exited', `the appliance starts from contrib/appliance.yaml: ${app.err}`)

  const volumes: Record<string, string> = { '/dev/vdb': path.join(dir, 'vdb.img'), '/dev/vdc': path.join(dir, 'vdc.img') }
  for (const img of Object.values(volumes)) makeImage(img, 8 * MiB, 5)
  const agentConfig = path.join(dir, 'agent.yaml')
  fs.writeFileSync(agentConfig, moved(t, 'agent.yaml', [...common, ...Object.entries(volumes), ['backup.example.net:7400', `127.0.0.1:${port}`], ['/run/tidemark-agent/', `${dir}/run-agent/`]]))
  const agent = new ServiceProcess(spawn(process.execPath, [BIN, 'agent', '--config', agentConfig], { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.teardown(() => agent.stop())
  await waitFor(() => app.logs().filter((l) => /initial copy complete/.test(String(l.msg))).length === 2 || agent.proc.exitCode !== null, 'both volumes copied', 120_000)
  t.equal(agent.proc.exitCode, null, `the agent runs from contrib/agent.yaml: ${agent.err}`)

  // The names the examples give: the agent's exports, the group, the identity the appliance's allow-list knows.
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 64k', '-c', 'flush', nbdUri(path.join(dir, 'run-agent', 'nbd.sock'), 'db01-data')])
  const mark = JSON.parse(
    await must(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${dir}/run-agent/control.sock`, '--group', 'db01', '--label', 'contrib', '--json'])
  )
  t.ok(mark.durable, 'a TimeMark of the group is taken through the control socket and held by the appliance')
  // uid:0 is admin on the unix listener (the tests run as root); another uid is refused.
  const stats = await run(process.execPath, [BIN, 'stats', '--appliance', `unix:${dir}/run-appliance/grpc.sock`, '--json'])
  if (process.getuid?.() === 0) {
    t.equal(stats.code, 0, `stats over the unix listener as uid 0: ${stats.stderr}`)
    const names = (JSON.parse(stats.stdout).volumes as Array<{ name: string; agentId: string }>).map((v) => `${v.name} from ${v.agentId}`).sort()
    t.same(names, ['db01-data from db01', 'db01-log from db01'], 'both volumes, from the agent the certificate names')
  } else t.not(stats.code, 0, 'stats as a uid the allow-list does not name is refused')
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
  t.equal(await app.stop(), 0, 'the appliance stops cleanly')
})

t.test('the systemd units pass systemd-analyze verify', { skip: !have('systemd-analyze') && 'systemd-analyze is not installed' }, async (t) => {
  const dir = tmpdir(t)
  for (const unit of ['tidemark-agent.service', 'tidemark-appliance.service']) {
    // verify checks that ExecStart's program exists: point it at this checkout's.
    const text = fs.readFileSync(path.join(CONTRIB, 'systemd', unit), 'utf8')
    t.match(text, /^ExecStart=\/usr\/local\/bin\/tidemark /m, `${unit} runs the installed tidemark`)
    t.match(text, /^Restart=on-failure$/m, `${unit} restarts on failure`)
    const copy = path.join(dir, unit)
    fs.writeFileSync(copy, text.replace(/^ExecStart=\/usr\/local\/bin\/tidemark /m, `ExecStart=${BIN} `))
    const r = await run('systemd-analyze', ['verify', copy])
    // Warnings (an unknown key, a value it cannot parse) go to stderr with exit 0: ours must have none.
    const ours = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes(unit))
    t.equal(r.code, 0, `${unit}: verify exits 0`)
    t.same(ours, [], `${unit}: no warnings`)
  }
})
