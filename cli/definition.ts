// One declarative definition per command: each option is defined once (its
// flag, kind, config-file key, help row, whether it is required, and the
// schema that checks and converts its value), and the command line, the
// --config FILE keys, the validation errors and --help all come from it.
//
// Why node:util.parseArgs plus zod, and not one library that does both:
// - parseArgs (in Node, no dependency) splits the command line as every
//   tidemark command always has (--flag VALUE, --flag=VALUE, repeatable
//   flags, switches) and hands back tokens, so the mistakes it finds are
//   still said in our words: one line, exit 2, the texts test/cli.test.ts
//   and test/bad-input.test.ts check;
// - zod (the well-kept schema library) checks and converts each value, from
//   a flag or from the config file's JSON alike, with our messages, and its
//   inferred output types give a command typed values without declaring
//   them a second time;
// - the libraries that do both (commander, yargs, clipanion) bring their own
//   error texts, help layout and exit codes, which the contract above fixes
//   as they are, and none reads the same settings from a JSON file.
// What is left to each command is what spans several options (TLS flags all
// or none, options that need --appliance, --control only with an appliance).
import { parseArgs as tokenize } from 'node:util'
import { z } from 'zod'
import { usage } from './args'
import { readConfigFile, type ConfigFile } from './config-file'

/** One option. T is the value the command receives (undefined when not given). */
export interface Opt<T> {
  /** string: one value; list: repeatable; boolean: a switch */
  readonly kind: 'string' | 'list' | 'boolean'
  /** the help row's label ("--state DIR"); without one the option has no row */
  readonly label?: string
  /** the help row's text; a newline continues it on the next line */
  readonly help?: string
  /** the key of the same setting in --config FILE ("a.b": key b of object a) */
  readonly key?: string
  /** a config-file key only: there is no flag */
  readonly configOnly?: boolean
  /** the message when the option is missing */
  readonly required?: string
  /**
   * the first of options of which exactly one is given: the others, what to say when none or several
   * (their flags) are, and whether an empty value counts as none
   */
  readonly oneOf?: { with: string[]; missing: string; many: (flags: string[]) => string; emptyIsNone?: boolean }
  /** another option this one is meaningless without, and how to name it: "--x needs ${as}" */
  readonly needs?: { option: string; as: string }
  /** a flag that exists but is refused with this message */
  readonly refused?: string
  /** cannot be combined with other options: --config FILE (the settings come from it), or a switch that stands for all of them (--demo) */
  readonly alone?: boolean
  /** the flag's value (a string, the list of strings, or true) as T */
  readonly value: z.ZodType<T, z.ZodTypeDef, any>
  /** the config key's JSON as what `value` takes from the flag (default: a string; a number is taken as its digits) */
  readonly config?: z.ZodType<unknown, z.ZodTypeDef, any>
  /** used when neither the flag nor the key is given (goes through `value`) */
  readonly default?: string
}

export type Options = Record<string, Opt<unknown>>
export type Values<O extends Options> = { [K in keyof O]: O[K] extends Opt<infer T> ? T | undefined : never }

type Base = Omit<Opt<unknown>, 'kind' | 'value' | 'config'>

type Schema<T> = z.ZodType<T, z.ZodTypeDef, any>
type ConfigSchema = z.ZodType<unknown, z.ZodTypeDef, any>

/** An option that takes one value (a string unless `value` converts it). */
export function text(o: Base & { config?: ConfigSchema }): Opt<string>
export function text<T>(o: Base & { value: Schema<T>; config?: ConfigSchema }): Opt<T>
export function text<T>(o: Base & { value?: Schema<T>; config?: ConfigSchema }): Opt<T> {
  return { ...o, kind: 'string', value: o.value ?? (z.string() as unknown as Schema<T>) }
}

/** A repeatable option: the list of its values. */
export function list(o: Base & { config?: ConfigSchema }): Opt<string[]>
export function list<T>(o: Base & { value: Schema<T>; config?: ConfigSchema }): Opt<T>
export function list<T>(o: Base & { value?: Schema<T>; config?: ConfigSchema }): Opt<T> {
  return { ...o, kind: 'list', value: o.value ?? (z.array(z.string()) as unknown as Schema<T>) }
}

/** A switch: true when given (unless `value` says otherwise). */
export function flag(o: Base & { config?: ConfigSchema }): Opt<true>
export function flag<T>(o: Base & { value: Schema<T>; config?: ConfigSchema }): Opt<T>
export function flag<T>(o: Base & { value?: Schema<T>; config?: ConfigSchema }): Opt<T> {
  return { ...o, kind: 'boolean', value: o.value ?? (z.literal(true) as unknown as Schema<T>) }
}

/** `base`, then a check with the message a user sees (`message` gets the value that failed). */
export function check<S extends z.ZodTypeAny>(base: S, ok: (v: z.output<S>) => boolean, message: (v: z.output<S>) => string) {
  return base.superRefine((v, ctx) => {
    if (!ok(v)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: message(v) })
  })
}

/** `base`, then a conversion that may refuse: `fn` returns the value or throws an Error whose message the user sees. */
export function convert<S extends z.ZodTypeAny, O>(base: S, fn: (v: z.output<S>) => O) {
  return base.transform((v, ctx): O => {
    try {
      return fn(v)
    } catch (err) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message })
      return z.NEVER
    }
  })
}

/** The default config-file form of a one-value option: a string (a number is taken as its digits). */
function configString(key: string): z.ZodType<string, z.ZodTypeDef, unknown> {
  return z.union([z.string(), z.number()], { errorMap: () => ({ message: `"${key}" must be a string` }) }).transform(String)
}

export interface Command<O extends Options> {
  readonly name: string
  readonly options: O
  /** ask for every required option before checking any value (else each in its turn) */
  readonly requiredFirst?: boolean
  /** --help: the text, with each option's rows rendered where `rows` is called */
  readonly help: (rows: (column: number, ...names: Array<keyof O & string>) => string) => string
}

export function command<O extends Options>(c: Command<O>): Command<O> {
  return c
}

export function helpText<O extends Options>(c: Command<O>): string {
  return c.help((column, ...names) => names.map((n) => helpRow(c.options[n], column)).join('\n'))
}

function helpRow(o: Opt<unknown>, column: number): string {
  const label = `  ${o.label}`
  const head = label.length + 2 > column ? `${label}  ` : label.padEnd(column)
  return head + (o.help ?? '').split('\n').join(`\n${' '.repeat(column)}`)
}

export type Parsed<O extends Options> =
  | { help: true }
  | {
      help: false
      values: Values<O>
      /** the options given on the command line or in the config file */
      given: Set<keyof O & string>
    }

/** The command line (or the --config FILE it names) as checked, typed values; every mistake is one usage line. */
export function parseCommand<O extends Options>(c: Command<O>, argv: string[]): Parsed<O> {
  const cmd = c.name
  const opts = c.options
  const flagged = Object.entries(opts).filter(([, o]) => !o.configOnly)
  const find = (name: string): Opt<unknown> | undefined =>
    Object.prototype.hasOwnProperty.call(opts, name) && !opts[name].configOnly ? opts[name] : undefined
  const { tokens } = tokenize({
    args: argv,
    options: Object.fromEntries(flagged.map(([n, o]) => [n, { type: o.kind === 'boolean' ? ('boolean' as const) : ('string' as const), multiple: o.kind === 'list' }])),
    strict: false,
    allowPositionals: true,
    tokens: true,
  })
  const raw = new Map<string, string[]>()
  for (const t of tokens) {
    if (t.kind === 'option-terminator') throw usage(cmd, 'unknown option --')
    if (t.kind === 'positional' || !t.rawName.startsWith('--')) throw usage(cmd, `unexpected argument '${argv[t.index]}'`)
    const o = find(t.name)
    if (!o) throw usage(cmd, `unknown option --${t.name}`)
    let v = 'true'
    if (o.kind === 'boolean') {
      if (t.inlineValue) throw usage(cmd, `--${t.name} takes no value`)
    } else {
      if (t.value === undefined || (!t.inlineValue && t.value.startsWith('--'))) throw usage(cmd, `--${t.name} needs a value`)
      v = t.value
    }
    const prev = raw.get(t.name)
    if (prev && o.kind !== 'list') throw usage(cmd, `--${t.name} is given twice`)
    raw.set(t.name, [...(prev ?? []), v])
  }
  if (raw.has('help')) return { help: true }
  for (const [n, o] of Object.entries(opts)) if (o.refused && raw.has(n)) throw usage(cmd, o.refused)
  for (const [n, o] of Object.entries(opts)) {
    if (!o.alone || !raw.has(n)) continue
    if (raw.size > 1) throw usage(cmd, `--${n} cannot be combined with other options`)
    // A switch that stands for a whole setting (--demo): the command says what it means.
    if (o.kind === 'boolean') return { help: false, values: { [n]: true } as Values<O>, given: new Set([n]) }
  }

  const values: Record<string, unknown> = {}
  const given = new Set<string>()
  const config = raw.get('config')?.[0]
  // With a config file, what is wrong with a setting is said of its key, at its line.
  let blame = (_name: string, message: string): string => message
  const inFile = config !== undefined && opts.config?.alone === true
  if (inFile) {
    const read = readConfig(c, config)
    for (const [n, v] of read.values) {
      values[n] = v
      given.add(n)
    }
    blame = read.blame
  } else {
    for (const [n, v] of raw) {
      const o = opts[n]
      values[n] = o.kind === 'list' ? v : o.kind === 'boolean' ? true : v[0]
      given.add(n)
    }
  }
  const missing = (n: string, o: Opt<unknown>): boolean => o.required !== undefined && (!given.has(n) || values[n] === '')
  const required = (o: Opt<unknown>): string => {
    if (!inFile || !o.key) return o.required!
    // "--nbd unix:PATH|tcp:HOST:PORT is required": the setting and its form, for the key
    return `config ${config}: "${o.key}" is required (${o.required!.replace(/ is required$/, '')})`
  }
  if (c.requiredFirst) for (const [n, o] of Object.entries(opts)) if (missing(n, o)) throw usage(cmd, required(o))
  // Each option in the order of the definition: its group, presence, what it needs, its value.
  for (const [n, o] of Object.entries(opts)) {
    if (o.oneOf) {
      const names = [n, ...o.oneOf.with].filter((x) => given.has(x) && !(o.oneOf!.emptyIsNone && values[x] === ''))
      if (names.length === 0) throw usage(cmd, o.oneOf.missing)
      if (names.length > 1) throw usage(cmd, o.oneOf.many(names.map((x) => `--${x}`)))
    }
    // An empty value ("--state=") is as good as none where one is required.
    if (missing(n, o)) throw usage(cmd, required(o))
    if (!given.has(n)) {
      if (o.default === undefined) continue
    } else if (o.needs && !given.has(o.needs.option)) {
      const other = opts[o.needs.option].key
      throw usage(cmd, inFile && o.key && other ? `config ${config}: "${o.key}" needs "${other}"` : `--${n} needs ${o.needs.as}`)
    }
    const input = given.has(n) ? values[n] : o.kind === 'list' ? [o.default] : o.default
    const r = o.value.safeParse(input)
    if (!r.success) throw usage(cmd, given.has(n) ? blame(n, r.error.issues[0].message) : r.error.issues[0].message)
    values[n] = r.data
  }
  return { help: false, values: values as Values<O>, given: given as Set<keyof O & string> }
}

/**
 * --config FILE (YAML or JSON, cli/config-file.ts): an object of the options' keys, each value through the
 * option's config schema; and how to say what is wrong with a key's value: its file, line and key path.
 */
function readConfig<O extends Options>(c: Command<O>, file: string): { values: Map<string, unknown>; blame: (name: string, message: string) => string } {
  const cmd = c.name
  let f: ConfigFile
  try {
    f = readConfigFile(file)
  } catch (err) {
    throw usage(cmd, (err as Error).message)
  }
  const j = f.data
  const keyed = Object.entries(c.options).filter(([, o]) => o.key !== undefined)
  const known = new Set(keyed.map(([, o]) => o.key!))
  const top = new Set([...known].map((k) => k.split('.')[0]))
  for (const k of Object.keys(j)) if (!top.has(k)) throw usage(cmd, `${f.at([k])}: unknown key "${k}"`)
  // Objects of dotted keys ("tls": {"cert", "key", "ca"}): an object, of those keys only.
  for (const t of top) {
    const inner = [...known].filter((k) => k.startsWith(`${t}.`)).map((k) => k.slice(t.length + 1))
    if (!inner.length || j[t] === undefined) continue
    const v = j[t]
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw usage(cmd, `${f.at([t])}: "${t}" must be an object of ${inner.map((k) => `"${k}"`).join(', ')}`)
    for (const k of Object.keys(v)) if (!inner.includes(k)) throw usage(cmd, `${f.at([t, k])}: unknown key "${t}.${k}"`)
  }
  const blame = (name: string, message: string): string => {
    const key = c.options[name].key
    if (!key) return message
    const at = f.at(key.split('.'))
    // The value checks speak of the flag ("--stats-interval 'x' is not ..."): in a file, of its key.
    const flag = `--${name}`
    if (message.startsWith(`${flag} `)) return `${at}: "${key}"${message.slice(flag.length)}`
    const bare = message.replace(/^config /, '')
    return bare.includes(`"${key.split('.')[0]}"`) ? `${at}: ${bare}` : `${at}: "${key}": ${bare}`
  }
  const out = new Map<string, unknown>()
  for (const [n, o] of keyed) {
    const path = o.key!.split('.')
    let v: unknown = j
    for (const p of path) v = (v as Record<string, unknown> | null | undefined)?.[p]
    if (v === undefined) continue
    const schema = o.config ?? configString(o.key!)
    const r = schema.safeParse(v)
    if (!r.success) throw usage(cmd, blame(n, r.error.issues[0].message))
    if (r.data === undefined) continue
    out.set(n, r.data)
  }
  return { values: out, blame }
}
