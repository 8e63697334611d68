// tidemark agent: parse, build the agent, run until SIGTERM/SIGINT.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'
import { Agent, type AgentOptions, type TimeMarkSchedule } from '../agent/agent'
import { escapeControl } from '../proto/bounded-strings'
import { badLabel } from '../proto/timemark-meta'
import { TidemarkError } from '../proto/errors'
import { parseEndpoint, parseHostPort, parseSize, usage } from './args'
import { AgentByteCounters } from '../agent/persisted-counters'
import { startAgentHttp } from './agent-http'
import { checkHttpExposure } from './http-server'
import { helpOption, logLevel, seconds, size } from './common-options'
import { check, command, convert, flag, helpText, list, parseCommand, text } from './definition'
import { assessmentTable } from './assessment-table'
import { LOG_FORMAT_HELP, createLogger, logFormat } from './logger'
import { nbdExposure, nbdExposureOptions } from './nbd-exposure'

const needsAppliance = { option: 'appliance', as: '--appliance HOST:PORT' }

/** NAME=PATH from a flag, or [NAME, PATH] from the config file's "volumes" map; every path must exist. */
const volumeList = convert(
  z.array(z.union([z.string(), z.tuple([z.string(), z.string()])])),
  (l): Array<[string, string]> => {
    const vols = l.map((v): [string, string] => {
      if (Array.isArray(v)) return v
      const eq = v.indexOf('=')
      if (eq <= 0 || eq === v.length - 1) throw new Error(`--volume '${v}' must be NAME=PATH`)
      return [v.slice(0, eq), v.slice(eq + 1)]
    })
    if (vols.length === 0) throw new Error('at least one --volume NAME=PATH is required')
    for (const [name, p] of vols) if (!fs.existsSync(p)) throw new Error(`volume ${name}: ${p} does not exist`)
    return vols
  }
)

const agentId = check(z.string(), (id) => /^[\x21-\x7e]{1,128}$/.test(id), (id) => `--agent-id ${JSON.stringify(id)} must be 1 to 128 printable characters without spaces`)

export const AGENT = command({
  name: 'agent',
  requiredFirst: true,
  options: {
    ...helpOption,
    demo: flag({
      label: '--demo',
      help:
        'the embedded default: a 1 GiB sparse volume "demo" in ./.tidemark\n(created if missing), served on unix:./.tidemark/nbd.sock and\nreplicated to an appliance of its own (./.tidemark/appliance, on\n' +
        '127.0.0.1, started and stopped with the agent), with its control\nsocket on unix:./.tidemark/control.sock',
      alone: true,
    }),
    config: text({
      label: '--config FILE',
      help:
        'the same settings in YAML (.yaml, .yml) or JSON (contrib/agent.yaml):\n{"state", "nbd", "volumes": {"NAME": "PATH"},\n"appliance", "tlsCert", "tlsKey", "tlsCa", "throttle", "memory",\n"fingerprintCache", "agentId", "microscan" (true/false), "group",\n' +
        '"buffer", "congestionWait", "captureLog", "statsInterval", "logLevel", "logFormat", "control",\n"nbdTlsCert", "nbdTlsKey", "nbdTlsCa", "insecureNbd", "nbdMaxConnections",\n"nbdHandshakeTimeout", "hookOutputInNote", "http", "assess",\n"timemarks": [{"every": SECONDS, "label", "quiesce": CMD, "thaw": CMD,\n"hookTimeout": SECONDS}]}',
      alone: true,
    }),
    state: text({
      label: '--state DIR',
      help: 'agent state: dirty maps (NAME.dirty), seq leases, generation ids\n(NAME.gen) and initial-copy progress (NAME.sync); created if missing',
      key: 'state',
      required: '--state DIR is required',
    }),
    nbd: text({
      label: '--nbd ENDPOINT',
      help: 'where NBD clients connect: unix:PATH or tcp:HOST:PORT',
      key: 'nbd',
      required: '--nbd unix:PATH|tcp:HOST:PORT is required',
      value: convert(z.string(), (s) => parseEndpoint(s, '--nbd')),
    }),
    ...nbdExposureOptions,
    volume: list({
      label: '--volume NAME=PATH',
      help: 'a protected volume: a regular file or a block device (repeatable)',
      key: 'volumes',
      required: 'at least one --volume NAME=PATH is required',
      config: convert(z.record(z.unknown(), { errorMap: () => ({ message: '"volumes" must map names to paths' }) }), (o) =>
        Object.entries(o).map(([n, p]) => {
          if (typeof p !== 'string') throw new Error(`volume "${n}" must map to a path`)
          return [n, p]
        })
      ),
      value: volumeList,
    }),
    'stats-interval': text({
      label: '--stats-interval S',
      help: 'check the counts every S seconds and log them when they changed,\nor once a minute when idle (default 10, 0 = never)',
      key: 'statsInterval',
      default: '10',
      value: seconds('--stats-interval'),
    }),
    http: text({
      label: '--http HOST:PORT',
      help: 'serve Prometheus metrics at /metrics (port 0: any; the bound address\nis printed). Loopback only unless the agent has --tls-cert/-key/-ca:\nthen HTTPS, for client certificates its CA signed. The byte counters\nare kept in --state DIR (NAME.counters) across restarts',
      key: 'http',
      value: convert(z.string(), (s) => (s ? parseHostPort(s, '--http') : undefined)),
    }),
    'log-level': text({ label: '--log-level LEVEL', help: 'trace, debug, info (default), warn, error', key: 'logLevel', default: 'info', value: logLevel() }),
    'log-format': text({ label: '--log-format F', help: LOG_FORMAT_HELP, key: 'logFormat', default: 'auto', value: logFormat() }),
    appliance: text({
      label: '--appliance H:P',
      help: 'replicate every volume to the appliance at HOST:PORT (the first time a\nvolume is protected, it is copied whole, all-zero sectors skipped),\nor at unix:PATH, its unix listener on this host (it knows us by uid)',
      key: 'appliance',
      value: check(z.string(), (s) => {
            if (s.startsWith('unix:')) return s.length > 5
            const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/.exec(s)
            return !!m && Number(m[2]) >= 1 && Number(m[2]) <= 65535
          },
          (s) => `--appliance '${s}' must be HOST:PORT (a port from 1 to 65535) or unix:PATH`
        )
      ,
    }),
    'tls-cert': text({ label: '--tls-cert F', help: "this agent's certificate (PEM) for mutual TLS; with --tls-key and", key: 'tlsCert', needs: needsAppliance }),
    'tls-key': text({ label: '--tls-key F', help: "--tls-ca (the CA that signed the appliance's certificate); without", key: 'tlsKey', needs: needsAppliance }),
    'tls-ca': text({ label: '--tls-ca F', help: 'them the connection is not encrypted', key: 'tlsCa', needs: needsAppliance }),
    throttle: text({
      label: '--throttle MBPS',
      help: 'cap data on the wire at MBPS megabytes (10^6 bytes) per second, all\nvolumes together; acks and control messages are never held back',
      key: 'throttle',
      needs: needsAppliance,
      value: check(z.string(), (s) => /^\d+(\.\d+)?$/.test(s.trim()) && Number(s) > 0, (s) => `--throttle '${s}' is not a positive number of megabytes per second`)
        .transform((s) => Math.round(Number(s) * 1e6)),
    }),
    memory: text({
      label: '--memory SIZE',
      help: 'memory for sent, unacknowledged batches (default 64M); past it the\nagent stops pulling, the record buffer fills (--congestion-wait) and\nthen the tap keeps only its dirty map',
      key: 'memory',
      needs: needsAppliance,
      value: convert(z.string(), (s) => {
          const n = parseSize(s, '--memory')
          if (n < 1024 * 1024) throw new Error(`--memory ${s} is less than the 1M a batch in flight needs`)
          return n
        })
      ,
    }),
    'fingerprint-cache': text({
      label: '--fingerprint-cache SIZE',
      help: "MicroScan's cache of what the replica holds (default 256M); a\nmiss costs bandwidth, never correctness",
      key: 'fingerprintCache',
      needs: needsAppliance,
      value: size('--fingerprint-cache'),
    }),
    'agent-id': text({
      label: '--agent-id ID',
      help: 'how this agent names itself to the appliance (default: the host name)',
      key: 'agentId',
      needs: needsAppliance,
      value: agentId,
    }),
    // The flag turns MicroScan off; the config key says whether it is on.
    'no-microscan': flag({
      label: '--no-microscan',
      help: 'send every captured sector (to measure what MicroScan saves)',
      key: 'microscan',
      needs: needsAppliance,
      config: z.boolean({ errorMap: () => ({ message: '"microscan" must be true or false' }) }).transform((on) => !on),
      value: z.boolean().transform((off) => !off),
    }),
    group: text({ label: '--group NAME', help: 'put every volume in one consistency group (one seq space)', key: 'group' }),
    seeded: list({
      label: '--seeded NAME=GEN',
      help: 'the appliance holds a seed of volume NAME under generation GEN\n(tidemark volume seed): continue that generation, its initial copy\nsending only the sectors that differ from the seed (repeatable)',
      key: 'seeded',
      needs: needsAppliance,
      // the config file's form: {"NAME": "GENERATION"}
      config: convert(z.record(z.string(), { errorMap: () => ({ message: '"seeded" must map volume names to generations' }) }), (o) =>
        Object.entries(o).map(([n, g]) => `${n}=${g}`)
      ),
      value: convert(z.array(z.string()), (l): Record<string, string> => {
        const out: Record<string, string> = {}
        for (const v of l) {
          const m = /^([^=]+)=([A-Za-z0-9][A-Za-z0-9._-]{0,127})$/.exec(v)
          if (!m) throw new Error(`--seeded '${v}' must be NAME=GENERATION (a generation is 1-128 of A-Z a-z 0-9 . _ -)`)
          out[m[1]] = m[2]
        }
        return out
      }),
    }),
    control: text({
      label: '--control unix:PATH',
      help: 'the control socket for tidemark timemark create (mode 0600)',
      key: 'control',
      value: check(z.string(), (s) => s.startsWith('unix:') && s.length > 5, (s) => `--control '${s}' must be unix:PATH (a control socket is local only)`)
        .transform((s) => path.resolve(s.slice(5))),
    }),
    'timemark-every': text({
      label: '--timemark-every S',
      help: 'take a crash-consistent TimeMark labelled "scheduled" every S seconds\n(of the group, or of each volume); app-consistent schedules with\nhooks go in --config "timemarks"',
      value: check(z.string(), (s) => Number.isFinite(Number(s)) && Number(s) >= 1, (s) => `--timemark-every '${s}' is not a number of seconds (at least 1)`)
        .transform((s): TimeMarkSchedule => ({ everyMs: Number(s) * 1000, label: 'scheduled' })),
    }),
    'hook-output-in-note': flag({
      label: '--hook-output-in-note',
      help: "put a failed quiesce hook's last output line in the TimeMark's note\n(replicated to the appliance; by default only the agent's log has it)",
      key: 'hookOutputInNote',
      needs: needsAppliance,
      config: z.unknown().transform((v) => (v === true ? true : undefined)),
    }),
    timemarks: text({ key: 'timemarks', configOnly: true, config: z.unknown(), value: convert(z.unknown(), configSchedules) }),
    buffer: text({
      label: '--buffer SIZE',
      help: 'record buffer per volume (default 64M); when the consumer falls\nthis far behind, the volume keeps only its dirty map until it resyncs',
      key: 'buffer',
      value: convert(z.string(), (s) => (s ? parseSize(s, '--buffer') : undefined)),
    }),
    'congestion-wait': text({
      label: '--congestion-wait S',
      help: 'when the record buffer is full while replication drains it, a write\nwaits up to S seconds for room before the volume falls behind\n(default 1; 0 = fall behind at once)',
      key: 'congestionWait',
      value: check(z.string(), (s) => Number.isFinite(Number(s)) && Number(s) >= 0 && Number(s) <= 60, (s) => `--congestion-wait '${s}' is not a number of seconds from 0 to 60`).transform(Number),
    }),
    assess: flag({
      label: '--assess',
      help:
        'assessment mode: serve and capture as usual, replicate nowhere; MicroScan\nand LZ4 measure what would be sent. At the end (--duration, or\nSIGINT/SIGTERM) prints application, changed and wire bytes per\n' +
        'minute, the WAN bandwidth that keeps the RPO under 1 s, 10 s and\n1 min, and the journal growth per day',
      key: 'assess',
      config: z.unknown().transform((v) => (v === true ? true : undefined)),
    }),
    duration: text({
      label: '--duration S',
      help: 'with --assess: stop after S seconds and print the report',
      key: 'duration',
      needs: { option: 'assess', as: '--assess' },
      value: check(z.string(), (s) => Number.isFinite(Number(s)) && Number(s) > 0, (s) => `--duration '${s}' is not a positive number of seconds`).transform(Number),
    }),
    json: flag({ label: '--json', help: 'with --assess: the report as JSON on stdout', needs: { option: 'assess', as: '--assess' } }),
    'capture-log': text({
      label: '--capture-log DIR',
      help: 'without --appliance: make records durable in DIR/NAME.tmcap before\nacknowledging them (a local sink)',
      key: 'captureLog',
    }),
  },
  help: (rows) => `Usage:
  tidemark agent --state DIR --nbd unix:PATH|tcp:HOST:PORT --volume NAME=PATH [--volume NAME=PATH ...]
                 [--nbd-tls-cert F --nbd-tls-key F --nbd-tls-ca F | --insecure-nbd]
                 [--nbd-max-connections N] [--nbd-handshake-timeout SECONDS]
                 [--appliance HOST:PORT|unix:PATH [--tls-cert F --tls-key F --tls-ca F] [--throttle MBPS]
                  [--memory SIZE] [--fingerprint-cache SIZE] [--agent-id ID] [--no-microscan]]
                 [--group NAME] [--seeded NAME=GEN ...] [--control unix:PATH] [--timemark-every SECONDS] [--hook-output-in-note] [--buffer SIZE]
                 [--congestion-wait SECONDS] [--capture-log DIR] [--http HOST:PORT] [--stats-interval SECONDS] [--log-level LEVEL] [--log-format auto|json|pretty]
  tidemark agent --assess --state DIR --nbd ENDPOINT --volume NAME=PATH ... [--duration SECONDS] [--json]
  tidemark agent --config FILE
  tidemark agent --demo

Serves each volume as an NBD export (export name = volume name), captures
every write, trim and write-zeroes as change records at 512-byte sectors and,
with --appliance, streams the sectors that really changed to the appliance.

${rows(
  23,
  'state', 'nbd', 'nbd-tls-cert', 'nbd-tls-key', 'nbd-tls-ca', 'insecure-nbd', 'nbd-max-connections', 'nbd-handshake-timeout',
  'volume', 'appliance', 'tls-cert', 'tls-key', 'tls-ca', 'throttle', 'memory', 'fingerprint-cache', 'agent-id',
  'no-microscan', 'group', 'seeded', 'control', 'timemark-every', 'hook-output-in-note', 'buffer', 'congestion-wait', 'capture-log', 'assess', 'duration', 'json',
  'http', 'stats-interval', 'log-level', 'log-format', 'demo', 'config'
)}

Attach a volume:  nbd-client -unix PATH -N NAME /dev/nbd0
                  qemu-system-x86_64 -drive file=nbd+unix:///NAME?socket=PATH,format=raw
`,
})

export const AGENT_HELP = helpText(AGENT)

/** The config file's "timemarks": app-consistent schedules with hooks. */
function configSchedules(v: unknown): TimeMarkSchedule[] {
  if (!Array.isArray(v)) throw new Error('config "timemarks" must be a list of {"every", "label", "quiesce", "thaw", "hookTimeout"}')
  return v.map((t: unknown, i) => {
    const o = t as Record<string, unknown>
    const at = `config "timemarks"[${i}]`
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error(`${at} must be an object`)
    for (const k of Object.keys(o)) if (!['every', 'label', 'quiesce', 'thaw', 'hookTimeout'].includes(k)) throw new Error(`${at}: unknown key "${k}"`)
    if (typeof o.every !== 'number' || !(o.every >= 1)) throw new Error(`${at}: "every" must be a number of seconds (at least 1)`)
    const label = o.label ?? 'scheduled'
    if (typeof label !== 'string') throw new Error(`${at}: "label" must be a string`)
    const bad = label ? badLabel(label) : null
    if (bad) throw new Error(`${at}: label '${escapeControl(label)}' ${bad}`)
    for (const k of ['quiesce', 'thaw'] as const) if (o[k] !== undefined && typeof o[k] !== 'string') throw new Error(`${at}: "${k}" must be a shell command string`)
    if (o.hookTimeout !== undefined && (typeof o.hookTimeout !== 'number' || !(o.hookTimeout > 0))) throw new Error(`${at}: "hookTimeout" must be a number of seconds`)
    return {
      everyMs: o.every * 1000,
      label,
      quiesce: o.quiesce as string | undefined,
      thaw: o.thaw as string | undefined,
      hookTimeoutMs: o.hookTimeout !== undefined ? (o.hookTimeout as number) * 1000 : undefined,
    }
  })
}

/** --demo as the flags it stands for, creating its 1 GiB sparse volume if missing. */
function demoArgs(home: string): string[] {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 })
  const img = path.join(home, 'demo.img')
  if (!fs.existsSync(img)) {
    const fd = fs.openSync(img, 'w')
    fs.ftruncateSync(fd, 1024 ** 3)
    fs.closeSync(fd)
  }
  return [
    '--state', path.join(home, 'state'),
    '--nbd', `unix:${path.join(home, 'nbd.sock')}`,
    '--volume', `demo=${img}`,
    '--stats-interval', '10',
    '--control', `unix:${path.join(home, 'control.sock')}`,
  ]
}

type AgentArgs = AgentOptions & {
  logLevel: string
  demoApplianceDir?: string
  nbdWarning?: string
  /** --http: the metrics listener, and its TLS files (the agent's own) */
  http?: { host: string; port: number; tls?: { cert: string; key: string; ca: string } }
  /** --assess --duration */
  durationMs?: number
  /** --assess --json */
  json?: boolean
}

export function parseAgentArgs(argv: string[]): AgentArgs | 'help' {
  let p = parseCommand(AGENT, argv)
  if (p.help) return 'help'
  let demoApplianceDir: string | undefined
  if (p.values.demo) {
    const home = path.resolve('.tidemark')
    p = parseCommand(AGENT, demoArgs(home))
    if (p.help) return 'help'
    demoApplianceDir = path.join(home, 'appliance')
  }
  const a = p.values
  const appliance = a.appliance || undefined
  if (a.assess && (appliance || a['capture-log'] || a.control || a['timemark-every'] || a.timemarks?.length)) {
    throw usage('agent', '--assess replicates nowhere: it takes no --appliance, --capture-log, --control or TimeMark schedule')
  }
  let repl: Partial<AgentOptions> = {}
  if (appliance) {
    if (a['capture-log']) throw usage('agent', '--capture-log is the local sink when there is no appliance; give one or the other')
    const tls = [a['tls-cert'], a['tls-key'], a['tls-ca']]
    const tlsGiven = tls.filter((x) => x !== undefined).length
    if (tlsGiven !== 0 && tlsGiven !== 3) throw usage('agent', '--tls-cert, --tls-key and --tls-ca go together: give all three or none')
    if (appliance.startsWith('unix:') && tlsGiven) throw usage('agent', '--appliance unix:PATH takes no --tls-cert/-key/-ca: the appliance identifies the agent by its uid')
    for (const [f, flagName] of [[a['tls-cert'], '--tls-cert'], [a['tls-key'], '--tls-key'], [a['tls-ca'], '--tls-ca']] as const) {
      if (f !== undefined && !fs.existsSync(f)) throw usage('agent', `${flagName} ${f} does not exist`)
    }
    let id = a['agent-id']
    if (id === undefined) {
      const r = agentId.safeParse(os.hostname())
      if (!r.success) throw usage('agent', r.error.issues[0].message)
      id = r.data
    }
    repl = {
      appliance: {
        // Batches travel on the streams there (the data channel is TCP): the Welcome names no data port.
        address: appliance.startsWith('unix:') ? `unix:${path.resolve(appliance.slice(5))}` : appliance,
        tls: tlsGiven ? { cert: path.resolve(a['tls-cert']!), key: path.resolve(a['tls-key']!), ca: path.resolve(a['tls-ca']!) } : undefined,
      },
      throttleBytesPerSecond: a.throttle,
      memoryBytes: a.memory,
      fingerprintCacheBytes: a['fingerprint-cache'],
      agentId: id,
      microscan: a['no-microscan'],
    }
  }
  const schedule = [...(a['timemark-every'] ? [a['timemark-every']] : []), ...(a.timemarks ?? [])]
  if ((a.control || schedule.length) && !appliance && !demoApplianceDir) {
    throw usage('agent', 'TimeMarks (--control, schedules) are kept by an appliance: give --appliance HOST:PORT')
  }
  for (const n of Object.keys(a.seeded ?? {})) {
    if (!a.volume!.some(([name]) => name === n)) throw usage('agent', `--seeded names volume ${n}, which no --volume serves`)
  }
  const captureLog = a['capture-log'] || undefined
  if (captureLog) fs.mkdirSync(captureLog, { recursive: true, mode: 0o700 })
  const ep = a.nbd!
  const exposure = nbdExposure(a, ep, 'agent')
  const httpTls = repl.appliance?.tls
  if (a.http) {
    try {
      checkHttpExposure({ ...a.http, tls: httpTls })
    } catch (err) {
      throw usage('agent', (err as Error).message)
    }
  }
  return {
    ...repl,
    stateDir: path.resolve(a.state!),
    nbd: 'unix' in ep ? { unix: path.resolve(ep.unix) } : { tcp: ep.tcp },
    nbdListener: exposure.listener,
    nbdWarning: exposure.warning,
    hookOutputInNote: a['hook-output-in-note'] === true,
    volumes: a.volume!.map(([name, p]) => ({ name, path: path.resolve(p) })),
    group: a.group,
    seeded: a.seeded,
    bufferBytes: a.buffer,
    congestionWaitMs: a['congestion-wait'] !== undefined ? Math.round(a['congestion-wait'] * 1000) : undefined,
    captureLogDir: captureLog ? path.resolve(captureLog) : undefined,
    statsIntervalMs: a['stats-interval']! * 1000,
    control: a.control,
    schedule,
    assess: a.assess === true,
    durationMs: a.duration !== undefined ? a.duration * 1000 : undefined,
    json: a.json === true,
    // Assessment mode prints its report on stdout: the log goes to stderr there.
    logger: createLogger({ level: a['log-level']!, format: a['log-format']!, base: { pid: process.pid, component: 'agent' }, fd: a.assess ? 2 : 1 }),
    logLevel: a['log-level']!,
    demoApplianceDir,
    http: a.http ? { ...a.http, tls: httpTls } : undefined,
  }
}

/**
 * --demo: an appliance of its own, as a child process on 127.0.0.1 (port 0:
 * any free one), so the embedded default shows the whole job: capture,
 * replication, restore. Resolves with its address once it listens.
 */
async function startDemoAppliance(dataDir: string): Promise<{ address: string; http: string | null; child: ChildProcess }> {
  const bin = path.join(__dirname, '..', '..', 'bin', 'tidemark.js')
  // With its dashboard and status API on a loopback port of its own (port 0: any free one).
  const child = spawn(process.execPath, [bin, 'appliance', '--data', dataDir, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'], {
    stdio: ['ignore', 'inherit', 'pipe'],
    // Its own process group: Ctrl-C reaches the agent only, which drains to
    // the appliance first and then stops it.
    detached: true,
  })
  let err = ''
  const [address, http] = await new Promise<[string, string]>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      err += d
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(err)
      const h = /http listening on (http:\/\/\S+)/.exec(err)
      if (!m || !h) return
      child.stderr!.off('data', onData)
      child.off('exit', onExit)
      process.stderr.write(err)
      child.stderr!.pipe(process.stderr)
      resolve([m[1], h[1].replace(/\/$/, '')])
    }
    const onExit = (code: number | null): void =>
      reject(new TidemarkError('DEMO_FAILED', `tidemark agent: the demo appliance exited ${code}: ${err.trim()}`))
    child.stderr!.on('data', onData)
    child.once('exit', onExit)
  })
  return { address, http, child }
}

export async function runAgent(argv: string[]): Promise<number> {
  const opts = parseAgentArgs(argv)
  if (opts === 'help') {
    process.stdout.write(AGENT_HELP)
    return 0
  }
  if (opts.nbdWarning) process.stderr.write(`${opts.nbdWarning}\n`)
  let demo: { address: string; http: string | null; child: ChildProcess } | undefined
  if (opts.demoApplianceDir) {
    demo = await startDemoAppliance(opts.demoApplianceDir)
    opts.appliance = { address: demo.address }
    opts.logger.info(
      {
        appliance: demo.address,
        data: opts.demoApplianceDir,
        dashboard: `${demo.http}/`,
        status: `npx tidemark status --appliance ${demo.http} --watch 2`,
        restore: `npx tidemark restore --appliance ${demo.address} --volume demo --seq latest --out demo-copy.img`,
      },
      `demo: replicating to an appliance of its own; its dashboard is ${demo.http}/`
    )
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
  // The byte counters go on across restarts (NAME.counters), scraped or not.
  const counters = agent.replication().length ? new AgentByteCounters(agent, opts.stateDir, opts.logger) : null
  let http: Awaited<ReturnType<typeof startAgentHttp>> | null = null
  if (opts.http) {
    try {
      http = await startAgentHttp(agent, { ...opts.http, counters, log: opts.logger })
    } catch (err) {
      await agent.stop()
      await counters?.close()
      await stopDemo()
      if (err instanceof TidemarkError) throw new TidemarkError(err.code, `tidemark agent: ${err.message}`)
      throw err
    }
  }
  await new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined
    const stop = (why: string): void => {
      clearTimeout(timer)
      opts.logger.info({ signal: why }, 'stopping')
      // Metrics until the agent stopped; then its final counters are saved.
      agent
        .stop()
        .then(() => http?.close())
        .then(() => counters?.close())
        .then(stopDemo)
        .then(resolve, resolve)
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
    if (opts.durationMs) timer = setTimeout(() => stop('--duration'), opts.durationMs)
  })
  if (agent.assessment) process.stdout.write(opts.json ? JSON.stringify(agent.assessment.report(), null, 2) + '\n' : assessmentTable(agent.assessment.report()))
  return 0
}
