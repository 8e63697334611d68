// tidemark agent: parse, build the agent, run until SIGTERM/SIGINT.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { Agent, type AgentOptions, type TimeMarkSchedule } from '../agent/agent'
import { badLabel } from '../proto/timemark-meta'
import { TidemarkError } from '../proto/errors'
import { parseArgs, parseEndpoint, parseSize, usage } from './args'

export const AGENT_HELP = `Usage:
  tidemark agent --state DIR --nbd unix:PATH|tcp:HOST:PORT --volume NAME=PATH [--volume NAME=PATH ...]
                 [--appliance HOST:PORT [--tls-cert F --tls-key F --tls-ca F] [--throttle MBPS]
                  [--memory SIZE] [--fingerprint-cache SIZE] [--agent-id ID] [--no-microscan]]
                 [--group NAME] [--control unix:PATH] [--timemark-every SECONDS] [--buffer SIZE]
                 [--capture-log DIR] [--stats-interval SECONDS] [--log-level LEVEL]
  tidemark agent --config FILE
  tidemark agent --demo

Serves each volume as an NBD export (export name = volume name), captures
every write, trim and write-zeroes as change records at 512-byte sectors and,
with --appliance, streams the sectors that really changed to the appliance.

  --state DIR          agent state: dirty maps (NAME.dirty), seq leases, generation ids
                       (NAME.gen) and initial-copy progress (NAME.sync); created if missing
  --nbd ENDPOINT       where NBD clients connect: unix:PATH or tcp:HOST:PORT
  --volume NAME=PATH   a protected volume: a regular file or a block device (repeatable)
  --appliance H:P      replicate every volume to the appliance at HOST:PORT (the first time a
                       volume is protected, it is copied whole, all-zero sectors skipped)
  --tls-cert F         this agent's certificate (PEM) for mutual TLS; with --tls-key and
  --tls-key F          --tls-ca (the CA that signed the appliance's certificate); without
  --tls-ca F           them the connection is not encrypted
  --throttle MBPS      cap data on the wire at MBPS megabytes (10^6 bytes) per second, all
                       volumes together; acks and control messages are never held back
  --memory SIZE        memory for sent, unacknowledged batches (default 64M); past it the
                       agent stops pulling and the tap keeps only its dirty map
  --fingerprint-cache SIZE  MicroScan's cache of what the replica holds (default 256M); a
                       miss costs bandwidth, never correctness
  --agent-id ID        how this agent names itself to the appliance (default: the host name)
  --no-microscan       send every captured sector (to measure what MicroScan saves)
  --group NAME         put every volume in one consistency group (one seq space)
  --control unix:PATH  the control socket for tidemark timemark create (mode 0600)
  --timemark-every S   take a crash-consistent TimeMark labelled "scheduled" every S seconds
                       (of the group, or of each volume); app-consistent schedules with
                       hooks go in --config "timemarks"
  --buffer SIZE        record buffer per volume (default 64M); when the consumer falls
                       this far behind, the volume keeps only its dirty map until it resyncs
  --capture-log DIR    without --appliance: make records durable in DIR/NAME.tmcap before
                       acknowledging them (a local sink)
  --stats-interval S   log counts every S seconds (default 10, 0 = never)
  --log-level LEVEL    trace, debug, info (default), warn, error
  --demo               the embedded default: a 1 GiB sparse volume "demo" in ./.tidemark
                       (created if missing), served on unix:./.tidemark/nbd.sock and
                       replicated to an appliance of its own (./.tidemark/appliance, on
                       127.0.0.1, started and stopped with the agent), with its control
                       socket on unix:./.tidemark/control.sock
  --config FILE        the same settings as JSON: {"state", "nbd", "volumes": {"NAME": "PATH"},
                       "appliance", "tlsCert", "tlsKey", "tlsCa", "throttle", "memory",
                       "fingerprintCache", "agentId", "microscan" (true/false), "group",
                       "buffer", "captureLog", "statsInterval", "logLevel", "control",
                       "timemarks": [{"every": SECONDS, "label", "quiesce": CMD, "thaw": CMD,
                       "hookTimeout": SECONDS}]}

Attach a volume:  nbd-client -unix PATH -N NAME /dev/nbd0
                  qemu-system-x86_64 -drive file=nbd+unix:///NAME?socket=PATH,format=raw
`

const SPEC = {
  help: {},
  state: { value: true },
  nbd: { value: true },
  volume: { value: true, repeat: true },
  group: { value: true },
  buffer: { value: true },
  'capture-log': { value: true },
  'stats-interval': { value: true },
  'log-level': { value: true },
  config: { value: true },
  demo: {},
  appliance: { value: true },
  control: { value: true },
  throttle: { value: true },
  'tls-cert': { value: true },
  'tls-key': { value: true },
  'tls-ca': { value: true },
  memory: { value: true },
  'fingerprint-cache': { value: true },
  'agent-id': { value: true },
  'no-microscan': {},
  'timemark-every': { value: true },
}

type Settings = {
  state?: string
  nbd?: string
  volumes: Array<[string, string]>
  group?: string
  buffer?: string
  captureLog?: string
  statsInterval?: string
  logLevel?: string
  appliance?: string
  tlsCert?: string
  tlsKey?: string
  tlsCa?: string
  throttle?: string
  memory?: string
  fingerprintCache?: string
  agentId?: string
  microscan?: boolean
  control?: string
  timemarks?: unknown
  timemarkEvery?: string
}

function parseSchedules(s: Settings): TimeMarkSchedule[] {
  const out: TimeMarkSchedule[] = []
  if (s.timemarkEvery !== undefined) {
    const n = Number(s.timemarkEvery)
    if (!Number.isFinite(n) || n < 1) throw usage('agent', `--timemark-every '${s.timemarkEvery}' is not a number of seconds (at least 1)`)
    out.push({ everyMs: n * 1000, label: 'scheduled' })
  }
  if (s.timemarks === undefined) return out
  if (!Array.isArray(s.timemarks)) throw usage('agent', 'config "timemarks" must be a list of {"every", "label", "quiesce", "thaw", "hookTimeout"}')
  for (const [i, t] of (s.timemarks as unknown[]).entries()) {
    const o = t as Record<string, unknown>
    const at = `config "timemarks"[${i}]`
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw usage('agent', `${at} must be an object`)
    for (const k of Object.keys(o)) if (!['every', 'label', 'quiesce', 'thaw', 'hookTimeout'].includes(k)) throw usage('agent', `${at}: unknown key "${k}"`)
    if (typeof o.every !== 'number' || !(o.every >= 1)) throw usage('agent', `${at}: "every" must be a number of seconds (at least 1)`)
    const label = o.label ?? 'scheduled'
    if (typeof label !== 'string') throw usage('agent', `${at}: "label" must be a string`)
    const bad = label ? badLabel(label) : null
    if (bad) throw usage('agent', `${at}: label '${label}' ${bad}`)
    for (const k of ['quiesce', 'thaw'] as const) if (o[k] !== undefined && typeof o[k] !== 'string') throw usage('agent', `${at}: "${k}" must be a shell command string`)
    if (o.hookTimeout !== undefined && (typeof o.hookTimeout !== 'number' || !(o.hookTimeout > 0))) throw usage('agent', `${at}: "hookTimeout" must be a number of seconds`)
    out.push({
      everyMs: o.every * 1000,
      label,
      quiesce: o.quiesce as string | undefined,
      thaw: o.thaw as string | undefined,
      hookTimeoutMs: o.hookTimeout !== undefined ? (o.hookTimeout as number) * 1000 : undefined,
    })
  }
  return out
}

function fromConfig(file: string): Settings {
  let j: Record<string, unknown>
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw usage('agent', `cannot read config ${file}: ${(err as Error).message}`)
  }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw usage('agent', `config ${file} must be a JSON object`)
  const known = new Set([
    'state', 'nbd', 'volumes', 'group', 'buffer', 'captureLog', 'statsInterval', 'logLevel',
    'appliance', 'tlsCert', 'tlsKey', 'tlsCa', 'throttle', 'memory', 'fingerprintCache', 'agentId', 'microscan',
    'control', 'timemarks',
  ])
  for (const k of Object.keys(j)) if (!known.has(k)) throw usage('agent', `config ${file}: unknown key "${k}"`)
  const vols = j.volumes ?? {}
  if (typeof vols !== 'object' || Array.isArray(vols)) throw usage('agent', `config ${file}: "volumes" must map names to paths`)
  const str = (k: string): string | undefined => {
    const v = j[k]
    if (v === undefined) return undefined
    if (typeof v !== 'string' && typeof v !== 'number') throw usage('agent', `config ${file}: "${k}" must be a string`)
    return String(v)
  }
  return {
    state: str('state'),
    nbd: str('nbd'),
    volumes: Object.entries(vols as Record<string, unknown>).map(([n, p]) => {
      if (typeof p !== 'string') throw usage('agent', `config ${file}: volume "${n}" must map to a path`)
      return [n, p]
    }),
    group: str('group'),
    buffer: str('buffer'),
    captureLog: str('captureLog'),
    statsInterval: str('statsInterval'),
    logLevel: str('logLevel'),
    appliance: str('appliance'),
    tlsCert: str('tlsCert'),
    tlsKey: str('tlsKey'),
    tlsCa: str('tlsCa'),
    throttle: str('throttle'),
    memory: str('memory'),
    fingerprintCache: str('fingerprintCache'),
    agentId: str('agentId'),
    microscan: (() => {
      const v = j.microscan
      if (v === undefined) return undefined
      if (typeof v !== 'boolean') throw usage('agent', `config ${file}: "microscan" must be true or false`)
      return v
    })(),
    control: str('control'),
    timemarks: j.timemarks,
  }
}

/** The appliance and its knobs; every one of them needs --appliance. */
function replicationSettings(s: Settings): Partial<AgentOptions> {
  const needs: Array<[keyof Settings, string]> = [
    ['tlsCert', '--tls-cert'],
    ['tlsKey', '--tls-key'],
    ['tlsCa', '--tls-ca'],
    ['throttle', '--throttle'],
    ['memory', '--memory'],
    ['fingerprintCache', '--fingerprint-cache'],
    ['agentId', '--agent-id'],
    ['microscan', '--no-microscan'],
  ]
  if (!s.appliance) {
    for (const [k, flag] of needs) if (s[k] !== undefined) throw usage('agent', `${flag} needs --appliance HOST:PORT`)
    return {}
  }
  if (s.captureLog) throw usage('agent', '--capture-log is the local sink when there is no appliance; give one or the other')
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/.exec(s.appliance)
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw usage('agent', `--appliance '${s.appliance}' must be HOST:PORT (a port from 1 to 65535)`)
  }
  const tlsGiven = [s.tlsCert, s.tlsKey, s.tlsCa].filter((x) => x !== undefined).length
  if (tlsGiven !== 0 && tlsGiven !== 3) throw usage('agent', '--tls-cert, --tls-key and --tls-ca go together: give all three or none')
  for (const [f, flag] of [[s.tlsCert, '--tls-cert'], [s.tlsKey, '--tls-key'], [s.tlsCa, '--tls-ca']] as const) {
    if (f !== undefined && !fs.existsSync(f)) throw usage('agent', `${flag} ${f} does not exist`)
  }
  let throttle: number | undefined
  if (s.throttle !== undefined) {
    const mbps = Number(s.throttle)
    if (!/^\d+(\.\d+)?$/.test(s.throttle.trim()) || !(mbps > 0)) {
      throw usage('agent', `--throttle '${s.throttle}' is not a positive number of megabytes per second`)
    }
    throttle = Math.round(mbps * 1e6)
  }
  const memory = s.memory !== undefined ? parseSize(s.memory, '--memory', 'agent') : undefined
  if (memory !== undefined && memory < 1024 * 1024) throw usage('agent', `--memory ${s.memory} is less than the 1M a batch in flight needs`)
  const cache = s.fingerprintCache !== undefined ? parseSize(s.fingerprintCache, '--fingerprint-cache', 'agent') : undefined
  const agentId = s.agentId ?? os.hostname()
  if (!/^[\x21-\x7e]{1,128}$/.test(agentId)) throw usage('agent', `--agent-id '${agentId}' must be 1 to 128 printable characters without spaces`)
  return {
    appliance: {
      address: s.appliance,
      tls: tlsGiven ? { cert: path.resolve(s.tlsCert!), key: path.resolve(s.tlsKey!), ca: path.resolve(s.tlsCa!) } : undefined,
    },
    throttleBytesPerSecond: throttle,
    memoryBytes: memory,
    fingerprintCacheBytes: cache,
    agentId,
    microscan: s.microscan,
  }
}

type AgentArgs = AgentOptions & { logLevel: string; demoApplianceDir?: string }

export function parseAgentArgs(argv: string[]): AgentArgs | 'help' {
  const a = parseArgs(argv, SPEC, 'agent')
  if (a.has('help')) return 'help'
  let s: Settings
  let demoApplianceDir: string | undefined
  if (a.has('demo')) {
    if (a.size > 1) throw usage('agent', '--demo cannot be combined with other options')
    const home = path.resolve('.tidemark')
    fs.mkdirSync(home, { recursive: true })
    const img = path.join(home, 'demo.img')
    if (!fs.existsSync(img)) {
      const fd = fs.openSync(img, 'w')
      fs.ftruncateSync(fd, 1024 ** 3)
      fs.closeSync(fd)
    }
    s = {
      state: path.join(home, 'state'),
      nbd: `unix:${path.join(home, 'nbd.sock')}`,
      volumes: [['demo', img]],
      statsInterval: '10',
      control: `unix:${path.join(home, 'control.sock')}`,
    }
    demoApplianceDir = path.join(home, 'appliance')
  } else if (a.has('config')) {
    if (a.size > 1) throw usage('agent', '--config cannot be combined with other options')
    s = fromConfig(a.get('config')![0])
  } else {
    s = {
      state: a.get('state')?.[0],
      nbd: a.get('nbd')?.[0],
      volumes: (a.get('volume') ?? []).map((v) => {
        const eq = v.indexOf('=')
        if (eq <= 0 || eq === v.length - 1) throw usage('agent', `--volume '${v}' must be NAME=PATH`)
        return [v.slice(0, eq), v.slice(eq + 1)]
      }),
      group: a.get('group')?.[0],
      buffer: a.get('buffer')?.[0],
      captureLog: a.get('capture-log')?.[0],
      statsInterval: a.get('stats-interval')?.[0],
      logLevel: a.get('log-level')?.[0],
      appliance: a.get('appliance')?.[0],
      tlsCert: a.get('tls-cert')?.[0],
      tlsKey: a.get('tls-key')?.[0],
      tlsCa: a.get('tls-ca')?.[0],
      throttle: a.get('throttle')?.[0],
      memory: a.get('memory')?.[0],
      fingerprintCache: a.get('fingerprint-cache')?.[0],
      agentId: a.get('agent-id')?.[0],
      microscan: a.has('no-microscan') ? false : undefined,
      control: a.get('control')?.[0],
      timemarkEvery: a.get('timemark-every')?.[0],
    }
  }
  if (!s.state) throw usage('agent', '--state DIR is required')
  if (!s.nbd) throw usage('agent', '--nbd unix:PATH|tcp:HOST:PORT is required')
  if (s.volumes.length === 0) throw usage('agent', 'at least one --volume NAME=PATH is required')
  for (const [name, p] of s.volumes) {
    if (!fs.existsSync(p)) throw usage('agent', `volume ${name}: ${p} does not exist`)
  }
  const ep = parseEndpoint(s.nbd, '--nbd', 'agent')
  const interval = s.statsInterval === undefined ? 10 : Number(s.statsInterval)
  if (!Number.isFinite(interval) || interval < 0) throw usage('agent', `--stats-interval '${s.statsInterval}' is not a number of seconds`)
  const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']
  const logLevel = s.logLevel ?? 'info'
  if (!levels.includes(logLevel)) throw usage('agent', `--log-level must be one of ${levels.join(', ')}`)
  const repl = replicationSettings(s)
  let control: string | undefined
  if (s.control !== undefined) {
    if (!s.control.startsWith('unix:') || s.control.length <= 5) throw usage('agent', `--control '${s.control}' must be unix:PATH (a control socket is local only)`)
    control = path.resolve(s.control.slice(5))
  }
  const schedule = parseSchedules(s)
  if ((control || schedule.length) && !s.appliance && !a.has('demo')) {
    throw usage('agent', 'TimeMarks (--control, schedules) are kept by an appliance: give --appliance HOST:PORT')
  }
  if (s.captureLog) fs.mkdirSync(s.captureLog, { recursive: true })
  return {
    ...repl,
    stateDir: path.resolve(s.state),
    nbd: 'unix' in ep ? { unix: path.resolve(ep.unix) } : { tcp: ep.tcp },
    volumes: s.volumes.map(([name, p]) => ({ name, path: path.resolve(p) })),
    group: s.group,
    bufferBytes: s.buffer ? parseSize(s.buffer, '--buffer', 'agent') : undefined,
    captureLogDir: s.captureLog ? path.resolve(s.captureLog) : undefined,
    statsIntervalMs: interval * 1000,
    control,
    schedule,
    logger: pino({ level: logLevel, base: { pid: process.pid, component: 'agent' } }),
    logLevel,
    demoApplianceDir,
  }
}

/**
 * --demo: an appliance of its own, as a child process on 127.0.0.1 (port 0:
 * any free one), so the embedded default shows the whole job: capture,
 * replication, restore. Resolves with its address once it listens.
 */
async function startDemoAppliance(dataDir: string): Promise<{ address: string; child: ChildProcess }> {
  const bin = path.join(__dirname, '..', '..', 'bin', 'tidemark.js')
  const child = spawn(process.execPath, [bin, 'appliance', '--data', dataDir, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'inherit', 'pipe'],
    // Its own process group: Ctrl-C reaches the agent only, which drains to
    // the appliance first and then stops it.
    detached: true,
  })
  let err = ''
  const address = await new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      err += d
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(err)
      if (!m) return
      child.stderr!.off('data', onData)
      child.off('exit', onExit)
      process.stderr.write(err)
      child.stderr!.pipe(process.stderr)
      resolve(m[1])
    }
    const onExit = (code: number | null): void =>
      reject(new TidemarkError('DEMO_FAILED', `tidemark agent: the demo appliance exited ${code}: ${err.trim()}`))
    child.stderr!.on('data', onData)
    child.once('exit', onExit)
  })
  return { address, child }
}

export async function runAgent(argv: string[]): Promise<number> {
  const opts = parseAgentArgs(argv)
  if (opts === 'help') {
    process.stdout.write(AGENT_HELP)
    return 0
  }
  let demo: { address: string; child: ChildProcess } | undefined
  if (opts.demoApplianceDir) {
    demo = await startDemoAppliance(opts.demoApplianceDir)
    opts.appliance = { address: demo.address }
    opts.logger.info({ appliance: demo.address, data: opts.demoApplianceDir, restore: `npx tidemark restore --appliance ${demo.address} --volume demo --seq latest --out demo-copy.img` }, 'demo: replicating to an appliance of its own')
  }
  const stopDemo = async (): Promise<void> => {
    if (!demo || demo.child.exitCode !== null) return
    const exited = new Promise((r) => demo!.child.once('exit', r))
    demo.child.kill('SIGTERM')
    await exited
  }
  let agent: Agent
  try {
    agent = await Agent.start(opts)
  } catch (err) {
    await stopDemo()
    if (err instanceof TidemarkError) {
      // A setting the tap refuses is a usage error (exit 2); a volume it cannot open is not.
      throw new TidemarkError(err.code === 'TAP_INVALID_ARGUMENT' ? 'USAGE' : err.code, `tidemark agent: ${err.message}`)
    }
    throw err
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      opts.logger.info({ signal: sig }, 'stopping')
      agent.stop().then(stopDemo).then(resolve, resolve)
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  return 0
}
