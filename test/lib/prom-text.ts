// A parser of the Prometheus text exposition format (version 0.0.4, what
// prom-client writes), so the metrics tests read samples by name and labels
// instead of grepping: # HELP / # TYPE lines, then
//   name{label="value",...} value
// with label values escaped (\\, \", \n). Throws on a line it cannot read.

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Exposition {
  types: Map<string, string>
  samples: Sample[]
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    if (line.startsWith('#')) {
      const m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line)
      if (m) types.set(m[1], m[2])
      else if (!/^# HELP \S+ /.test(line)) throw new Error(`not a HELP or TYPE line: ${line}`)
      continue
    }
    const nm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)
    if (!nm) throw new Error(`no metric name: ${line}`)
    const name = nm[1]
    let at = name.length
    const labels: Record<string, string> = {}
    if (line[at] === '{') {
      at++
      while (line[at] !== '}') {
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(at))
        if (!lm) throw new Error(`bad label at ${at}: ${line}`)
        at += lm[0].length
        let v = ''
        while (line[at] !== '"') {
          if (at >= line.length) throw new Error(`unterminated label value: ${line}`)
          if (line[at] === '\\') {
            const c = line[at + 1]
            v += c === 'n' ? '\n' : c
            at += 2
          } else v += line[at++]
        }
        at++
        labels[lm[1]] = v
        if (line[at] === ',') at++
      }
      at++
    }
    const rest = line.slice(at).trim().split(/\s+/)
    if (rest.length < 1 || rest.length > 2) throw new Error(`bad value: ${line}`)
    // Prometheus reads values as Go's ParseFloat does: NaN in any case (prom-client writes "Nan"), ±Inf.
    const value = /^nan$/i.test(rest[0]) ? NaN : rest[0] === '+Inf' ? Infinity : rest[0] === '-Inf' ? -Infinity : Number(rest[0])
    if (Number.isNaN(value) && !/^nan$/i.test(rest[0])) throw new Error(`bad value: ${line}`)
    samples.push({ name, labels, value })
  }
  return { types, samples }
}

/** The one sample of `name` whose labels include `labels`; throws if none or several. */
export function sample(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  const hits = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (hits.length !== 1) throw new Error(`${hits.length} samples of ${name}${JSON.stringify(labels)}`)
  return hits[0].value
}

/** GET url and parse it; throws unless it is 200 with the exposition content type. */
export async function scrape(url: string): Promise<Exposition> {
  const res = await fetch(url)
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${text}`)
  if (!/^text\/plain; version=0\.0\.4/.test(res.headers.get('content-type') ?? '')) throw new Error(`GET ${url}: content-type ${res.headers.get('content-type')}`)
  return parseExposition(text)
}

/** The URL a process printed in its "http listening on URL" line. */
export function httpUrl(stderr: string): string | null {
  return /http listening on (https?:\/\/\S+)/.exec(stderr)?.[1] ?? null
}
