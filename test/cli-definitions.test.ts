// One definition per command: what the definitions in cli/ say is what the
// commands do. Every option with a help row is in `--help` (through the real
// command), and the agent and the appliance read the same settings from
// their flags and from the --config keys their definitions name.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { AGENT, parseAgentArgs } from '../cli/agent-command'
import { APPLIANCE, parseApplianceArgs } from '../cli/appliance-command'
import type { Command, Options } from '../cli/definition'
import { FAILBACK } from '../cli/failback-command'
import { PLAN_TEST, PLAN_VALIDATE } from '../cli/plan-command'
import { PLAN_COMMIT, PLAN_FAILBACK, PLAN_FAILOVER, PLAN_ROLLBACK, PLAN_STATUS, PLAN_WATCH } from '../cli/plan-failover-command'
import { RESTORE } from '../cli/restore-command'
import { TIMEVIEW } from '../cli/timeview-command'
import { BIN, makeImage, run, tmpdir } from './helpers'

const commands: Array<[string, Command<Options>]> = [
  ['agent', AGENT as unknown as Command<Options>],
  ['appliance', APPLIANCE as unknown as Command<Options>],
  ['restore', RESTORE as unknown as Command<Options>],
  ['timeview', TIMEVIEW as unknown as Command<Options>],
  ['failback', FAILBACK as unknown as Command<Options>],
  ['plan validate', PLAN_VALIDATE as unknown as Command<Options>],
  ['plan test', PLAN_TEST as unknown as Command<Options>],
  ['plan failover', PLAN_FAILOVER as unknown as Command<Options>],
  ['plan commit', PLAN_COMMIT as unknown as Command<Options>],
  ['plan rollback', PLAN_ROLLBACK as unknown as Command<Options>],
  ['plan failback', PLAN_FAILBACK as unknown as Command<Options>],
  ['plan status', PLAN_STATUS as unknown as Command<Options>],
  ['plan watch', PLAN_WATCH as unknown as Command<Options>],
]

t.test('--help shows a row for every option that has one', async (t) => {
  for (const [name, def] of commands) {
    const r = await run(process.execPath, [BIN, ...name.split(' '), '--help'])
    t.equal(r.code, 0, `${name} --help`)
    for (const [flag, o] of Object.entries(def.options)) {
      if (!o.label) continue
      t.match(r.stdout, `\n  ${o.label} `, `${name} --help has --${flag}`)
    }
  }
})

/** The options as JSON, without the logger (a pino instance) but with its level. */
function plain(o: unknown): string {
  return JSON.stringify(o, (k, v) => (k === 'logger' ? (v as { level: string }).level : v instanceof Map ? [...v] : v))
}

t.test('the agent reads the same settings from flags and from the config keys of its definition', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 1024 * 1024, null)
  const flags: Record<string, string | string[] | true> = {
    state: path.join(dir, 'state'),
    nbd: 'tcp:127.0.0.1:10809',
    volume: [`v=${img}`],
    appliance: '127.0.0.1:7000',
    throttle: '2.5',
    memory: '2M',
    'fingerprint-cache': '1G',
    'agent-id': 'agent-1',
    'no-microscan': true,
    group: 'g',
    seeded: ['v=gen-1'],
    control: `unix:${path.join(dir, 'control.sock')}`,
    buffer: '8M',
    'stats-interval': '3',
    'log-level': 'warn',
    http: '127.0.0.1:9100',
    'log-format': 'json',
  }
  const argv: string[] = []
  const config: Record<string, unknown> = {}
  for (const [flag, v] of Object.entries(flags)) {
    const key = AGENT.options[flag as keyof typeof AGENT.options].key
    t.ok(key, `--${flag} has a config key`)
    if (Array.isArray(v)) for (const x of v) argv.push(`--${flag}`, x)
    else argv.push(...(v === true ? [`--${flag}`] : [`--${flag}`, v]))
    // the config file's forms: volumes and seeds as maps, microscan as on/off
    config[key!] = flag === 'volume' ? { v: img } : flag === 'seeded' ? { v: 'gen-1' } : flag === 'no-microscan' ? false : v
  }
  const file = path.join(dir, 'agent.json')
  fs.writeFileSync(file, JSON.stringify(config))
  const fromFlags = parseAgentArgs(argv)
  const fromConfig = parseAgentArgs(['--config', file])
  t.not(fromFlags, 'help', 'parsed, not help')
  t.equal(plain(fromConfig), plain(fromFlags), 'the same options either way')
})

t.test('the appliance reads the same settings from flags and from the config keys of its definition', async (t) => {
  const dir = tmpdir(t)
  const argv = [
    '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--listen', 'unix:app-grpc.sock', '--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-ca', 'ca.pem',
    '--allow', 'agent-1=v1,write:v2', '--allow', 'ops=read:*', '--allow', 'uid:1000=admin:db-*', '--insecure', '--segment-size', '4M', '--retain', '*=7d,100marks', '--retain-lock', '30d', '--compact-every', '5',
    '--stats-interval', '1', '--log-level', 'debug', '--nbd', 'unix:app.sock', '--scrub-every', '3600',
    '--replica-image', 'off', '--data-port', '7410', '--nbd-max-connections', '10', '--nbd-handshake-timeout', '3', '--journal-io', 'buffered',
    '--http', '127.0.0.1:0', '--rpo-target', '*=30s,2m', '--rpo-target', 'db*=5', '--history-target', 'db*=7d',
    '--limit-streams', '4', '--limit-volumes', '2', '--limit-volume-size', '64G', '--limit-retired', '3', '--limit-mark-rate', '10/30m',
    '--log-format', 'pretty', '--plan', 'shop.yaml=24h', '--plan', 'hr.yml=30m',
    '--alert-command', 'logger -t tidemark', '--alert-command-timeout', '30s', '--alert-behind-after', '15m', '--alert-stall-after', '120',
  ]
  const config = {
    data: path.join(dir, 'data'),
    listen: ['127.0.0.1:0', 'unix:app-grpc.sock'],
    tls: { cert: 'c.pem', key: 'k.pem', ca: 'ca.pem' },
    allow: { 'agent-1': ['v1', 'write:v2'], ops: ['read:*'], 'uid:1000': ['admin:db-*'] },
    insecure: true,
    segmentSize: '4M',
    retain: { '*': '7d,100marks' },
    retainLock: '30d',
    compactEvery: 5,
    statsInterval: 1,
    logLevel: 'debug',
    logFormat: 'pretty',
    nbd: 'unix:app.sock',
    scrubEvery: 3600,
    replicaImage: 'off',
    dataPort: 7410,
    journalIo: 'buffered',
    nbdMaxConnections: 10,
    nbdHandshakeTimeout: 3,
    http: '127.0.0.1:0',
    rpoTarget: { '*': '30s,2m', 'db*': 5 },
    historyTarget: { 'db*': '7d' },
    limits: { streams: 4, volumes: 2, volumeSize: '64G', retired: 3, markRate: '10/30m' },
    plans: [{ file: 'shop.yaml', every: '24h' }, { file: 'hr.yml', every: '30m' }],
    alertCommand: 'logger -t tidemark',
    alertCommandTimeout: '30s',
    alertBehindAfter: '15m',
    alertStallAfter: 120,
  }
  const keys = new Set(Object.values(APPLIANCE.options).flatMap((o) => (o.key ? [o.key.split('.')[0]] : [])))
  t.same([...keys].sort(), Object.keys(config).sort(), 'every config key of the definition is exercised')
  const file = path.join(dir, 'appliance.json')
  fs.writeFileSync(file, JSON.stringify(config))
  t.equal(plain(parseApplianceArgs(['--config', file])), plain(parseApplianceArgs(argv)), 'the same options either way')
  const parsed = parseApplianceArgs(argv)
  t.same(parsed !== 'help' && parsed.limits, { streams: 4, volumes: 2, volumeSize: 64 * 1024 ** 3, retired: 3 }, 'the limits per identity, converted')
  t.same(parsed !== 'help' && parsed.markRate, { count: 10, periodMs: 30 * 60_000, text: '10/30m' }, 'the mark rate')
  t.same(parsed !== 'help' && parsed.plans, [
    { file: path.resolve('shop.yaml'), everyMs: 86_400_000, every: '24h' },
    { file: path.resolve('hr.yml'), everyMs: 1_800_000, every: '30m' },
  ], 'the scheduled plans')
  for (const [bad, why] of [['shop.yaml', /must be FILE=EVERY/], ['shop.yaml=daily', /'daily' is not a period/], ['shop.yaml=5s', /under 10 s/]] as const) {
    t.throws(() => parseApplianceArgs(['--data', 'd', '--listen', '127.0.0.1:0', '--plan', bad]), { message: why }, `--plan ${bad} is refused`)
  }
  t.same(parsed !== 'help' && parsed.alerts, { command: 'logger -t tidemark', commandTimeoutSeconds: 30, behindAfterSeconds: 900, stallAfterSeconds: 120 }, 'the alert settings, in seconds')
  const dflt = parseApplianceArgs(['--data', 'd', '--listen', '127.0.0.1:0'])
  t.same(dflt !== 'help' && dflt.alerts, { command: null, commandTimeoutSeconds: 10, behindAfterSeconds: 600, stallAfterSeconds: 300 }, 'the alert defaults: 10 s, 10 min, 5 min')
  t.same(dflt !== 'help' && dflt.markRate, { count: 12, periodMs: 3_600_000, text: '12/h' }, 'a mark rate cap is on by default')
})
