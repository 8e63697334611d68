// A TimeMark's metadata as it travels in a MARK record's data (native
// kRecordMark; the agent writes it, the appliance journals it verbatim and
// catalogs it): UTF-8 JSON, at most MAX_MARK_DATA (4096) bytes. The mark's id is its seq,
// which the record header carries, so the metadata does not repeat it.
//
//   {"v":1, "label":"before-upgrade", "consistency":"app"|"crash",
//    "wallMs":1795430400000, "group":"db", "note":"quiesce 12 ms"}
import { badName, cleanNote, MAX_NAME_BYTES } from './bounded-strings'
import { MAX_MARK_DATA } from './record'

export interface MarkMeta {
  label: string
  consistency: 'app' | 'crash'
  /** When the agent took the barrier, ms since the epoch. */
  wallMs: number
  /** The consistency group the mark covers ("" for a single volume). */
  group: string
  note: string
}

export const MAX_LABEL_BYTES = MAX_NAME_BYTES

/** Why a label cannot name a TimeMark, or null if it can (the message follows the label). */
export function badLabel(label: string): string | null {
  const bad = badName(label, 'it')
  if (bad) return bad.replace(/^it /, '')
  if (/^\d+$/.test(label)) return 'is a number (numbers name TimeMarks by id)'
  return null
}

export function encodeMarkMeta(m: MarkMeta): Buffer {
  const b = Buffer.from(JSON.stringify({ v: 1, label: m.label, consistency: m.consistency, wallMs: m.wallMs, group: m.group, note: m.note }))
  if (b.length > MAX_MARK_DATA) throw new Error(`TimeMark metadata of ${b.length} bytes is over ${MAX_MARK_DATA}`)
  return b
}

// What journals written before the 128-byte bound held: labels up to 200
// characters, groups up to 128. A journal is history: it is read back under
// the rules it was written under, never refused for a bound added since.
const JOURNALED_LABEL_CHARS = 200
const JOURNALED_GROUP_CHARS = 128

/**
 * The metadata, or a string saying what is wrong with it. `journaled`: read
 * back from a journal (the catalog's rebuild), under the bounds it was
 * written under; its strings are still cleaned of control characters.
 */
export function parseMarkMeta(b: Buffer, opts: { journaled?: boolean } = {}): MarkMeta | string {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(b.toString('utf8')) as Record<string, unknown>
  } catch {
    return 'is not JSON'
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) return 'is not a JSON object'
  if (o.v !== 1) return `has version ${JSON.stringify(o.v)}, not 1`
  if (typeof o.label !== 'string') return 'has no label string'
  if (opts.journaled) {
    if (o.label.length > JOURNALED_LABEL_CHARS) return `label is longer than ${JOURNALED_LABEL_CHARS} characters`
  } else if (o.label !== '') {
    const why = badLabel(o.label)
    if (why) return `label ${why}`
  }
  if (o.consistency !== 'app' && o.consistency !== 'crash') return `has consistency ${JSON.stringify(o.consistency)}, not app or crash`
  if (typeof o.wallMs !== 'number' || !Number.isSafeInteger(o.wallMs) || o.wallMs < 0) return 'has no wallMs time'
  if (typeof o.group !== 'string') return 'has no group string'
  const badGroup = opts.journaled ? (o.group.length > JOURNALED_GROUP_CHARS ? 'has no group string' : null) : badName(o.group, 'group')
  if (badGroup) return badGroup
  if (o.note !== undefined && typeof o.note !== 'string') return 'has a note that is not a string'
  // A note is free text from the agent: kept, but never with control characters.
  const label = opts.journaled ? cleanNote(o.label) : o.label
  const group = opts.journaled ? cleanNote(o.group) : o.group
  return { label, consistency: o.consistency, wallMs: o.wallMs, group, note: cleanNote((o.note as string | undefined) ?? '') }
}
