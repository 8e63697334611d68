// The loggers of the long-running commands (agent, appliance, timeview): one
// readable line per event for a person at a terminal, pino's JSON lines for
// everything else (journald, files, the tests, log shippers).
//
// Why pino-pretty's formatter and not its stream (pino-pretty's default
// export, or a pino transport): both hand lines to a stream that writes
// them later (a worker thread, or a Transform piped to an asynchronous
// sonic-boom), so the last lines before an exit -- "final stats", the line
// that says why it stopped -- can be lost. prettyFactory is the same
// formatting as a plain function; the destination below calls it and
// writes the line before pino's call returns, through a synchronous
// sonic-boom, as the JSON lines are written.
import tty from 'node:tty'
import pino, { type Logger } from 'pino'
import { prettyFactory } from 'pino-pretty'
import { z } from 'zod'
import { escapeControl } from '../proto/bounded-strings'
import { check } from './definition'

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

/** --log-format auto|json|pretty (config key "logFormat"). */
export function logFormat(): z.ZodType<LogFormat, z.ZodTypeDef, string> {
  return check(z.string(), (s) => (LOG_FORMATS as readonly string[]).includes(s), (s) => `--log-format '${s}' must be auto, json or pretty`).transform(
    (s) => s as LogFormat
  )
}

export const LOG_FORMAT_HELP = 'pretty: one readable line per event; json: pino JSON lines;\nauto (the default): pretty on a terminal, else json'

export interface LoggerOptions {
  level: string
  format: LogFormat
  /** fields on every line (pid, component, ...) */
  base: Record<string, unknown>
  /** where the lines go: 1 (stdout, the agent's and the appliance's) or 2 (stderr) */
  fd: 1 | 2
}

/** Whether `format` means readable lines on `fd`: auto asks whether a person is reading it (a terminal). */
export function isPretty(format: LogFormat, fd: number): boolean {
  return format === 'pretty' || (format === 'auto' && tty.isatty(fd))
}

export function createLogger(o: LoggerOptions): Logger {
  const opts = { level: o.level, base: o.base }
  // Synchronous for JSON too (pino's own default for stdout is not): these daemons log a few lines a
  // second at most, and the ones written just before a crash or an exit are the ones worth having.
  if (!isPretty(o.format, o.fd)) return pino(opts, pino.destination({ fd: o.fd, sync: true }))
  // Colour only for a terminal (a forced --log-format pretty into a file stays plain), and never with NO_COLOR (no-color.org).
  const colorize = tty.isatty(o.fd) && !process.env.NO_COLOR
  const format = prettyFactory({
    colorize,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    // The whole line after the level is ours (readableMessage): pino-pretty's own object rendering would
    // be JSON (singleLine) or one field per line.
    messageFormat: readableMessage,
    hideObject: true,
    ignore: 'pid,hostname',
  })
  // sonic-boom in sync mode, as for JSON: it retries a pipe that is full (EAGAIN) instead of dropping the line.
  const dest = pino.destination({ fd: o.fd, sync: true })
  return pino({ ...opts, serializers: { err: oneLineError } }, { write: (line: string) => dest.write(format(line)) })
}

/** Shown by the line's head (or by pino-pretty's time and level) rather than as fields. */
const HEAD_FIELDS = new Set(['pid', 'hostname', 'component', 'volume', 'level', 'time'])

/**
 * "agent v: stats mode=normal writes=3 ... syncProgress={...}": who and what, then the fields as
 * key=value (strings bare when they are one printable word, else quoted; objects as compact JSON), dimmed.
 * Control characters are escaped, as pino-pretty does for its own messages: a hook's output or a peer's
 * text must not drive the terminal.
 */
function readableMessage(log: Record<string, unknown>, messageKey: string, _level: string, extras: { colors: { gray(s: string): string } }): string {
  const who = `${escapeControl(String(log.component ?? 'tidemark'))}${log.volume !== undefined ? ` ${fieldValue(log.volume)}` : ''}`
  const head = `${who}: ${escapeControl(String(log[messageKey] ?? ''))}`
  const fields = Object.entries(log)
    .filter(([k, v]) => !HEAD_FIELDS.has(k) && k !== messageKey && v !== undefined)
    .map(([k, v]) => `${escapeControl(k)}=${fieldValue(v)}`)
    .join(' ')
  return fields ? `${head} ${extras.colors.gray(fields)}` : head
}

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /^[\x21-\x7e]+$/.test(v) && !v.includes('"') ? v : JSON.stringify(v)
  // JSON.stringify escapes control characters in strings at any depth
  return JSON.stringify(v) ?? String(v)
}

/** An error as its message and code on one line (pino's default serializer keeps the stack, which spans many). */
function oneLineError(e: unknown): unknown {
  if (!(e instanceof Error)) return e
  const code = (e as { code?: unknown }).code
  return code === undefined ? e.message : `${e.message} (${String(code)})`
}
