// The bounds of the strings a user or a peer gives us that we store and
// print: agent ids, consistency groups, TimeMark labels and notes. A string
// from another machine reaches an operator's terminal (timemark list, stats,
// logs), so control characters, which could move the cursor, rewrite a line
// or set a window title, never get that far: names that hold one are
// refused (a name is an identifier, better refused than changed), notes (free
// text, often a program's own words) have them stripped. Both ends check:
// the CLI and the agent before sending, the appliance at its boundary.

/** Agent ids, groups and labels: at most this many UTF-8 bytes. */
export const MAX_NAME_BYTES = 128
/** TimeMark notes: at most this many UTF-8 bytes. */
export const MAX_NOTE_BYTES = 4096

// C0, DEL and C1 controls, and the Unicode line and paragraph separators.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/
// eslint-disable-next-line no-control-regex
const CONTROL_ALL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g

/** Why `s` cannot be a name (an agent id, a group, a label), or null. `what` names it in the message. */
export function badName(s: string, what: string): string | null {
  const bytes = Buffer.byteLength(s, 'utf8')
  if (bytes > MAX_NAME_BYTES) return `${what} is ${bytes} bytes long, over the ${MAX_NAME_BYTES}-byte limit`
  if (CONTROL.test(s)) return `${what} contains control characters`
  return null
}

/** `s` for an error message: control characters as \u escapes (\u001b), the rest as it is. */
export function escapeControl(s: string): string {
  return s.replace(CONTROL_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** A note as stored and printed: control characters become spaces, and it is cut to MAX_NOTE_BYTES (on a character boundary). */
export function cleanNote(s: string): string {
  let out = s.replace(CONTROL_ALL, ' ')
  if (Buffer.byteLength(out, 'utf8') <= MAX_NOTE_BYTES) return out
  const b = Buffer.from(out, 'utf8').subarray(0, MAX_NOTE_BYTES)
  out = b.toString('utf8')
  // a cut inside a multi-byte character decodes as U+FFFD: drop it
  return out.endsWith('\ufffd') ? out.slice(0, -1) : out
}
