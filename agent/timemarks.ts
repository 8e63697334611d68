// TimeMarks at the agent: quiesce, barrier, thaw, tag, wait.
//
// create() is what `tidemark timemark create` asks through the control
// socket (agent/control.ts) and what the schedule runs:
//   1. the quiesce hook (sh -c CMD) with a time limit: an application
//      flushes and holds its writes (a database's write lock + fsfreeze, or
//      `sync`);
//   2. the tap's barrier (Tap.timemark): one fresh seq for the volume or the
//      whole consistency group, a MARK record carrying the metadata at that
//      seq in every volume's stream; no data moves;
//   3. the thaw hook, always once quiesce ran, whatever happened after it;
//   4. by default, waiting until every volume's appliance holds the MARK
//      durably (it travels in stream order behind the writes before it).
// A quiesce hook that fails or outlasts its limit aborts an app-consistent
// mark with the hook's own words, or, with allowCrashConsistent, records a
// crash-consistent one and says why in the note.
import { spawn } from 'node:child_process'
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { cleanNote, escapeControl } from '../proto/bounded-strings'
import { badLabel, encodeMarkMeta, type MarkMeta } from '../proto/timemark-meta'
import type { Replicator } from './replicator'
import type { Tap } from './tap'

export const DEFAULT_HOOK_TIMEOUT_MS = 60_000
export const DEFAULT_WAIT_MS = 60_000

export interface CreateTimeMark {
  volume?: string
  group?: string
  label?: string
  quiesce?: string
  thaw?: string
  hookTimeoutMs?: number
  allowCrashConsistent?: boolean
  noWait?: boolean
  waitTimeoutMs?: number
}

export interface TimeMarkResult {
  id: number
  seq: number
  label: string
  consistency: 'app' | 'crash'
  wallTimeMs: number
  volumes: string[]
  group: string
  durable: boolean
  quiesceMs: number
  barrierMs: number
  thawMs: number
  durableMs: number
  note: string
}

interface HookResult {
  ok: boolean
  ms: number
  /** what went wrong, in our words (no output of the hook's) */
  why: string
  /** the last line the hook printed (stderr, else stdout), control characters stripped; '' if none */
  output: string
}

/** Runs `sh -c cmd` with a time limit; the last line of its stderr (or stdout) explains a failure. */
export function runHook(what: string, cmd: string, timeoutMs: number): Promise<HookResult> {
  const t0 = performance.now()
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4096)))
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4096)))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      try {
        process.kill(-child.pid!, 'SIGKILL') // the hook and anything it started
      } catch {
        child.kill('SIGKILL')
      }
    }, timeoutMs)
    const lastLine = (): string => cleanNote((err.trim() || out.trim()).split('\n').at(-1)?.slice(0, 300) ?? '')
    child.on('error', (e) => {
      clearTimeout(timer)
      resolve({ ok: false, ms: performance.now() - t0, why: `${what} hook could not start: ${e.message}`, output: '' })
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const ms = performance.now() - t0
      if (timedOut) resolve({ ok: false, ms, why: `${what} hook did not finish within ${timeoutMs / 1000} s (killed)`, output: lastLine() })
      else if (code === 0) resolve({ ok: true, ms, why: '', output: '' })
      else resolve({ ok: false, ms, why: `${what} hook ${signal ? `was killed by ${signal}` : `exited with ${code}`}`, output: lastLine() })
    })
  })
}

export class TimeMarks {
  /** Counters for stats: taken, refused (any reason). */
  taken = 0
  failed = 0

  constructor(
    private readonly tap: Tap,
    private readonly replicators: Replicator[],
    private readonly group: string | undefined,
    private readonly log: Logger,
    /**
     * Put a failed hook's last output line in the mark's note. Off by default:
     * the note is replicated and shown to whoever lists marks at the
     * appliance, and a hook's output may hold what the protected server
     * keeps to itself (paths, errors with credentials, internal names).
     */
    private readonly hookOutputInNote = false
  ) {}

  /** A failed hook's words for the note: `why`, and its output only when asked for. */
  private noteOf(h: HookResult): string {
    return this.hookOutputInNote && h.output ? `${h.why}: ${h.output}` : h.why
  }

  async create(req: CreateTimeMark): Promise<TimeMarkResult> {
    try {
      const r = await this.take(req)
      this.taken++
      return r
    } catch (err) {
      this.failed++
      throw err
    }
  }

  private scope(req: CreateTimeMark): { volumes: string[]; group: string } {
    if (!!req.volume === !!req.group) throw new TidemarkError('TIMEMARK_BAD_REQUEST', 'give a volume or a group, not both and not neither')
    if (req.group) {
      if (req.group !== this.group) {
        throw new TidemarkError('TIMEMARK_UNKNOWN_GROUP', `this agent has no consistency group ${JSON.stringify(req.group)}${this.group ? ` (its group is ${this.group})` : ''}`)
      }
      return { volumes: this.tap.groupVolumes(req.group), group: req.group }
    }
    const v = req.volume!
    if (!this.tap.volumes.includes(v)) throw new TidemarkError('TIMEMARK_UNKNOWN_VOLUME', `this agent has no volume ${JSON.stringify(v)}`)
    // A volume of a group shares its seq space: the mark covers the group's
    // seq, but it is catalogued for this volume only.
    return { volumes: [v], group: this.group ?? '' }
  }

  private async take(req: CreateTimeMark): Promise<TimeMarkResult> {
    const { volumes, group } = this.scope(req)
    const label = req.label ?? ''
    const bad = label ? badLabel(label) : null
    if (bad) throw new TidemarkError('TIMEMARK_BAD_REQUEST', `label '${escapeControl(label)}' ${bad}`)
    if (this.replicators.length === 0) {
      throw new TidemarkError('TIMEMARK_NO_APPLIANCE', 'TimeMarks are kept by an appliance; this agent runs without --appliance')
    }
    const reps = volumes.map((v) => this.replicators.find((r) => r.volume === v)!)
    const hookMs = req.hookTimeoutMs || DEFAULT_HOOK_TIMEOUT_MS
    let consistency: 'app' | 'crash' = req.quiesce ? 'app' : 'crash'
    const notes: string[] = []
    let quiesceMs = 0
    let thawMs = 0
    let quiesced = false
    const thaw = async (): Promise<void> => {
      if (!req.thaw || !quiesced) return
      const t = await runHook('thaw', req.thaw, hookMs)
      thawMs = t.ms
      if (!t.ok) {
        notes.push(this.noteOf(t))
        this.log.warn({ volumes, why: t.why, output: t.output }, 'TimeMark: the thaw hook failed')
      }
    }
    if (req.quiesce) {
      const q = await runHook('quiesce', req.quiesce, hookMs)
      quiesceMs = q.ms
      quiesced = true
      if (!q.ok) {
        // The error goes back to the local caller only (the control
        // socket is 0600): it carries the hook's own words.
        const said = q.output ? `${q.why}: ${q.output}` : q.why
        if (!req.allowCrashConsistent) {
          await thaw()
          throw new TidemarkError('TIMEMARK_QUIESCE_FAILED', `no TimeMark taken: the ${said}${notes.length ? `; ${notes.join('; ')}` : ''}`)
        }
        consistency = 'crash'
        this.log.warn({ volumes, why: q.why, output: q.output }, 'TimeMark: the quiesce hook failed; taking a crash-consistent mark')
        notes.push(`crash-consistent: the ${this.noteOf(q)}`)
      }
    }
    const wallMs = Date.now()
    const meta: MarkMeta = { label, consistency, wallMs, group, note: '' }
    let seq: number
    const t0 = performance.now()
    try {
      meta.note = cleanNote(notes.join('; '))
      seq = this.tap.timemark(volumes, encodeMarkMeta(meta))
      for (const r of reps) r.expectMark(seq)
    } catch (err) {
      await thaw()
      throw new TidemarkError('TIMEMARK_REFUSED', `no TimeMark taken: ${(err as Error).message}`)
    }
    const barrierMs = performance.now() - t0
    await thaw()
    const result: TimeMarkResult = {
      id: seq,
      seq,
      label,
      consistency,
      wallTimeMs: wallMs,
      volumes,
      group,
      durable: false,
      quiesceMs,
      barrierMs,
      thawMs,
      durableMs: 0,
      note: cleanNote(notes.join('; ')),
    }
    this.log.info({ ...result }, `TimeMark ${seq} taken${label ? ` (${label})` : ''}: ${consistency}-consistent, ${volumes.join(', ')}`)
    if (req.noWait) return result
    const t1 = performance.now()
    const waited = await Promise.all(reps.map((r) => r.waitMark(seq, req.waitTimeoutMs || DEFAULT_WAIT_MS)))
    result.durableMs = performance.now() - t1
    const lost = volumes.filter((_, i) => waited[i] === 'lost')
    if (lost.length) {
      throw new TidemarkError(
        'TIMEMARK_LOST',
        `TimeMark ${seq} was lost on ${lost.join(', ')}: the volume fell behind before the mark reached the stream; take it again once the resync completes`
      )
    }
    const late = volumes.filter((_, i) => waited[i] === 'timeout')
    if (late.length) {
      throw new TidemarkError(
        'TIMEMARK_NOT_CONFIRMED',
        `TimeMark ${seq} was taken, but the appliance has not confirmed it for ${late.join(', ')} within ${(req.waitTimeoutMs || DEFAULT_WAIT_MS) / 1000} s; it is catalogued when the stream catches up`
      )
    }
    result.durable = true
    return result
  }
}
