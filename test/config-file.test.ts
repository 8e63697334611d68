// --config FILE in YAML or JSON (cli/config-file.ts, cli/definition.ts): the
// same settings either way, and every mistake one line that names the file,
// the line and the key, through the real command.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseAgentArgs } from '../cli/agent-command'
import { parseApplianceArgs } from '../cli/appliance-command'
import { BIN, makeImage, run, tmpdir } from './helpers'

/** The options as JSON, without the logger (a pino instance) but with its level. */
function plain(o: unknown): string {
  return JSON.stringify(o, (k, v) => (k === 'logger' ? (v as { level: string }).level : v instanceof Map ? [...v] : v))
}

t.test('YAML, JSON and a file without an extension give the same settings', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 1024 * 1024, null)
  const json = {
    state: path.join(dir, 'state'),
    nbd: 'unix:nbd.sock',
    volumes: { v: img },
    appliance: '127.0.0.1:7000',
    throttle: 2.5,
    microscan: false,
    statsInterval: 3,
    logLevel: 'warn',
    timemarks: [{ every: 60, label: 'hourly', quiesce: 'sync', hookTimeout: 5 }],
  }
  fs.writeFileSync(path.join(dir, 'agent.json'), JSON.stringify(json))
  const yaml = `# the same, as a person writes it
state: ${json.state}
nbd: unix:nbd.sock
volumes:
  v: ${img}
appliance: 127.0.0.1:7000
throttle: 2.5
microscan: false
statsInterval: 3
logLevel: warn
timemarks:
  - every: 60
    label: hourly
    quiesce: sync
    hookTimeout: 5
`
  fs.writeFileSync(path.join(dir, 'agent.yaml'), yaml)
  fs.writeFileSync(path.join(dir, 'agent.yml'), yaml)
  fs.writeFileSync(path.join(dir, 'agent-settings'), yaml)
  fs.writeFileSync(path.join(dir, 'agent-settings-json'), JSON.stringify(json))
  const fromJson = plain(parseAgentArgs(['--config', path.join(dir, 'agent.json')]))
  for (const f of ['agent.yaml', 'agent.yml', 'agent-settings', 'agent-settings-json']) {
    t.equal(plain(parseAgentArgs(['--config', path.join(dir, f)])), fromJson, `${f}: the same options as agent.json`)
  }

  fs.writeFileSync(
    path.join(dir, 'appliance.yaml'),
    `data: ${dir}/data
listen: [127.0.0.1:0, unix:app.sock]
tls: {cert: c.pem, key: k.pem, ca: ca.pem}
allow:
  agent-1: [v1, "write:v2"]
  "uid:1000": ["admin:db-*"]
retain:
  "*": 7d,100marks
dataPort: off
logFormat: json
`
  )
  const argv = ['--data', `${dir}/data`, '--listen', '127.0.0.1:0', '--listen', 'unix:app.sock', '--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-ca', 'ca.pem',
    '--allow', 'agent-1=v1,write:v2', '--allow', 'uid:1000=admin:db-*', '--retain', '*=7d,100marks', '--data-port', 'off', '--log-format', 'json']
  t.equal(plain(parseApplianceArgs(['--config', path.join(dir, 'appliance.yaml')])), plain(parseApplianceArgs(argv)), 'the appliance: the same as its flags')
})

t.test('every mistake in a config file: one line naming the file, the line and the key; exit 2', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 1024 * 1024, null)
  const agent = `state: ${dir}/state\nnbd: unix:${dir}/nbd.sock\nvolumes:\n  v: ${img}\n`
  const appliance = `data: ${dir}/data\nlisten: 127.0.0.1:0\n`
  const cases: Array<[string, string, string, RegExp]> = [
    ['agent', 'a.yaml', `${agent}statsInterval: 10s\n`, /config \S+a\.yaml, line 5: "statsInterval" '10s' is not a number of seconds/],
    ['agent', 'a.yaml', `${agent}stats_interval: 10\n`, /config \S+a\.yaml, line 5: unknown key "stats_interval"/],
    ['agent', 'a.yaml', `${agent}state: again\n`, /config \S+a\.yaml: YAML syntax error at line 5, column 1: Map keys must be unique/],
    ['agent', 'a.yaml', `state: x\n  nbd: y\n`, /config \S+a\.yaml: YAML syntax error at line 1, column 8: /],
    ['agent', 'a.yaml', `${agent}volumes2: [unclosed\n`, /config \S+a\.yaml: YAML syntax error at line \d+, column \d+: /],
    ['agent', 'a.yaml', `${agent}group: !custom g\n`, /config \S+a\.yaml: YAML syntax error at line 5, column 8: Unresolved tag: !custom/],
    ['agent', 'a.yaml', `${agent}---\nstate: x\n`, /config \S+a\.yaml: YAML syntax error at line 5, column 1: Source contains multiple documents/],
    ['agent', 'a.yaml', `- state\n- nbd\n`, /config \S+a\.yaml must be a YAML mapping of settings/],
    ['agent', 'a.yaml', ``, /config \S+a\.yaml must be a YAML mapping of settings/],
    ['agent', 'a.yaml', `state: ${dir}/state\nvolumes:\n  v: ${img}\n`, /config \S+a\.yaml: "nbd" is required \(--nbd unix:PATH\|tcp:HOST:PORT\)/],
    ['agent', 'a.yaml', `${agent.replace(img, '/does/not/exist')}`, /config \S+a\.yaml, line 3: "volumes": volume v: \/does\/not\/exist does not exist/],
    ['agent', 'a.yaml', `${agent}throttle: 5\n`, /config \S+a\.yaml: "throttle" needs "appliance"/],
    ['agent', 'a.yaml', `${agent}appliance: 127.0.0.1:1\nmicroscan: yes\n`, /config \S+a\.yaml, line 6: "microscan" must be true or false/],
    ['agent', 'a.yaml', `${agent}appliance: 127.0.0.1:1\ntimemarks:\n  - every: 0\n`, /config \S+a\.yaml, line 6: "timemarks"\[0\]: "every" must be a number of seconds/],
    ['agent', 'a.yaml', `${agent}logFormat: xml\n`, /config \S+a\.yaml, line 5: "logFormat" 'xml' must be auto, json or pretty/],
    ['agent', 'a.json', `{"state": "s",\n "nbd": "unix:x",\n}`, /config \S+a\.json: JSON syntax error at line 3, column 1: Expected double-quoted property name/],
    ['agent', 'a.json', `{"state": "s",\n  "statsInterval": "x",\n  "nbd": "unix:x", "volumes": {"v": "${img}"}}`, /config \S+a\.json, line 2: "statsInterval" 'x' is not a number of seconds/],
    ['agent', 'missing.yaml', '', /cannot read config \S+missing\.yaml: ENOENT/],
    ['appliance', 'b.yaml', `${appliance}tls:\n  cert: c\n  kee: k\n`, /config \S+b\.yaml, line 5: unknown key "tls\.kee"/],
    ['appliance', 'b.yaml', `${appliance}tls: on\n`, /config \S+b\.yaml, line 3: "tls" must be an object of "cert", "key", "ca"/],
    ['appliance', 'b.yaml', `${appliance}retain:\n  "*": 7x\n`, /config \S+b\.yaml, line 3: "retain": retention '7x' is not a duration/],
    ['appliance', 'b.yaml', `${appliance}segmentSize: 1K\n`, /config \S+b\.yaml, line 3: "segmentSize" must be at least 1M/],
    ['appliance', 'b.yaml', `${appliance}allow: [a, b]\n`, /config \S+b\.yaml, line 3: "allow" must map identities to lists of ROLE:PATTERN grants/],
  ]
  for (const [cmd, name, text, re] of cases) {
    const file = path.join(dir, name)
    if (name.startsWith('missing')) fs.rmSync(file, { force: true })
    else fs.writeFileSync(file, text)
    const r = await run(process.execPath, [BIN, cmd, '--config', file])
    t.equal(r.code, 2, `exit 2: ${re.source}`)
    t.match(r.stderr, re, re.source)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
})
