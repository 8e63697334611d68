// The operator's targets per volume: `--rpo-target PATTERN=WARN[,ERROR]` (how
// much the protected site may lose, in time) and `--history-target
// PATTERN=DURATION` (how far back the journal should reach). Patterns are
// --retain's (NAME, PREFIX* or *; the first matching rule applies). They feed
// the *_target_seconds metrics and the status API; the alerts compare
// against them. A duration is retention's (30s, 5m, 12h, 7d) or a plain
// number of seconds.
import { TidemarkError } from '../proto/errors'
import { firstMatch, parseDuration } from './retention'

export interface RpoTargetRule {
  pattern: string
  warnSeconds: number
  /** null: no error threshold */
  errorSeconds: number | null
  text: string
}

export interface HistoryTargetRule {
  pattern: string
  seconds: number
  text: string
}

export interface VolumeTargets {
  rpo: RpoTargetRule[]
  history: HistoryTargetRule[]
}

function seconds(text: string, flag: string, arg: string): number {
  const t = text.trim()
  const ms = /^\d+(\.\d+)?$/.test(t) ? Number(t) * 1000 : parseDuration(t)
  if (ms === null || !(ms > 0)) throw new TidemarkError('USAGE', `${flag} '${arg}': '${t}' is not a duration (30s, 5m, 12h, 7d or seconds)`)
  return ms / 1000
}

function split(arg: string, flag: string, form: string): [string, string] {
  const eq = arg.indexOf('=')
  if (eq <= 0 || eq === arg.length - 1) throw new TidemarkError('USAGE', `${flag} '${arg}' must be ${form}`)
  const pattern = arg.slice(0, eq)
  if (!/^(\*|[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\*?)$/.test(pattern)) {
    throw new TidemarkError('USAGE', `${flag} '${arg}': '${pattern}' is not a volume pattern (NAME, PREFIX* or *)`)
  }
  return [pattern, arg.slice(eq + 1)]
}

export function parseRpoTarget(arg: string): RpoTargetRule {
  const [pattern, spec] = split(arg, '--rpo-target', "PATTERN=WARN[,ERROR] (for example '*=30s,2m')")
  const parts = spec.split(',')
  if (parts.length > 2) throw new TidemarkError('USAGE', `--rpo-target '${arg}' has more than a warning and an error threshold`)
  const warnSeconds = seconds(parts[0], '--rpo-target', arg)
  const errorSeconds = parts.length === 2 ? seconds(parts[1], '--rpo-target', arg) : null
  if (errorSeconds !== null && errorSeconds < warnSeconds) {
    throw new TidemarkError('USAGE', `--rpo-target '${arg}': the error threshold is below the warning threshold`)
  }
  return { pattern, warnSeconds, errorSeconds, text: spec }
}

export function parseHistoryTarget(arg: string): HistoryTargetRule {
  const [pattern, spec] = split(arg, '--history-target', "PATTERN=DURATION (for example '*=7d')")
  return { pattern, seconds: seconds(spec, '--history-target', arg), text: spec }
}

/** The targets of one volume (null where no rule matches). */
export function targetsFor(t: VolumeTargets, volume: string): { rpo: RpoTargetRule | null; history: HistoryTargetRule | null } {
  return { rpo: firstMatch(t.rpo, volume), history: firstMatch(t.history, volume) }
}
