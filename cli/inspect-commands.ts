// tidemark stats and tidemark journal: what an appliance holds, for people
// (a table) and for scripts (--json).
import type { JournalReply__Output } from '../proto/generated/tidemark/v1/JournalReply'
import type { JournalRequest } from '../proto/generated/tidemark/v1/JournalRequest'
import type { StatsReply__Output } from '../proto/generated/tidemark/v1/StatsReply'
import type { StatsRequest } from '../proto/generated/tidemark/v1/StatsRequest'
import type { CompactRequest } from '../proto/generated/tidemark/v1/CompactRequest'
import type { CompactReply__Output } from '../proto/generated/tidemark/v1/CompactReply'
import { z } from 'zod'
import { clientError, unary } from '../client/admin-client'
import { usage } from './args'
import { compactJson, journalJson, statsJson } from '../client/inspect-json'
import { adminFromFlags, clientOptions, helpOption } from './common-options'
import { check, command, flag, helpText, parseCommand, text } from './definition'

export const STATS_HELP = `Usage:
  tidemark stats --appliance HOST:PORT [--volume NAME] [--json] [--tls-cert F --tls-key F --tls-ca F]

Per volume: durable seq, journal size, records, application bytes : changed-sector
bytes : wire bytes (MicroScan and LZ4 at work), the agent attached, rejections.
`

export const JOURNAL_HELP = `Usage:
  tidemark journal ls     --appliance HOST:PORT [--volume NAME] [--json]
  tidemark journal show   --appliance HOST:PORT --volume NAME [--from SEQ] [--limit N] [--json]
  tidemark journal verify --appliance HOST:PORT [--volume NAME] [--json]
  tidemark journal compact --appliance HOST:PORT --volume NAME [--json]

ls lists segments; show lists records from a seq; verify re-reads every
segment, checks every checksum and the index, and exits 1 if anything is wrong;
compact applies the volume's retention now (tidemark appliance --retain): the
history it lets go of is folded into the base image and its segments deleted.
`

const statsOptions = { ...helpOption, ...clientOptions, volume: text({}), json: flag({}) }
// journal checks its action's needs (show, compact: --volume) before the appliance's address
const journalOptions = { ...statsOptions, appliance: text({}) }

export const STATS = command({ name: 'stats', options: statsOptions, help: () => STATS_HELP })

export const JOURNAL = command({
  name: 'journal',
  options: {
    ...journalOptions,
    from: text({ default: '0', value: check(z.string(), (v) => /^\d+$/.test(v), (v) => `--from '${v}' must be a seq`).transform(Number) }),
    limit: text({
      default: '100',
      value: check(z.string(), (v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 100000, (v) => `--limit '${v}' must be 1..100000`)
        .transform(Number),
    }),
  },
  help: () => JOURNAL_HELP,
})

export const JOURNAL_COMPACT = command({ name: 'journal', options: journalOptions, help: () => JOURNAL_HELP })

function mb(n: unknown): string {
  return typeof n === 'number' ? (n / 1e6).toFixed(1) : '-'
}

export async function runStats(argv: string[]): Promise<number> {
  const p = parseCommand(STATS, argv)
  if (p.help) {
    process.stdout.write(helpText(STATS))
    return 0
  }
  const a = p.values
  const client = adminFromFlags(a, 'stats')
  let s: StatsReply__Output
  try {
    s = await unary<StatsRequest, StatsReply__Output>(client.stats.bind(client), { volume: a.volume ?? '' })
  } catch (err) {
    throw clientError('stats', err)
  } finally {
    client.close()
  }
  if (a.json) {
    process.stdout.write(`${JSON.stringify(statsJson(s))}\n`)
    return 0
  }
  const lines = [
    `appliance ${s.appliance?.id}: ${s.appliance?.streams} agent streams, rejected ${JSON.stringify({ ...s.appliance?.rejected })}`,
    '',
    '| volume | durable seq | journal MB | records | app MB | changed MB | wire MB | full copy | TimeMarks | oldest exact seq | retained since | agent |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (const v of s.volumes) {
    lines.push(
      `| ${v.name} | ${v.durableSeq} | ${mb(v.journalBytes)} | ${v.records} | ${mb(v.appBytes)} | ${mb(v.changedBytes)} | ${mb(v.wireBytes)} | ${v.fullSyncDone ? 'done' : 'in progress'} | ${v.timemarks} | ${v.oldestExactSeq} | ${v.retainedSince || '-'} | ${v.agent?.agentId ?? '-'} |`
    )
  }
  for (const v of s.volumes) {
    // A volume that does not accept batches (batch-writer.ts): out of space, an I/O error, read-only.
    if (v.state && v.state !== 'normal') lines.push('', `error: volume ${v.name} is ${v.state.replace('_', ' ')} since ${v.stateSince}: ${v.stateReason}`)
    if (v.retention?.warning) lines.push('', `warning: volume ${v.name}: ${v.retention.warning}`)
    if (v.retention?.pressure) lines.push('', `warning: volume ${v.name}: retention gave up history ${v.retention.pressure}`)
  }
  // Known journal corruption (README: reported by journal verify and stats): points after it refuse to restore.
  for (const v of s.volumes) {
    for (const c of (v.corrupt ?? []) as Array<{ segment: string; offset: number; afterSeq: number; message: string }>) {
      lines.push('', `warning: volume ${v.name}: journal corruption in ${c.segment} at offset ${c.offset} after seq ${c.afterSeq}: points after seq ${c.afterSeq} refuse to restore (${c.message})`)
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`)
  return 0
}

export async function runJournal(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  if (!action || action === '--help') {
    process.stdout.write(JOURNAL_HELP)
    return action ? 0 : 2
  }
  if (action === 'compact') return compact(rest)
  const actions: Record<string, 'LS' | 'SHOW' | 'VERIFY'> = { ls: 'LS', show: 'SHOW', verify: 'VERIFY' }
  if (!actions[action]) throw usage('journal', `unknown action '${action}' (ls, show, verify or compact)`)
  const p = parseCommand(JOURNAL, rest)
  if (p.help) {
    process.stdout.write(helpText(JOURNAL))
    return 0
  }
  const a = p.values
  const volume = a.volume ?? ''
  if (action === 'show' && !volume) throw usage('journal', 'journal show needs --volume NAME')
  const from = a.from!
  const limit = a.limit!
  const client = adminFromFlags(a, 'journal')
  let reply: JournalReply__Output
  try {
    reply = await unary<JournalRequest, JournalReply__Output>(client.journal.bind(client), { action: actions[action], volume, fromSeq: from, limit })
  } catch (err) {
    throw clientError('journal', err)
  } finally {
    client.close()
  }
  let ok = true
  if (action === 'verify') for (const v of reply.volumes) ok &&= v.verify?.ok ?? false
  if (a.json) {
    process.stdout.write(`${JSON.stringify(journalJson(reply, actions[action]))}\n`)
    return ok ? 0 : 1
  }
  for (const v of reply.volumes) {
    const name = v.volume
    if (action === 'verify') {
      const x = v.verify
      process.stdout.write(`${name}: ${x?.ok ? 'ok' : 'PROBLEMS'} (${x?.records ?? 0} records, ${x?.bytes ?? 0} bytes)\n`)
      for (const p of x?.problems ?? []) process.stdout.write(`  ${p}\n`)
    } else if (action === 'ls') {
      process.stdout.write(`${name}:\n`)
      for (const s of v.segments) {
        process.stdout.write(`  ${s.segment}  ${s.bytes} bytes  ${s.records} records  seq ${s.firstSeq}..${s.lastSeq}\n`)
      }
    } else {
      for (const x of v.records) {
        process.stdout.write(`${x.seq}\t${x.kind}\tsector ${x.sector}\tcount ${x.count}\tflags ${x.flags}\t${x.segment}@${x.offset}\n`)
      }
    }
  }
  return ok ? 0 : 1
}

async function compact(argv: string[]): Promise<number> {
  const p = parseCommand(JOURNAL_COMPACT, argv)
  if (p.help) {
    process.stdout.write(helpText(JOURNAL_COMPACT))
    return 0
  }
  const a = p.values
  const volume = a.volume
  if (!volume) throw usage('journal', 'journal compact needs --volume NAME')
  const client = adminFromFlags(a, 'journal')
  let r: CompactReply__Output
  try {
    r = await unary<CompactRequest, CompactReply__Output>(client.compact.bind(client), { volume })
  } catch (err) {
    throw clientError('journal', err)
  } finally {
    client.close()
  }
  if (a.json) {
    process.stdout.write(`${JSON.stringify(compactJson(r))}\n`)
    return 0
  }
  if (!r.rule) process.stdout.write(`volume ${volume} has no retention rule: it keeps everything\n`)
  else if (!r.compaction) process.stdout.write(`volume ${volume} (retain ${r.rule}): nothing has expired\n`)
  else {
    const c = r.compaction
    process.stdout.write(
      `volume ${volume} (retain ${r.rule}): history up to seq ${c.baseSeq} folded into the base image; ${c.segmentsDropped} segments, ${((c.journalBytesBefore - c.journalBytesAfter) / 1e6).toFixed(1)} MB reclaimed, ${c.expiredTimeMarks} TimeMarks expired, ${c.ms} ms\n`
    )
  }
  if (r.warning) process.stdout.write(`warning: ${r.warning}\n`)
  return 0
}
