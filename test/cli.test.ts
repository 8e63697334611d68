// The command line: help on every command, one clear line and exit 2 on bad arguments.
import path from 'node:path'
import t from 'tap'
import { BIN, makeImage, run, tmpdir } from './helpers'

const tidemark = (...args: string[]) => run(process.execPath, [BIN, ...args])

t.test('help', async (t) => {
  const top = await tidemark('--help')
  t.equal(top.code, 0)
  t.match(top.stdout, /Commands:[\s\S]*agent/)
  const agent = await tidemark('agent', '--help')
  t.equal(agent.code, 0)
  t.match(agent.stdout, /--volume NAME=PATH/)
  for (const cmd of ['appliance', 'timemark', 'restore', 'timeview', 'journal', 'stats']) {
    const r = await tidemark(cmd, '--help')
    t.equal(r.code, 0, `${cmd} --help`)
  }
})

t.test('bad arguments: one line, exit 2', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 1024 * 1024, null)
  const odd = path.join(dir, 'odd.img')
  makeImage(odd, 1000, null)
  const cases: Array<[string[], RegExp, number]> = [
    [['frobnicate'], /unknown command 'frobnicate'/, 2],
    [['agent'], /--state DIR is required/, 2],
    [['agent', '--state', dir], /--nbd .* is required/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/x'], /at least one --volume/, 2],
    [['agent', '--state', dir, '--nbd', 'http://x', '--volume', `v=${img}`], /must be unix:PATH or tcp:HOST:PORT/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', 'v'], /must be NAME=PATH/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', 'v=/does/not/exist'], /does not exist/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', `v=${img}`, '--bogus'], /unknown option --bogus/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', `v=${img}`, '--buffer', 'lots'], /is not a size/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', `v=${img}`, '--congestion-wait', 'x'], /--congestion-wait 'x' is not a number of seconds from 0 to 60/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', `v=${img}`, '--congestion-wait', '61'], /--congestion-wait '61' is not a number of seconds from 0 to 60/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', `v=${img}`, '--appliance', 'nowhere'], /must be HOST:PORT/, 2],
    [['agent', '--state', dir, '--nbd', `unix:${dir}/s.sock`, '--volume', `v=${odd}`], /non-zero multiple of 512 bytes/, 1],
    [['agent', '--state', dir, '--nbd', `unix:${dir}/s.sock`, '--volume', `bad/name=${img}`], /is not valid/, 2],
    [['agent', '--config', path.join(dir, 'missing.json')], /cannot read config/, 2],
    [['restore', '--volume', 'x'], /give the point/, 2],
    [['restore', '--volume', 'x', '--seq', 'soon', '--out', 'f'], /must be a number or latest/, 2],
    [['restore', '--volume', 'x', '--seq', '1', '--out', 'f'], /--appliance HOST:PORT is required/, 2],
    [['restore', '--volume', 'x', '--timemark', 'y', '--seq', '3', '--out', 'f'], /give one point, not --timemark and --seq/, 2],
    [['restore', '--volume', 'x', '--at', 'yesterday', '--out', 'f'], /is not an ISO time/, 2],
    [['restore', '--volume', 'x', '--at', '2026-11-23', '--out', 'f'], /is not an ISO time/, 2],
    [['timemark', 'create', '--volume', 'x'], /--control unix:PATH is required/, 2],
    [['timemark', 'create', '--control', 'unix:/nowhere.sock'], /give --volume NAME or --group NAME/, 2],
    [['timemark', 'create', '--control', 'unix:/nowhere.sock', '--volume', 'x', '--label', '42'], /label '42' is a number/, 2],
    [['timemark', 'create', '--control', 'unix:/nowhere.sock', '--volume', 'x', '--hook-timeout', 'soon'], /--hook-timeout/, 2],
    [['timemark', 'list', '--volume', 'x'], /--appliance HOST:PORT is required/, 2],
    [['timemark', 'frob'], /unknown action 'frob'/, 2],
    [['agent', '--state', dir, '--nbd', 'unix:/tmp/x.sock', '--volume', `v=${img}`, '--control', 'tcp:1.2.3.4:5'], /--control .* must be unix:PATH/, 2],
    [['appliance', '--listen', '127.0.0.1:0'], /--data DIR is required/, 2],
    [['appliance', '--data', dir], /--listen HOST:PORT is required/, 2],
    [['appliance', '--data', dir, '--listen', '0.0.0.0:0'], /without TLS/, 2],
    [['appliance', '--data', dir, '--listen', '127.0.0.1:0', '--tls-cert', 'c.pem'], /needs all three/, 2],
    [['appliance', '--data', dir, '--listen', '127.0.0.1:0', '--allow', 'agent1'], /IDENTITY=VOLUME/, 2],
    [['journal', 'frob'], /unknown action 'frob'/, 2],
    [['journal', 'show', '--appliance', '127.0.0.1:1'], /needs --volume/, 2],
    [['stats', '--appliance', 'x'], /must be HOST:PORT/, 2],
  ]
  for (const [args, re, code] of cases) {
    const r = await tidemark(...args)
    t.equal(r.code, code, `exit ${code}: ${args.join(' ')}`)
    t.match(r.stderr, re, re.source)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
})
