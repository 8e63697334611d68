// tidemark timemark create | list
//
// create asks the running agent through its control socket (the agent runs
// the hooks: it is on the protected server); list asks the appliance, which
// keeps the catalog.
import * as grpc from '@grpc/grpc-js'
import { z } from 'zod'
import { clientError, unary } from '../client/admin-client'
import { controlClient, createTimeMark } from '../client/control-client'
import { TidemarkError } from '../proto/errors'
import type { CreateTimeMarkRequest } from '../proto/generated/tidemark/v1/CreateTimeMarkRequest'
import type { CreateTimeMarkReply__Output } from '../proto/generated/tidemark/v1/CreateTimeMarkReply'
import type { ListTimeMarksRequest } from '../proto/generated/tidemark/v1/ListTimeMarksRequest'
import type { ListTimeMarksReply__Output } from '../proto/generated/tidemark/v1/ListTimeMarksReply'
import type { PinTimeMarkRequest } from '../proto/generated/tidemark/v1/PinTimeMarkRequest'
import type { TimeMark__Output } from '../proto/generated/tidemark/v1/TimeMark'
import { escapeControl } from '../proto/bounded-strings'
import { badLabel } from '../proto/timemark-meta'
import { usage } from './args'
import { adminFromFlags, clientOptions, helpOption } from './common-options'
import { check, command, convert, flag, helpText, parseCommand, text } from './definition'

// One set of options for every action (as the actions always took them);
// which of them an action needs, and their forms, the action checks.
export const TIMEMARK = command({
  name: 'timemark',
  options: {
    ...helpOption,
    ...clientOptions,
    appliance: text({}),
    control: text({}),
    timemark: text({}),
    volume: text({}),
    group: text({}),
    label: text({}),
    quiesce: text({}),
    thaw: text({}),
    'hook-timeout': text({}),
    'allow-crash-consistent': flag({}),
    'no-wait': flag({}),
    'wait-timeout': text({}),
    json: flag({}),
  },
  help: () => `Usage:
  tidemark timemark create --control unix:PATH (--volume NAME | --group NAME) [--label TEXT]
                           [--quiesce CMD] [--thaw CMD] [--hook-timeout SECONDS]
                           [--allow-crash-consistent] [--no-wait] [--wait-timeout SECONDS] [--json]
  tidemark timemark list   --appliance HOST:PORT --volume NAME [--json] [--tls-cert F --tls-key F --tls-ca F]
  tidemark timemark pin|unpin --appliance HOST:PORT --volume NAME --timemark ID|LABEL [--json]

create: the agent behind the control socket runs the quiesce command (sh -c),
takes the tap's barrier (one seq for the volume, or for every volume of the
consistency group at one instant), runs the thaw command (always, once quiesce
ran) and tags the stream there. With --quiesce the mark is application-
consistent ("app"), without it crash-consistent ("crash"). A quiesce command
that fails or outlasts --hook-timeout (default 60) aborts the mark, unless
--allow-crash-consistent records a crash-consistent one instead. By default it
waits until the appliance holds the mark (--no-wait: return at the barrier).
The mark's id is its seq; a label must not be a number.

list: the appliance's catalog for a volume, oldest first.

pin: retention never expires a pinned TimeMark, nor any point after it; unpin
lets it expire again.
`,
})

export const TIMEMARK_HELP = helpText(TIMEMARK)

/** A hook's or the wait's limit: seconds, up to a day, as ms. */
function limit(flagName: string) {
  return check(
    z.string(),
    (v) => Number.isFinite(Number(v)) && Number(v) > 0 && Number(v) <= 86400,
    (v) => `${flagName} '${v}' is not a number of seconds (up to 86400)`
  ).transform((v) => Math.round(Number(v) * 1000))
}

const agentOnly = (f: string) => text({ refused: `create talks to the agent (--control), not --${f}` })
const oneVolumeOrGroup = 'give --volume NAME or --group NAME (one of them)'

/** create takes the same options, and says what it needs of them. */
export const TIMEMARK_CREATE = command({
  ...TIMEMARK,
  options: {
    ...TIMEMARK.options,
    appliance: agentOnly('appliance'),
    'tls-cert': agentOnly('tls-cert'),
    'tls-key': agentOnly('tls-key'),
    'tls-ca': agentOnly('tls-ca'),
    control: text({
      required: "--control unix:PATH is required (the agent's control socket)",
      value: check(z.string(), (s) => s.startsWith('unix:') && s.length > 5, (s) => `--control '${s}' must be unix:PATH`),
    }),
    volume: text({ oneOf: { with: ['group'], missing: oneVolumeOrGroup, many: () => oneVolumeOrGroup, emptyIsNone: true } }),
    label: text({ value: convert(z.string(), (l) => {
      const bad = l ? badLabel(l) : null
      if (bad) throw new Error(`label '${escapeControl(l)}' ${bad}`)
      return l
    }) }),
    'hook-timeout': text({ value: limit('--hook-timeout') }),
    'wait-timeout': text({ value: limit('--wait-timeout') }),
  },
})

export async function runTimemark(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  if (!action || action === '--help' || action === '-h') {
    process.stdout.write(TIMEMARK_HELP)
    return action ? 0 : 2
  }
  if (action === 'create') return create(rest)
  if (action === 'list') return list(rest)
  if (action === 'pin' || action === 'unpin') return pin(rest, action === 'pin')
  throw usage('timemark', `unknown action '${action}' (create, list, pin or unpin)`)
}

async function create(argv: string[]): Promise<number> {
  const p = parseCommand(TIMEMARK_CREATE, argv)
  if (p.help) {
    process.stdout.write(TIMEMARK_HELP)
    return 0
  }
  const a = p.values
  const control = a.control!
  const volume = a.volume ?? ''
  const group = a.group ?? ''
  const label = a.label ?? ''
  const req: CreateTimeMarkRequest = {
    volume,
    group,
    label,
    quiesce: a.quiesce ?? '',
    thaw: a.thaw ?? '',
    hookTimeoutMs: a['hook-timeout'] ?? 0,
    allowCrashConsistent: a['allow-crash-consistent'] === true,
    noWait: a['no-wait'] === true,
    waitTimeoutMs: a['wait-timeout'] ?? 0,
  }
  const client = controlClient(control)
  // Hooks and the wait have their own limits; the call gets room for both.
  const deadline = Date.now() + 2 * (req.hookTimeoutMs || 60_000) + (req.waitTimeoutMs || 60_000) + 10_000
  let r: CreateTimeMarkReply__Output
  try {
    r = await createTimeMark(client, req, deadline)
  } catch (err) {
    const e = err as grpc.ServiceError
    if (e.code === grpc.status.UNAVAILABLE) {
      throw new TidemarkError('UNAVAILABLE', `tidemark timemark: no agent answers on ${control} (is it running with --control ${control}?)`)
    }
    throw clientError('timemark', err)
  } finally {
    client.close()
  }
  if (a.json) process.stdout.write(`${JSON.stringify(r)}\n`)
  else {
    process.stdout.write(
      `TimeMark ${r.id}${r.label ? ` '${r.label}'` : ''}: ${r.consistency}-consistent, ${r.volumes.join(', ')}${r.group ? ` (group ${r.group})` : ''}, ` +
        `${new Date(r.wallTimeMs).toISOString()}; barrier ${r.barrierMs.toFixed(1)} ms` +
        `${r.quiesceMs ? `, quiesce ${r.quiesceMs.toFixed(0)} ms, thaw ${r.thawMs.toFixed(0)} ms` : ''}` +
        `${r.durable ? `, held by the appliance after ${r.durableMs.toFixed(0)} ms` : ', not waited for'}` +
        `${r.note ? `; ${r.note}` : ''}\n`
    )
  }
  return 0
}

async function list(argv: string[]): Promise<number> {
  const p = parseCommand(TIMEMARK, argv)
  if (p.help) {
    process.stdout.write(TIMEMARK_HELP)
    return 0
  }
  const a = p.values
  const volume = a.volume
  if (!volume) throw usage('timemark', 'list needs --volume NAME')
  const client = adminFromFlags(a, 'timemark')
  let r: ListTimeMarksReply__Output
  try {
    r = await unary<ListTimeMarksRequest, ListTimeMarksReply__Output>(client.listTimeMarks.bind(client), { volume })
  } catch (err) {
    throw clientError('timemark', err)
  } finally {
    client.close()
  }
  if (a.json) {
    process.stdout.write(`${JSON.stringify(r.timemarks)}\n`)
    return 0
  }
  const lines = ['| id | time | label | consistency | group | pinned | note |', '|---|---|---|---|---|---|---|']
  for (const t of r.timemarks) {
    lines.push(`| ${t.id} | ${new Date(t.wallTimeMs).toISOString()} | ${t.label} | ${t.consistency} | ${t.group} | ${t.pinned ? 'yes' : ''} | ${t.note} |`)
  }
  lines.push('', `${r.timemarks.length} TimeMarks of volume ${volume}`)
  process.stdout.write(`${lines.join('\n')}\n`)
  return 0
}

async function pin(argv: string[], pinned: boolean): Promise<number> {
  const p = parseCommand(TIMEMARK, argv)
  if (p.help) {
    process.stdout.write(TIMEMARK_HELP)
    return 0
  }
  const a = p.values
  const volume = a.volume
  if (!volume) throw usage('timemark', `${pinned ? 'pin' : 'unpin'} needs --volume NAME`)
  const timemark = a.timemark
  if (!timemark) throw usage('timemark', `${pinned ? 'pin' : 'unpin'} needs --timemark ID|LABEL`)
  const client = adminFromFlags(a, 'timemark')
  let r: TimeMark__Output
  try {
    r = await unary<PinTimeMarkRequest, TimeMark__Output>(client.pinTimeMark.bind(client), { volume, timemark, pinned })
  } catch (err) {
    throw clientError('timemark', err)
  } finally {
    client.close()
  }
  if (a.json) process.stdout.write(`${JSON.stringify(r)}\n`)
  else process.stdout.write(`TimeMark ${r.id}${r.label ? ` '${r.label}'` : ''} of volume ${volume} is ${r.pinned ? 'pinned' : 'no longer pinned'}\n`)
  return 0
}
