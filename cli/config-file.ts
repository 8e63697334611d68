// Reading --config FILE: YAML or JSON, as plain values for the option
// definitions to check (cli/definition.ts), and where each key sits in the
// file so that an error can say "line 7".
//
// The format is the file's extension (.yaml, .yml, .json), else its first
// character: "{" is JSON, anything else YAML. JSON is read with JSON.parse,
// as it always was (duplicate keys: the last wins); YAML with the `yaml`
// package's YAML 1.2 core schema: no custom types, no "yes"/"no" booleans,
// no sexagesimal numbers (1.1's traps), duplicate keys refused, aliases
// bounded. A syntax error is one line with its line and column; so is a
// tag the core schema does not know (a warning to the library: it would
// pass the text through as if nothing were wrong).
import fs from 'node:fs'
import path from 'node:path'
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml'

export type ConfigFormat = 'YAML' | 'JSON'

export interface ConfigFile {
  readonly file: string
  readonly format: ConfigFormat
  /** the parsed top level (an object: anything else was refused) */
  readonly data: Record<string, unknown>
  /** "config FILE" and, when it can be found, the line of the deepest key of `keys` the file holds */
  at(keys: Array<string | number>): string
}

export function configFormat(file: string, text: string): ConfigFormat {
  const ext = path.extname(file).toLowerCase()
  if (ext === '.yaml' || ext === '.yml') return 'YAML'
  if (ext === '.json') return 'JSON'
  return text.trimStart().startsWith('{') ? 'JSON' : 'YAML'
}

/** Reads and parses FILE; throws an Error whose message is one line naming the file, and the line when there is one. */
export function readConfigFile(file: string): ConfigFile {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new Error(`cannot read config ${file}: ${(err as Error).message}`)
  }
  const format = configFormat(file, text)
  let data: unknown
  let doc: { doc: Document; lines: LineCounter } | null | undefined
  if (format === 'JSON') {
    try {
      data = JSON.parse(text)
    } catch (err) {
      throw new Error(`config ${file}: ${jsonSyntax(text, (err as Error).message)}`)
    }
  } else {
    doc = parseYaml(text)
    const e = doc.doc.errors[0] ?? doc.doc.warnings[0]
    if (e) {
      const at = e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : ''
      // The library's message repeats the position and quotes the source on the lines after it.
      throw new Error(`config ${file}: YAML syntax error${at}: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`)
    }
    try {
      data = doc.doc.toJS({ maxAliasCount: 100 })
    } catch (err) {
      throw new Error(`config ${file}: ${(err as Error).message.split('\n')[0]}`)
    }
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    throw new Error(format === 'JSON' ? `config ${file} must be a JSON object` : `config ${file} must be a YAML mapping of settings (key: value lines)`)
  }
  return {
    file,
    format,
    data: data as Record<string, unknown>,
    at(keys) {
      // JSON is YAML 1.2 too: parsed again only on the way to an error, for its lines.
      if (doc === undefined) {
        const d = parseYaml(text)
        doc = d.doc.errors.length ? null : d
      }
      const line = doc ? lineOf(doc.doc, doc.lines, keys) : undefined
      return line === undefined ? `config ${file}` : `config ${file}, line ${line}`
    },
  }
}

function parseYaml(text: string): { doc: Document; lines: LineCounter } {
  const lines = new LineCounter()
  return { doc: parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: true }), lines }
}

/** The line of the deepest of `keys` found in the document (1-based), or undefined when not even the first is there. */
function lineOf(doc: Document, lines: LineCounter, keys: Array<string | number>): number | undefined {
  let node: unknown = doc.contents
  let line: number | undefined
  for (const k of keys) {
    let next: unknown
    let start: number | undefined
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(k))
      start = isScalar(pair?.key) ? pair.key.range?.[0] : undefined
      next = pair?.value
    } else if (isSeq(node) && typeof k === 'number') {
      next = node.items[k]
      start = (next as { range?: [number, number, number] } | undefined)?.range?.[0]
    }
    if (start === undefined) break
    line = lines.linePos(start).line
    node = next
  }
  return line
}

/** JSON.parse's message as one line, with the line and column when it gives a position. */
function jsonSyntax(text: string, message: string): string {
  const m = / in JSON at position (\d+)/.exec(message)
  if (m) {
    const before = text.slice(0, Number(m[1])).split('\n')
    return `JSON syntax error at line ${before.length}, column ${before[before.length - 1].length + 1}: ${message.slice(0, m.index)}`
  }
  // "Unexpected token '}', "{"a": }" is not valid JSON": the quote of the source may span lines.
  const one = message.replace(/\s+/g, ' ')
  return `JSON syntax error: ${one.length > 200 ? `${one.slice(0, 200)}...` : one}`
}
